package ui

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/hipconnect/hipconnect/internal/httperr"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// session is what an authenticated request acts for.
type session struct {
	inst   addon.Installation
	claims hipchat.Claims
	// room is the token's context.room_id, or the installation's room for
	// a room install whose token names none; 0 when neither does.
	room  int64
	token string // the verified JWT, handed to the page as a fallback
}

// needRoom fails for a session that names no room.
func (s session) needRoom() error {
	if s.room <= 0 {
		return &httperr.Error{Code: http.StatusBadRequest, Msg: "open this from a room: the session names no room"}
	}
	return nil
}

// authMode says where a JWT may come from.
type authMode int

const (
	// fromAnywhere takes what hipchat.ExtractToken takes: the
	// Authorization header or the signed_request query parameter (pages and
	// the glance, which HipChat loads with signed_request).
	fromAnywhere authMode = iota
	// fromHeader takes the Authorization header only (the /api/ calls of
	// the pages): a cross-site form or link cannot set it, which is what
	// protects these calls against cross-site requests.
	fromHeader
)

// authenticate verifies the request's JWT (PROTOCOL.md section 5).
func (u *UI) authenticate(r *http.Request, mode authMode) (session, error) {
	if mode == fromHeader {
		if r.URL.Query().Has("signed_request") {
			return session{}, &httperr.Error{Code: http.StatusUnauthorized,
				Msg: "send the JWT in the Authorization header, not as signed_request"}
		}
		if r.Header.Get("Authorization") == "" {
			return session{}, &httperr.Error{Code: http.StatusUnauthorized, Msg: "no JWT in the Authorization header"}
		}
	}
	tok, err := hipchat.ExtractToken(r)
	if err != nil {
		return session{}, &httperr.Error{Code: http.StatusUnauthorized, Msg: "missing or malformed JWT", Err: err}
	}
	inst, claims, err := u.d.Verifier.Verify(r.Context(), tok)
	switch addon.KindOf(err) {
	case addon.Unauthorized:
		return session{}, &httperr.Error{Code: http.StatusUnauthorized, Msg: "invalid or expired JWT", Err: err}
	case addon.Forbidden:
		return session{}, &httperr.Error{Code: http.StatusForbidden, Msg: "the room is not covered by the installation", Err: err}
	}
	if err != nil {
		return session{}, err
	}
	s := session{inst: inst, claims: claims, room: claims.RoomID, token: tok}
	if s.room == 0 && !inst.Global() {
		s.room = inst.RoomID
	}
	return s, nil
}

// originRe is what a HipChat origin may look like in a header: scheme,
// host (name, IPv4 or bracketed IPv6) and port, nothing that could end a
// CSP directive or a header.
var originRe = regexp.MustCompile(`^https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$`)

// hipchatOrigin returns the installation's HipChat origin, checked.
func hipchatOrigin(inst addon.Installation) (string, error) {
	o := strings.TrimSuffix(inst.HipChatOrigin, "/")
	if !originRe.MatchString(o) {
		return "", addon.Errorf(addon.Internal, "ui: installation %s has no usable hipchat origin", inst.OAuthID)
	}
	return o, nil
}

// unverifiedIssuer reads iss from a JWT without checking it; only used to
// pick the frame-ancestors of an error page.
func unverifiedIssuer(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || len(parts[1]) > 4096 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(b, &c) != nil {
		return ""
	}
	return c.Iss
}

// frameOrigin is the origin an error page may be framed by: the session's
// HipChat origin, or, when the JWT failed, that of the installation the
// token claims to come from (the page only says the session is invalid,
// so framing it grants nothing); "" when none is known.
func (u *UI) frameOrigin(ctx context.Context, r *http.Request, s *session) string {
	if s != nil && s.inst.OAuthID != "" {
		o, _ := hipchatOrigin(s.inst)
		return o
	}
	tok, err := hipchat.ExtractToken(r)
	if err != nil {
		return ""
	}
	iss := unverifiedIssuer(tok)
	if iss == "" {
		return ""
	}
	inst, err := u.d.Store.Installation(ctx, iss)
	if err != nil {
		return ""
	}
	o, _ := hipchatOrigin(inst)
	return o
}

// wantsJSON reports whether the client asked for JSON (the pages' script
// does); everything else gets a small HTML page.
func wantsJSON(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := mime.ParseMediaType(strings.TrimSpace(part))
		switch mt {
		case "application/json":
			return true
		case "text/html":
			return false
		}
	}
	return false
}

// isJSON reports whether the request body is declared as JSON.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// fail answers r with err's status, as JSON or as a small page, and logs
// one line without the token (no error text of this code base carries
// one, and the query string is not logged).
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error, s *session) {
	code, msg := httperr.Refuse(u.d.Logger, "ui: request refused", w, r, err)
	w.Header().Set("Cache-Control", "no-store")
	if wantsJSON(r) {
		writeJSON(w, code, map[string]string{"error": msg})
		return
	}
	u.errorPage(w, r, code, msg, u.frameOrigin(r.Context(), r, s))
}

// writeJSON answers with v as JSON, under the CSP of a document that is
// not a page.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	httperr.WriteJSON(w, code, v)
}
