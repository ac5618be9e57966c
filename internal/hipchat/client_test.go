package hipchat_test

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

func TestCapabilities(t *testing.T) {
	ctx := context.Background()
	// other is a HipChat-like host the client is NOT allowed to reach.
	other := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.3:0"})

	tests := []struct {
		name     string
		edit     func(d *hipchattest.CapabilitiesDoc, e *env)
		fault    func(e *env) hipchattest.Fault
		url      func(e *env) string // default e.hc.CapabilitiesURL()
		wantKind string
		wantMsg  string
		check    func(t *testing.T, c hipchat.Capabilities, e *env)
	}{
		{
			name: "ok",
			check: func(t *testing.T, c hipchat.Capabilities, e *env) {
				base := e.hc.URL()
				want := hipchat.Capabilities{
					APIURL:           base + "/v2/",
					TokenURL:         base + "/v2/oauth/token",
					AuthorizationURL: base + "/users/authorize",
					Self:             base + "/v2/capabilities",
					Homepage:         base,
					Origin:           base,
					Scopes:           hipchattest.AllScopes(),
				}
				if !reflect.DeepEqual(c, want) {
					t.Errorf("capabilities = %+v\nwant %+v", c, want)
				}
			},
		},
		{
			name: "self mismatch",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) {
				d.Links.Self = other.CapabilitiesURL()
			},
			wantKind: addon.Invalid, wantMsg: "links.self does not match",
		},
		{
			name: "self differs only by a trailing slash",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) { d.Links.Self += "/" },
		},
		{
			name:     "self missing",
			edit:     func(d *hipchattest.CapabilitiesDoc, e *env) { d.Links.Self = "" },
			wantKind: addon.Invalid, wantMsg: "no links.self",
		},
		{
			name:     "missing tokenUrl",
			edit:     func(d *hipchattest.CapabilitiesDoc, e *env) { d.Capabilities.OAuth2Provider.TokenURL = "" },
			wantKind: addon.Invalid, wantMsg: "tokenUrl",
		},
		{
			name:     "missing oauth2Provider",
			edit:     func(d *hipchattest.CapabilitiesDoc, e *env) { d.Capabilities.OAuth2Provider = nil },
			wantKind: addon.Invalid, wantMsg: "tokenUrl",
		},
		{
			name: "tokenUrl on a host not allowed",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) {
				d.Capabilities.OAuth2Provider.TokenURL = other.URL() + "/v2/oauth/token"
			},
			wantKind: addon.Forbidden, wantMsg: "127.0.0.3",
		},
		{
			name: "tokenUrl not http",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) {
				d.Capabilities.OAuth2Provider.TokenURL = "ftp://127.0.0.2/token"
			},
			wantKind: addon.Invalid, wantMsg: "token url",
		},
		{
			name:     "missing api url",
			edit:     func(d *hipchattest.CapabilitiesDoc, e *env) { d.Capabilities.HipchatAPIProvider.URL = "" },
			wantKind: addon.Invalid, wantMsg: "hipchatApiProvider.url",
		},
		{
			name: "api url on a host not allowed",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) {
				d.Capabilities.HipchatAPIProvider.URL = other.URL() + "/v2/"
			},
			wantKind: addon.Forbidden, wantMsg: "api url",
		},
		{
			name: "older doc without authorizationUrl and availableScopes",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) {
				d.Capabilities.OAuth2Provider.AuthorizationURL = ""
				d.Capabilities.HipchatAPIProvider.AvailableScopes = nil
				d.Links.Homepage = ""
				d.Vendor = nil
			},
			check: func(t *testing.T, c hipchat.Capabilities, e *env) {
				if c.AuthorizationURL != "" || c.Scopes != nil || c.Homepage != "" {
					t.Errorf("optional fields = %q %v %q, want empty", c.AuthorizationURL, c.Scopes, c.Homepage)
				}
				if c.TokenURL == "" || c.APIURL == "" {
					t.Errorf("essential fields missing: %+v", c)
				}
			},
		},
		{
			name: "api url without trailing slash",
			edit: func(d *hipchattest.CapabilitiesDoc, e *env) {
				d.Capabilities.HipchatAPIProvider.URL = e.hc.URL() + "/v2"
			},
			check: func(t *testing.T, c hipchat.Capabilities, e *env) {
				if want := e.hc.URL() + "/v2/"; c.APIURL != want {
					t.Errorf("APIURL = %q, want %q", c.APIURL, want)
				}
			},
		},
		{
			name: "availableScopes as a list",
			fault: func(e *env) hipchattest.Fault {
				return hipchattest.OnPath(hipchattest.PathCapabilities, func(w http.ResponseWriter, r *http.Request) bool {
					base := e.hc.URL()
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write([]byte(`{"capabilities":{"hipchatApiProvider":{"url":"` + base + `/v2/",` +
						`"availableScopes":["view_room",{"id":"send_notification"}]},` +
						`"oauth2Provider":{"tokenUrl":"` + base + `/v2/oauth/token"}},` +
						`"links":{"self":"` + base + `/v2/capabilities"}}`))
					return true
				})
			},
			check: func(t *testing.T, c hipchat.Capabilities, e *env) {
				if want := []string{"send_notification", "view_room"}; !reflect.DeepEqual(c.Scopes, want) {
					t.Errorf("Scopes = %v, want %v", c.Scopes, want)
				}
			},
		},
		{
			name:     "server error",
			fault:    func(e *env) hipchattest.Fault { return hipchattest.Unavailable() },
			wantKind: addon.Unavailable, wantMsg: "503",
		},
		{
			name: "not json",
			fault: func(e *env) hipchattest.Fault {
				return func(w http.ResponseWriter, r *http.Request) bool {
					_, _ = w.Write([]byte("<html>login</html>"))
					return true
				}
			},
			wantKind: addon.Invalid, wantMsg: "not valid json",
		},
		{
			name: "body over 1 MiB",
			fault: func(e *env) hipchattest.Fault {
				return func(w http.ResponseWriter, r *http.Request) bool {
					_, _ = w.Write([]byte(`{"key":"` + strings.Repeat("a", 1<<20) + `"}`))
					return true
				}
			},
			wantKind: addon.TooLarge,
		},
		{
			name:     "capabilities url on a host not allowed",
			url:      func(e *env) string { return other.CapabilitiesURL() },
			wantKind: addon.Forbidden, wantMsg: "not on the allowlist",
		},
		{
			name: "redirect to a host not allowed",
			fault: func(e *env) hipchattest.Fault {
				return func(w http.ResponseWriter, r *http.Request) bool {
					http.Redirect(w, r, other.CapabilitiesURL(), http.StatusFound)
					return true
				}
			},
			wantKind: addon.Forbidden, wantMsg: "redirect",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			if tt.edit != nil {
				e.hc.SetCapabilities(func(d *hipchattest.CapabilitiesDoc) { tt.edit(d, e) })
			}
			if tt.fault != nil {
				e.hc.SetFault(tt.fault(e))
			}
			u := e.hc.CapabilitiesURL()
			if tt.url != nil {
				u = tt.url(e)
			}
			before := len(other.Requests())
			c, err := e.c.Capabilities(context.Background(), u)
			if got := len(other.Requests()) - before; got != 0 {
				t.Errorf("%d requests reached the host that is not allowed", got)
			}
			if tt.wantKind != "" {
				wantKind(t, err, tt.wantKind, tt.wantMsg)
				return
			}
			if err != nil {
				t.Fatalf("Capabilities: %v", err)
			}
			if tt.check != nil {
				tt.check(t, c, e)
			}
		})
	}

	t.Run("tokenUrl on a host not allowed is never contacted", func(t *testing.T) {
		e := newEnv(t)
		inst := e.inst
		inst.TokenURL = other.URL() + "/v2/oauth/token"
		_, err := e.c.RequestToken(ctx, inst, nil)
		wantKind(t, err, addon.Forbidden, "not on the allowlist")
		if n := len(other.Requests()); n != 0 {
			t.Errorf("other host got %d requests, want 0", n)
		}
	})

	t.Run("nil allowlist allows nothing", func(t *testing.T) {
		e := newEnv(t)
		c := &hipchat.Client{HTTP: e.hc.Client()}
		_, err := c.Capabilities(ctx, e.hc.CapabilitiesURL())
		wantKind(t, err, addon.Forbidden, "")
		if n := len(e.hc.Requests()); n != 0 {
			t.Errorf("fake got %d requests, want 0", n)
		}
	})
}

