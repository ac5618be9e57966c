// Package pebbletest runs Let's Encrypt's ACME test CA, pebble, in-process
// for tests: the "internal CA" of an appliance, on loopback.
//
//	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: 8080, TLSPort: 8443})
//	// tls.acme.directory = ca.Directory(), tls.acme.ca_root = ca.DirectoryRootFile()
//	// verify the served certificate with ca.Roots(); count orders with ca.Orders()
//
// Pebble's validation authority connects to the address the identifier
// resolves to ("localhost": loopback) on HTTPPort for HTTP-01 and TLSPort
// for TLS-ALPN-01 challenges, so the listeners answering them must be bound
// there. Validations are done at once (no random sleeps), no nonce is
// rejected on purpose, and authorizations are never reused: every order is
// validated. Issued certificates chain to one root through one intermediate,
// with ECDSA keys (quicker to make than pebble's default RSA).
package pebbletest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Options configure Start. HTTPPort and TLSPort are required.
type Options struct {
	// HTTPPort and TLSPort are the ports the validation authority connects
	// to for HTTP-01 and TLS-ALPN-01 challenges.
	HTTPPort, TLSPort int
	// EABKeys, if not empty, makes new accounts need an External Account
	// Binding with one of these keys: key ID to base64url-encoded HMAC key.
	EABKeys map[string]string
	// Addr is where the ACME directory (HTTPS) listens; default
	// "127.0.0.1:0".
	Addr string
}

// CA is a running pebble. Its methods are safe for concurrent use.
type CA struct {
	directory string
	rootFile  string
	issuer    *x509.Certificate
	orders    atomic.Int64
	logs      syncBuffer
}

// newOrderPath is pebble's new-order endpoint (wfe.newOrderPath, not
// exported), as its directory lists it.
const newOrderPath = "/order-plz"

// envMu serialises the construction of pebbles: pebble reads its tuning
// from environment variables when its parts are created, and Start sets
// them for that moment only (so tests using Start may run in parallel).
var envMu sync.Mutex

// Start runs pebble until the test ends. On failure of the test, pebble's
// log is written to the test log.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	c := &CA{}
	logger := log.New(&c.logs, "pebble ", log.Lmicroseconds)
	store := db.NewMemoryStore()
	for id, key := range o.EABKeys {
		if err := store.AddExternalAccountKeyByID(id, key); err != nil {
			t.Fatalf("pebbletest: eab key %s: %v", id, err)
		}
	}

	envMu.Lock()
	restore := setenv(map[string]string{
		"PEBBLE_VA_NOSLEEP":      "1",
		"PEBBLE_VA_ALWAYS_VALID": "0",
		"PEBBLE_WFE_NONCEREJECT": "0",
		"PEBBLE_AUTHZREUSE":      "0",
	})
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, o.HTTPPort, o.TLSPort, false, "", store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, len(o.EABKeys) > 0, 0, 0)
	restore()
	envMu.Unlock()

	h := front.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == newOrderPath {
			c.orders.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	if o.Addr != "" {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			t.Fatalf("pebbletest: listen on %s: %v", o.Addr, err)
		}
		_ = srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Config.ErrorLog = log.New(&c.logs, "pebble http ", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", c.logs.String())
		}
	})

	c.directory = srv.URL + wfe.DirectoryPath
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c.rootFile = filepath.Join(t.TempDir(), "pebble-directory-root.pem")
	if err := os.WriteFile(c.rootFile, rootPEM, 0o600); err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	c.issuer = authority.GetRootCert(0).Cert
	return c
}

// setenv sets vars and returns a function restoring what was there.
func setenv(vars map[string]string) (restore func()) {
	type old struct {
		v  string
		ok bool
	}
	saved := map[string]old{}
	for k, v := range vars {
		prev, ok := os.LookupEnv(k)
		saved[k] = old{prev, ok}
		_ = os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.ok {
				_ = os.Setenv(k, o.v)
			} else {
				_ = os.Unsetenv(k)
			}
		}
	}
}

// Directory is the URL of the ACME directory (tls.acme.directory).
func (c *CA) Directory() string { return c.directory }

// DirectoryRootFile is a PEM file with the certificate the directory's
// HTTPS server presents (tls.acme.ca_root). It is not the root of the
// certificates pebble issues: see Roots.
func (c *CA) DirectoryRootFile() string { return c.rootFile }

// Roots is a pool holding only the root certificate the certificates pebble
// issues chain to (through an intermediate the ACME client serves with the
// leaf): a client trusting exactly pebble's issuing root.
func (c *CA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.issuer)
	return p
}

// Orders is the number of new-order requests pebble has received.
func (c *CA) Orders() int64 { return c.orders.Load() }

// syncBuffer is a bytes.Buffer safe for concurrent writers.
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
