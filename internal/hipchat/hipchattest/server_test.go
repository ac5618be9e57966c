package hipchattest_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// checkAPIError fails the test if a 4xx or 5xx answer's body is not the
// error body of PROTOCOL.md section 9 for that code.
func checkAPIError(t *testing.T, code int, body string) {
	t.Helper()
	if code < 400 {
		return
	}
	var e struct {
		Error struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code != code || e.Error.Message == "" ||
		e.Error.Type != http.StatusText(code) {
		t.Errorf("error body %s is not section 9's for %d", body, code)
	}
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
		// HipChat takes the token in the query too; Request records it.
		{"token in the query", path + "?auth_token=" + tok, http.Header{"Content-Type": {"application/json"}}, `{"message":"query"}`, 204},
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
			checkAPIError(t, code, body)
		})
	}
	got := s.Notifications()
	if len(got) != 3 || got[0].RoomID != 100 || got[0].OAuthID != id || got[0].Body.Color != "red" || !got[0].Body.Notify ||
		got[1].RoomID != 0 || got[1].Room != "Engineering" || got[2].Body.Message != "query" || got[2].OAuthID != id {
		t.Errorf("notifications = %+v", got)
	}
	for _, n := range got {
		if n.Via != hipchattest.ViaAPI || n.RoomToken != "" {
			t.Errorf("notification %+v: want Via api and no room token", n)
		}
	}
	var inQuery []string
	for _, r := range s.Requests() {
		if r.AuthTokenInQuery {
			inQuery = append(inQuery, r.Path)
		}
	}
	if len(inQuery) != 1 || inQuery[0] != path {
		t.Errorf("requests with auth_token in the query: %v, want just the one", inQuery)
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

func TestRoomTokens(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	s.AddRoom(1147, "Ops Room")
	s.AddRoom(2000, "Engineering")
	tok := s.AddRoomToken("Ops Room")
	roomURL := s.RoomURL(tok)
	if want := s.URL() + "/v2/room/Ops%20Room/notification?auth_token=" + tok; roomURL != want {
		t.Fatalf("RoomURL = %s, want %s", roomURL, want)
	}
	asGiven := strings.TrimPrefix(roomURL, s.URL()) // the URL an admin copied, as is
	jsonOnly := http.Header{"Content-Type": {"application/json"}}
	glance := `{"glance":[{"key":"k","content":{"label":{"type":"html","value":"x"}}}]}`
	tests := []struct {
		name, method, path string
		header             http.Header
		body               string
		want               int
	}{
		{"auth_token in the query, room by name", "POST", asGiven, jsonOnly, `{"message":"by query"}`, 204},
		{"Bearer, room by id", "POST", hipchattest.PathRoom + "1147/notification", bearer(tok), `{"message":"by header"}`, 204},
		{"another room by id", "POST", hipchattest.PathRoom + "2000/notification", bearer(tok), `{"message":"x"}`, 403},
		{"another room by name", "POST", hipchattest.PathRoom + "Engineering/notification?auth_token=" + tok, jsonOnly, `{"message":"x"}`, 403},
		{"a room the fake does not know", "POST", hipchattest.PathRoom + "Nowhere/notification", bearer(tok), `{"message":"x"}`, 403},
		{"room info without view_room", "GET", hipchattest.PathRoom + "1147", bearer(tok), "", 403},
		{"glance update", "POST", hipchattest.PathGlance + "1147", bearer(tok), glance, 403},
		{"unknown token", "POST", hipchattest.PathRoom + "1147/notification?auth_token=forged", jsonOnly, `{"message":"x"}`, 401},
		{"bad body", "POST", asGiven, jsonOnly, `{"message":""}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, s, tt.method, tt.path, tt.header, tt.body)
			if code != tt.want {
				t.Fatalf("status = %d (%s), want %d", code, body, tt.want)
			}
			checkAPIError(t, code, body)
		})
	}
	got := s.Notifications()
	if len(got) != 2 {
		t.Fatalf("notifications = %+v, want 2", got)
	}
	for i, room := range []string{"Ops Room", "1147"} {
		if n := got[i]; n.RoomID != 1147 || n.Room != room || n.OAuthID != "" || n.RoomToken != tok || n.Via != hipchattest.ViaAPI {
			t.Errorf("notification %d = %+v", i, n)
		}
	}
	if log := s.Requests(); !log[0].AuthTokenInQuery || log[1].AuthTokenInQuery {
		t.Errorf("AuthTokenInQuery of the first two requests: %v %v, want true false", log[0].AuthTokenInQuery, log[1].AuthTokenInQuery)
	}

	s.RevokeRoomToken(tok)
	if code, body := do(t, s, "POST", asGiven, jsonOnly, `{"message":"x"}`); code != 401 {
		t.Errorf("revoked token: %d %s, want 401", code, body)
	}
	if s.RoomURL(tok) != roomURL {
		t.Errorf("RoomURL of a revoked token changed")
	}
	other := s.AddRoomToken("Ops Room")
	if code, _ := do(t, s, "POST", hipchattest.PathRoom+"1147/notification", bearer(other), `{"message":"x"}`); code != 204 {
		t.Errorf("another token of the room after a revocation: %d, want 204", code)
	}
}

func TestRoomInfo(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	s.AddRoom(1147, "Ops Room")
	viewer := s.AddRoomToken("1147", "send_notification", "view_room")
	id, secret := s.NewClient()
	addonView := getToken(t, s, id, secret, "view_room")
	addonSend := getToken(t, s, id, secret, "send_notification")
	type room struct {
		ID    int64  `json:"id"`
		Name  string `json:"name"`
		Links struct {
			Self string `json:"self"`
		} `json:"links"`
	}
	tests := []struct {
		name, path string
		header     http.Header
		want       int
		room       room
	}{
		{"room token by name", hipchattest.PathRoom + "Ops%20Room?auth_token=" + viewer, nil, 200, room{ID: 1147, Name: "Ops Room"}},
		{"room token by id", hipchattest.PathRoom + "1147", bearer(viewer), 200, room{ID: 1147, Name: "Ops Room"}},
		{"room token, another room", hipchattest.PathRoom + "1148", bearer(viewer), 403, room{}},
		{"add-on token", hipchattest.PathRoom + "1147", bearer(addonView), 200, room{ID: 1147, Name: "Ops Room"}},
		{"a room AddRoom did not name", hipchattest.PathRoom + "5", bearer(addonView), 200, room{ID: 5, Name: "Room 5"}},
		{"by its default name", hipchattest.PathRoom + "Room%205", bearer(addonView), 200, room{ID: 5, Name: "Room 5"}},
		{"unknown name", hipchattest.PathRoom + "Nowhere", bearer(addonView), 404, room{}},
		{"add-on token without view_room", hipchattest.PathRoom + "1147", bearer(addonSend), 401, room{}},
		{"no token", hipchattest.PathRoom + "1147", nil, 401, room{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, s, "GET", tt.path, tt.header, "")
			if code != tt.want {
				t.Fatalf("status = %d (%s), want %d", code, body, tt.want)
			}
			checkAPIError(t, code, body)
			if code != 200 {
				return
			}
			var got room
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatal(err)
			}
			tt.room.Links.Self = fmt.Sprintf("%s/v2/room/%d", s.URL(), tt.room.ID)
			if got != tt.room {
				t.Errorf("room = %+v, want %+v", got, tt.room)
			}
		})
	}
}

func TestUserTokenRateLimit(t *testing.T) {
	var mu sync.Mutex
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 500_000_000, time.UTC)
	now := t0
	at := func(d time.Duration) { mu.Lock(); defer mu.Unlock(); now = t0.Add(d) }
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := hipchattest.New(t, hipchattest.Options{Now: clock, Limits: hipchattest.HipChatLimits})
	s.AddRoom(1, "One")
	tok := s.AddRoomToken("One")
	path := strings.TrimPrefix(s.RoomURL(tok), s.URL())
	post := func(path string, header http.Header) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL()+path, strings.NewReader(`{"message":"hi"}`))
		req.Header = header
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	jsonOnly := http.Header{"Content-Type": {"application/json"}}
	// 100 in 297 s: under the flood control (20 a minute), at the token's limit.
	for i := range 100 {
		at(time.Duration(i) * 3 * time.Second)
		resp := post(path, jsonOnly)
		if resp.StatusCode != 204 || resp.Header.Get("X-Ratelimit-Limit") != "100" ||
			resp.Header.Get("X-Ratelimit-Remaining") != strconv.Itoa(99-i) {
			t.Fatalf("call %d: %d, X-Ratelimit-Limit %q, Remaining %q", i+1, resp.StatusCode,
				resp.Header.Get("X-Ratelimit-Limit"), resp.Header.Get("X-Ratelimit-Remaining"))
		}
	}
	at(298 * time.Second)
	resp := post(path, jsonOnly)
	// The first call leaves the window at t0+300s: Reset rounds up to a second.
	wantReset := strconv.FormatInt(t0.Add(301*time.Second).Unix(), 10)
	if resp.StatusCode != 429 || resp.Header.Get("X-Ratelimit-Limit") != "100" || resp.Header.Get("X-Ratelimit-Remaining") != "0" ||
		resp.Header.Get("X-Ratelimit-Reset") != wantReset || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("call 101: %d %v, want 429 with Reset %s and Retry-After 3", resp.StatusCode, resp.Header, wantReset)
	}
	// An add-on token has its own, larger limit.
	id, secret := s.NewClient()
	addonTok := getToken(t, s, id, secret, "send_notification")
	if resp := post(hipchattest.PathRoom+"2/notification", bearer(addonTok)); resp.StatusCode != 204 ||
		resp.Header.Get("X-Ratelimit-Limit") != "500" {
		t.Errorf("add-on token: %d, X-Ratelimit-Limit %q, want 204 and 500", resp.StatusCode, resp.Header.Get("X-Ratelimit-Limit"))
	}
	at(300 * time.Second)
	if resp := post(path, jsonOnly); resp.StatusCode != 204 {
		t.Errorf("after the first call left the window: %d, want 204", resp.StatusCode)
	}
	if got := len(s.Notifications()); got != 102 {
		t.Errorf("%d notifications, want 102", got)
	}
}

func TestFloodControlCountsARoomOnce(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{Limits: hipchattest.Limits{RoomNotifications: 2, RoomPer: time.Hour}})
	s.AddRoom(7, "Seven")
	tok := s.AddRoomToken("Seven")
	id, secret := s.NewClient()
	addonTok := getToken(t, s, id, secret, "send_notification")
	steps := []struct {
		path   string
		header http.Header
		want   int
	}{
		{hipchattest.PathRoom + "Seven/notification", bearer(tok), 204},
		{hipchattest.PathRoom + "7/notification", bearer(addonTok), 204},
		{hipchattest.PathRoom + "Room%207/notification", bearer(addonTok), 204}, // another room: 7 has a name
		{hipchattest.PathRoom + "7/notification", bearer(tok), 429},
		{hipchattest.PathRoom + "Seven/notification", bearer(addonTok), 429},
	}
	for i, st := range steps {
		if code, body := do(t, s, "POST", st.path, st.header, `{"message":"hi"}`); code != st.want {
			t.Errorf("step %d (%s): %d %s, want %d", i, st.path, code, body, st.want)
		}
	}
}

// fakeAddon is a stand-in add-on for PostWebhook: it answers each path as
// its switch says, and keeps the requests it got.
type fakeAddon struct {
	mu   sync.Mutex
	got  []*http.Request
	body [][]byte
}

func (a *fakeAddon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.got = append(a.got, r)
	a.body = append(a.body, b)
	a.mu.Unlock()
	reply := func(ct, body string) {
		w.Header().Set("Content-Type", ct)
		_, _ = io.WriteString(w, body)
	}
	switch r.URL.Path {
	case "/reply":
		reply("application/json", `{"message":"found <b>3</b>","message_format":"html","color":"green","notify":true,"from":"Blog Search","card":{"style":"link"}}`)
	case "/reply-text":
		reply("text/plain", `{"message":"hi"}`)
	case "/reply-empty":
		w.WriteHeader(http.StatusOK)
	case "/reply-no-message":
		reply("application/json", `{"color":"red"}`)
	case "/reply-empty-message":
		reply("application/json", `{"message":""}`)
	case "/reply-long":
		reply("application/json", `{"message":"`+strings.Repeat("x", 10001)+`"}`)
	case "/reply-color":
		reply("application/json", `{"message":"hi","color":"blue"}`)
	case "/reply-format":
		reply("application/json", `{"message":"hi","message_format":"markdown"}`)
	case "/reply-notify":
		reply("application/json", `{"message":"hi","notify":"yes"}`)
	case "/reply-broken":
		reply("application/json", `{"message":`)
	case "/later":
		w.WriteHeader(http.StatusNoContent)
	case "/fail":
		http.Error(w, "boom", http.StatusInternalServerError)
	default:
		http.NotFound(w, r)
	}
}

func TestPostWebhook(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	a := &fakeAddon{}
	srv := httptest.NewServer(a)
	defer srv.Close()
	ctx := context.Background()
	id, secret := s.NewClient()
	hook := hipchattest.RoomMessage(id, 100, "m1", "/hascode java")
	jwt := s.JWT(id, secret, 100, time.Minute)
	res, err := s.PostWebhook(ctx, srv.URL+"/reply?x=1", http.Header{"Authorization": {"JWT " + jwt}}, hook)
	if err != nil {
		t.Fatal(err)
	}
	want := hipchattest.Notification{RoomID: 100, Room: "100", OAuthID: id, Via: hipchattest.ViaResponse}
	got := s.Notifications()
	if res.Status != 200 || res.Err != nil || res.Dropped || res.Reply == nil || len(got) != 1 {
		t.Fatalf("result %+v, notifications %+v", res, got)
	}
	n := got[0]
	if n.RoomID != want.RoomID || n.Room != want.Room || n.OAuthID != want.OAuthID || n.Via != want.Via || n.RoomToken != "" ||
		n.Body.Message != "found <b>3</b>" || n.Body.MessageFormat != "html" || n.Body.Color != "green" || !n.Body.Notify ||
		n.Body.From != "Blog Search" || !strings.Contains(string(n.Raw), `"card"`) || n.At.IsZero() {
		t.Errorf("recorded reply = %+v", n)
	}
	if res.Reply.Body != n.Body || res.Reply.Via != n.Via {
		t.Errorf("result's Reply %+v differs from the record %+v", *res.Reply, n)
	}
	a.mu.Lock()
	r, body := a.got[0], a.body[0]
	a.mu.Unlock()
	if r.Method != "POST" || r.Header.Get("Authorization") != "JWT "+jwt || r.Header.Get("Content-Type") != "application/json" ||
		r.URL.RawQuery != "x=1" || string(body) != string(hook) {
		t.Errorf("the add-on got %s %s %v %s", r.Method, r.URL, r.Header, body)
	}

	for _, path := range []string{"/reply-text", "/reply-empty", "/reply-no-message", "/reply-empty-message", "/reply-long",
		"/reply-color", "/reply-format", "/reply-notify", "/reply-broken"} {
		res, err := s.PostWebhook(ctx, srv.URL+path, nil, hook)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if res.Status != 200 || res.Err == nil || res.Reply != nil {
			t.Errorf("%s: result %+v, want a 200 with Err and no reply", path, res)
		} else {
			t.Logf("%s: %v", path, res.Err)
		}
	}
	for path, status := range map[string]int{"/later": 204, "/fail": 500, "/missing": 404} {
		res, err := s.PostWebhook(ctx, srv.URL+path, nil, hook)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if res.Status != status || res.Err != nil || res.Reply != nil {
			t.Errorf("%s: result %+v, want %d and nothing else", path, res, status)
		}
	}
	if got := s.Notifications(); len(got) != 1 {
		t.Errorf("%d notifications after the refused and empty answers, want still 1: %+v", len(got), got)
	}

	if _, err := s.PostWebhook(ctx, srv.URL+"/reply", nil, []byte(`{"event":"room_enter"}`)); err == nil {
		t.Error("a body that is not a room_message webhook was sent")
	}
	if _, err := s.PostWebhook(ctx, "http://127.0.0.1:1/", nil, hook); err == nil {
		t.Error("no error for an add-on that is not there")
	}
}

func TestPostWebhookHTTPSAndWait(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	srv := httptest.NewUnstartedServer(&fakeAddon{})
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake the default client fails
	srv.StartTLS()
	defer srv.Close()
	hook := hipchattest.RoomMessage("byo", 1147, "m1", "/hascode go")
	if _, err := s.PostWebhook(context.Background(), srv.URL+"/reply", nil, hook); err == nil {
		t.Fatal("the default client trusted httptest's certificate")
	}
	s.SetWebhookClient(srv.Client())
	done := make(chan []hipchattest.Notification, 1)
	go func() {
		got, _ := s.WaitNotifications(context.Background(), 1)
		done <- got
	}()
	if res, err := s.PostWebhook(context.Background(), srv.URL+"/reply", nil, hook); err != nil || res.Reply == nil {
		t.Fatalf("over https: %+v %v", res, err)
	}
	select {
	case got := <-done:
		if got[0].Via != hipchattest.ViaResponse || got[0].RoomID != 1147 || got[0].OAuthID != "byo" {
			t.Errorf("got %+v", got[0])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitNotifications did not wake up for a webhook reply")
	}
}

func TestWebhookRepliesCountAgainstFloodControl(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{Limits: hipchattest.Limits{RoomNotifications: 2, RoomPer: time.Hour}})
	srv := httptest.NewServer(&fakeAddon{})
	defer srv.Close()
	id, secret := s.NewClient()
	tok := getToken(t, s, id, secret, "send_notification")
	if code, _ := do(t, s, "POST", hipchattest.PathRoom+"9/notification", bearer(tok), `{"message":"api"}`); code != 204 {
		t.Fatalf("API post: %d", code)
	}
	hook := hipchattest.RoomMessage(id, 9, "m1", "/hascode go")
	var results []hipchattest.WebhookResult
	for range 2 {
		res, err := s.PostWebhook(context.Background(), srv.URL+"/reply", nil, hook)
		if err != nil {
			t.Fatal(err)
		}
		results = append(results, res)
	}
	if results[0].Dropped || !results[1].Dropped || results[1].Reply == nil || results[1].Err != nil {
		t.Errorf("results = %+v, want the second reply dropped", results)
	}
	if got, dropped := s.Notifications(), s.DroppedReplies(); len(got) != 2 || got[1].Via != hipchattest.ViaResponse ||
		len(dropped) != 1 || dropped[0].RoomID != 9 {
		t.Errorf("notifications %+v, dropped %+v", got, dropped)
	}
	if code, _ := do(t, s, "POST", hipchattest.PathRoom+"9/notification", bearer(tok), `{"message":"api"}`); code != 429 {
		t.Errorf("API post after the replies: %d, want 429", code)
	}
}

func TestBlockAPI(t *testing.T) {
	s := hipchattest.New(t, hipchattest.Options{})
	get := func(c *http.Client, path string) error {
		resp, err := c.Get(s.URL() + path)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	h2 := s.Client()
	h1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}}
	for _, c := range []*http.Client{h1, h2} { // a pooled connection each
		if err := get(c, hipchattest.PathCapabilities); err != nil {
			t.Fatal(err)
		}
	}
	before := len(s.Requests())
	s.BlockAPI(true)
	for name, c := range map[string]*http.Client{"HTTP/1 pooled": h1, "HTTP/2 pooled": h2} {
		if err := get(c, hipchattest.PathCapabilities); err == nil {
			t.Errorf("%s: a request got through", name)
		}
	}
	id, secret := s.NewClient()
	for _, path := range []string{hipchattest.PathCapabilities, hipchattest.PathRoom + "1", strings.TrimPrefix(s.InstallableURL(id), s.URL())} {
		if err := get(s.Client(), path); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("GET %s: %v, want connection refused", path, err)
		}
	}
	if _, err := s.Client().Post(s.URL()+hipchattest.PathToken, "application/x-www-form-urlencoded", strings.NewReader("grant_type=client_credentials")); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("token request: %v, want connection refused", err)
	}
	if !s.WaitIdle(5 * time.Second) {
		t.Error("connections still open while blocked")
	}
	if n := len(s.Requests()); n != before {
		t.Errorf("%d requests logged while blocked", n-before)
	}
	s.BlockAPI(false)
	if err := get(h2, hipchattest.PathCapabilities); err != nil {
		t.Errorf("after BlockAPI(false): %v", err)
	}
	getToken(t, s, id, secret, "send_notification")

	inproc := hipchattest.New(t, hipchattest.Options{NoListen: true})
	inproc.BlockAPI(true)
	if resp, err := inproc.Client().Get(inproc.URL() + hipchattest.PathCapabilities); !errors.Is(err, syscall.ECONNREFUSED) {
		if err == nil {
			resp.Body.Close()
		}
		t.Errorf("Transport while blocked: %v, want connection refused", err)
	}
	inproc.BlockAPI(false)
	if err := func() error {
		resp, err := inproc.Client().Get(inproc.URL() + hipchattest.PathCapabilities)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}(); err != nil {
		t.Errorf("Transport after BlockAPI(false): %v", err)
	}
}
