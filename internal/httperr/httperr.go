// Package httperr is the one place where hipconnect's errors become HTTP
// statuses: the error kinds of package addon, request bodies over their cap,
// and errors that carry their own status. It also holds the JSON body
// reading and writing the public handlers (httpapi, ui) share.
package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Error is an error with its HTTP status: Msg is what the client sees, Err
// what the log gets.
type Error struct {
	Code int
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with code and a formatted client message.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Status maps err to its HTTP status and the message safe to show the
// client: an *Error's own, 413 for a body over its cap, the status of an
// addon error kind, else 500 with a generic message.
func Status(err error) (int, string) {
	var he *Error
	if errors.As(err, &he) {
		return he.Code, he.Msg
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit)
	}
	code := map[string]int{
		addon.Invalid:      http.StatusBadRequest,
		addon.NotFound:     http.StatusNotFound,
		addon.Unauthorized: http.StatusUnauthorized,
		addon.Forbidden:    http.StatusForbidden,
		addon.Conflict:     http.StatusConflict,
		addon.TooLarge:     http.StatusRequestEntityTooLarge,
		addon.Unavailable:  http.StatusBadGateway,
	}[addon.KindOf(err)]
	if code == 0 {
		return http.StatusInternalServerError, "internal error"
	}
	return code, addon.MessageOf(err)
}

// DecodeJSON reads one JSON value from dec into v. A body over its cap
// keeps its *http.MaxBytesError (413 by Status); anything else malformed,
// or data after the value, is a 400.
func DecodeJSON(dec *json.Decoder, v any) error {
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &Error{Code: http.StatusBadRequest, Msg: "malformed JSON body", Err: err}
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, "malformed JSON body: trailing data")
	}
	return nil
}

// WriteJSON answers with code and v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Refuse logs one line saying why r is refused (at error level for a 5xx,
// else warning; path only, as query strings may carry a signed_request),
// asks for a JWT on a 401, and returns the status and client message to
// answer with.
func Refuse(log *slog.Logger, event string, w http.ResponseWriter, r *http.Request, err error) (int, string) {
	code, msg := Status(err)
	level := slog.LevelWarn
	if code >= 500 {
		level = slog.LevelError
	}
	log.LogAttrs(r.Context(), level, event,
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", code), slog.String("reason", err.Error()))
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `JWT realm="hipconnect"`)
	}
	return code, msg
}
