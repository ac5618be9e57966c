package tlsmgr

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/hipconnect/hipconnect/internal/pki"
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
	ca := &pki.CA{Cert: caCert, Key: caKey, CertPEM: caPEM}
	if caCert == nil {
		if ca, err = m.createCA(ctx, now); err != nil {
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
	if why := m.leafUnusable(leaf, ca.Cert, now); why != "" {
		m.log.Info("issuing a new self-signed leaf", slog.String("host", m.host), slog.String("reason", why))
		leaf, leafKey, err = m.createLeaf(ctx, now, ca)
		if err != nil {
			m.renewals.WithLabelValues(resultFailure).Inc()
			return err
		}
		m.renewals.WithLabelValues(resultSuccess).Inc()
	}
	m.caPEM.Store(&ca.CertPEM)
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

func (m *Manager) createCA(ctx context.Context, now time.Time) (*pki.CA, error) {
	ca, err := pki.NewCA(caCommonName, now.Add(-backdate), now.Add(caValidity))
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	keyPEM, err := pki.KeyPEM(ca.Key)
	if err == nil {
		err = m.storePair(ctx, ssCACertKey, ssCAKeyKey, ca.CertPEM, keyPEM)
	}
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	m.log.Info("created the self-signed CA; import it into HipChat Server (hipconnect tls export-ca)",
		slog.Time("not_after", ca.Cert.NotAfter))
	return ca, nil
}

func (m *Manager) createLeaf(ctx context.Context, now time.Time, ca *pki.CA) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	leaf, err := ca.Leaf([]string{m.host}, nil, now.Add(-backdate), now.Add(leafValidity))
	if err == nil {
		err = m.storePair(ctx, ssLeafKey, ssLeafKeyKey, leaf.CertPEM, leaf.KeyPEM)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("create leaf: %w", err)
	}
	return leaf.Cert, leaf.Key, nil
}

// storePair stores a key and its certificate, key first, each a copy (the
// storage may keep what it is given).
func (m *Manager) storePair(ctx context.Context, certKey, keyKey string, certPEM, keyPEM []byte) error {
	if err := m.o.Storage.Store(ctx, keyKey, bytes.Clone(keyPEM)); err != nil {
		return fmt.Errorf("store %s: %w", keyKey, err)
	}
	if err := m.o.Storage.Store(ctx, certKey, bytes.Clone(certPEM)); err != nil {
		return fmt.Errorf("store %s: %w", certKey, err)
	}
	return nil
}
