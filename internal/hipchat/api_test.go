package hipchat_test

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

func TestSendNotification(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.token(t)
	n := addon.Notification{Message: "found <b>3</b> posts", MessageFormat: "html", Color: "green", Notify: true, From: "Blog Search"}
	if err := e.c.SendNotification(ctx, e.inst, tok, 100, n); err != nil {
		t.Fatalf("SendNotification: %v", err)
	}
	got := e.hc.Notifications()
	if len(got) != 1 {
		t.Fatalf("fake got %d notifications, want 1", len(got))
	}
	if got[0].Body != n || got[0].RoomID != 100 || got[0].OAuthID != e.inst.OAuthID {
		t.Errorf("recorded %+v, want body %+v in room 100 from %s", got[0], n, e.inst.OAuthID)
	}
	if c := countPath(e.hc, http.MethodPost, "/v2/room/100/notification"); c != 1 {
		t.Errorf("notification requests = %d, want 1", c)
	}

	t.Run("api url without trailing slash", func(t *testing.T) {
		inst := e.inst
		inst.APIURL = strings.TrimSuffix(inst.APIURL, "/")
		if err := e.c.SendNotification(ctx, inst, tok, 100, addon.Notification{Message: "x"}); err != nil {
			t.Fatalf("SendNotification: %v", err)
		}
	})
}

