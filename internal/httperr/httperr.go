// Package httperr is the one place where hipconnect's errors become HTTP
// responses. The error vocabulary is package addon's: its kinds map to
// statuses here, an *addon.Error's Status hint overrides its kind, and a
// body over its cap (http.MaxBytesError) is 413. Write is the one adapter
// that logs a refusal and writes its response, for the API, the pages and
// the admin socket alike. The package also holds the JSON body reading
// and writing the handlers share.
package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"strings"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// kindStatus is the HTTP status of each error kind; a kind not listed
// (Internal, or none) is 500.
var kindStatus = map[string]int{
	addon.Invalid:      http.StatusBadRequest,
	addon.NotFound:     http.StatusNotFound,
	addon.Unauthorized: http.StatusUnauthorized,
	addon.Forbidden:    http.StatusForbidden,
	addon.Conflict:     http.StatusConflict,
	addon.TooLarge:     http.StatusRequestEntityTooLarge,
	addon.Unavailable:  http.StatusBadGateway,
	addon.Busy:         http.StatusServiceUnavailable,
}

// Status maps err to its HTTP status and the message safe to show the
// client: 413 for a body over its cap, the Status hint or else the kind's
// status of the first *addon.Error in err's chain, else 500 with a generic
// message.
func Status(err error) (int, string) {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", mbe.Limit)
	}
	var e *addon.Error
	if !errors.As(err, &e) {
		return http.StatusInternalServerError, "internal error"
	}
	if e.Status != 0 {
		return e.Status, e.Msg
	}
	if code, ok := kindStatus[e.Kind]; ok {
		return code, e.Msg
	}
	return http.StatusInternalServerError, "internal error"
}

// Page renders an error as an HTML document with code and the client
// message msg (the UI's pages); see Write.
type Page func(w http.ResponseWriter, r *http.Request, code int, msg string)

// Write refuses r with err: it logs one line saying why (at error level for
// a 5xx, else warning; method and path only, as query strings may carry a
// signed_request), asks for a JWT on a 401, and answers with err's status
// and a JSON body {"error": msg}, or, when page is not nil and the client
// did not ask for JSON, with what page renders. Neither the log line nor the
// response carries a token or secret: no error text of this code base
// includes one.
func Write(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error, page Page) {
	code, msg := Status(err)
	level := slog.LevelWarn
	if code >= 500 {
		level = slog.LevelError
	}
	log.LogAttrs(r.Context(), level, "request refused",
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", code), slog.String("reason", err.Error()))
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `JWT realm="hipconnect"`)
	}
	if page != nil && !WantsJSON(r) {
		page(w, r, code, msg)
		return
	}
	WriteJSON(w, code, map[string]string{"error": msg})
}

// WantsJSON reports whether the client asked for JSON before HTML in its
// Accept header (the pages' script does); a browser loading a page does
// not.
func WantsJSON(r *http.Request) bool {
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

// DecodeJSON reads one JSON value from dec into v. A body over its cap
// keeps its *http.MaxBytesError (413 by Status); anything else malformed,
// or data after the value, is Invalid (400).
func DecodeJSON(dec *json.Decoder, v any) error {
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return addon.Wrap(addon.Invalid, err, "malformed JSON body")
	}
	if dec.More() {
		return addon.Errorf(addon.Invalid, "malformed JSON body: trailing data")
	}
	return nil
}

// WriteJSON answers with code and v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
