package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/hipconnect/hipconnect/internal/httperr"
)

// fail answers r with err's status and a JSON body {"error": msg}, and logs
// one line with the reason. Neither carries a token or secret: the error
// texts of this code base never include them.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := httperr.Status(err)
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
		return &httperr.Error{Code: http.StatusBadRequest, Msg: "malformed JSON body", Err: err}
	}
	if dec.More() {
		return httperr.Errorf(http.StatusBadRequest, "malformed JSON body: trailing data")
	}
	return nil
}
