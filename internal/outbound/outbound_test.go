package outbound

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/allowlist"
)

// countingListener counts accepted connections.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startCounting starts an httptest server on addr whose listener counts
// accepted connections.
func startCounting(t *testing.T, addr string, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s (loopback is not a /8 here?): %v", addr, err)
	}
	n := new(atomic.Int64)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = countingListener{Listener: ln, n: n}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, n
}

const limit = 1000 // MaxResponseBytes in the fixture

// fixture is an allowed server on 127.0.0.1, a TLS one on 127.0.0.1, and a
// "secret internal service" on 127.0.0.3 that no request may ever reach.
type fixture struct {
	allowed, tls, secret *httptest.Server
	secretConns          *atomic.Int64
	allowedPort          string
	secretPort           string
	allow                *allowlist.List
	lookupIP             func(ctx context.Context, host string) ([]netip.Addr, error)
	loopHits             atomic.Int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{}

	f.secret, f.secretConns = startCounting(t, "127.0.0.3:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret")
	}))
	// Registered after the server's Close, so it runs first: whatever a test
	// did, the secret service must not have seen a single connection.
	t.Cleanup(func() {
		if got := f.secretConns.Load(); got != 0 {
			t.Errorf("secret service accepted %d connections, want 0", got)
		}
	})
	f.secretPort = port(t, f.secret.URL)

	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("GET /to-ok", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ok", http.StatusFound)
	})
	mux.HandleFunc("GET /to-secret", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.secret.URL+"/", http.StatusFound)
	})
	mux.HandleFunc("GET /to-secret-name", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://secret.example:"+f.secretPort+"/", http.StatusFound)
	})
	mux.HandleFunc("GET /loop", func(w http.ResponseWriter, r *http.Request) {
		f.loopHits.Add(1)
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(5*limit))
		io.WriteString(w, strings.Repeat("x", 5*limit))
	})
	mux.HandleFunc("GET /big-stream", func(w http.ResponseWriter, r *http.Request) {
		for range 5 {
			io.WriteString(w, strings.Repeat("x", limit))
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
	})
	mux.HandleFunc("GET /limit-plus-one", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", limit))
		w.(http.Flusher).Flush()
		io.WriteString(w, "x")
	})
	mux.HandleFunc("GET /exact", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", limit/2))
		w.(http.Flusher).Flush()
		io.WriteString(w, strings.Repeat("x", limit/2))
	})
	mux.HandleFunc("GET /hang", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	f.allowed = httptest.NewServer(mux)
	t.Cleanup(f.allowed.Close)
	t.Cleanup(func() { close(release) }) // before Close: unblock /hang
	f.allowedPort = port(t, f.allowed.URL)

	tlsMux := http.NewServeMux()
	tlsMux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "ok %s", r.Proto)
	})
	tlsMux.HandleFunc("GET /to-http", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.allowed.URL+"/ok", http.StatusFound)
	})
	f.tls = httptest.NewUnstartedServer(tlsMux)
	f.tls.EnableHTTP2 = true
	f.tls.StartTLS()
	t.Cleanup(f.tls.Close)

	var err error
	f.allow, err = allowlist.Parse([]string{
		"127.0.0.1",
		"hipchat.example",      // resolves to 127.0.0.1, which is IP-allowed
		"secret.example",       // allowed by name, resolves to the secret 127.0.0.3
		"mixed.example",        // resolves to 127.0.0.1 and 127.0.0.3
		"*.corp.example",       // a.corp.example resolves to ::ffff:127.0.0.3
		"unresolvable.example", // no address at all
	})
	if err != nil {
		t.Fatal(err)
	}
	dns := map[string][]netip.Addr{
		"hipchat.example": {netip.MustParseAddr("127.0.0.1")},
		"secret.example":  {netip.MustParseAddr("127.0.0.3")},
		"mixed.example":   {netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.3")},
		"a.corp.example":  {netip.MustParseAddr("::ffff:127.0.0.3")},
	}
	f.lookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
		if ips, ok := dns[host]; ok {
			return ips, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return f
}

func (f *fixture) client(o Options) *http.Client {
	if o.Allow == nil {
		o.Allow = f.allow
	}
	if o.LookupIP == nil {
		o.LookupIP = f.lookupIP
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = limit
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	c := New(o)
	return c
}

func port(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Port()
}

// get fetches rawURL and returns the body, or the first error.
func get(c *http.Client, rawURL string) (string, error) {
	resp, err := c.Get(rawURL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

func TestClient(t *testing.T) {
	f := newFixture(t)
	c := f.client(Options{})
	ap, sp := f.allowedPort, f.secretPort

	tests := []struct {
		name    string
		url     string
		want    string // body, when wantErr is nil
		wantErr error
	}{
		{"allowed ip", "http://127.0.0.1:" + ap + "/ok", "ok", nil},
		{"allowed ip mapped", "http://[::ffff:7f00:1]:" + ap + "/ok", "ok", nil},
		{"allowed name resolving to allowed ip", "http://hipchat.example:" + ap + "/ok", "ok", nil},
		{"host not allowed", "http://evil.example:" + ap + "/ok", "", ErrForbiddenHost},
		{"localhost not allowed", "http://localhost:" + ap + "/ok", "", ErrForbiddenHost},
		{"other loopback ip of allowed server", "http://127.0.0.2:" + ap + "/ok", "", ErrForbiddenHost},
		{"secret ip", "http://127.0.0.3:" + sp + "/", "", ErrForbiddenHost},
		{"secret ip trailing dot", "http://127.0.0.3.:" + sp + "/", "", ErrForbiddenHost},
		{"secret hex", "http://0x7f.0.0.3:" + sp + "/", "", ErrForbiddenHost},
		{"secret hex short", "http://0x7f.3:" + sp + "/", "", ErrForbiddenHost},
		{"secret decimal", "http://2130706435:" + sp + "/", "", ErrForbiddenHost},
		{"secret short", "http://127.3:" + sp + "/", "", ErrForbiddenHost},
		{"secret octal", "http://0177.0.0.3:" + sp + "/", "", ErrForbiddenHost},
		{"secret ipv4-mapped", "http://[::ffff:7f00:3]:" + sp + "/", "", ErrForbiddenHost},
		{"secret ipv4-mapped dotted", "http://[::ffff:127.0.0.3]:" + sp + "/", "", ErrForbiddenHost},
		{"userinfo trick", "http://127.0.0.1:" + ap + "@127.0.0.3:" + sp + "/", "", ErrForbiddenHost},
		{"userinfo on allowed host", "http://user:pass@127.0.0.1:" + ap + "/ok", "", ErrForbiddenHost},
		{"allowed name resolving to secret", "http://secret.example:" + sp + "/", "", ErrForbiddenHost},
		{"allowed name resolving to allowed and secret", "http://mixed.example:" + sp + "/", "", ErrForbiddenHost},
		{"wildcard name resolving to mapped secret", "http://a.corp.example:" + sp + "/", "", ErrForbiddenHost},
		{"scheme not allowed", "ftp://127.0.0.1:" + ap + "/ok", "", ErrForbiddenHost},
		{"redirect to allowed path", "http://127.0.0.1:" + ap + "/to-ok", "ok", nil},
		{"redirect to secret ip", "http://127.0.0.1:" + ap + "/to-secret", "", ErrForbiddenHost},
		{"redirect to name resolving to secret", "http://127.0.0.1:" + ap + "/to-secret-name", "", ErrForbiddenHost},
		{"redirect loop", "http://127.0.0.1:" + ap + "/loop", "", ErrTooManyRedirects},
		{"over limit with content-length", "http://127.0.0.1:" + ap + "/big", "", ErrResponseTooLarge},
		{"over limit streamed", "http://127.0.0.1:" + ap + "/big-stream", "", ErrResponseTooLarge},
		{"limit plus one byte", "http://127.0.0.1:" + ap + "/limit-plus-one", "", ErrResponseTooLarge},
		{"exactly at limit", "http://127.0.0.1:" + ap + "/exact", strings.Repeat("x", limit), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(c, tt.url)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("GET %s: %v", tt.url, err)
				}
				if got != tt.want {
					t.Errorf("GET %s = %.40q (%d bytes), want %.40q (%d bytes)", tt.url, got, len(got), tt.want, len(tt.want))
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("GET %s: error = %v, want %v", tt.url, err, tt.wantErr)
			}
			var oe *Error
			if !errors.As(err, &oe) {
				t.Errorf("GET %s: error %v is not an *Error", tt.url, err)
			}
		})
	}
}

func TestUnresolvableIsNotForbidden(t *testing.T) {
	f := newFixture(t)
	_, err := get(f.client(Options{}), "http://unresolvable.example:"+f.allowedPort+"/ok")
	if err == nil || errors.Is(err, ErrForbiddenHost) {
		t.Fatalf("error = %v, want a resolution error that is not ErrForbiddenHost", err)
	}
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) {
		t.Errorf("error = %v, want a *net.DNSError inside", err)
	}
}

func TestRedirectLimits(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name         string
		maxRedirects int
		wantStatus   int // when no error
		wantErr      error
		wantHits     int64
	}{
		{"default five", 0, 0, ErrTooManyRedirects, 6},
		{"two", 2, 0, ErrTooManyRedirects, 3},
		{"negative follows none", -1, http.StatusFound, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.loopHits.Store(0)
			c := f.client(Options{MaxRedirects: tt.maxRedirects})
			resp, err := c.Get(f.allowed.URL + "/loop")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.wantStatus {
					t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
				}
			}
			if got := f.loopHits.Load(); got != tt.wantHits {
				t.Errorf("server saw %d requests, want %d", got, tt.wantHits)
			}
		})
	}
}

