package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
)

// binary is the hipconnect built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hipconnect-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "hipconnect")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build hipconnect: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Run(m) // stops the PostgreSQL of the cluster tests
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// freePort reserves a loopback port for a daemon listener.
func freePort(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a running hipconnect process.
type proc struct {
	t       *testing.T
	cfgPath string
	base    string // public URL
	ops     string // ops listener address
	cmd     *exec.Cmd
	log     *syncBuffer  // every process's stderr, appended
	env     []string     // added to the process's environment (PATH only otherwise)
	client  *http.Client // for do; nil: plain HTTP, redirects not followed
	exited  chan struct{}
}

// newDaemon writes a configuration from yaml (with {{listen}}, {{ops}} and
// {{dir}} filled in) and starts hipconnect on it, with PATH and env as its
// environment.
func newDaemon(t *testing.T, yaml string, env ...string) *proc {
	t.Helper()
	listen, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	yaml = strings.NewReplacer("{{listen}}", listen, "{{ops}}", ops).Replace(yaml)
	return startDaemon(t, t.TempDir(), yaml, "http://"+listen, ops, env...)
}

// startDaemon writes yaml (with {{dir}} filled in) to a hipconnect.yaml in
// dir and starts hipconnect on it with PATH and env as its environment;
// base is its public URL and ops its ops listener. It is stopped with
// SIGTERM when the test ends.
func startDaemon(t *testing.T, dir, yaml, base, ops string, env ...string) *proc {
	t.Helper()
	d := prepareDaemon(t, dir, yaml, base, ops, env...)
	d.start()
	return d
}

// prepareDaemon is startDaemon without the start: the caller starts it
// (startReady), and it is stopped when the test ends.
func prepareDaemon(t *testing.T, dir, yaml, base, ops string, env ...string) *proc {
	t.Helper()
	cfg := filepath.Join(dir, "hipconnect.yaml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(yaml, "{{dir}}", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &proc{t: t, cfgPath: cfg, base: base, ops: ops, log: &syncBuffer{}, env: env}
	t.Cleanup(func() {
		d.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("daemon log, %s", logTail(d.log.String(), 20))
		}
	})
	return d
}

// logTail returns the last n lines of a daemon log that are not at DEBUG
// level: short enough that a failure's own messages, printed before it,
// stay in view at the end of a CI run's output.
func logTail(log string, n int) string {
	var lines []string
	for l := range strings.Lines(log) {
		if !strings.Contains(l, "level=DEBUG") {
			lines = append(lines, l)
		}
	}
	from := max(len(lines)-n, 0)
	return fmt.Sprintf("last %d of %d lines above DEBUG:\n%s", len(lines)-from, len(lines), strings.Join(lines[from:], ""))
}

func (d *proc) start() {
	d.t.Helper()
	if err := d.startReady(); err != nil {
		d.t.Fatal(err)
	}
}

// startReady starts the process and waits until its /readyz answers 200;
// unlike start it may run in any goroutine.
func (d *proc) startReady() error {
	d.cmd = exec.Command(binary, "serve", "--config", d.cfgPath)
	d.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, d.env...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		return err
	}
	d.exited = make(chan struct{})
	go func() { _ = d.cmd.Wait(); close(d.exited) }()
	return d.waitReady(20 * time.Second)
}

