package addon

import (
	"errors"
	"fmt"
)

// Error kinds. They map to HTTP statuses in exactly one place (httperr).
const (
	Invalid      = "invalid"      // malformed input
	NotFound     = "not_found"    // no such installation, token or job
	Unauthorized = "unauthorized" // missing or bad credentials
	Forbidden    = "forbidden"    // a host off the allowlist, a room not covered
	Conflict     = "conflict"     // state does not allow the operation
	TooLarge     = "too_large"    // body or response over its limit
	Unavailable  = "unavailable"  // a peer (HipChat, search backend) failed
	Busy         = "busy"         // hipconnect cannot take it now (store down, outbox full, too many at once); retry later
	Internal     = "internal"     // anything else
)

// Error is a domain error: Kind says what went wrong for the caller, Msg is
// safe to show a client (it never holds a secret or a token), Err (if any)
// is for the log only. Status is an HTTP status hint, set only where no
// kind says it (415 for a body that is not JSON, 421 for a request to an
// unknown host); zero otherwise.
type Error struct {
	Kind   string
	Msg    string
	Err    error
	Status int
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind with a formatted message.
func Errorf(kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of the given kind with msg, keeping err for the log.
func Wrap(kind string, err error, msg string) *Error {
	return &Error{Kind: kind, Msg: msg, Err: err}
}

// WithStatus returns an *Error of the given kind whose HTTP status is
// status rather than the kind's (see Error.Status).
func WithStatus(kind string, status int, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Status: status}
}

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// MessageOf returns the client-safe message of err: the Msg of the first
// *Error in its chain, or a generic text.
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return "internal error"
}

// IsNotFound reports whether err is of kind NotFound.
func IsNotFound(err error) bool { return err != nil && KindOf(err) == NotFound }

// Clip returns s cut to n bytes, marked with "...", when it is longer: for
// quoting client input in an error message or a log line.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