func TestHTTPS(t *testing.T) {
	f := newFixture(t)
	pool := x509.NewCertPool()
	pool.AddCert(f.tls.Certificate())

	tests := []struct {
		name    string
		roots   *x509.CertPool
		path    string
		want    string
		wantErr error // nil with wantAnyErr: some error
		anyErr  bool
	}{
		{"trusted root, http/2", pool, "/ok", "ok HTTP/2.0", nil, false},
		{"downgrade redirect refused", pool, "/to-http", "", ErrInsecureRedirect, false},
		{"system roots do not trust the test CA", nil, "/ok", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.client(Options{RootCAs: tt.roots})
			got, err := get(c, f.tls.URL+tt.path)
			switch {
			case tt.anyErr:
				if err == nil {
					t.Fatalf("GET %s: got %q, want an error", tt.path, got)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("GET %s: error = %v, want %v", tt.path, err, tt.wantErr)
				}
			case err != nil:
				t.Fatalf("GET %s: %v", tt.path, err)
			case got != tt.want:
				t.Errorf("GET %s = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func TestProxyEnvironmentIgnored(t *testing.T) {
	f := newFixture(t)
	proxy, proxyConns := startCounting(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "via proxy")
	}))
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"} {
		t.Setenv(k, proxy.URL)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	// By name: net/http never proxies loopback IP literals, so only a name
	// shows that the environment is ignored.
	c := f.client(Options{})
	got, err := get(c, "http://hipchat.example:"+f.allowedPort+"/ok")
	if err != nil {
		t.Fatal(err)
	}
	if got != "ok" {
		t.Errorf("body = %q, want %q", got, "ok")
	}
	if n := proxyConns.Load(); n != 0 {
		t.Errorf("proxy from the environment accepted %d connections, want 0", n)
	}
	// http.ProxyFromEnvironment reads the environment once per process, so
	// the request above alone could pass by luck of test order: check that
	// the transport has no proxy function at all.
	if tr := c.Transport.(*guard).next; tr.Proxy != nil {
		t.Error("transport has a Proxy function, want nil without Options.Proxy")
	}
}

func TestExplicitProxy(t *testing.T) {
	f := newFixture(t)
	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxied.Add(1)
		fmt.Fprintf(w, "via proxy %s", r.URL)
	}))
	t.Cleanup(proxy.Close)
	proxyURL, err := url.Parse(proxy.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := f.client(Options{
		Proxy: proxyURL,
		LookupIP: func(ctx context.Context, host string) ([]netip.Addr, error) {
			t.Errorf("LookupIP(%q) called with a proxy", host)
			return nil, errors.New("no lookups through a proxy")
		},
	})

	tests := []struct {
		name      string
		url       string
		want      string
		wantErr   error
		wantCount int64
	}{
		{"allowed name goes through the proxy", "http://hipchat.example/x?y=1", "via proxy http://hipchat.example/x?y=1", nil, 1},
		{"host not allowed never reaches the proxy", "http://evil.example/", "", ErrForbiddenHost, 1},
		{"secret ip never reaches the proxy", "http://127.0.0.3:" + f.secretPort + "/", "", ErrForbiddenHost, 1},
		{"userinfo never reaches the proxy", "http://u:p@hipchat.example/", "", ErrForbiddenHost, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(c, tt.url)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("GET %s: error = %v, want %v", tt.url, err, tt.wantErr)
				}
			} else if err != nil {
				t.Errorf("GET %s: %v", tt.url, err)
			} else if got != tt.want {
				t.Errorf("GET %s = %q, want %q", tt.url, got, tt.want)
			}
			if n := proxied.Load(); n != tt.wantCount {
				t.Errorf("proxy saw %d requests, want %d", n, tt.wantCount)
			}
		})
	}
}

