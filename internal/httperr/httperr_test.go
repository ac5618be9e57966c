package httperr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestStatus(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		code     int
		clientIs string
	}{
		{"own status", Errorf(http.StatusTeapot, "short and %s", "stout"), http.StatusTeapot, "short and stout"},
		{"wrapped own status", fmt.Errorf("op: %w", &Error{Code: 401, Msg: "invalid JWT", Err: errors.New("secret detail")}), 401, "invalid JWT"},
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

// TestDecodeBody checks that DecodeBody ends as DecodeJSON on a stream does
// (the value, the error and its status and message), whatever the body,
// the size given and how the reader hands its bytes over.
func TestDecodeBody(t *testing.T) {
	type payload struct {
		Event string `json:"event"`
		Item  struct {
			ID   int64    `json:"id"`
			Tags []string `json:"tags"`
		} `json:"item"`
	}
	valid := `{"event":"room_message","item":{"id":7,"tags":["a","b"]},"other":[1,{"x":null}]}`
	bodies := []string{
		valid, " \n" + valid + "\n ", valid + " x", valid + valid, valid + "]", valid + " }",
		"", " ", "{", valid[:40], `{"event":}`, `{"event":5}`, `{"item":{"id":"7"},"event":"e"}`,
		`[1,2]`, `null`, `"s"`, `12`, `{"event":"\ud800"}`, "\xef\xbb\xbf" + valid, valid + strings.Repeat(" ", 600) + "x",
	}
	errBroken := errors.New("connection reset")
	readers := map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"data with EOF": func(s string) io.Reader {
			return iotest.DataErrReader(strings.NewReader(s))
		},
		"cut short": func(s string) io.Reader {
			return io.MultiReader(strings.NewReader(s[:len(s)/2]), iotest.ErrReader(errBroken))
		},
		"broken after the body": func(s string) io.Reader {
			return io.MultiReader(strings.NewReader(s), iotest.ErrReader(errBroken))
		},
		"capped at 100": func(s string) io.Reader { return http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(s)), 100) },
		"capped at len": func(s string) io.Reader {
			return http.MaxBytesReader(nil, io.NopCloser(strings.NewReader(s)), int64(len(s)))
		},
	}
	for _, body := range bodies {
		for name, reader := range readers {
			for _, size := range []int64{-1, 0, int64(len(body)) / 2, int64(len(body)), int64(len(body)) + 10, 1 << 20} {
				var want, got payload
				wantErr := DecodeJSON(json.NewDecoder(reader(body)), &want)
				gotErr := DecodeBody(reader(body), size, &got)
				desc := fmt.Sprintf("body %.30q, %s, size %d", body, name, size)
				if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) {
					t.Errorf("%s: err = %v, want %v", desc, gotErr, wantErr)
					continue
				}
				if wantErr != nil {
					gotCode, gotMsg := Status(gotErr)
					wantCode, wantMsg := Status(wantErr)
					if gotCode != wantCode || gotMsg != wantMsg {
						t.Errorf("%s: status = %d %q, want %d %q", desc, gotCode, gotMsg, wantCode, wantMsg)
					}
					continue
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: decoded %+v, want %+v", desc, got, want)
				}
			}
		}
	}
}
