package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hipconnect/hipconnect/internal/pki"
)

// authority is the load tool's own certificate authority: it signs the
// certificate of the fake HipChat and of the fake search backend, which
// the daemon trusts through hipchat.ca_file, and with -tls files the
// certificate of the daemon's own public listener, which the tool trusts.
type authority struct {
	ca *pki.CA // ca.CertPEM is the daemon's hipchat.ca_file
}

// newAuthority makes a CA valid from an hour ago for a week.
func newAuthority() (*authority, error) {
	now := time.Now()
	ca, err := pki.NewCA("hipconnect-load CA", now.Add(-time.Hour), now.Add(7*24*time.Hour))
	if err != nil {
		return nil, err
	}
	return &authority{ca: ca}, nil
}

// loadOrCreateAuthority reads dir/ca.pem and dir/ca-key.pem, or makes a new
// authority and writes them (the key 0600) when they are missing or expire
// within the hour, so that an already running daemon can be given the CA
// file once (-target mode).
func loadOrCreateAuthority(dir string) (*authority, error) {
	certPath, keyPath := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		cb, _ := pem.Decode(certPEM)
		kb, _ := pem.Decode(keyPEM)
		if cb == nil || kb == nil {
			return nil, fmt.Errorf("ca in %s: no PEM block", dir)
		}
		cert, err := x509.ParseCertificate(cb.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca %s: %w", certPath, err)
		}
		key, err := x509.ParseECPrivateKey(kb.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca key %s: %w", keyPath, err)
		}
		if time.Now().Add(time.Hour).Before(cert.NotAfter) {
			return &authority{ca: &pki.CA{Cert: cert, Key: key, CertPEM: certPEM}}, nil
		}
	case cerr != nil && !errors.Is(cerr, fs.ErrNotExist):
		return nil, cerr
	case kerr != nil && !errors.Is(kerr, fs.ErrNotExist):
		return nil, kerr
	}
	a, err := newAuthority()
	if err != nil {
		return nil, err
	}
	key, err := pki.KeyPEM(a.ca.Key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyPath, key, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(certPath, a.ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	return a, nil
}

// leaf returns a server certificate for the given addresses.
func (a *authority) leaf(hosts ...string) (tls.Certificate, error) {
	l, err := a.ca.Leaf(hosts, nil, time.Now().Add(-time.Hour), a.ca.Cert.NotAfter)
	if err != nil {
		return tls.Certificate{}, err
	}
	return l.TLSCertificate(), nil
}

// serverTLS is the certificate of the public listener of a server the tool
// starts (-tls files): the files the server is given, and the client
// configuration that trusts them.
type serverTLS struct {
	certFile, keyFile string
	client            *tls.Config // trusts the tool's CA only
}

// serverFiles issues a certificate for host and writes it and its key,
// both 0600, to dir as server-cert.pem and server-key.pem.
func (a *authority) serverFiles(dir, host string) (*serverTLS, error) {
	l, err := a.ca.Leaf([]string{host}, nil, time.Now().Add(-time.Hour), a.ca.Cert.NotAfter)
	if err != nil {
		return nil, err
	}
	s := &serverTLS{certFile: filepath.Join(dir, "server-cert.pem"), keyFile: filepath.Join(dir, "server-key.pem"),
		client: &tls.Config{RootCAs: a.ca.Pool(), MinVersion: tls.VersionTLS12}}
	if err := os.WriteFile(s.certFile, l.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.keyFile, l.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	return s, nil
}
