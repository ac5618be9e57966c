package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"
)

func newCA(t *testing.T, notAfter time.Time) *CA {
	t.Helper()
	ca, err := NewCA("pki test CA", time.Now().Add(-time.Hour), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestCA(t *testing.T) {
	notAfter := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	ca := newCA(t, notAfter)
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("CA flags: IsCA %v, BasicConstraintsValid %v, MaxPathLen %d, MaxPathLenZero %v; want a CA of path length zero",
			c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if want := x509.KeyUsageCertSign | x509.KeyUsageCRLSign; c.KeyUsage != want {
		t.Errorf("KeyUsage = %v, want %v", c.KeyUsage, want)
	}
	if c.Subject.CommonName != "pki test CA" || c.Issuer.CommonName != "pki test CA" {
		t.Errorf("subject %q, issuer %q; want both %q", c.Subject.CommonName, c.Issuer.CommonName, "pki test CA")
	}
	if !c.NotAfter.Equal(notAfter) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter, notAfter)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	if c.SerialNumber.Sign() <= 0 {
		t.Errorf("serial %v, want a positive random one", c.SerialNumber)
	}
	if other := newCA(t, notAfter); other.Cert.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two CAs have the same serial")
	}
	if !ca.Key.PublicKey.Equal(c.PublicKey) {
		t.Error("Key does not belong to Cert")
	}

	// CertPEM round trip.
	b, rest := pem.Decode(ca.CertPEM)
	if b == nil || b.Type != "CERTIFICATE" || len(rest) != 0 {
		t.Fatalf("CertPEM is not one CERTIFICATE block: %q", ca.CertPEM)
	}
	parsed, err := x509.ParseCertificate(b.Bytes)
	if err != nil || !parsed.Equal(c) {
		t.Errorf("CertPEM does not decode to Cert: %v", err)
	}
}

func TestLeaf(t *testing.T) {
	ca := newCA(t, time.Now().Add(24*time.Hour))
	notAfter := time.Now().Add(time.Hour).Truncate(time.Second)
	l, err := ca.Leaf([]string{"localhost", "127.0.0.1", "::1"}, big.NewInt(1001), time.Now().Add(-time.Hour), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	c := l.Cert
	if c.SerialNumber.Int64() != 1001 {
		t.Errorf("serial = %v, want 1001", c.SerialNumber)
	}
	if c.Subject.CommonName != "localhost" || c.Issuer.CommonName != "pki test CA" {
		t.Errorf("subject %q, issuer %q", c.Subject.CommonName, c.Issuer.CommonName)
	}
	if !slices.Equal(c.DNSNames, []string{"localhost"}) {
		t.Errorf("DNSNames = %q, want [localhost]", c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) || !c.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IPAddresses = %v, want [127.0.0.1 ::1]", c.IPAddresses)
	}
	if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
		t.Errorf("IsCA %v, KeyUsage %v, ExtKeyUsage %v; want a server certificate", c.IsCA, c.KeyUsage, c.ExtKeyUsage)
	}
	if !c.NotAfter.Equal(notAfter) {
		t.Errorf("NotAfter = %v, want %v", c.NotAfter, notAfter)
	}

	// It verifies against Pool for each of its names, and for no other.
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "example.com"}); err == nil {
		t.Error("verified for example.com")
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: newCA(t, time.Now().Add(time.Hour)).Pool()}); err == nil {
		t.Error("verified against another CA")
	}

	// CertPEM and KeyPEM round trip, as a files-mode pair and one by one.
	pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !pair.Leaf.Equal(c) {
		t.Error("CertPEM does not decode to Cert")
	}
	kb, _ := pem.Decode(l.KeyPEM)
	if kb == nil || kb.Type != "EC PRIVATE KEY" {
		t.Fatalf("KeyPEM is not an EC PRIVATE KEY block: %q", l.KeyPEM)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil || !key.Equal(l.Key) {
		t.Errorf("KeyPEM does not decode to Key: %v", err)
	}
	if tc := l.TLSCertificate(); len(tc.Certificate) != 1 || !tc.Leaf.Equal(c) || tc.PrivateKey != l.Key {
		t.Error("TLSCertificate is not the leaf and its key")
	}
}

func TestLeafRandomSerialAndCappedExpiry(t *testing.T) {
	ca := newCA(t, time.Now().Add(time.Hour))
	var serials []*big.Int
	for range 2 {
		l, err := ca.Leaf([]string{"example.test"}, nil, time.Now().Add(-time.Hour), time.Now().Add(397*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if !l.Cert.NotAfter.Equal(ca.Cert.NotAfter) {
			t.Errorf("NotAfter = %v, want the CA's %v", l.Cert.NotAfter, ca.Cert.NotAfter)
		}
		if l.Cert.SerialNumber.Sign() <= 0 {
			t.Errorf("serial %v, want positive", l.Cert.SerialNumber)
		}
		serials = append(serials, l.Cert.SerialNumber)
	}
	if serials[0].Cmp(serials[1]) == 0 {
		t.Error("two leaves with a nil serial got the same one")
	}
}

func TestLeafNoHosts(t *testing.T) {
	ca := newCA(t, time.Now().Add(time.Hour))
	if _, err := ca.Leaf(nil, nil, time.Now(), time.Now().Add(time.Hour)); err == nil {
		t.Error("Leaf with no hosts: got nil error")
	}
}
