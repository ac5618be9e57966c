package tlsmgr

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFilesReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	notAfter1 := time.Now().Add(10 * time.Hour).Truncate(time.Second)
	notAfter2 := time.Now().Add(20 * time.Hour).Truncate(time.Second)
	c1, k1 := ca.leaf(t, 1001, notAfter1)
	writeFile(t, certFile, c1)
	writeFile(t, keyFile, k1)

	m, err := New(context.Background(), Options{
		Mode: ModeFiles, Host: "127.0.0.1", CertFile: certFile, KeyFile: keyFile, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Ready():
	default:
		t.Fatal("Ready not closed after New in files mode")
	}
	ln := listen(t, "127.0.0.1")
	serve(t, ln, m.TLSConfig(), okHandler)
	url := fmt.Sprintf("https://127.0.0.1:%d/", port(ln))

	old := client(ca.pool(), "")
	leaf, _ := get(t, old, url)
	if got, want := leaf.SerialNumber.Int64(), int64(1001); got != want {
		t.Fatalf("first connection: serial %d, want %d", got, want)
	}

	c2, k2 := ca.leaf(t, 1002, notAfter2)
	writeFile(t, certFile, c2)
	writeFile(t, keyFile, k2)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got, want := m.Leaf().SerialNumber.Int64(), int64(1002); got != want {
		t.Errorf("Leaf after reload: serial %d, want %d", got, want)
	}
	leaf, _ = get(t, client(ca.pool(), ""), url)
	if got, want := leaf.SerialNumber.Int64(), int64(1002); got != want {
		t.Errorf("new connection after reload: serial %d, want %d", got, want)
	}
	leaf, reused := get(t, old, url)
	if !reused {
		t.Error("old client opened a new connection; want the one held open before the reload")
	}
	if got, want := leaf.SerialNumber.Int64(), int64(1001); got != want {
		t.Errorf("old connection after reload: serial %d, want %d", got, want)
	}

	// A key that does not belong to the certificate: the reload fails,
	// names the file, and the current certificate stays.
	c3, _ := ca.leaf(t, 1003, notAfter2)
	_, k4 := ca.leaf(t, 1004, notAfter2)
	writeFile(t, certFile, c3)
	writeFile(t, keyFile, k4)
	err = m.Reload()
	if err == nil || !strings.Contains(err.Error(), keyFile) || !strings.HasPrefix(err.Error(), "tlsmgr: reload: ") {
		t.Fatalf("Reload with a mismatched pair: got %v, want an error naming %s", err, keyFile)
	}
	leaf, _ = get(t, client(ca.pool(), ""), url)
	if got, want := leaf.SerialNumber.Int64(), int64(1002); got != want {
		t.Errorf("after a failed reload: serial %d, want %d", got, want)
	}

	want := fmt.Sprintf(`
# HELP hipconnect_tls_certificate_expiry_timestamp_seconds NotAfter of the certificate served on the public listener, in seconds since the epoch.
# TYPE hipconnect_tls_certificate_expiry_timestamp_seconds gauge
hipconnect_tls_certificate_expiry_timestamp_seconds{host="127.0.0.1"} %d
# HELP hipconnect_tls_reloads_total Reloads of the certificate files (files mode) by result.
# TYPE hipconnect_tls_reloads_total counter
hipconnect_tls_reloads_total{result="failure"} 1
hipconnect_tls_reloads_total{result="success"} 1
`, notAfter2.Unix())
	if err := testutil.CollectAndCompare(m.Collector(), strings.NewReader(want),
		"hipconnect_tls_certificate_expiry_timestamp_seconds", "hipconnect_tls_reloads_total"); err != nil {
		t.Error(err)
	}
}

func TestFilesNewErrors(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	good, goodKey := ca.leaf(t, 1, time.Now().Add(time.Hour))
	_, otherKey := ca.leaf(t, 2, time.Now().Add(time.Hour))
	path := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if b != nil {
			writeFile(t, p, b)
		}
		return p
	}
	tests := []struct {
		name              string
		certFile, keyFile string
		wantInErr         string
	}{
		{"missing cert", path("missing.pem", nil), path("k1.pem", goodKey), "missing.pem"},
		{"missing key", path("c1.pem", good), path("nokey.pem", nil), "nokey.pem"},
		{"not a certificate", path("garbage.pem", []byte("hello")), path("k2.pem", goodKey), "garbage.pem"},
		{"key does not match", path("c2.pem", good), path("other.pem", otherKey), "other.pem"},
		{"no files given", "", "", "cert_file and key_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(context.Background(), Options{Mode: ModeFiles, Host: "127.0.0.1", CertFile: tc.certFile, KeyFile: tc.keyFile})
			if err == nil || !strings.HasPrefix(err.Error(), "tlsmgr: new: ") || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Fatalf("New: got %v, want an error mentioning %q", err, tc.wantInErr)
			}
		})
	}
}

func TestOff(t *testing.T) {
	m, err := New(context.Background(), Options{Mode: ModeOff})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := m.TLSConfig(); c != nil {
		t.Errorf("TLSConfig: got %v, want nil", c)
	}
	if l := m.Leaf(); l != nil {
		t.Errorf("Leaf: got %v, want nil", l)
	}
	if _, err := m.CAPEM(); err == nil {
		t.Error("CAPEM: got nil error, want one")
	}
	if err := m.Reload(); err != nil {
		t.Errorf("Reload: %v", err)
	}
	rec := httptest.NewRecorder()
	m.HTTPHandler(okHandler).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/.well-known/acme-challenge/x", nil))
	if got := rec.Body.String(); got != "ok" {
		t.Errorf("HTTPHandler: got body %q, want next's \"ok\"", got)
	}
}

func TestNewUnknownMode(t *testing.T) {
	if _, err := New(context.Background(), Options{Mode: "tls"}); err == nil {
		t.Fatal("New with mode \"tls\": got nil error")
	}
}
