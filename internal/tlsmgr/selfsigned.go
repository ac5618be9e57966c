package tlsmgr

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"time"
)

// Storage keys of the self-signed CA and leaf.
const (
	ssPrefix     = "hipconnect/self-signed/"
	ssLockKey    = ssPrefix + "lock"
	ssCACertKey  = ssPrefix + "ca.crt"
	ssCAKeyKey   = ssPrefix + "ca.key"
	ssLeafKey    = ssPrefix + "leaf.crt"
	ssLeafKeyKey = ssPrefix + "leaf.key"

	caCommonName  = "hipconnect local CA"
	caValidity    = 10 * 365 * 24 * time.Hour
	leafValidity  = 397 * 24 * time.Hour // the most browsers accept
	leafRenewLeft = 30 * 24 * time.Hour  // renew when less is left
	backdate      = time.Hour            // tolerate clocks behind ours
	ssCheckEvery  = 12 * time.Hour
)

func (m *Manager) startSelfSigned(ctx context.Context) error {
	if err := m.ensureSelfSigned(ctx); err != nil {
		return err
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(ssCheckEvery)
		defer t.Stop()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-t.C:
				if err := m.ensureSelfSigned(m.ctx); err != nil && m.ctx.Err() == nil {
					m.log.Error("self-signed certificate check failed", slog.Any("error", err))
				}
			}
		}
	}()
	return nil
}

// ensureSelfSigned loads the CA and leaf from storage, creates what is
// missing or due, stores it, and installs the leaf. It holds the storage
// lock so that two processes on one storage agree on one CA.
func (m *Manager) ensureSelfSigned(ctx context.Context) (err error) {
	st := m.o.Storage
	if err := st.Lock(ctx, ssLockKey); err != nil {
		return fmt.Errorf("lock storage: %w", err)
	}
	defer func() {
		if uerr := st.Unlock(context.WithoutCancel(ctx), ssLockKey); uerr != nil && err == nil {
			err = fmt.Errorf("unlock storage: %w", uerr)
		}
	}()

	now := m.now()
	caCert, caKey, caPEM, err := m.loadPair(ctx, ssCACertKey, ssCAKeyKey)
	if err != nil {
		return err
	}
	if caCert == nil {
		if caCert, caKey, caPEM, err = m.createCA(ctx, now); err != nil {
			return err
		}
	} else if caCert.NotAfter.Sub(now) < leafRenewLeft {
		m.log.Warn("the self-signed CA expires soon or has expired; delete "+ssPrefix+" from storage to create a new one, and import that into HipChat Server",
			slog.Time("not_after", caCert.NotAfter))
	}

	leaf, leafKey, _, err := m.loadPair(ctx, ssLeafKey, ssLeafKeyKey)
	if err != nil {
		return err
	}
	if why := m.leafUnusable(leaf, caCert, now); why != "" {
		m.log.Info("issuing a new self-signed leaf", slog.String("host", m.host), slog.String("reason", why))
		leaf, leafKey, _, err = m.createLeaf(ctx, now, caCert, caKey)
		if err != nil {
			m.renewals.WithLabelValues(resultFailure).Inc()
			return err
		}
		m.renewals.WithLabelValues(resultSuccess).Inc()
	}
	m.caPEM.Store(&caPEM)
	m.cert.Store(&tls.Certificate{
		Certificate: [][]byte{leaf.Raw},
		PrivateKey:  leafKey,
		Leaf:        leaf,
	})
	m.markReady()
	return nil
}

// leafUnusable says why leaf must be replaced, or "" if it can be served.
func (m *Manager) leafUnusable(leaf, ca *x509.Certificate, now time.Time) string {
	switch {
	case leaf == nil:
		return "none in storage"
	case leaf.CheckSignatureFrom(ca) != nil:
		return "not signed by the stored CA"
	case leaf.VerifyHostname(m.host) != nil:
		return "not for this host"
	case leaf.NotAfter.Sub(now) < leafRenewLeft && leaf.NotAfter.Before(ca.NotAfter):
		// (a leaf cut short by the CA's own expiry cannot do better)
		return "expires in less than 30 days"
	}
	return ""
}

// loadPair reads a certificate and its key from storage; all nils if the
// certificate is not there.
func (m *Manager) loadPair(ctx context.Context, certKey, keyKey string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	certPEM, err := m.o.Storage.Load(ctx, certKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load %s: %w", certKey, err)
	}
	keyPEM, err := m.o.Storage.Load(ctx, keyKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("load %s: %w", keyKey, err)
	}
	cert, err := firstCertificate(certPEM)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse %s: %w", certKey, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, nil, nil, fmt.Errorf("parse %s: no PEM block", keyKey)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse %s: %w", keyKey, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, nil, fmt.Errorf("%s does not match %s", keyKey, certKey)
	}
	return cert, key, certPEM, nil
}

func (m *Manager) createCA(ctx context.Context, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: caCommonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, key, certPEM, err := m.issue(ctx, tmpl, nil, nil, ssCACertKey, ssCAKeyKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create ca: %w", err)
	}
	m.log.Info("created the self-signed CA; import it into HipChat Server (hipconnect tls export-ca)",
		slog.Time("not_after", cert.NotAfter))
	return cert, key, certPEM, nil
}

func (m *Manager) createLeaf(ctx context.Context, now time.Time, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: m.host},
		NotBefore:   now.Add(-backdate),
		NotAfter:    now.Add(leafValidity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	if ip := net.ParseIP(m.host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{m.host}
	}
	cert, key, certPEM, err := m.issue(ctx, tmpl, ca, caKey, ssLeafKey, ssLeafKeyKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create leaf: %w", err)
	}
	return cert, key, certPEM, nil
}

// issue creates a P-256 key and a certificate from tmpl signed by parent
// (self-signed if parent is nil) and stores both, key first.
func (m *Manager) issue(ctx context.Context, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, certKey, keyKey string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return nil, nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	if err := m.o.Storage.Store(ctx, keyKey, keyPEM); err != nil {
		return nil, nil, nil, fmt.Errorf("store %s: %w", keyKey, err)
	}
	if err := m.o.Storage.Store(ctx, certKey, certPEM); err != nil {
		return nil, nil, nil, fmt.Errorf("store %s: %w", certKey, err)
	}
	return cert, key, bytes.Clone(certPEM), nil
}
