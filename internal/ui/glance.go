package ui

import (
	"net/http"
	"strings"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/httperr"
	"github.com/hipconnect/hipconnect/internal/slash"
)

// Glance answers the glance's queryUrl (PROTOCOL.md section 7): HipChat's
// client calls it cross-origin with signed_request when it shows a room,
// and gets the glance content. CORS admits the installation's HipChat
// origin only.
func (u *UI) Glance(w http.ResponseWriter, r *http.Request) {
	s, err := session(r)
	if err == nil {
		u.cors(w, r, s.Inst)
		err = s.NeedRoom()
	}
	var rec slash.Record
	if err == nil {
		rec, err = u.d.Slash.Room(r.Context(), s.Inst.OAuthID, s.Room)
	}
	if err != nil {
		u.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httperr.WriteJSON(w, http.StatusOK, slash.GlanceContent(rec, u.d.Now()))
}

// GlancePreflight answers a CORS preflight of the glance the same way: the
// signed_request in its URL must be valid, and only the installation's
// HipChat origin is admitted.
func (u *UI) GlancePreflight(w http.ResponseWriter, r *http.Request) {
	s, err := session(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	if u.cors(w, r, s.Inst) {
		h := w.Header()
		h.Set("Access-Control-Allow-Methods", "GET")
		h.Set("Access-Control-Allow-Headers", "Authorization")
		h.Set("Access-Control-Max-Age", "600")
	}
	w.Header().Add("Vary", "Access-Control-Request-Method")
	w.Header().Add("Vary", "Access-Control-Request-Headers")
	w.WriteHeader(http.StatusNoContent)
}

// cors admits the request's Origin when it is the installation's HipChat
// origin, and reports whether it did. The answer varies by Origin either
// way, and says so.
func (u *UI) cors(w http.ResponseWriter, r *http.Request, inst addon.Installation) bool {
	w.Header().Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	want, err := hipchatOrigin(inst)
	if origin == "" || err != nil || !sameOrigin(origin, want) {
		return false
	}
	w.Header().Set("Access-Control-Allow-Origin", origin)
	return true
}

// sameOrigin compares two serialised origins, ignoring the case of scheme
// and host and a default port (browsers leave it out; an origin taken
// from a capabilities URL may have it).
func sameOrigin(a, b string) bool {
	norm := func(o string) string {
		o = strings.ToLower(strings.TrimSuffix(o, "/"))
		switch {
		case strings.HasPrefix(o, "https://"):
			o = strings.TrimSuffix(o, ":443")
		case strings.HasPrefix(o, "http://"):
			o = strings.TrimSuffix(o, ":80")
		}
		return o
	}
	return norm(a) == norm(b)
}
