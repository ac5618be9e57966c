package hipchattest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"time"

	"github.com/hipconnect/hipconnect/internal/pki"
)

// certs is the fake's own certificate authority and its server certificate.
type certs struct {
	caPEM []byte
	pool  *x509.CertPool
	leaf  tls.Certificate
}

// newCerts makes an in-memory CA (ECDSA P-256) and a leaf it signs, valid
// for ip and "localhost", from an hour ago for a week.
func newCerts(ip net.IP) (certs, error) {
	from, until := time.Now().Add(-time.Hour), time.Now().Add(7*24*time.Hour)
	ca, err := pki.NewCA("hipchattest CA", from, until)
	if err != nil {
		return certs{}, err
	}
	leaf, err := ca.Leaf([]string{"localhost", ip.String()}, nil, from, until)
	if err != nil {
		return certs{}, err
	}
	return certs{caPEM: ca.CertPEM, pool: ca.Pool(), leaf: leaf.TLSCertificate()}, nil
}
