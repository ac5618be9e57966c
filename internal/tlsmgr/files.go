package tlsmgr

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
)

const (
	resultSuccess = "success"
	resultFailure = "failure"
)

// loadFiles reads and verifies CertFile and KeyFile. Errors name the file at
// fault.
func (m *Manager) loadFiles() (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(m.o.CertFile)
	if err != nil {
		return nil, fmt.Errorf("cert_file: %w", err)
	}
	keyPEM, err := os.ReadFile(m.o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file: %w", err)
	}
	leaf, err := firstCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("cert_file %s: %w", m.o.CertFile, err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key_file %s (for cert_file %s): %w", m.o.KeyFile, m.o.CertFile, err)
	}
	c.Leaf = leaf

	now := m.now()
	switch {
	case now.After(leaf.NotAfter):
		m.log.Warn("certificate has expired", slog.String("file", m.o.CertFile), slog.Time("not_after", leaf.NotAfter))
	case now.Before(leaf.NotBefore):
		m.log.Warn("certificate is not valid yet", slog.String("file", m.o.CertFile), slog.Time("not_before", leaf.NotBefore))
	}
	if m.host != "" {
		if err := leaf.VerifyHostname(m.host); err != nil {
			m.log.Warn("certificate does not cover the host of base_url",
				slog.String("file", m.o.CertFile), slog.String("host", m.host), slog.Any("error", err))
		}
	}
	return &c, nil
}

// firstCertificate parses the first CERTIFICATE block of a PEM bundle.
func firstCertificate(b []byte) (*x509.Certificate, error) {
	for {
		var p *pem.Block
		p, b = pem.Decode(b)
		if p == nil {
			return nil, errors.New("no PEM certificate found")
		}
		if p.Type == "CERTIFICATE" {
			return x509.ParseCertificate(p.Bytes)
		}
	}
}
