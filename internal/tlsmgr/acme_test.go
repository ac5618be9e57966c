package tlsmgr

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// pebble is Let's Encrypt's test ACME CA, run in-process.
type pebble struct {
	directory string            // ACME directory URL
	rootFile  string            // PEM of the directory's HTTPS certificate
	issuer    *x509.Certificate // root of the certificates pebble issues
	orders    atomic.Int64      // POSTs to new-order
	logs      *syncBuffer
}

// startPebble runs pebble on 127.0.0.1 with its VA validating HTTP-01 on
// httpPort and TLS-ALPN-01 on tlsPort. With eabKeys (key ID to base64url
// HMAC key), new accounts need an External Account Binding.
func startPebble(t *testing.T, httpPort, tlsPort int, eabKeys map[string]string) *pebble {
	t.Helper()
	// No random sleeps before validation, no injected bad nonces, no reuse
	// of earlier authorizations: every order is validated, at full speed.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")

	p := &pebble{logs: &syncBuffer{}}
	logger := log.New(p.logs, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	// ECDSA keys: quicker to make than pebble's default RSA.
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, "", store)
	for id, key := range eabKeys {
		if err := store.AddExternalAccountKeyByID(id, key); err != nil {
			t.Fatal(err)
		}
	}
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, len(eabKeys) > 0, 0, 0)
	h := front.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			p.orders.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	srv.Config.ErrorLog = log.New(p.logs, "pebble http ", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble logs:\n%s", p.logs)
		}
	})

	p.directory = srv.URL + wfe.DirectoryPath
	p.rootFile = filepath.Join(t.TempDir(), "directory-root.pem")
	writeFile(t, p.rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
	p.issuer = authority.GetRootCert(0).Cert
	return p
}

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

// waitReady waits for m's first certificate, which in acme mode takes a
// real ACME exchange.
func waitReady(t *testing.T, m *Manager) {
	t.Helper()
	select {
	case <-m.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("no certificate after 30s")
	}
}

