// Package jwtauth is the one JWT middleware of the public listener: every
// request HipChat signs (webhooks, uninstall callbacks) and every page,
// glance and page API call passes through Require, which verifies the JWT
// (PROTOCOL.md section 5) and puts the Session it grants in the request's
// context for the handler to read with From.
package jwtauth

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/httperr"
)

// Verifier checks a JWT and returns the installation it was issued for; a
// *hipchat.Verifier has it. Its errors are of kind Unauthorized (bad or
// expired token, unknown issuer) or Forbidden (a room the installation
// does not cover).
type Verifier interface {
	Verify(ctx context.Context, token string) (addon.Installation, hipchat.Claims, error)
}

// Session is what an authenticated request acts for.
type Session struct {
	Inst   addon.Installation
	Claims hipchat.Claims
	// Room is the token's context.room_id, or the installation's room for
	// a room install whose token names none; 0 when neither does.
	Room  int64
	Token string // the verified JWT (pages hand it to their script)
}

// NeedRoom fails (Invalid) for a session that names no room.
func (s Session) NeedRoom() error {
	if s.Room <= 0 {
		return addon.Errorf(addon.Invalid, "open this from a room: the session names no room")
	}
	return nil
}

// Source says where a JWT may come from.
type Source int

const (
	// Anywhere takes what hipchat.ExtractToken takes: the Authorization
	// header or the signed_request query parameter (webhooks, pages and
	// the glance, which HipChat loads with signed_request).
	Anywhere Source = iota
	// HeaderOnly takes the Authorization header only (the pages' /api/
	// calls): a cross-site form or link cannot set it, which is what
	// protects these calls against cross-site requests.
	HeaderOnly
)

// Auth verifies JWTs with Verifier and logs refusals to Log.
type Auth struct {
	Verifier Verifier
	Log      *slog.Logger
}

// Require admits a request to h only with a valid JWT from src; h finds
// the Session with From. A request without one is refused through
// httperr.Write with page (nil: a JSON body): 401 for a missing, malformed,
// forged or expired token or an unknown issuer, 403 for a room the
// installation does not cover.
func (a Auth) Require(src Source, page httperr.Page, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := a.Authenticate(r, src)
		if err != nil {
			httperr.Write(a.Log, w, r, err, page)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	}
}

// Authenticate verifies the JWT r carries in src and returns its Session.
func (a Auth) Authenticate(r *http.Request, src Source) (Session, error) {
	if src == HeaderOnly {
		if r.URL.Query().Has("signed_request") {
			return Session{}, addon.Errorf(addon.Unauthorized, "send the JWT in the Authorization header, not as signed_request")
		}
		if r.Header.Get("Authorization") == "" {
			return Session{}, addon.Errorf(addon.Unauthorized, "no JWT in the Authorization header")
		}
	}
	tok, err := hipchat.ExtractToken(r)
	if err != nil {
		return Session{}, addon.Wrap(addon.Unauthorized, err, "missing or malformed JWT")
	}
	inst, claims, err := a.Verifier.Verify(r.Context(), tok)
	switch addon.KindOf(err) {
	case addon.Unauthorized:
		return Session{}, addon.Wrap(addon.Unauthorized, err, "invalid JWT")
	case addon.Forbidden:
		return Session{}, addon.Wrap(addon.Forbidden, err, "the room is not covered by the installation")
	}
	if err != nil {
		return Session{}, err
	}
	s := Session{Inst: inst, Claims: claims, Room: claims.RoomID, Token: tok}
	if s.Room == 0 && !inst.Global() {
		s.Room = inst.RoomID
	}
	return s, nil
}

type sessionKey struct{}

// From returns the Session Require put in ctx; ok is false outside a
// handler Require wraps.
func From(ctx context.Context) (s Session, ok bool) {
	s, ok = ctx.Value(sessionKey{}).(Session)
	return s, ok
}
