// Package httperr is the one place where hipconnect's errors become HTTP
// statuses: the error kinds of package addon, request bodies over their cap,
// and errors that carry their own status.
package httperr

import (
	"errors"
	"fmt"
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
