package ui

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/httperr"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
)

// session returns the session jwtauth verified for r; a handler mounted
// without jwtauth gets an Internal error.
func session(r *http.Request) (jwtauth.Session, error) {
	s, ok := jwtauth.From(r.Context())
	if !ok {
		return jwtauth.Session{}, addon.Errorf(addon.Internal, "ui: handler mounted without jwtauth")
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
func (u *UI) frameOrigin(ctx context.Context, r *http.Request) string {
	if s, ok := jwtauth.From(ctx); ok {
		o, _ := hipchatOrigin(s.Inst)
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
	inst, err := u.d.Installations.Installation(ctx, iss)
	if err != nil {
		return ""
	}
	o, _ := hipchatOrigin(inst)
	return o
}

// isJSON reports whether the request body is declared as JSON.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// fail refuses r with err through the one error adapter: JSON for the
// pages' script, else the error page.
func (u *UI) fail(w http.ResponseWriter, r *http.Request, err error) {
	w.Header().Set("Cache-Control", "no-store")
	httperr.Write(u.d.Logger, w, r, err, u.ErrorPage)
}
