package tlsmgr

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestSelfSigned(t *testing.T) {
	tests := []struct {
		name, host string
		wantDNS    []string
		wantIPs    []string
	}{
		{name: "dns name", host: "localhost", wantDNS: []string{"localhost"}},
		{name: "ip address", host: "127.0.0.1", wantIPs: []string{"127.0.0.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			storage := &certmagic.FileStorage{Path: t.TempDir()}
			now := time.Now()
			start := func(now time.Time) *Manager {
				t.Helper()
				m, err := New(context.Background(), Options{
					Mode: ModeSelfSigned, Host: tc.host, Storage: storage,
					Logger: testLogger(t), Now: func() time.Time { return now },
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(m.Stop)
				if _, err := m.CAPEM(); err == nil {
					t.Error("CAPEM before Start: got nil error")
				}
				if err := m.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				if err := m.Start(context.Background()); err != nil {
					t.Fatalf("second Start: %v", err)
				}
				return m
			}

			m := start(now)
			caPEM, err := m.CAPEM()
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(caPEM) {
				t.Fatalf("CAPEM is not PEM: %q", caPEM)
			}
			ca, err := firstCertificate(caPEM)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := ca.Subject.CommonName, "hipconnect local CA"; got != want {
				t.Errorf("CA subject: got %q, want %q", got, want)
			}
			if got, want := ca.NotAfter.Sub(now).Round(24*time.Hour), 3650*24*time.Hour; got != want {
				t.Errorf("CA validity: got %v, want %v", got, want)
			}
			leaf := m.Leaf()
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(leaf.DNSNames, tc.wantDNS) || !slices.Equal(ips, tc.wantIPs) {
				t.Errorf("leaf SANs: got DNS %q IP %q, want DNS %q IP %q", leaf.DNSNames, ips, tc.wantDNS, tc.wantIPs)
			}
			if got, want := leaf.NotAfter.Sub(now).Round(24*time.Hour), 397*24*time.Hour; got != want {
				t.Errorf("leaf validity: got %v, want %v", got, want)
			}

			ln := listen(t, "127.0.0.1")
			serve(t, ln, m.TLSConfig(), okHandler)
			// The client trusts only the exported CA and checks the
			// certificate against Host.
			served, _ := get(t, client(roots, tc.host), fmt.Sprintf("https://%s/", net.JoinHostPort("127.0.0.1", fmt.Sprint(port(ln)))))
			if !served.Equal(leaf) {
				t.Errorf("served certificate (serial %x) is not Leaf (serial %x)", served.SerialNumber, leaf.SerialNumber)
			}

			// A restart on the same storage reuses the CA and the leaf.
			m2 := start(now.Add(time.Hour))
			caPEM2, err := m2.CAPEM()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(caPEM2, caPEM) {
				t.Error("restart: the CA changed")
			}
			if !m2.Leaf().Equal(leaf) {
				t.Errorf("restart: leaf serial %x, want the stored %x", m2.Leaf().SerialNumber, leaf.SerialNumber)
			}

			// 370 days on, under 30 days are left: a new leaf from the same CA.
			later := now.Add(370 * 24 * time.Hour)
			m3 := start(later)
			caPEM3, _ := m3.CAPEM()
			if !bytes.Equal(caPEM3, caPEM) {
				t.Error("renewal: the CA changed")
			}
			renewed := m3.Leaf()
			if renewed.Equal(leaf) {
				t.Fatal("renewal: the leaf was not renewed")
			}
			if err := renewed.CheckSignatureFrom(ca); err != nil {
				t.Errorf("renewal: the new leaf is not signed by the CA: %v", err)
			}
			if got, want := renewed.NotAfter.Sub(later).Round(24*time.Hour), 397*24*time.Hour; got != want {
				t.Errorf("renewed leaf validity: got %v, want %v", got, want)
			}
			want := fmt.Sprintf(`
# HELP hipconnect_tls_certificate_expiry_timestamp_seconds NotAfter of the certificate served on the public listener, in seconds since the epoch.
# TYPE hipconnect_tls_certificate_expiry_timestamp_seconds gauge
hipconnect_tls_certificate_expiry_timestamp_seconds{host=%q} %d
# HELP hipconnect_tls_renewals_total Certificate issuances (first certificate and renewals, acme and self-signed modes) by result.
# TYPE hipconnect_tls_renewals_total counter
hipconnect_tls_renewals_total{result="failure"} 0
hipconnect_tls_renewals_total{result="success"} 1
`, tc.host, renewed.NotAfter.Unix())
			if err := testutil.CollectAndCompare(m3.Collector(), strings.NewReader(want),
				"hipconnect_tls_certificate_expiry_timestamp_seconds", "hipconnect_tls_renewals_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSelfSignedNeedsHostAndStorage(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"no host", Options{Mode: ModeSelfSigned, Storage: &certmagic.FileStorage{Path: t.TempDir()}}},
		{"no storage", Options{Mode: ModeSelfSigned, Host: "localhost"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(context.Background(), tc.o); err == nil {
				t.Fatal("New: got nil error")
			}
		})
	}
}