// ready reports whether d's /readyz answers 200.
func (d *proc) ready() bool {
	resp, err := http.Get("http://" + d.ops + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// waitReady waits up to within for d to be ready; it fails at once if d
// exits.
func (d *proc) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for !d.ready() {
		select {
		case <-d.exited:
			return fmt.Errorf("hipconnect exited before ready:\n%s", d.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hipconnect not ready in time:\n%s", d.log.String())
		}
	}
	return nil
}

// stop sends sig and waits for the process to end.
func (d *proc) stop(sig syscall.Signal) {
	if d.cmd == nil || d.exited == nil {
		return // never started
	}
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("hipconnect did not stop on %v", sig)
	}
}

// post sends body to the add-on with an optional JWT header.
func (d *proc) do(method, path, jwt string, body []byte) (int, string) {
	d.t.Helper()
	req, err := http.NewRequest(method, d.base+path, bytes.NewReader(body))
	if err != nil {
		d.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if jwt != "" {
		req.Header.Set("Authorization", "JWT "+jwt)
	}
	client := d.client
	if client == nil {
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	resp, err := client.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if loc := resp.Header.Get("Location"); loc != "" {
		return resp.StatusCode, loc
	}
	return resp.StatusCode, string(b)
}

// blog is a fake search backend: /byTag.php?tag=N answers N hits, other
// tags answer hits with hostile titles.
func blog(t *testing.T, addr string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		tag := r.URL.Query().Get("tag")
		var n int
		title := "Article %d about " + tag
		if _, err := fmt.Sscanf(tag, "%d", &n); err != nil {
			n, title = 2, `<script>alert("%d")</script>`
		}
		hits := make([]map[string]string, n)
		for i := range hits {
			hits[i] = map[string]string{"title": fmt.Sprintf(title, i), "url": fmt.Sprintf("https://blog.example/%s/%d", tag, i)}
		}
		_ = json.NewEncoder(w).Encode(hits)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), &calls
}

// e2eDaemon is the part of the e2e configurations other than the commands:
// plain HTTP on loopback, the fake HipChat on 127.0.0.2 allowed with its CA.
const e2eDaemon = `
server:
  base_url: http://{{listen}}
  listen: {{listen}}
  ops_listen: {{ops}}
  shutdown_grace: 2s
tls:
  mode: "off"
storage:
  path: {{dir}}/hipconnect.db
hipchat:
  allowed_hosts: ["127.0.0.2"]
  ca_file: {{dir}}/hipchat-ca.pem
log:
  level: debug
`

const e2eConfig = e2eDaemon + `addon:
  key: com.example.blogsearch
  name: Blog Search
commands:
  - name: hascode
    search_url: "%s/byTag.php?tag={term}"
    max_results: 10
    show_all_url: "https://blog.example/tag/{term}"
    reply: api # through the REST API: the replies in the response have their own tests
  - name: echo
    kind: echo
    reply: api
`

// setup starts a fake HipChat on 127.0.0.2, a blog on 127.0.0.4 and the
// daemon allowing only those.
func setup(t *testing.T) (*proc, *hipchattest.Server) {
	t.Helper()
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	blogURL, _ := blog(t, "127.0.0.4:0")
	d := newDaemonWithCA(t, fmt.Sprintf(e2eConfig, blogURL), hc.CAPEM())
	return d, hc
}

func newDaemonWithCA(t *testing.T, yaml string, ca []byte, env ...string) *proc {
	t.Helper()
	// The CA file must exist before the daemon starts: write it where
	// {{dir}} will point by creating the daemon in two steps.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hipchat-ca.pem"), ca, 0o600); err != nil {
		t.Fatal(err)
	}
	return newDaemon(t, strings.ReplaceAll(yaml, "{{dir}}/hipchat-ca.pem", filepath.Join(dir, "hipchat-ca.pem")), env...)
}

func wait(t *testing.T, hc *hipchattest.Server, n int) []hipchattest.Notification {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	got, err := hc.WaitNotifications(ctx, n)
	if err != nil {
		t.Fatalf("waiting for %d notifications, have %d: %v", n, len(hc.Notifications()), err)
	}
	return got
}

// waitMessage waits until a notification with message msg has arrived.
func waitMessage(t *testing.T, hc *hipchattest.Server, msg string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for n := 1; ; n++ {
		got, err := hc.WaitNotifications(ctx, n)
		if err != nil {
			t.Fatalf("no notification %q: %v", msg, err)
		}
		if got[n-1].Body.Message == msg {
			return
		}
	}
}

func install(t *testing.T, d *proc, hc *hipchattest.Server, room int64) (id, secret string) {
	t.Helper()
	id, secret = hc.NewClient()
	if code, body := d.do("POST", "/installable", "", hc.InstallPayload(id, secret, room)); code != http.StatusOK {
		t.Fatalf("install = %d %s, want 200", code, body)
	}
	return id, secret
}

func TestEndToEnd(t *testing.T) {
	d, hc := setup(t)
	const room = 100

	// The descriptor.
	code, body := d.do("GET", "/atlassian-connect.json", "", nil)
	if code != 200 || !strings.Contains(body, `"callbackUrl": "`+d.base+`/installable"`) ||
		!strings.Contains(body, `"authentication": "jwt"`) {
		t.Fatalf("descriptor = %d\n%s", code, body)
	}

	// Install, and the greeting in the room.
	id, secret := install(t, d, hc, room)
	n := wait(t, hc, 1)
	if got, want := n[0].Body.Message, "The Blog Search add-on has been installed in this room"; got != want || n[0].RoomID != room {
		t.Fatalf("greeting = %q in room %d, want %q in %d", got, n[0].RoomID, want, room)
	}
	tok := hc.Signer(id, secret, room, time.Minute)
	command := func(msgID, text string) {
		t.Helper()
		name := strings.TrimPrefix(strings.Fields(text)[0], "/")
		if code, body := d.do("POST", "/webhook/"+name, tok(), hipchattest.RoomMessage(id, room, msgID, text)); code != http.StatusNoContent {
			t.Fatalf("webhook %q = %d %s, want 204", text, code, body)
		}
	}

	t.Run("three hits", func(t *testing.T) {
		command("m-3", "/hascode 3")
		msg := wait(t, hc, 2)[1].Body
		if c := strings.Count(msg.Message, "<li>"); c != 3 || strings.Contains(msg.Message, "Show all") || msg.MessageFormat != "html" {
			t.Errorf("reply has %d links:\n%s", c, msg.Message)
		}
	})
	t.Run("twenty-five hits", func(t *testing.T) {
		command("m-25", "/hascode 25")
		msg := wait(t, hc, 3)[2].Body.Message
		if c := strings.Count(msg, "<li>"); c != 10 || !strings.Contains(msg, "Show all 25 results") {
			t.Errorf("reply has %d links:\n%s", c, msg)
		}
	})
	t.Run("echo", func(t *testing.T) {
		command("m-echo", "/echo hello <b>world</b>")
		msg := wait(t, hc, 4)[3].Body
		if msg.Message != "hello <b>world</b>" || msg.MessageFormat != "text" {
			t.Errorf("echo reply = %+v", msg)
		}
	})
	t.Run("hostile titles escaped", func(t *testing.T) {
		command("m-xss", "/hascode <img src=x>")
		msg := wait(t, hc, 5)[4].Body.Message
		if strings.Contains(msg, "<script>") || strings.Contains(msg, "<img") || !strings.Contains(msg, "&lt;script&gt;") {
			t.Errorf("reply not escaped:\n%s", msg)
		}
	})
	t.Run("duplicate delivery runs once", func(t *testing.T) {
		command("m-dup", "/echo once")
		command("m-dup", "/echo once")
		command("m-after", "/echo after")
		got := wait(t, hc, 7)
		if got[5].Body.Message != "once" || got[6].Body.Message != "after" {
			t.Errorf("got %q then %q, want once then after", got[5].Body.Message, got[6].Body.Message)
		}
	})

	t.Run("pages and glance served by the daemon", func(t *testing.T) {
		get := func(path, origin string) *http.Response {
			t.Helper()
			req, _ := http.NewRequest("GET", d.base+path+"?signed_request="+url.QueryEscape(tok()), nil)
			if origin != "" {
				req.Header.Set("Origin", origin)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		for _, page := range []string{"/sidebar", "/dialog", "/configure"} {
			resp := get(page, "")
			csp := resp.Header.Get("Content-Security-Policy")
			if resp.StatusCode != 200 || !strings.Contains(csp, "frame-ancestors "+hc.URL()) {
				t.Errorf("%s = %d, CSP %q", page, resp.StatusCode, csp)
			}
		}
		if resp := get("/glance", hc.URL()); resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != hc.URL() {
			t.Errorf("glance from HipChat's origin = %d, ACAO %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		if resp := get("/glance", "https://evil.example"); resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("glance answered CORS for another origin")
		}
	})

	t.Run("bad JWTs refused", func(t *testing.T) {
		now := time.Now()
		sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
			s, err := jwt.NewWithClaims(method, claims).SignedString(key)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		claims := func(iss string, exp time.Time) jwt.MapClaims {
			return jwt.MapClaims{"iss": iss, "sub": "1", "iat": now.Unix(), "exp": exp.Unix(), "context": map[string]any{"room_id": room}}
		}
		rows := []struct{ name, tok string }{
			{"none", ""},
			{"forged", sign(jwt.SigningMethodHS256, []byte("not-the-secret"), claims(id, now.Add(time.Minute)))},
			{"expired", sign(jwt.SigningMethodHS256, []byte(secret), claims(id, now.Add(-10*time.Minute)))},
			{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(id, now.Add(time.Minute)))},
			{"HS512", sign(jwt.SigningMethodHS512, []byte(secret), claims(id, now.Add(time.Minute)))},
			{"unknown issuer", sign(jwt.SigningMethodHS256, []byte(secret), claims("someone-else", now.Add(time.Minute)))},
			{"garbage", "abc.def.ghi"},
		}
		before := len(hc.Notifications())
		for i, r := range rows {
			code, _ := d.do("POST", "/webhook/echo", r.tok, hipchattest.RoomMessage(id, room, fmt.Sprint("bad-", i), "/echo no"))
			if code != http.StatusUnauthorized {
				t.Errorf("%s: status %d, want 401", r.name, code)
			}
		}
		// A valid one after them proves the bad ones produced nothing.
		command("m-good", "/echo good")
		got := wait(t, hc, before+1)
		if len(got) != before+1 || got[before].Body.Message != "good" {
			t.Errorf("notifications after bad JWTs: %d, last %q", len(got), got[len(got)-1].Body.Message)
		}
	})

	t.Run("other room refused", func(t *testing.T) {
		code, _ := d.do("POST", "/webhook/echo", hc.JWT(id, secret, 0, time.Minute), hipchattest.RoomMessage(id, room+1, "other-room", "/echo x"))
		if code != http.StatusForbidden {
			t.Errorf("webhook for a room the installation does not cover = %d, want 403", code)
		}
		code, _ = d.do("POST", "/webhook/echo", tok(), hipchattest.RoomMessage(id, room+1, "other-room2", "/echo x"))
		if code != http.StatusUnauthorized {
			t.Errorf("webhook for another room than its JWT's = %d, want 401", code)
		}
	})

	t.Run("page JWTs do not make webhooks", func(t *testing.T) {
		// A sidebar page's JWT (any room member can read it in the
		// browser) with a body naming another oauth_client_id, and a JWT
		// used on a webhook once, then with another body: both 401, and
		// neither command runs.
		page := hc.JWT(id, secret, room, time.Minute)
		other := bytes.Replace(hipchattest.RoomMessage(id, room, "m-forged", "/echo forged"),
			[]byte(`"oauth_client_id":"`+id+`"`), []byte(`"oauth_client_id":"someone-else"`), 1)
		if code, _ := d.do("POST", "/webhook/echo", page, other); code != http.StatusUnauthorized {
			t.Errorf("page JWT with another oauth_client_id = %d, want 401", code)
		}
		once := hc.JWT(id, secret, room, time.Minute)
		if code, _ := d.do("POST", "/webhook/echo", once, hipchattest.RoomMessage(id, room, "m-once", "/echo once")); code != http.StatusNoContent {
			t.Fatalf("first use of a JWT = %d, want 204", code)
		}
		if code, _ := d.do("POST", "/webhook/echo", once, hipchattest.RoomMessage(id, room, "m-replayed", "/echo replayed")); code != http.StatusUnauthorized {
			t.Errorf("JWT replayed with another body = %d, want 401", code)
		}
		command("m-after-replay", "/echo after replay")
		waitMessage(t, hc, "after replay")
		for _, n := range hc.Notifications() {
			if m := n.Body.Message; m == "forged" || m == "replayed" {
				t.Errorf("refused webhook ran: %q posted", m)
			}
		}
	})

	t.Run("bad input", func(t *testing.T) {
		if code, _ := d.do("POST", "/webhook/echo", tok(), []byte(`{"event":`)); code != http.StatusBadRequest {
			t.Errorf("malformed JSON = %d, want 400", code)
		}
		big := append([]byte(`{"event":"room_message","x":"`), bytes.Repeat([]byte("a"), 2<<20)...)
		if code, _ := d.do("POST", "/webhook/echo", tok(), append(big, `"}`...)); code != http.StatusRequestEntityTooLarge {
			t.Errorf("oversize body = %d, want 413", code)
		}
		if code, _ := d.do("POST", "/installable", "", []byte(`{"oauthId": 5}`)); code != http.StatusBadRequest {
			t.Errorf("malformed install = %d, want 400", code)
		}
	})

	t.Run("forged re-install refused", func(t *testing.T) {
		code, _ := d.do("POST", "/installable", "", hc.InstallPayload(id, "attacker-secret", room))
		if code == http.StatusOK {
			t.Fatalf("forged re-install accepted")
		}
		// Even proven credentials cannot move an installation to another room.
		if code, _ := d.do("POST", "/installable", "", hc.InstallPayload(id, secret, 0)); code != http.StatusConflict {
			t.Errorf("re-install as a global installation = %d, want 409", code)
		}
		before := len(hc.Notifications())
		command("m-still", "/echo still mine")
		if got := wait(t, hc, before+1); got[before].Body.Message != "still mine" {
			t.Errorf("after forged re-install: %q", got[before].Body.Message)
		}
	})

	t.Run("revoked token refreshed once", func(t *testing.T) {
		before, requests := len(hc.Notifications()), hc.TokenRequests(id)
		hc.RevokeTokens(id)
		command("m-revoked", "/echo after revoke")
		if got := wait(t, hc, before+1); got[before].Body.Message != "after revoke" {
			t.Errorf("after revoke: %q", got[before].Body.Message)
		}
		if got := hc.TokenRequests(id) - requests; got != 1 {
			t.Errorf("token requests after revoke = %d, want exactly 1", got)
		}
	})

	t.Run("descriptor update re-reads capabilities", func(t *testing.T) {
		body := func(capsURL string) []byte {
			b, _ := json.Marshal(map[string]any{"oauthId": id, "capabilitiesUrl": capsURL, "roomId": room})
			return b
		}
		requests := hc.TokenRequests(id)
		if code, b := d.do("POST", "/installable/updated", "", body(hc.CapabilitiesURL())); code != http.StatusOK {
			t.Fatalf("update = %d %s", code, b)
		}
		if hc.TokenRequests(id) != requests+1 {
			t.Errorf("update did not prove the stored credentials")
		}
		if code, _ := d.do("POST", "/installable/updated", "", body("https://127.0.0.3:1/v2/capabilities")); code != http.StatusForbidden {
			t.Errorf("update pointing at another server = %d, want 403", code)
		}
	})

	t.Run("kill -9 keeps the installation", func(t *testing.T) {
		d.stop(syscall.SIGKILL)
		d.start()
		// A reply in flight at the kill may come again (at-least-once):
		// look for the new one, not at a position.
		command("m-restart", "/echo after restart")
		waitMessage(t, hc, "after restart")
	})

	t.Run("uninstall with DELETE", func(t *testing.T) {
		other, otherSecret := install(t, d, hc, 200)
		if code, _ := d.do("DELETE", "/installable/"+id, hc.JWT(other, otherSecret, 200, time.Minute), nil); code != http.StatusForbidden {
			t.Errorf("DELETE with another installation's JWT = %d, want 403", code)
		}
		// HipChat calls the callback while it still accepts the
		// credentials, and revokes them 2 s later: the request is
		// recorded, nothing is removed while they work, and the
		// installation goes at the first re-check after (10 s), across a
		// kill -9.
		requested := time.Now()
		if code, _ := d.do("DELETE", "/installable/"+id, tok(), nil); code != http.StatusAccepted {
			t.Fatalf("DELETE of a live installation = %d, want 202", code)
		}
		if out := installationsList(t, d); !strings.Contains(out, "requested") {
			t.Errorf("installations list shows no requested uninstall:\n%s", out)
		}
		if n := d.metric(t, "hipconnect_uninstalls_pending"); n != "1" {
			t.Errorf("hipconnect_uninstalls_pending = %q, want 1", n)
		}
		for time.Since(requested) < 2*time.Second {
			if code, _ := d.do("POST", "/webhook/echo", tok(), hipchattest.RoomMessage(id, room, "m-pending-"+time.Now().Format("150405.000"), "/echo still here")); code != http.StatusNoContent {
				t.Fatalf("webhook while the credentials work = %d, want 204", code)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The request is on disk: a kill -9 loses no re-check.
		d.stop(syscall.SIGKILL)
		d.start()
		hc.RemoveClient(id) // HipChat uninstalls
		deadline := requested.Add(15 * time.Second)
		for {
			code, _ := d.do("POST", "/webhook/echo", tok(), hipchattest.RoomMessage(id, room, "gone", "/echo x"))
			if code == http.StatusUnauthorized {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("installation still there %v after the request (webhook %d)", time.Since(requested), code)
			}
			time.Sleep(250 * time.Millisecond)
		}
		t.Logf("removed %v after the uninstall request, credentials revoked at 2 s", time.Since(requested).Round(100*time.Millisecond))
		if code, body := d.do("DELETE", "/installable/"+id, tok(), nil); code != http.StatusNoContent {
			t.Errorf("DELETE of an installation already gone = %d %s, want 204", code, body)
		}
	})

	t.Run("uninstall by redirect", func(t *testing.T) {
		other, otherSecret := install(t, d, hc, 300)
		q := url.Values{"redirect_url": {hc.URL() + "/addons"}, "installable_url": {hc.InstallableURL(other)}}
		// HipChat still accepts the credentials: recorded, not removed.
		if code, loc := d.do("GET", "/uninstalled?"+q.Encode(), "", nil); code != http.StatusSeeOther || loc != hc.URL()+"/addons" {
			t.Errorf("uninstall of a live installation = %d %s, want 303", code, loc)
		}
		if code, _ := d.do("POST", "/webhook/echo", hc.JWT(other, otherSecret, 300, time.Minute),
			hipchattest.RoomMessage(other, 300, "kept2", "/echo x")); code != http.StatusNoContent {
			t.Errorf("webhook of a live installation after the redirect = %d, want 204", code)
		}
		hc.RemoveClient(other)
		code, loc := d.do("GET", "/uninstalled?"+q.Encode(), "", nil)
		if code != http.StatusSeeOther || loc != hc.URL()+"/addons" {
			t.Errorf("uninstalled = %d %s, want 303 to %s/addons", code, loc, hc.URL())
		}
		if code, _ := d.do("POST", "/webhook/echo", hc.JWT(other, otherSecret, 300, time.Minute),
			hipchattest.RoomMessage(other, 300, "gone2", "/echo x")); code != http.StatusUnauthorized {
			t.Errorf("webhook after uninstall = %d, want 401", code)
		}
		evil := url.Values{"redirect_url": {"https://evil.example/"}, "installable_url": {hc.InstallableURL(other)}}
		if code, _ := d.do("GET", "/uninstalled?"+evil.Encode(), "", nil); code != http.StatusBadRequest {
			t.Errorf("redirect to a host off the allowlist = %d, want 400", code)
		}
	})

	t.Run("operator view", func(t *testing.T) {
		out := installationsList(t, d)
		if strings.Contains(out, id) || !strings.Contains(out, "200") {
			t.Errorf("installations list:\n%s", out)
		}
	})

	t.Run("secrets at rest", func(t *testing.T) {
		// A hot backup through the running daemon, then the raw files.
		backup := filepath.Join(t.TempDir(), "backup.db")
		if out, err := exec.Command(binary, "backup", "--config", d.cfgPath, backup).CombinedOutput(); err != nil {
			t.Fatalf("backup: %v\n%s", err, out)
		}
		other, otherSecret := install(t, d, hc, 400)
		tokens := hc.IssuedTokens(other)
		d.stop(syscall.SIGTERM)
		dbPath := filepath.Join(filepath.Dir(d.cfgPath), "hipconnect.db")
		backup2 := filepath.Join(t.TempDir(), "backup2.db")
		if out, err := exec.Command(binary, "backup", "--config", d.cfgPath, backup2).CombinedOutput(); err != nil {
			t.Fatalf("cold backup: %v\n%s", err, out)
		}
		for _, f := range []string{dbPath, backup, backup2} {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range append([]string{secret, otherSecret}, tokens...) {
				if bytes.Contains(raw, []byte(s)) {
					t.Errorf("%s contains a secret or token in clear", filepath.Base(f))
				}
			}
		}
		if len(tokens) == 0 {
			t.Error("no token issued to check for")
		}
		d.start()
	})

	d.stop(syscall.SIGTERM)
	logs := d.log.String()
	if strings.Contains(logs, secret) || strings.Contains(logs, tok()) || strings.Contains(logs, "eyJ") {
		t.Errorf("the log contains a secret or a JWT")
	}
}

// TestInstallRefused covers installs that must fail without storing or
// sending anything.
func TestInstallRefused(t *testing.T) {
	d, hc := setup(t)
	offList := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.3:0"}) // NOT on the allowlist

	t.Run("host off the allowlist", func(t *testing.T) {
		id, secret := offList.NewClient()
		code, _ := d.do("POST", "/installable", "", offList.InstallPayload(id, secret, 1))
		if code != http.StatusForbidden {
			t.Errorf("install from 127.0.0.3 = %d, want 403", code)
		}
		if n := len(offList.Requests()); n != 0 {
			t.Errorf("the daemon sent %d requests to a host off the allowlist", n)
		}
	})
	t.Run("poisoned tokenUrl", func(t *testing.T) {
		id, secret := hc.NewClient()
		hc.SetCapabilities(func(doc *hipchattest.CapabilitiesDoc) {
			doc.Capabilities.OAuth2Provider.TokenURL = offList.URL() + hipchattest.PathToken
		})
		defer hc.SetCapabilities(nil)
		code, _ := d.do("POST", "/installable", "", hc.InstallPayload(id, secret, 1))
		if code != http.StatusForbidden {
			t.Errorf("install with tokenUrl off the allowlist = %d, want 403", code)
		}
		if n := offList.TokenRequests(id); n != 0 || len(offList.Requests()) != 0 {
			t.Errorf("the secret was sent to a host off the allowlist")
		}
	})
	t.Run("tokenUrl on another allowed host", func(t *testing.T) {
		// The blog is allowed (it is a search backend), but no place for
		// an installation's credentials.
		id, secret := hc.NewClient()
		hc.SetCapabilities(func(doc *hipchattest.CapabilitiesDoc) {
			doc.Capabilities.OAuth2Provider.TokenURL = "http://127.0.0.4:1/token"
		})
		defer hc.SetCapabilities(nil)
		if code, _ := d.do("POST", "/installable", "", hc.InstallPayload(id, secret, 1)); code != http.StatusForbidden {
			t.Errorf("install with tokenUrl on the search host = %d, want 403", code)
		}
	})
	t.Run("links.self mismatch", func(t *testing.T) {
		id, secret := hc.NewClient()
		hc.SetCapabilities(func(doc *hipchattest.CapabilitiesDoc) { doc.Links.Self = hc.URL() + "/v2/other" })
		defer hc.SetCapabilities(nil)
		code, _ := d.do("POST", "/installable", "", hc.InstallPayload(id, secret, 1))
		if code == http.StatusOK {
			t.Errorf("install with a mismatched links.self accepted")
		}
		if hc.TokenRequests(id) != 0 {
			t.Errorf("token requested for a refused install")
		}
	})
	t.Run("bad credentials", func(t *testing.T) {
		id, _ := hc.NewClient()
		code, _ := d.do("POST", "/installable", "", hc.InstallPayload(id, "wrong", 1))
		if code != http.StatusUnauthorized {
			t.Errorf("install with bad credentials = %d, want 401", code)
		}
	})
	out, err := exec.Command(binary, "installations", "list", "--config", d.cfgPath).CombinedOutput()
	if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Errorf("installations after refused installs (want none):\n%s %v", out, err)
	}
}

// installationsList runs `hipconnect installations list` against d.
func installationsList(t *testing.T, d *proc) string {
	t.Helper()
	out, err := exec.Command(binary, "installations", "list", "--config", d.cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("installations list: %v\n%s", err, out)
	}
	return string(out)
}

// metrics returns the daemon's /metrics.
func (d *proc) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + d.ops + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metric returns the value of a sample line of the daemon's /metrics.
func (d *proc) metric(t *testing.T, sample string) string {
	t.Helper()
	for _, line := range strings.Split(d.metrics(t), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	return ""
}

// TestReloadOnSIGHUP changes a command's settings in the file and reloads:
// the next command uses them, the listeners stay; a broken file is refused
// and the running configuration kept.
func TestReloadOnSIGHUP(t *testing.T) {
	d, hc := setup(t)
	id, secret := install(t, d, hc, 100)
	wait(t, hc, 1)
	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	reloads := func() string { return d.metric(t, "hipconnect_config_last_reload_success_timestamp_seconds") }
	hup := func(content string) {
		t.Helper()
		if err := os.WriteFile(d.cfgPath, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = d.cmd.Process.Signal(syscall.SIGHUP)
	}
	before := reloads()
	time.Sleep(1100 * time.Millisecond) // the timestamp has second resolution
	hup(strings.Replace(string(cfg), "max_results: 10", "max_results: 2", 1))
	deadline := time.Now().Add(10 * time.Second)
	for reloads() == before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if reloads() == before {
		t.Fatal("no successful reload after SIGHUP")
	}
	tok := hc.Signer(id, secret, 100, time.Minute)
	if code, _ := d.do("POST", "/webhook/hascode", tok(), hipchattest.RoomMessage(id, 100, "r1", "/hascode 25")); code != http.StatusNoContent {
		t.Fatalf("webhook after reload = %d", code)
	}
	if msg := wait(t, hc, 2)[1].Body.Message; strings.Count(msg, "<li>") != 2 {
		t.Errorf("after reload with max_results 2:\n%s", msg)
	}

	hup("server: [this is not valid")
	deadline = time.Now().Add(10 * time.Second)
	for d.metric(t, "hipconnect_config_last_reload_successful") != "0" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := d.metric(t, "hipconnect_config_last_reload_successful"); got != "0" {
		t.Errorf("reload of a broken file: successful = %q, want 0", got)
	}
	if code, _ := d.do("POST", "/webhook/hascode", tok(), hipchattest.RoomMessage(id, 100, "r2", "/hascode 25")); code != http.StatusNoContent {
		t.Fatalf("webhook after refused reload = %d", code)
	}
	if msg := wait(t, hc, 3)[2].Body.Message; strings.Count(msg, "<li>") != 2 {
		t.Errorf("after a refused reload the running configuration must stay:\n%s", msg)
	}
	if !strings.Contains(d.log.String(), "configuration refused") {
		t.Errorf("the log does not say the reload was refused")
	}
}

// TestMetricsLint runs Prometheus' own linter over the live /metrics after
// some traffic. CI installs promtool (Debian's prometheus package); a
// developer machine without it skips, CI does not.
func TestMetricsLint(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not installed: CI must install Debian's prometheus package")
		}
		t.Skip("promtool not installed")
	}
	d, hc := setup(t)
	install(t, d, hc, 100)
	wait(t, hc, 1)
	// The delivery is counted just after HipChat answered it.
	for deadline := time.Now().Add(5 * time.Second); d.metric(t, `hipconnect_deliveries_total{outcome="delivered"}`) != "1" &&
		time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	body := d.metrics(t)
	for _, name := range []string{"hipconnect_build_info", "hipconnect_installations 1", "hipconnect_installs_total{result=\"ok\"} 1",
		"hipconnect_deliveries_total{outcome=\"delivered\"} 1", "go_goroutines", "process_resident_memory_bytes",
		"go_gc_gogc_percent 200"} { // serve's default without GOGC in the environment
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
