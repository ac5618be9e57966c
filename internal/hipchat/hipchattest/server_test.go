package hipchattest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// do sends a request to the fake and returns the status and body.
func do(t *testing.T, s *hipchattest.Server, method, path string, header http.Header, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func form(user, pass string) http.Header {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r.Header
}

func getToken(t *testing.T, s *hipchattest.Server, id, secret, scope string) string {
	t.Helper()
	code, body := do(t, s, "POST", hipchattest.PathToken, form(id, secret),
		url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}.Encode())
	if code != 200 {
		t.Fatalf("token: %d %s", code, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		TokenType   string `json:"token_type"`
		Scope       string `json:"scope"`
	}
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatal(err)
	}
	if tr.AccessToken == "" || tr.ExpiresIn != 3599 || tr.TokenType != "bearer" || tr.Scope != scope {
		t.Fatalf("token answer %s", body)
	}
	return tr.AccessToken
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}
}

func TestTokenEndpoint(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	id, secret := s.NewClient()
	good := url.Values{"grant_type": {"client_credentials"}, "scope": {"send_notification"}}.Encode()
	tests := []struct {
		name   string
		method string
		header http.Header
		body   string
		want   int
		errKey string
	}{
		{"ok", "POST", form(id, secret), good, 200, ""},
		{"wrong secret", "POST", form(id, "nope"), good, 401, "invalid_client"},
		{"unknown client", "POST", form("who", secret), good, 401, "invalid_client"},
		{"no basic auth", "POST", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, good, 401, "invalid_client"},
		{"json body", "POST", http.Header{"Content-Type": {"application/json"}, "Authorization": form(id, secret)["Authorization"]}, `{}`, 400, "invalid_request"},
		{"other grant", "POST", form(id, secret), "grant_type=password", 400, "unsupported_grant_type"},
		{"scope not allowed", "POST", form(id, secret), "grant_type=client_credentials&scope=send_notification+rule", 400, "invalid_scope"},
		{"GET", "GET", form(id, secret), "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, s, tt.method, hipchattest.PathToken, tt.header, tt.body)
			if code != tt.want {
				t.Fatalf("status = %d (%s), want %d", code, body, tt.want)
			}
			if tt.errKey != "" && !strings.Contains(body, `"error":"`+tt.errKey+`"`) {
				t.Errorf("body = %s, want error %s", body, tt.errKey)
			}
		})
	}
	if got := s.TokenRequests(id); got != 5 {
		t.Errorf("TokenRequests = %d, want 5 (every POST naming the client)", got)
	}
}