func TestRequestToken(t *testing.T) {
	ctx := context.Background()
	scopes := []string{"send_notification", "view_room"}

	t.Run("ok", func(t *testing.T) {
		e := newEnv(t)
		tok, err := e.c.RequestToken(ctx, e.inst, scopes)
		if err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		if tok.AccessToken == "" {
			t.Error("no access token")
		}
		if want := t0.Add(3599 * 1e9); !tok.ExpiresAt.Equal(want) {
			t.Errorf("ExpiresAt = %v, want %v (Now + expires_in)", tok.ExpiresAt, want)
		}
		if tok.Scope != "send_notification view_room" {
			t.Errorf("Scope = %q", tok.Scope)
		}
		if got := e.hc.TokenRequests(e.inst.OAuthID); got != 1 {
			t.Errorf("token requests = %d, want 1", got)
		}
	})

	t.Run("configured expires_in", func(t *testing.T) {
		e := newEnv(t)
		e.hc.SetTokenExpiresIn(120)
		tok, err := e.c.RequestToken(ctx, e.inst, scopes)
		if err != nil {
			t.Fatalf("RequestToken: %v", err)
		}
		if want := t0.Add(120 * 1e9); !tok.ExpiresAt.Equal(want) {
			t.Errorf("ExpiresAt = %v, want %v", tok.ExpiresAt, want)
		}
	})

	t.Run("401 wrong secret", func(t *testing.T) {
		e := newEnv(t)
		real := e.inst.OAuthSecret
		inst := e.inst
		inst.OAuthSecret = "wrong-secret-7f3a9c"
		_, err := e.c.RequestToken(ctx, inst, scopes)
		wantKind(t, err, addon.Unauthorized, "hipchat refused the credentials")
		mustNotLeak(t, err, inst.OAuthSecret, real)
		if hipchat.Retryable(err) {
			t.Error("refused credentials reported retryable")
		}
		if got := e.hc.TokenRequests(inst.OAuthID); got != 1 {
			t.Errorf("token requests = %d, want 1", got)
		}
	})

	t.Run("400 scope not allowed", func(t *testing.T) {
		e := newEnv(t)
		_, err := e.c.RequestToken(ctx, e.inst, []string{"send_notification", "rule_the_world"})
		wantKind(t, err, addon.Unauthorized, "hipchat refused the credentials")
		if !strings.Contains(err.Error(), "invalid_scope") {
			t.Errorf("error %q does not say why", err)
		}
	})

	t.Run("503 is retryable", func(t *testing.T) {
		e := newEnv(t)
		e.hc.SetFault(hipchattest.Unavailable())
		_, err := e.c.RequestToken(ctx, e.inst, scopes)
		wantKind(t, err, addon.Unavailable, "")
		if !hipchat.Retryable(err) {
			t.Error("503 not retryable")
		}
	})

	t.Run("error body echoing the secret", func(t *testing.T) {
		e := newEnv(t)
		e.hc.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
			_, secret, _ := r.BasicAuth()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"bad secret ` + secret + `"}`))
			return true
		})
		_, err := e.c.RequestToken(ctx, e.inst, scopes)
		wantKind(t, err, addon.Unauthorized, "")
		mustNotLeak(t, err, e.inst.OAuthSecret)
	})

	t.Run("answer without a token", func(t *testing.T) {
		e := newEnv(t)
		e.hc.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
			_, _ = w.Write([]byte(`{"expires_in":3599}`))
			return true
		})
		_, err := e.c.RequestToken(ctx, e.inst, scopes)
		wantKind(t, err, addon.Unavailable, "no access_token")
	})
}

func TestInstallableInfo(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	other := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.3:0"})

	id, err := e.c.InstallableInfo(ctx, e.hc.InstallableURL(e.inst.OAuthID))
	if err != nil || id != e.inst.OAuthID {
		t.Fatalf("InstallableInfo = %q, %v; want %q", id, err, e.inst.OAuthID)
	}
	_, err = e.c.InstallableInfo(ctx, e.hc.InstallableURL("no-such-client"))
	wantKind(t, err, addon.Unavailable, "404")

	otherID, _ := other.NewClient()
	_, err = e.c.InstallableInfo(ctx, other.InstallableURL(otherID))
	wantKind(t, err, addon.Forbidden, "")
	if n := len(other.Requests()); n != 0 {
		t.Errorf("host not allowed got %d requests", n)
	}
}