func TestDialerRefusesDirectDialWithProxy(t *testing.T) {
	allow, err := allowlist.Parse([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	d := &dialer{allow: allow, net: &net.Dialer{}, viaProxy: true, proxyHost: "127.0.0.1", proxyPort: "3128"}
	if _, err := d.dialContext(context.Background(), "tcp", "127.0.0.1:80"); !errors.Is(err, ErrForbiddenHost) {
		t.Errorf("dial of a non-proxy address: error = %v, want %v", err, ErrForbiddenHost)
	}
}

func TestTimeout(t *testing.T) {
	f := newFixture(t)
	c := f.client(Options{Timeout: 300 * time.Millisecond})
	_, err := get(c, f.allowed.URL+"/hang")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("error = %v, want a timeout", err)
	}
}

func TestNilAllowlistAllowsNothing(t *testing.T) {
	f := newFixture(t)
	c := New(Options{LookupIP: f.lookupIP})
	if _, err := get(c, f.allowed.URL+"/ok"); !errors.Is(err, ErrForbiddenHost) {
		t.Errorf("error = %v, want %v", err, ErrForbiddenHost)
	}
}

func TestErrorsKeepTokensOut(t *testing.T) {
	f := newFixture(t)
	c := f.client(Options{})
	const token = "s3cr3t-token"
	tests := []struct {
		name string
		url  string
	}{
		{"refused host", "http://evil.example/api?auth_token=" + token},
		{"refused by resolution", "http://secret.example:" + f.secretPort + "/api?auth_token=" + token},
		{"userinfo password", "http://user:" + token + "@127.0.0.1:" + f.allowedPort + "/ok"},
		{"redirect to secret", f.allowed.URL + "/to-secret?auth_token=" + token},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := get(c, tt.url)
			if !errors.Is(err, ErrForbiddenHost) {
				t.Fatalf("error = %v, want %v", err, ErrForbiddenHost)
			}
			var oe *Error
			if !errors.As(err, &oe) {
				t.Fatalf("error %v holds no *Error", err)
			}
			if strings.Contains(oe.Error(), token) {
				t.Errorf("*Error %q contains the token", oe)
			}
			red := Redact(err)
			if strings.Contains(red.Error(), token) {
				t.Errorf("Redact(err) = %q contains the token", red)
			}
			if !errors.Is(red, ErrForbiddenHost) {
				t.Errorf("Redact(err) = %v, lost %v", red, ErrForbiddenHost)
			}
		})
	}
}

func TestSpecial(t *testing.T) {
	tests := []struct {
		name string
		ip   string
		want string
	}{
		{"private v4 is fine", "10.1.2.3", ""},
		{"public v4 is fine", "192.0.2.10", ""},
		{"unique local v6 is fine", "fd00::1", ""},
		{"loopback v4", "127.0.0.3", "loopback"},
		{"loopback v6", "::1", "loopback"},
		{"unspecified v4", "0.0.0.0", "unspecified"},
		{"this network", "0.1.2.3", "unspecified"},
		{"unspecified v6", "::", "unspecified"},
		{"cloud metadata", "169.254.169.254", "link-local"},
		{"link-local v6", "fe80::1", "link-local"},
		{"link-local v6 zoned", "fe80::1%eth0", "zoned"},
		{"multicast v4", "224.0.0.1", "multicast"},
		{"multicast v6", "ff02::1", "multicast"},
		{"ipv4-compatible loopback", "::127.0.0.3", "IPv4-compatible"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := special(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("special(%s) = %q, want %q", tt.ip, got, tt.want)
			}
		})
	}
}
