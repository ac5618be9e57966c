package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// The tests of this file attack the running daemon from the network side
// (slow, oversize and misdirected requests) and check that it reaches out
// only to what the operator allowed, whatever its environment says.

// slowReadTimeout is server.read_timeout in TestInboundHardening, small so
// that slow clients are cut off quickly.
const slowReadTimeout = time.Second

// TestInboundHardening runs the daemon as an appliance would (files mode
// over HTTPS, plus the plain-HTTP redirect listener) and sends it what an
// attacker or a broken client would.
func TestInboundHardening(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c, k := ca.leaf(t, 1)
	writePair(t, certFile, keyFile, c, k)
	listen, redirect, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	base := "https://localhost:" + portOf(t, listen)
	const maxBody = 4096
	yaml := fmt.Sprintf(tlsConfig, fmt.Sprintf(`  base_url: %s
  listen: %s
  redirect_listen: %s
  ops_listen: %s
  read_timeout: %s
  max_body_bytes: %d`, base, listen, redirect, ops, slowReadTimeout, maxBody), fmt.Sprintf(`  mode: files
  cert_file: %s
  key_file: %s`, certFile, keyFile))
	startDaemon(t, dir, yaml, base, ops)
	client := httpsClient(ca.Pool(), listen)
	// dialTLS opens a raw TLS connection to the public listener.
	dialTLS := func(t *testing.T) net.Conn {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", listen,
			&tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}

	t.Run("slowloris", func(t *testing.T) {
		// Clients that send their header one byte at a time, on the public
		// (TLS) and the redirect (plain) listener at once: the server must
		// hang up on both within about the read timeout.
		plain, err := net.DialTimeout("tcp", redirect, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = plain.Close() })
		conns := map[string]net.Conn{"public": dialTLS(t), "redirect": plain}
		limit := 3 * slowReadTimeout
		var wg sync.WaitGroup
		for name, conn := range conns {
			wg.Go(func() {
				start := time.Now()
				stop := make(chan struct{})
				go trickle(conn, "GET /atlassian-connect.json HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", 250*time.Millisecond, stop)
				defer close(stop)
				_ = conn.SetReadDeadline(start.Add(limit))
				got, err := io.ReadAll(conn) // until the server hangs up
				took := time.Since(start)
				var ne net.Error
				switch {
				case errors.As(err, &ne) && ne.Timeout():
					t.Errorf("%s: connection still open after %v", name, took)
				case len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 4")):
					t.Errorf("%s: got %q in reply to an unfinished header, want a 4xx or nothing", name, got)
				default:
					t.Logf("%s: closed by the server after %v", name, took.Round(10*time.Millisecond))
				}
			})
		}
		wg.Wait()
	})

	t.Run("oversize body", func(t *testing.T) {
		body := `{"oauthId": "` + strings.Repeat("a", maxBody) + `"}`
		r, err := fetch(t, client, http.MethodPost, base+"/installable", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if r.code != http.StatusRequestEntityTooLarge {
			t.Errorf("POST %d bytes = %d %s, want 413", len(body), r.code, r.body)
		}
		checkSecurityHeaders(t, "413", r.header, true)
		// The same without Content-Length (chunked).
		r, err = fetch(t, client, http.MethodPost, base+"/installable", io.MultiReader(strings.NewReader(body)))
		if err != nil {
			t.Fatal(err)
		}
		if r.code != http.StatusRequestEntityTooLarge {
			t.Errorf("chunked POST = %d %s, want 413", r.code, r.body)
		}
	})

	t.Run("unknown host", func(t *testing.T) {
		for _, host := range []string{"evil.example", "127.0.0.1:" + portOf(t, listen), "localhost:1"} {
			req, err := http.NewRequest(http.MethodGet, base+"/atlassian-connect.json", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMisdirectedRequest {
				t.Errorf("Host %q = %d, want 421", host, resp.StatusCode)
			}
			checkSecurityHeaders(t, "421", resp.Header, true)
		}
	})

	t.Run("huge header block", func(t *testing.T) {
		// Over the 32 KiB limit (net/http allows 4 KiB more).
		conn := dialTLS(t)
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		req := "GET /atlassian-connect.json HTTP/1.1\r\nHost: localhost\r\n" +
			strings.Repeat("X-Filler: "+strings.Repeat("a", 1000)+"\r\n", 40) + "\r\n"
		go func() { _, _ = io.WriteString(conn, req) }() // the server may stop reading
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("reading the reply to a 40 KiB header block: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("40 KiB header block = %d, want 431", resp.StatusCode)
		}
	})

	t.Run("security headers", func(t *testing.T) {
		for _, path := range []string{"/atlassian-connect.json", "/", "/no-such-page", "/webhook/echo"} {
			r, err := fetch(t, client, http.MethodGet, base+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkSecurityHeaders(t, fmt.Sprintf("GET %s (%d)", path, r.code), r.header, true)
		}
	})
}

// trickle writes prefix, then an endless header value one byte every
// interval, until stop is closed or a write fails.
func trickle(conn net.Conn, prefix string, every time.Duration, stop <-chan struct{}) {
	if _, err := io.WriteString(conn, prefix); err != nil {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, err := conn.Write([]byte{'a'}); err != nil {
			return
		}
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func countingListen(t *testing.T, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return &countingListener{Listener: ln}
}

// installBody is HipChat's install POST for a capabilities URL.
func installBody(t *testing.T, oauthID, secret, capabilitiesURL string, room int64) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"oauthId": oauthID, "oauthSecret": secret,
		"capabilitiesUrl": capabilitiesURL, "roomId": room, "groupId": 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOutboundOnlyWhatIsAllowed installs from a host off the allowlist,
// directly and through a redirect (no connection may reach it), and from allowed hosts with proxy variables in
// the daemon's environment (they must be ignored: the operator's
// outbound.proxy is the only proxy).
func TestOutboundOnlyWhatIsAllowed(t *testing.T) {
	// Off the allowlist: an HTTPS server on 127.0.0.3 counting every
	// connection it accepts.
	off := countingListen(t, "127.0.0.3:0")
	offSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	_ = offSrv.Listener.Close()
	offSrv.Listener = off
	offSrv.StartTLS()
	t.Cleanup(offSrv.Close)

	// The proxy the environment names: it counts connections and answers
	// nothing.
	proxy := countingListen(t, "127.0.0.5:0")
	t.Cleanup(func() { _ = proxy.Close() })
	go func() {
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	proxyURL := "http://" + proxy.Addr().String()

	// A fake HipChat Server on an allowed host. Go's proxy variables never
	// apply to loopback addresses, and tests only talk to loopback, so this
	// shows the daemon works with them set; that they are ignored is shown
	// by internal/outbound's tests (the transport has no proxy function).
	allowed := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})

	yaml := fmt.Sprintf(e2eConfig, "http://127.0.0.4:9") // no blog: only /echo is used
	var env []string
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		env = append(env, k+"="+proxyURL)
	}
	d := newDaemonWithCA(t, yaml, allowed.CAPEM(), env...)

	t.Run("host off the allowlist", func(t *testing.T) {
		code, body := d.do("POST", "/installable", "", installBody(t, "off-1", "secret", offSrv.URL+hipchattest.PathCapabilities, 1))
		if code != http.StatusForbidden {
			t.Errorf("install from %s = %d %s, want 403", offSrv.URL, code, body)
		}
		if n := off.n.Load(); n != 0 {
			t.Errorf("the daemon opened %d connection(s) to a host off the allowlist", n)
		}
	})
	t.Run("redirect to a host off the allowlist", func(t *testing.T) {
		allowed.SetFault(hipchattest.OnPath(hipchattest.PathCapabilities, func(w http.ResponseWriter, r *http.Request) bool {
			http.Redirect(w, r, offSrv.URL+hipchattest.PathCapabilities, http.StatusFound)
			return true
		}))
		defer allowed.SetFault(nil)
		id, secret := allowed.NewClient()
		code, body := d.do("POST", "/installable", "", allowed.InstallPayload(id, secret, 1))
		if code != http.StatusForbidden {
			t.Errorf("install redirected to %s = %d %s, want 403", offSrv.URL, code, body)
		}
		if n := off.n.Load(); n != 0 {
			t.Errorf("the daemon followed a redirect to a host off the allowlist (%d connection(s))", n)
		}
		reqs := allowed.Requests()
		if len(reqs) == 0 || reqs[len(reqs)-1].Status != http.StatusFound {
			t.Errorf("the allowed fake did not answer the redirect: %+v", reqs)
		}
	})

	install := func(t *testing.T, hc *hipchattest.Server) {
		t.Helper()
		id, secret := hc.NewClient()
		code, body := d.do("POST", "/installable", "", hc.InstallPayload(id, secret, 100))
		if code == http.StatusOK {
			wait(t, hc, 1) // the greeting: a token and a notification, direct too
		}
		if n := proxy.n.Load(); n != 0 {
			t.Errorf("the daemon opened %d connection(s) to the proxy of its environment", n)
		}
		if code != http.StatusOK {
			t.Fatalf("install from %s = %d %s, want 200", hc.URL(), code, body)
		}
	}
	t.Run("install from 127.0.0.2 ignores proxy variables", func(t *testing.T) { install(t, allowed) })
}

// TestCheckPreflight runs the operator's preflight against a fake HipChat Server.
func TestCheckPreflight(t *testing.T) {
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	local := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.1:0"})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "hipchat-ca.pem")
	if err := os.WriteFile(caFile, append(hc.CAPEM(), local.CAPEM()...), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, allowedHosts, capsURL string) (string, error) {
		t.Helper()
		cfg := filepath.Join(t.TempDir(), "hipconnect.yaml")
		yaml := fmt.Sprintf(`
server:
  base_url: http://127.0.0.1:8080
  listen: 127.0.0.1:8080
  ops_listen: ""
tls:
  mode: "off"
storage:
  path: %s/hipconnect.db
hipchat:
  allowed_hosts: %s
  ca_file: %s
commands:
  - name: echo
    kind: echo
    reply: api
`, dir, allowedHosts, caFile)
		if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "check", "--config", cfg, "--hipchat", capsURL)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}

	t.Run("allowed HipChat", func(t *testing.T) {
		out, err := check(t, `["127.0.0.2"]`, hc.CapabilitiesURL())
		if err != nil {
			t.Fatalf("check: %v\n%s", err, out)
		}
		for _, want := range []string{
			`(?m)^ok +HipChat ` + regexp.QuoteMeta(hc.CapabilitiesURL()) + `: `,
			`(?m)^Connections this configuration needs:\n+DIRECTION +FROM +TO +PORT +PURPOSE\n`,
			`(?m)^out +this host +127\.0\.0\.2 +.*HipChat`,
			`(?m)^all checks passed$`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("check output does not match %s:\n%s", want, out)
			}
		}
		if strings.Contains(out, "FAIL") {
			t.Errorf("check reported a failure:\n%s", out)
		}
	})

	t.Run("name resolving to loopback", func(t *testing.T) {
		// "localhost" is allowed by name only: the daemon would refuse to
		// connect to the loopback address it resolves to, and check says so.
		capsURL := "https://localhost:" + portOf(t, strings.TrimPrefix(local.URL(), "https://")) + hipchattest.PathCapabilities
		out, err := check(t, `["localhost"]`, capsURL)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("check = %v, want a non-zero exit\n%s", err, out)
		}
		for _, want := range []string{
			`(?m)^FAIL +localhost resolves to .*127\.0\.0\.1`,
			`(?m)^FAIL +HipChat ` + regexp.QuoteMeta(capsURL) + `: .*not allowed`,
		} {
			if !regexp.MustCompile(want).MatchString(out) {
				t.Errorf("check output does not match %s:\n%s", want, out)
			}
		}
		if n := len(local.Requests()); n != 0 {
			t.Errorf("check sent %d request(s) to a name resolving to a refused address", n)
		}
	})
}
