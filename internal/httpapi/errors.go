package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// httpError is an error with its HTTP status: Msg is what the client sees,
// Err what the log gets.
type httpError struct {
	Code int
	Msg  string
	Err  error
}

func (e *httpError) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *httpError) Unwrap() error { return e.Err }

func errorf(code int, format string, args ...any) *httpError {
	return &httpError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// statusOf maps an error to its HTTP status and client-safe message. It is
// the one place where domain error kinds become statuses.
func statusOf(err error) (int, string) {
	var he *httpError
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

// fail answers r with err's status and a JSON body {"error": msg}, and logs
// one line with the reason. Neither carries a token or secret: the error
// texts of this code base never include them.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := statusOf(err)
	level := slog.LevelWarn
	if code >= 500 {
		level = slog.LevelError
	}
	s.Logger.LogAttrs(r.Context(), level, "request refused",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", code), slog.String("reason", err.Error()))
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `JWT realm="hipconnect"`)
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads r's body (already capped by the middleware) into v.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &httpError{Code: http.StatusBadRequest, Msg: "malformed JSON body", Err: err}
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "malformed JSON body: trailing data")
	}
	return nil
}