func TestSendNotificationErrors(t *testing.T) {
	ctx := context.Background()
	ok := addon.Notification{Message: "hello", MessageFormat: "text"}
	wantRateLimit := func(retry time.Duration, reset time.Time) func(t *testing.T, err error) {
		return func(t *testing.T, err error) {
			var rl *hipchat.RateLimitError
			if !errors.As(err, &rl) {
				t.Fatalf("err = %v, want a *RateLimitError", err)
			}
			if rl.RetryAfter != retry || !rl.Reset.Equal(reset) {
				t.Errorf("RetryAfter, Reset = %v, %v; want %v, %v", rl.RetryAfter, rl.Reset, retry, reset)
			}
		}
	}

	tests := []struct {
		name      string
		setup     func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault)
		n         addon.Notification
		wantKind  string
		wantMsg   string
		retryable bool
		noRequest bool // nothing may reach the fake's API
		check     func(t *testing.T, err error)
	}{
		{
			name: "401 revoked token",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				e.hc.RevokeTokens(e.inst.OAuthID)
				return e.inst, nil
			},
			n: ok, wantKind: addon.Unauthorized, wantMsg: "rejected the access token",
			check: func(t *testing.T, err error) {
				if !errors.Is(err, hipchat.ErrTokenRejected) {
					t.Errorf("err = %v, want ErrTokenRejected in its chain", err)
				}
			},
		},
		{
			name: "429 with Retry-After and both reset headers",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				return e.inst, func(w http.ResponseWriter, r *http.Request) bool {
					h := w.Header()
					h.Set("Retry-After", "30")
					h.Set("X-Ratelimit-Reset", strconv.FormatInt(t0.Add(60*time.Second).Unix(), 10))
					h.Set("X-FloodControl-Reset", strconv.FormatInt(t0.Add(90*time.Second).Unix(), 10))
					w.WriteHeader(http.StatusTooManyRequests)
					return true
				}
			},
			n: ok, wantKind: addon.Unavailable, retryable: true,
			check: wantRateLimit(30*time.Second, t0.Add(90*time.Second)),
		},
		{
			name: "429 with X-Ratelimit-Reset only",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				return e.inst, hipchattest.RateLimited(0, t0.Add(45*time.Second))
			},
			n: ok, wantKind: addon.Unavailable, retryable: true,
			check: wantRateLimit(45*time.Second, t0.Add(45*time.Second)),
		},
		{
			name: "429 flood control with Retry-After only",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				return e.inst, hipchattest.FloodControlled(20*time.Second, time.Time{})
			},
			n: ok, wantKind: addon.Unavailable, retryable: true,
			check: wantRateLimit(20*time.Second, t0.Add(20*time.Second)),
		},
		{
			name: "503",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				return e.inst, hipchattest.Unavailable()
			},
			n: ok, wantKind: addon.Unavailable, wantMsg: "503", retryable: true,
		},
		{
			name: "400 with hipchat's message",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				return e.inst, hipchattest.Status(http.StatusBadRequest, "Message contains a forbidden tag")
			},
			n: ok, wantKind: addon.Invalid, wantMsg: "Message contains a forbidden tag",
		},
		{
			name: "404 room",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				return e.inst, hipchattest.Status(http.StatusNotFound, "Room not found")
			},
			n: ok, wantKind: addon.Invalid, wantMsg: "Room not found",
		},
		{
			name: "connection refused",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				gone := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.4:0"})
				gone.Close()
				e.c.Allowed = allow("127.0.0.2", "127.0.0.4")
				inst := e.inst
				inst.APIURL = gone.URL() + "/v2/"
				return inst, nil
			},
			n: ok, wantKind: addon.Unavailable, wantMsg: "unreachable", retryable: true,
		},
		{
			name: "api host not allowed",
			setup: func(t *testing.T, e *env, tok string) (addon.Installation, hipchattest.Fault) {
				inst := e.inst
				inst.APIURL = "https://127.0.0.9:1/v2/"
				return inst, nil
			},
			n: ok, wantKind: addon.Forbidden, wantMsg: "not on the allowlist", noRequest: true,
		},
		{name: "empty message", n: addon.Notification{}, wantKind: addon.Invalid, wantMsg: "empty", noRequest: true},
		{name: "message over 10000 characters", n: addon.Notification{Message: strings.Repeat("é", 10001)}, wantKind: addon.Invalid, wantMsg: "10000", noRequest: true},
		{name: "color not allowed", n: addon.Notification{Message: "x", Color: "blue"}, wantKind: addon.Invalid, wantMsg: "color", noRequest: true},
		{name: "format not allowed", n: addon.Notification{Message: "x", MessageFormat: "markdown"}, wantKind: addon.Invalid, wantMsg: "message_format", noRequest: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			tok := e.token(t)
			inst := e.inst
			if tt.setup != nil {
				var f hipchattest.Fault
				inst, f = tt.setup(t, e, tok)
				if f != nil {
					e.hc.SetFault(hipchattest.OnPath(hipchattest.PathRoom, f))
				}
			}
			err := e.c.SendNotification(ctx, inst, tok, 100, tt.n)
			wantKind(t, err, tt.wantKind, tt.wantMsg)
			mustNotLeak(t, err, tok, inst.OAuthSecret)
			if got := hipchat.Retryable(err); got != tt.retryable {
				t.Errorf("Retryable = %v, want %v (err: %v)", got, tt.retryable, err)
			}
			if tt.noRequest {
				if c := countPath(e.hc, http.MethodPost, "/v2/room/100/notification"); c != 0 {
					t.Errorf("%d requests reached the fake, want none", c)
				}
			}
			if tt.check != nil {
				tt.check(t, err)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"unavailable", addon.Errorf(addon.Unavailable, "x"), true},
		{"rate limit", &hipchat.RateLimitError{}, true},
		{"invalid", addon.Errorf(addon.Invalid, "x"), false},
		{"token rejected", addon.Wrap(addon.Unauthorized, hipchat.ErrTokenRejected, "x"), false},
		{"canceled", context.Canceled, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hipchat.Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestUpdateGlance(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	tok := e.token(t)
	g := []hipchat.Glance{{Key: "blogsearch-glance", Content: hipchat.GlanceContent{
		Label:  hipchat.GlanceLabel{Type: "html", Value: "<b>3</b> searches"},
		Status: &hipchat.GlanceStatus{Type: "lozenge", Value: hipchat.GlanceStatusValue{Label: "NEW", Type: "success"}},
	}}}
	if err := e.c.UpdateGlance(ctx, e.inst, tok, 100, g); err != nil {
		t.Fatalf("UpdateGlance: %v", err)
	}
	got, err := e.hc.WaitGlanceUpdates(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].RoomID != 100 || len(got[0].Glances) != 1 || got[0].Glances[0].Key != "blogsearch-glance" ||
		got[0].Glances[0].Content.Label.Value != "<b>3</b> searches" || got[0].Glances[0].Content.Status.Value.Label != "NEW" {
		t.Errorf("recorded %+v", got[0])
	}

	err = e.c.UpdateGlance(ctx, e.inst, tok, 100, nil)
	wantKind(t, err, addon.Invalid, "no glance")

	e.hc.RevokeTokens(e.inst.OAuthID)
	err = e.c.UpdateGlance(ctx, e.inst, tok, 100, g)
	wantKind(t, err, addon.Unauthorized, "")
	if !errors.Is(err, hipchat.ErrTokenRejected) {
		t.Errorf("err = %v, want ErrTokenRejected", err)
	}
}