func TestACME(t *testing.T) {
	// pebble's VA dials the first address "localhost" resolves to; the
	// add-on's listeners are put there.
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve: %v", err)
	}
	ip := addrs[0]

	// Which challenge acmez picks is random; each row leaves it one.
	// The second row also has the CA require External Account Binding.
	tests := []struct {
		name                         string
		disableHTTP, disableTLSALPN  bool
		eab                          bool
		wantHTTPHits, wantALPNHellos bool
	}{
		{name: "http-01", disableTLSALPN: true, wantHTTPHits: true},
		{name: "tls-alpn-01 with eab", disableHTTP: true, eab: true, wantALPNHellos: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			httpLn, tlsLn := listen(t, ip), listen(t, ip)
			acmeOpts := ACME{Email: "ops@example.com"}
			var eabKeys map[string]string
			if tc.eab {
				acmeOpts.EABKeyID = "kid-1"
				acmeOpts.EABHMAC = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
				eabKeys = map[string]string{acmeOpts.EABKeyID: acmeOpts.EABHMAC}
			}
			pb := startPebble(t, port(httpLn), port(tlsLn), eabKeys)
			acmeOpts.Directory, acmeOpts.CARootFile = pb.directory, pb.rootFile
			storage := &certmagic.FileStorage{Path: t.TempDir()}
			opts := Options{
				Mode:    ModeACME,
				Host:    "localhost",
				ACME:    acmeOpts,
				Storage: storage,
				Logger:  testLogger(t),
				// The daemon's listeners: challenges arrive here.
				HTTPPort: port(httpLn),
				TLSPort:  port(tlsLn),
			}

			// The listeners are bound before Start, as the daemon does.
			var httpHits, alpnHellos atomic.Int64
			current := atomic.Pointer[Manager]{}
			serve(t, httpLn, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
					httpHits.Add(1)
				}
				current.Load().HTTPHandler(http.NotFoundHandler()).ServeHTTP(w, r)
			}))
			tlsCfg := func(m *Manager) *tls.Config {
				c := m.TLSConfig()
				getCert := c.GetCertificate
				c.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
					if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == "acme-tls/1" {
						alpnHellos.Add(1)
					}
					return getCert(hello)
				}
				return c
			}
			var tlsCfgMu sync.Mutex
			var activeCfg *tls.Config
			serve(t, tlsLn, &tls.Config{
				GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
					tlsCfgMu.Lock()
					defer tlsCfgMu.Unlock()
					return activeCfg, nil
				},
			}, okHandler)

			start := func() *Manager {
				t.Helper()
				m, err := New(context.Background(), opts)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(m.Stop)
				m.issuer.DisableHTTPChallenge = tc.disableHTTP
				m.issuer.DisableTLSALPNChallenge = tc.disableTLSALPN
				current.Store(m)
				tlsCfgMu.Lock()
				activeCfg = tlsCfg(m)
				tlsCfgMu.Unlock()
				if err := m.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				waitReady(t, m)
				return m
			}
			url := fmt.Sprintf("https://%s/", net.JoinHostPort(ip, fmt.Sprint(port(tlsLn))))
			roots := x509.NewCertPool()
			roots.AddCert(pb.issuer)

			m := start()
			leaf := m.Leaf()
			if leaf == nil {
				t.Fatal("Leaf: nil after Ready")
			}
			if got, want := pb.orders.Load(), int64(1); got != want {
				t.Errorf("orders at pebble: got %d, want %d", got, want)
			}
			if got := httpHits.Load() > 0; got != tc.wantHTTPHits {
				t.Errorf("HTTP-01 requests seen: %d, want some: %v", httpHits.Load(), tc.wantHTTPHits)
			}
			if got := alpnHellos.Load() > 0; got != tc.wantALPNHellos {
				t.Errorf("acme-tls/1 handshakes seen: %d, want some: %v", alpnHellos.Load(), tc.wantALPNHellos)
			}
			served, _ := get(t, client(roots, "localhost"), url)
			if !served.Equal(leaf) {
				t.Errorf("served serial %x, want Leaf's %x", served.SerialNumber, leaf.SerialNumber)
			}
			if !strings.HasPrefix(served.Issuer.CommonName, "Pebble Intermediate CA") {
				t.Errorf("issuer: got %q, want pebble's intermediate", served.Issuer.CommonName)
			}
			want := fmt.Sprintf(`
# HELP hipconnect_tls_certificate_expiry_timestamp_seconds NotAfter of the certificate served on the public listener, in seconds since the epoch.
# TYPE hipconnect_tls_certificate_expiry_timestamp_seconds gauge
hipconnect_tls_certificate_expiry_timestamp_seconds{host="localhost"} %d
# HELP hipconnect_tls_renewals_total Certificate issuances (first certificate and renewals, acme and self-signed modes) by result.
# TYPE hipconnect_tls_renewals_total counter
hipconnect_tls_renewals_total{result="failure"} 0
hipconnect_tls_renewals_total{result="success"} 1
`, leaf.NotAfter.Unix())
			if err := testutil.CollectAndCompare(m.Collector(), strings.NewReader(want),
				"hipconnect_tls_certificate_expiry_timestamp_seconds", "hipconnect_tls_renewals_total"); err != nil {
				t.Error(err)
			}
			m.Stop()

			// Restart: a new Manager on the same storage serves the same
			// certificate without a new order.
			m2 := start()
			served2, _ := get(t, client(roots, "localhost"), url)
			if !served2.Equal(leaf) {
				t.Errorf("after restart: served serial %x, want the stored %x", served2.SerialNumber, leaf.SerialNumber)
			}
			if got, want := pb.orders.Load(), int64(1); got != want {
				t.Errorf("after restart: orders at pebble: got %d, want %d", got, want)
			}
			m2.Stop()
		})
	}
}
