// Package pki makes the X.509 certificates of hipconnect's self-signed TLS
// mode and of its tests: a certificate authority and the TLS server
// certificates ("leaves") it signs, all with ECDSA P-256 keys. It uses the
// standard library only.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// CA is a certificate authority. One loaded from storage may be built as a
// literal: Leaf and Pool use Cert and Key only.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte // Cert as a PEM "CERTIFICATE" block
}

// Leaf is a certificate a CA issued, with its key.
type Leaf struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte // Cert as a PEM "CERTIFICATE" block
	KeyPEM  []byte // Key as KeyPEM encodes it
}

// NewCA makes a self-signed CA with a new key and a random serial number,
// named commonName and valid from notBefore to notAfter. It may sign
// certificates and CRLs, but no intermediate CA (path length zero).
func NewCA(commonName string, notBefore, notAfter time.Time) (*CA, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	cert, key, certPEM, err := issue(tmpl, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("pki: new ca: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM}, nil
}

// Leaf issues a TLS server certificate with a new key for hosts, which must
// not be empty: those that parse as IP addresses become IP SANs, the others
// DNS names, and the first is also the subject's common name. serial nil
// means a random serial number. It is valid from notBefore to notAfter, cut
// back to the CA's own NotAfter if later.
func (ca *CA) Leaf(hosts []string, serial *big.Int, notBefore, notAfter time.Time) (*Leaf, error) {
	if len(hosts) == 0 {
		return nil, errors.New("pki: leaf: no hosts")
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, key, certPEM, err := issue(tmpl, ca.Cert, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("pki: leaf: %w", err)
	}
	keyPEM, err := KeyPEM(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Pool is a new certificate pool holding the CA's certificate only.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TLSCertificate is the leaf for a tls.Config: its certificate alone (no
// chain) and its key.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
}

// KeyPEM encodes k as a PEM "EC PRIVATE KEY" block (SEC 1), which
// x509.ParseECPrivateKey and tls.X509KeyPair read.
func KeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("pki: key pem: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// issue makes a P-256 key and a certificate of it from tmpl, signed by
// parent's key (self-signed if parent is nil). A nil tmpl.SerialNumber is
// made random by x509.CreateCertificate.
func issue(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("key: %w", err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certificate: %w", err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