func TestNotificationEndpoint(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	id, secret := s.NewClient()
	tok := getToken(t, s, id, secret, "send_notification")
	viewOnly := getToken(t, s, id, secret, "view_room")
	path := hipchattest.PathRoom + "100/notification"

	tests := []struct {
		name   string
		path   string
		header http.Header
		body   string
		want   int
	}{
		{"ok", path, bearer(tok), `{"message":"hi","message_format":"text","color":"red","notify":true}`, 204},
		{"room by name", hipchattest.PathRoom + "Engineering/notification", bearer(tok), `{"message":"hi"}`, 204},
		{"no token", path, http.Header{"Content-Type": {"application/json"}}, `{"message":"hi"}`, 401},
		{"unknown token", path, bearer("forged"), `{"message":"hi"}`, 401},
		{"token in the query", path + "?auth_token=" + tok, http.Header{"Content-Type": {"application/json"}}, `{"message":"hi"}`, 401},
		{"scope missing", path, bearer(viewOnly), `{"message":"hi"}`, 401},
		{"no message", path, bearer(tok), `{"color":"red"}`, 400},
		{"empty message", path, bearer(tok), `{"message":""}`, 400},
		{"message too long", path, bearer(tok), `{"message":"` + strings.Repeat("x", 10001) + `"}`, 400},
		{"bad color", path, bearer(tok), `{"message":"hi","color":"blue"}`, 400},
		{"bad format", path, bearer(tok), `{"message":"hi","message_format":"md"}`, 400},
		{"not json", path, http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"text/plain"}}, `hi`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, s, "POST", tt.path, tt.header, tt.body)
			if code != tt.want {
				t.Fatalf("status = %d (%s), want %d", code, body, tt.want)
			}
			if code >= 400 {
				var e struct {
					Error struct {
						Code    int    `json:"code"`
						Message string `json:"message"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != code || e.Error.Message == "" {
					t.Errorf("error body %s is not section 9's", body)
				}
			}
		})
	}
	got := s.Notifications()
	if len(got) != 2 || got[0].RoomID != 100 || got[0].OAuthID != id || got[0].Body.Color != "red" || !got[0].Body.Notify ||
		got[1].RoomID != 0 || got[1].Room != "Engineering" {
		t.Errorf("notifications = %+v", got)
	}

	s.RevokeTokens(id)
	if code, _ := do(t, s, "POST", path, bearer(tok), `{"message":"hi"}`); code != 401 {
		t.Errorf("revoked token: status %d, want 401", code)
	}
	fresh := getToken(t, s, id, secret, "send_notification")
	if code, _ := do(t, s, "POST", path, bearer(fresh), `{"message":"hi"}`); code != 204 {
		t.Errorf("token issued after revocation: status %d, want 204", code)
	}
}

func TestTokenExpiresOnTheFakesClock(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := hipchattest.New(t, hipchattest.Options{TokenExpiresIn: 60, Now: clock})
	id, secret := s.NewClient()
	code, body := do(t, s, "POST", hipchattest.PathToken, form(id, secret), "grant_type=client_credentials")
	if code != 200 || !strings.Contains(body, `"expires_in":60`) {
		t.Fatalf("token: %d %s", code, body)
	}
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal([]byte(body), &tr); err != nil {
		t.Fatal(err)
	}
	path := hipchattest.PathRoom + "1/notification"
	if code, _ := do(t, s, "POST", path, bearer(tr.AccessToken), `{"message":"hi"}`); code != 204 {
		t.Fatalf("fresh token: %d, want 204", code)
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	if code, _ := do(t, s, "POST", path, bearer(tr.AccessToken), `{"message":"hi"}`); code != 401 {
		t.Fatalf("expired token: %d, want 401", code)
	}
}

func TestWaitNotifications(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	id, secret := s.NewClient()
	tok := getToken(t, s, id, secret, "send_notification")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.WaitNotifications(ctx, 1); err == nil {
		t.Fatal("WaitNotifications returned before any notification")
	}

	done := make(chan []hipchattest.Notification)
	go func() {
		got, err := s.WaitNotifications(context.Background(), 2)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	for _, m := range []string{"one", "two"} {
		if code, body := do(t, s, "POST", hipchattest.PathRoom+"7/notification", bearer(tok), `{"message":"`+m+`"}`); code != 204 {
			t.Fatalf("notification: %d %s", code, body)
		}
	}
	select {
	case got := <-done:
		if len(got) != 2 || got[1].Body.Message != "two" {
			t.Errorf("got %+v", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitNotifications did not wake up")
	}
}

func TestWaitReturnsOnClose(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	errc := make(chan error)
	go func() {
		_, err := s.WaitNotifications(context.Background(), 1)
		errc <- err
	}()
	s.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("WaitNotifications after Close returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitNotifications did not return on Close")
	}
}

func TestCapabilitiesAndInstallable(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	if !strings.HasPrefix(s.URL(), "https://127.0.0.2:") {
		t.Fatalf("URL = %s", s.URL())
	}
	code, body := do(t, s, "GET", hipchattest.PathCapabilities, nil, "")
	var doc hipchattest.CapabilitiesDoc
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("capabilities: %d %s", code, body)
	}
	if doc.Links.Self != s.URL()+"/v2/capabilities" || doc.Capabilities.HipchatAPIProvider.URL != s.URL()+"/v2/" ||
		doc.Capabilities.OAuth2Provider.TokenURL != s.URL()+"/v2/oauth/token" {
		t.Errorf("capabilities = %s", body)
	}

	s.SetCapabilities(func(d *hipchattest.CapabilitiesDoc) { d.Capabilities.OAuth2Provider = nil })
	_, body = do(t, s, "GET", hipchattest.PathCapabilities, nil, "")
	if strings.Contains(body, "oauth2Provider") {
		t.Errorf("edited capabilities still have oauth2Provider: %s", body)
	}
	s.SetCapabilities(nil)
	_, body = do(t, s, "GET", hipchattest.PathCapabilities, nil, "")
	if !strings.Contains(body, "tokenUrl") {
		t.Errorf("reset capabilities lack tokenUrl: %s", body)
	}

	id, _ := s.NewClient()
	code, body = do(t, s, "GET", strings.TrimPrefix(s.InstallableURL(id), s.URL()), nil, "")
	if code != 200 || !strings.Contains(body, `"oauthId":"`+id+`"`) {
		t.Errorf("installable: %d %s", code, body)
	}
	if code, _ := do(t, s, "GET", hipchattest.PathInstallable+"nobody", nil, ""); code != 404 {
		t.Errorf("unknown installable: %d, want 404", code)
	}
}

func TestCertificateCoversLocalhost(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL(), "https://"))
	resp, err := s.Client().Get("https://localhost:" + port + hipchattest.PathCapabilities)
	if err != nil {
		t.Fatalf("GET via localhost: %v", err)
	}
	resp.Body.Close()
	if len(s.CAPEM()) == 0 || !strings.Contains(string(s.CAPEM()), "BEGIN CERTIFICATE") {
		t.Error("CAPEM is not a PEM certificate")
	}
	// A client without the CA refuses the fake.
	if _, err := http.Get(s.URL() + hipchattest.PathCapabilities); err == nil {
		t.Error("the default client trusted the fake's certificate")
	}
}

func TestFaultsAndRequestLog(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	reset := time.Now().Add(time.Minute).Truncate(time.Second)
	s.SetFault(hipchattest.Times(1, hipchattest.OnPath(hipchattest.PathCapabilities, hipchattest.RateLimited(30*time.Second, reset))))

	req, _ := http.NewRequest("GET", s.URL()+hipchattest.PathCapabilities, nil)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "30" ||
		resp.Header.Get("X-Ratelimit-Reset") != strconv.FormatInt(reset.Unix(), 10) {
		t.Errorf("first answer: %d %v", resp.StatusCode, resp.Header)
	}
	if code, _ := do(t, s, "GET", hipchattest.PathCapabilities, nil, ""); code != 200 {
		t.Errorf("second answer: %d, want 200 (Times(1))", code)
	}
	s.SetFault(hipchattest.Unavailable())
	if code, _ := do(t, s, "GET", "/anything", nil, ""); code != 503 {
		t.Errorf("Unavailable fault: %d", code)
	}

	log := s.Requests()
	if len(log) != 3 || log[0].Status != 429 || log[1].Status != 200 || log[2].Status != 503 ||
		log[0].Method != "GET" || log[2].Path != "/anything" || log[0].At.IsZero() {
		t.Errorf("request log = %+v", log)
	}
}

func TestPayloads(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	var global, room map[string]any
	if err := json.Unmarshal(s.InstallPayload("id", "sec", 0), &global); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(s.InstallPayload("id", "sec", 42), &room); err != nil {
		t.Fatal(err)
	}
	if _, ok := global["roomId"]; ok {
		t.Errorf("global install payload has a roomId: %v", global)
	}
	if room["roomId"] != float64(42) || room["groupId"] != float64(1) || room["oauthSecret"] != "sec" ||
		room["capabilitiesUrl"] != s.URL()+"/v2/capabilities" {
		t.Errorf("room install payload = %v", room)
	}

	var msg struct {
		Event string `json:"event"`
		Item  struct {
			Message struct {
				ID      string `json:"id"`
				Message string `json:"message"`
				Date    string `json:"date"`
			} `json:"message"`
			Room struct {
				ID int64 `json:"id"`
			} `json:"room"`
		} `json:"item"`
		OAuthClientID string `json:"oauth_client_id"`
	}
	if err := json.Unmarshal(hipchattest.RoomMessage("id", 7, "m-1", "/hascode go"), &msg); err != nil {
		t.Fatal(err)
	}
	if msg.Event != "room_message" || msg.Item.Message.ID != "m-1" || msg.Item.Message.Message != "/hascode go" ||
		msg.Item.Room.ID != 7 || msg.OAuthClientID != "id" {
		t.Errorf("room message = %+v", msg)
	}
	if _, err := time.Parse(time.RFC3339Nano, msg.Item.Message.Date); err != nil {
		t.Errorf("date %q: %v", msg.Item.Message.Date, err)
	}
	if tok := s.JWT("id", "sec", 7, time.Minute); strings.Count(tok, ".") != 2 {
		t.Errorf("JWT = %q", tok)
	}
}

func TestDropAnswersNothing(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	s.SetFault(hipchattest.Drop())
	http1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}}
	clients := []struct {
		name   string
		client *http.Client
	}{
		{"HTTP/2 (stream reset)", s.Client()},
		{"HTTP/1.1 (connection closed)", http1},
	}
	for _, c := range clients {
		resp, err := c.client.Get(s.URL() + hipchattest.PathCapabilities)
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: got %d, want no answer", c.name, resp.StatusCode)
		}
	}
	inproc := hipchattest.New(t, hipchattest.Options{NoListen: true})
	inproc.SetFault(hipchattest.Drop())
	if resp, err := inproc.Client().Get(inproc.URL() + hipchattest.PathCapabilities); err == nil {
		resp.Body.Close()
		t.Errorf("Transport: got %d, want an error", resp.StatusCode)
	}
	// The client may see the reset before the handler's log entry is
	// written: wait for it, bounded.
	logged := func() int { return len(s.Requests()) + len(inproc.Requests()) }
	for deadline := time.Now().Add(5 * time.Second); logged() < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := logged(); n != 3 {
		t.Errorf("%d requests logged, want 3", n)
	}
	for _, srv := range []*hipchattest.Server{s, inproc} {
		for _, r := range srv.Requests() {
			if r.Status != 0 {
				t.Errorf("request log: status %d, want 0 (dropped)", r.Status)
			}
		}
	}
}

func TestInProcessFake(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{NoListen: true})
	if got, want := s.URL(), "https://hipchattest.invalid"; got != want {
		t.Errorf("URL = %s, want %s", got, want)
	}
	id, secret := s.NewClient()
	tok := getToken(t, s, id, secret, "send_notification") // through Transport
	if code, body := do(t, s, "POST", hipchattest.PathRoom+"5/notification", bearer(tok), `{"message":"hi"}`); code != 204 {
		t.Fatalf("notification: %d %s", code, body)
	}
	if got := s.Notifications(); len(got) != 1 || got[0].RoomID != 5 || got[0].OAuthID != id {
		t.Errorf("notifications = %+v", got)
	}
}

func TestLimits(t *testing.T) {
	var mu sync.Mutex
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	now := t0
	at := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = t0.Add(d) }
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := hipchattest.New(t, hipchattest.Options{NoListen: true, Now: clock,
		Limits: hipchattest.Limits{RoomNotifications: 2, RoomPer: time.Minute, TokenRequests: 3, TokenPer: 5 * time.Minute}})
	id, secret := s.NewClient()
	tok := getToken(t, s, id, secret, "send_notification")
	post := func(path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL()+path, strings.NewReader(body))
		req.Header = bearer(tok)
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	note := func(room int) *http.Response {
		return post(fmt.Sprintf("%s%d/notification", hipchattest.PathRoom, room), `{"message":"hi"}`)
	}
	unix := func(d time.Duration) string { return strconv.FormatInt(t0.Add(d).Unix(), 10) }
	tests := []struct {
		name   string
		at     time.Duration
		send   func() *http.Response
		status int
		header map[string]string
	}{
		{"first", 0, func() *http.Response { return note(1) }, 204,
			map[string]string{"X-FloodControl-Remaining": "1", "X-Ratelimit-Remaining": "2"}},
		{"second to the room", 10 * time.Second, func() *http.Response { return note(1) }, 204,
			map[string]string{"X-FloodControl-Remaining": "0"}},
		{"third to the room", 20 * time.Second, func() *http.Response { return note(1) }, 429,
			// The first leaves the window at t0+60s: Reset rounds up, Retry-After too.
			map[string]string{"X-FloodControl-Limit": "2", "X-FloodControl-Remaining": "0",
				"X-FloodControl-Reset": unix(61 * time.Second), "Retry-After": "41"}},
		{"another room", 20 * time.Second, func() *http.Response { return note(2) }, 204,
			map[string]string{"X-Ratelimit-Remaining": "0"}},
		{"token used up", 30 * time.Second, func() *http.Response { return note(3) }, 429,
			map[string]string{"X-Ratelimit-Limit": "3", "X-Ratelimit-Reset": unix(5*time.Minute + time.Second), "Retry-After": "271"}},
		{"glance counts too", 40 * time.Second, func() *http.Response {
			return post(hipchattest.PathGlance+"1", `{"glance":[{"key":"k","content":{"label":{"type":"html","value":"x"}}}]}`)
		}, 429, map[string]string{"X-Ratelimit-Remaining": "0"}},
		{"the first call left the token's window", 5 * time.Minute, func() *http.Response { return note(1) }, 204, nil},
	}
	for _, tt := range tests {
		at(tt.at)
		resp := tt.send()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, resp.StatusCode, tt.status)
		}
		for k, v := range tt.header {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", tt.name, k, got, v)
			}
		}
	}
	if got := len(s.Notifications()); got != 4 {
		t.Errorf("%d notifications accepted, want 4", got)
	}
	s.SetLimits(hipchattest.Limits{})
	for range 5 {
		if resp := note(1); resp.StatusCode != 204 {
			t.Fatalf("without limits: %d", resp.StatusCode)
		}
	}
}
