package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/pki"
	"github.com/hipconnect/hipconnect/internal/tlsmgr/pebbletest"
)

// The tests of this file run hipconnect in each TLS mode and talk to it as
// HipChat would: over HTTPS, trusting only the CA the operator set up.

// portOf is the port of addr (host:port).
func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func portNum(t *testing.T, addr string) int {
	t.Helper()
	n, err := strconv.Atoi(portOf(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// httpsClient trusts only roots and connects to addr whatever the URL
// says, so that https://localhost:PORT/ reaches the daemon's listener (and
// is verified as "localhost") however localhost resolves here.
func httpsClient(roots *x509.CertPool, addr string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig: &tls.Config{RootCAs: roots},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// reply is what fetch saw.
type reply struct {
	code   int
	header http.Header
	body   string
	leaf   *x509.Certificate // the server's certificate; nil over plain HTTP
	reused bool              // the request went over a connection used before
}

// fetch sends a request with c and reads the whole reply.
func fetch(t *testing.T, c *http.Client, method, url string, body io.Reader) (reply, error) {
	t.Helper()
	var r reply
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(i httptrace.GotConnInfo) { r.reused = i.Reused },
	})
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return r, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return r, err
	}
	r.code, r.header, r.body = resp.StatusCode, resp.Header, string(b)
	if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
		r.leaf = resp.TLS.PeerCertificates[0]
	}
	return r, nil
}

// mustFetch is fetch failing the test on a transport error or a status
// other than want.
func mustFetch(t *testing.T, c *http.Client, url string, want int) reply {
	t.Helper()
	r, err := fetch(t, c, http.MethodGet, url, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if r.code != want {
		t.Fatalf("GET %s = %d %s, want %d", url, r.code, r.body, want)
	}
	return r
}

// waitMetric polls the ops listener until its /metrics has line, or fails the
// test after a deadline: for steps the daemon takes asynchronously (SIGHUP).
func (d *proc) waitMetric(line string) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if strings.Contains(d.metrics(d.t), "\n"+line+"\n") {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("metric line %q not seen in time", line)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testCA is a certificate authority made in the test, as an operator's
// internal CA would be.
type testCA struct{ *pki.CA }

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca, err := pki.NewCA("hipconnect e2e test CA", time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{ca}
}

// leaf returns the PEM of a certificate for localhost and 127.0.0.1 with
// the given serial, and of its key.
func (ca *testCA) leaf(t *testing.T, serial int64) (certPEM, keyPEM []byte) {
	t.Helper()
	l, err := ca.Leaf([]string{"localhost", "127.0.0.1"}, big.NewInt(serial), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return l.CertPEM, l.KeyPEM
}

// writePair writes a certificate and key as the operator's tooling would.
func writePair(t *testing.T, certFile, keyFile string, certPEM, keyPEM []byte) {
	t.Helper()
	if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsConfig is the part of a configuration shared by this file's tests;
// %s are the server and tls sections.
const tlsConfig = `
server:
  shutdown_grace: 2s
%s
tls:
%s
storage:
  path: {{dir}}/hipconnect.db
hipchat:
  allowed_hosts: []
log:
  level: info
commands:
  - name: echo
    kind: echo
`

// acmeConfig is a daemon of tlsConfig ordering its certificate from the
// pebble ca: its public listener, its HTTP-01 listener and its ops one.
func acmeConfig(base, listen, redirect, ops string, ca *pebbletest.CA) string {
	return fmt.Sprintf(tlsConfig, fmt.Sprintf(`  base_url: %s
  listen: %q
  redirect_listen: %q
  ops_listen: %s`, base, listen, redirect, ops), fmt.Sprintf(`  mode: acme
  acme:
    directory: %s
    ca_root: %s
    email: ops@example.com`, ca.Directory(), ca.DirectoryRootFile()))
}

// TestACMEWithPebble runs hipconnect in acme mode against pebble as the
// internal CA: it gets its certificate through a real ACME exchange
// (challenges answered on its own listeners), serves it, and after a
// restart serves the same certificate from its store without ordering
// again.
func TestACMEWithPebble(t *testing.T) {
	// pebble's validation authority connects to what "localhost" resolves
	// to: the daemon listens there.
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve: %v", err)
	}
	ip := addrs[0]
	listen, redirect, ops := freePort(t, ip), freePort(t, ip), freePort(t, "127.0.0.1")
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: portNum(t, redirect), TLSPort: portNum(t, listen)})

	dir := t.TempDir()
	base := "https://localhost:" + portOf(t, listen)
	yaml := acmeConfig(base, listen, redirect, ops, pebble)
	d := startDaemon(t, dir, yaml, base, ops) // ready means it has its certificate

	// HipChat's side: it trusts the internal CA's root and nothing else.
	r := mustFetch(t, httpsClient(pebble.Roots(), listen), base+"/atlassian-connect.json", http.StatusOK)
	if !strings.Contains(r.body, `"self": "`+base+`/atlassian-connect.json"`) {
		t.Errorf("descriptor does not name %s:\n%s", base, r.body)
	}
	first := r.leaf
	if !strings.HasPrefix(first.Issuer.CommonName, "Pebble Intermediate CA") {
		t.Errorf("issuer = %q, want pebble's intermediate", first.Issuer.CommonName)
	}
	if err := first.VerifyHostname("localhost"); err != nil {
		t.Errorf("certificate: %v", err)
	}
	if got := pebble.Orders(); got != 1 {
		t.Errorf("orders at pebble after the first start = %d, want 1", got)
	}

	d.stop(syscall.SIGTERM)
	d.start()
	r = mustFetch(t, httpsClient(pebble.Roots(), listen), base+"/atlassian-connect.json", http.StatusOK)
	if r.leaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Errorf("after restart: serial %x, want the stored %x", r.leaf.SerialNumber, first.SerialNumber)
	}
	if got := pebble.Orders(); got != 1 {
		t.Errorf("orders at pebble across both runs = %d, want exactly 1", got)
	}
}

