package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/pki"
)

// testLogger logs to the test's output, shown only for failing tests (or
// with -v).
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// testCA is a certificate authority for the files-mode tests.
type testCA struct{ *pki.CA }

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, err := pki.NewCA("test CA", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca}
}

func (ca *testCA) pool() *x509.CertPool { return ca.Pool() }

// leaf returns the PEM of a certificate for 127.0.0.1 with the given serial
// and NotAfter, and of its key in PKCS #8, as most tools write it (the
// end-to-end tests use pki's SEC 1: files mode is seen to read both).
func (ca *testCA) leaf(t *testing.T, serial int64, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	l, err := ca.Leaf([]string{"127.0.0.1"}, big.NewInt(serial), time.Now().Add(-time.Hour), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(l.Key)
	if err != nil {
		t.Fatal(err)
	}
	return l.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func listen(t *testing.T, host string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// serve runs an HTTP server on ln, over TLS if cfg is not nil, until the
// test ends.
func serve(t *testing.T, ln net.Listener, cfg *tls.Config, h http.Handler) {
	t.Helper()
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		if cfg != nil {
			_ = srv.ServeTLS(ln, "", "")
		} else {
			_ = srv.Serve(ln)
		}
	}()
	t.Cleanup(func() { _ = srv.Close() })
}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	_, _ = io.WriteString(w, "ok")
})

// client returns an HTTPS client trusting only roots, verifying serverName.
func client(roots *x509.CertPool, serverName string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName},
		},
	}
}

// get fetches url and returns the server's leaf and whether the connection
// was reused; the body must be "ok".
func get(t *testing.T, c *http.Client, url string) (leaf *x509.Certificate, reused bool) {
	t.Helper()
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		t.Fatalf("GET %s: got %d %q, want 200 \"ok\"", url, resp.StatusCode, body)
	}
	return resp.TLS.PeerCertificates[0], reused
}
