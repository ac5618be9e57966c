package tlsmgr

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hipconnect/hipconnect/internal/tlsmgr/pebbletest"
)

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
			pb := pebbletest.Start(t, pebbletest.Options{HTTPPort: port(httpLn), TLSPort: port(tlsLn), EABKeys: eabKeys})
			acmeOpts.Directory, acmeOpts.CARootFile = pb.Directory(), pb.DirectoryRootFile()
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
			roots := pb.Roots()

			m := start()
			leaf := m.Leaf()
			if leaf == nil {
				t.Fatal("Leaf: nil after Ready")
			}
			if got, want := pb.Orders(), int64(1); got != want {
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
			if got, want := pb.Orders(), int64(1); got != want {
				t.Errorf("after restart: orders at pebble: got %d, want %d", got, want)
			}
			m2.Stop()
		})
	}
}
