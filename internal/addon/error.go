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
	Internal     = "internal"     // anything else
)

// Error is a domain error: Kind says what went wrong for the caller, Msg is
// safe to show a client, Err (if any) is for the log only.
type Error struct {
	Kind string
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

// Errorf returns an *Error of the given kind with a formatted message.
func Errorf(kind, format string, args ...any) *Error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error of the given kind with msg, keeping err for the log.
func Wrap(kind string, err error, msg string) *Error {
	return &Error{Kind: kind, Msg: msg, Err: err}
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