// TestFilesReloadOnSIGHUP replaces the certificate files of a running
// daemon and sends SIGHUP: new connections get the new certificate, an
// established one keeps working, and a bad pair changes nothing.
func TestFilesReloadOnSIGHUP(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c1, k1 := ca.leaf(t, 1001)
	writePair(t, certFile, keyFile, c1, k1)

	listen, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	base := "https://localhost:" + portOf(t, listen)
	yaml := fmt.Sprintf(tlsConfig, fmt.Sprintf(`  base_url: %s
  listen: %s
  ops_listen: %s`, base, listen, ops), fmt.Sprintf(`  mode: files
  cert_file: %s
  key_file: %s`, certFile, keyFile))
	d := startDaemon(t, dir, yaml, base, ops)
	url := base + "/atlassian-connect.json"
	serial := func(r reply) int64 { return r.leaf.SerialNumber.Int64() }

	old := httpsClient(ca.Pool(), listen) // keeps its connection open
	if r := mustFetch(t, old, url, http.StatusOK); serial(r) != 1001 {
		t.Fatalf("first connection: serial %d, want 1001", serial(r))
	}

	c2, k2 := ca.leaf(t, 1002)
	writePair(t, certFile, keyFile, c2, k2)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitMetric(`hipconnect_tls_reloads_total{result="success"} 1`)
	if r := mustFetch(t, httpsClient(ca.Pool(), listen), url, http.StatusOK); serial(r) != 1002 {
		t.Errorf("new connection after SIGHUP: serial %d, want 1002", serial(r))
	}
	r := mustFetch(t, old, url, http.StatusOK)
	if !r.reused {
		t.Errorf("the connection opened before SIGHUP was dropped; want it kept")
	}
	if serial(r) != 1001 {
		t.Errorf("old connection after SIGHUP: serial %d, want 1001", serial(r))
	}

	// A key that does not belong to the certificate: the daemon logs an
	// error and keeps serving the pair it has.
	c3, _ := ca.leaf(t, 1003)
	_, k4 := ca.leaf(t, 1004)
	writePair(t, certFile, keyFile, c3, k4)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitMetric(`hipconnect_tls_reloads_total{result="failure"} 1`)
	if r := mustFetch(t, httpsClient(ca.Pool(), listen), url, http.StatusOK); serial(r) != 1002 {
		t.Errorf("new connection after a bad pair: serial %d, want 1002 (kept)", serial(r))
	}
	var logged bool
	for _, line := range strings.Split(d.log.String(), "\n") {
		logged = logged || (strings.Contains(line, "level=ERROR") && strings.Contains(line, keyFile))
	}
	if !logged {
		t.Errorf("no error naming %s in the log", keyFile)
	}
	select {
	case <-d.exited:
		t.Fatal("hipconnect exited after a bad pair")
	default:
	}
}

