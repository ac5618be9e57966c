package httperr

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     int
		clientIs string
	}{
		{"status hint", addon.WithStatus(addon.Invalid, http.StatusTeapot, "short and %s", "stout"), http.StatusTeapot, "short and stout"},
		{"wrapped kind", fmt.Errorf("op: %w", addon.Wrap(addon.Unauthorized, errors.New("secret detail"), "invalid JWT")), 401, "invalid JWT"},
		{"busy", addon.Errorf(addon.Busy, "retry shortly"), 503, "retry shortly"},
		{"unknown kind", addon.Errorf("nonsense", "x"), 500, "internal error"},
		{"body too large", fmt.Errorf("decode: %w", &http.MaxBytesError{Limit: 1024}), 413, "request body over 1024 bytes"},
		{"invalid", addon.Errorf(addon.Invalid, "bad"), 400, "bad"},
		{"not found", addon.Errorf(addon.NotFound, "none"), 404, "none"},
		{"unauthorized", addon.Errorf(addon.Unauthorized, "who"), 401, "who"},
		{"forbidden", addon.Errorf(addon.Forbidden, "no"), 403, "no"},
		{"conflict", addon.Errorf(addon.Conflict, "later"), 409, "later"},
		{"too large", addon.Errorf(addon.TooLarge, "big"), 413, "big"},
		{"unavailable", addon.Wrap(addon.Unavailable, errors.New("dial tcp: refused"), "hipchat down"), 502, "hipchat down"},
		{"plain error hides its text", errors.New("open /var/lib/x: permission denied"), 500, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := Status(tt.err)
			if code != tt.code || msg != tt.clientIs {
				t.Errorf("Status = %d %q, want %d %q", code, msg, tt.code, tt.clientIs)
			}
		})
	}
}