// TestSelfSigned exports the local CA from a running daemon, as the
// operator does to import it into HipChat Server, and checks that a client
// trusting only that CA gets the descriptor; the redirect listener sends
// plain HTTP to https.
func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	listen, redirect, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	base := "https://localhost:" + portOf(t, listen)
	yaml := fmt.Sprintf(tlsConfig, fmt.Sprintf(`  base_url: %s
  listen: %s
  redirect_listen: %s
  ops_listen: %s`, base, listen, redirect, ops), `  mode: self-signed`)
	d := startDaemon(t, dir, yaml, base, ops)

	// The daemon holds the store's lock: export-ca goes through the admin
	// socket (opening the file would time out).
	cmd := exec.Command(binary, "tls", "export-ca", "--config", d.cfgPath)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tls export-ca: %v\n%s", err, out)
	}
	block, rest := pem.Decode(out)
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		t.Fatalf("tls export-ca printed no single PEM certificate:\n%s", out)
	}
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !caCert.IsCA {
		t.Fatalf("exported certificate is not a CA: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)

	url := base + "/atlassian-connect.json"
	if _, err := fetch(t, httpsClient(x509.NewCertPool(), listen), http.MethodGet, url, nil); err == nil {
		t.Errorf("a client trusting nothing got the descriptor")
	}
	r := mustFetch(t, httpsClient(roots, listen), url, http.StatusOK)
	if !strings.Contains(r.body, `"callbackUrl": "`+base+`/installable"`) {
		t.Errorf("descriptor does not name %s:\n%s", base, r.body)
	}
	if err := r.leaf.VerifyHostname("localhost"); err != nil {
		t.Errorf("certificate: %v", err)
	}
	checkSecurityHeaders(t, "descriptor over https", r.header, true)

	// Plain HTTP on redirect_listen: a redirect to the same path under base.
	plain := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err = fetch(t, plain, http.MethodGet, "http://"+redirect+"/atlassian-connect.json?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if loc := r.header.Get("Location"); r.code != http.StatusPermanentRedirect || loc != url+"?x=1" {
		t.Errorf("plain HTTP = %d to %q, want 308 to %s?x=1", r.code, loc, url)
	}
	checkSecurityHeaders(t, "redirect", r.header, false)
}

// checkSecurityHeaders checks the headers every public response carries;
// HSTS only over https.
func checkSecurityHeaders(t *testing.T, what string, h http.Header, https bool) {
	t.Helper()
	want := map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Content-Security-Policy": "default-src 'none'",
	}
	if https {
		want["Strict-Transport-Security"] = "max-age="
	}
	for k, v := range want {
		if got := h.Get(k); !strings.Contains(got, v) {
			t.Errorf("%s: %s = %q, want it to contain %q", what, k, got, v)
		}
	}
	if !https && h.Get("Strict-Transport-Security") != "" {
		t.Errorf("%s: HSTS over plain HTTP", what)
	}
}
