// Package tlsmgr provides the certificate of the public (HTTPS) listener.
//
// HipChat Server only talks to add-ons over HTTPS, so the listener needs a
// certificate HipChat trusts. Four modes are supported:
//
//   - "off": no TLS (a reverse proxy terminates it); TLSConfig is nil.
//   - "self-signed": a local CA ("hipconnect local CA") and a leaf for Host,
//     kept in Storage; the CA is exported with CAPEM so that it can be
//     imported into HipChat Server's trust store.
//   - "files": a certificate and key from files, re-read by Reload (SIGHUP).
//   - "acme": a certificate from an (internal) ACME CA, obtained and renewed
//     by certmagic, kept in Storage.
//
// A Manager is safe for concurrent use once New has returned.
package tlsmgr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
)

// Mode selects how a Manager gets the certificate of the public listener.
// Its values are the values of tls.mode in the configuration; Valid tells
// whether a Mode is one of them.
type Mode string

// The modes a Manager supports (see the package documentation).
const (
	ModeOff        Mode = "off"         // no TLS: a proxy in front may terminate it
	ModeSelfSigned Mode = "self-signed" // a local CA and a leaf made at start
	ModeFiles      Mode = "files"       // a certificate and key from files
	ModeACME       Mode = "acme"        // from an (internal) ACME CA
)

// Modes returns every valid Mode, in the order documentation and error
// messages list them. Each call returns a new slice the caller may modify.
func Modes() []Mode {
	return []Mode{ModeOff, ModeSelfSigned, ModeFiles, ModeACME}
}

// Valid reports whether m is one of the modes Modes returns. The zero Mode
// is not valid.
func (m Mode) Valid() bool {
	switch m {
	case ModeOff, ModeSelfSigned, ModeFiles, ModeACME:
		return true
	}
	return false
}

// Options configure a Manager.
type Options struct {
	Mode Mode // one of Modes(); New refuses any other value
	// Host is the host of the public base_url (a DNS name or an IP address):
	// the name the certificate is for.
	Host string
	// CertFile and KeyFile are PEM files (files mode). CertFile may hold the
	// chain after the leaf.
	CertFile, KeyFile string
	ACME              ACME
	// Storage keeps the ACME account and certificates and the self-signed
	// CA and leaf. Required in acme and self-signed modes.
	Storage certmagic.Storage
	Logger  *slog.Logger // nil discards
	// HTTPPort and TLSPort are the ports of redirect_listen and listen: the
	// ports ACME HTTP-01 and TLS-ALPN-01 challenges arrive on (acme mode).
	// 0 means 80 and 443.
	HTTPPort, TLSPort int
	// Now is the clock for the self-signed CA and leaf and for expiry checks
	// of loaded files; nil means time.Now. certmagic uses its own clock.
	Now func() time.Time
}

// ACME configures the ACME certificate authority (acme mode).
type ACME struct {
	// Directory is the https URL of the CA's ACME directory.
	Directory string
	// CARootFile is a PEM file with the root(s) that the directory's HTTPS
	// certificate chains to (the internal CA's root); "" trusts the system
	// roots.
	CARootFile string
	Email      string
	// EABKeyID and EABHMAC are the External Account Binding credentials, if
	// the CA requires them (EABHMAC base64url-encoded, as CAs hand it out).
	EABKeyID, EABHMAC string
}

// Manager provides the certificate of the public listener.
type Manager struct {
	mode   Mode
	host   string
	log    *slog.Logger
	now    func() time.Time
	o      Options
	cert   atomic.Pointer[tls.Certificate] // files and self-signed modes
	ctx    context.Context                 // lives until Stop
	cancel context.CancelFunc

	// acme mode
	cache  *certmagic.Cache
	cfg    *certmagic.Config
	issuer *certmagic.ACMEIssuer

	// self-signed mode
	caPEM atomic.Pointer[[]byte]

	startMu sync.Mutex
	started bool
	stop    sync.Once
	wg      sync.WaitGroup

	ready     chan struct{}
	readyOnce sync.Once

	renewals *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	expiry   *prometheus.Desc
}

// New validates o and prepares a Manager. It does no network I/O. In files
// mode it loads and verifies the pair and fails naming the file at fault; in
// acme mode it reads CARootFile and creates certmagic's cache, whose
// maintenance goroutine runs until Stop, so call Stop even if Start is never
// called. ctx bounds New only; its values (not its cancellation) are kept
// for the Manager's background work.
func New(ctx context.Context, o Options) (*Manager, error) {
	m := &Manager{
		mode:  o.Mode,
		host:  normalizeHost(o.Host),
		log:   o.Logger,
		now:   o.Now,
		o:     o,
		ready: make(chan struct{}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_tls_renewals_total",
			Help: "Certificate issuances (first certificate and renewals, acme and self-signed modes) by result.",
		}, []string{"result"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_tls_reloads_total",
			Help: "Reloads of the certificate files (files mode) by result.",
		}, []string{"result"}),
		expiry: prometheus.NewDesc("hipconnect_tls_certificate_expiry_timestamp_seconds",
			"NotAfter of the certificate served on the public listener, in seconds since the epoch.",
			[]string{"host"}, nil),
	}
	for _, r := range []string{resultSuccess, resultFailure} {
		m.renewals.WithLabelValues(r)
		m.reloads.WithLabelValues(r)
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With(slog.String("component", "tlsmgr"), slog.String("mode", string(o.Mode)))
	if m.now == nil {
		m.now = time.Now
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))

	var err error
	switch o.Mode {
	case ModeOff:
		return m, nil
	case ModeFiles:
		if o.CertFile == "" || o.KeyFile == "" {
			err = errors.New("files mode needs cert_file and key_file")
			break
		}
		var c *tls.Certificate
		if c, err = m.loadFiles(); err == nil {
			m.cert.Store(c)
			m.markReady()
		}
	case ModeSelfSigned:
		err = m.checkHostAndStorage()
	case ModeACME:
		if err = m.checkHostAndStorage(); err == nil {
			err = m.newACME()
		}
	default:
		err = fmt.Errorf("unknown mode %q (want off, self-signed, files or acme)", o.Mode)
	}
	if err != nil {
		m.cancel()
		return nil, fmt.Errorf("tlsmgr: new: %w", err)
	}
	return m, nil
}

func (m *Manager) checkHostAndStorage() error {
	if m.host == "" {
		return fmt.Errorf("%s mode needs the host of base_url", m.mode)
	}
	if m.o.Storage == nil {
		return fmt.Errorf("%s mode needs a storage", m.mode)
	}
	return nil
}

// normalizeHost lowercases a DNS name and strips brackets from an IPv6 address.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(h), "["), "]")
	if ip := net.ParseIP(h); ip != nil {
		return ip.String()
	}
	return strings.ToLower(h)
}

// TLSConfig returns a new tls.Config for the public listener, or nil in off
// mode. The certificate is chosen per handshake (GetCertificate), so
// renewals and Reload take effect for new connections without restarting
// the listener, and established connections are left alone. It allows TLS
// 1.2 and 1.3 (Go's suites for 1.3, ECDHE with AEAD ciphers only for 1.2)
// and offers "h2" and "http/1.1", plus "acme-tls/1" in acme mode for
// TLS-ALPN-01 challenges. Callers may modify the returned value.
func (m *Manager) TLSConfig() *tls.Config {
	if m.mode == ModeOff {
		return nil
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
	}
	if m.mode == ModeACME {
		c.GetCertificate = m.cfg.GetCertificate
		c.NextProtos = append(c.NextProtos, acmeTLS1Protocol)
		return c
	}
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if cert := m.cert.Load(); cert != nil {
			return cert, nil
		}
		return nil, errors.New("tlsmgr: get certificate: none yet (not started)")
	}
	return c
}

// Start makes the certificate available and starts its maintenance. It is
// idempotent: once it has succeeded, later calls return nil at once.
//
// In files mode it does nothing (New loaded the pair). In self-signed mode
// it loads the CA and leaf from Storage, creating the CA on first start and
// a new leaf when the stored one is missing, not for Host, or has less than
// 30 days left; it blocks on Storage only, and a background check renews the
// leaf in the same way twice a day until Stop.
//
// In acme mode it calls certmagic's ManageAsync and returns without waiting
// for the network: a certificate in Storage is loaded (and renewed if due)
// in the background within moments, and a first certificate is obtained in
// the background, retried with backoff for up to about 30 days. Until a
// certificate is there, handshakes fail; Ready tells when it is. Because
// challenges are answered by the daemon's own listeners (TLSConfig for
// TLS-ALPN-01, HTTPHandler for HTTP-01), bind both listeners before Start:
// a port that is free when a challenge comes is taken by certmagic itself.
// ctx bounds only the synchronous part of Start; background work lasts
// until Stop.
func (m *Manager) Start(ctx context.Context) error {
	m.startMu.Lock()
	defer m.startMu.Unlock()
	if m.started {
		return nil
	}
	if m.ctx.Err() != nil {
		return errors.New("tlsmgr: start: manager is stopped")
	}
	var err error
	switch m.mode {
	case ModeSelfSigned:
		err = m.startSelfSigned(ctx)
	case ModeACME:
		err = m.startACME()
	}
	if err != nil {
		return fmt.Errorf("tlsmgr: start: %w", err)
	}
	m.started = true
	return nil
}

// Ready returns a channel that is closed once a certificate is available to
// serve: after New in files mode, after Start in self-signed mode, once the
// first certificate is loaded or obtained in acme mode. It is never closed
// in off mode.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

func (m *Manager) markReady() { m.readyOnce.Do(func() { close(m.ready) }) }

// HTTPHandler wraps the handler of the plain-HTTP (redirect) listener: in
// acme mode it answers ACME HTTP-01 challenges and passes everything else
// to next; in other modes it returns next.
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if m.mode != ModeACME {
		return next
	}
	return m.issuer.HTTPChallengeHandler(next)
}

// Reload re-reads CertFile and KeyFile in files mode and swaps the pair in
// atomically: new handshakes get the new certificate, established
// connections are not touched. If the new pair cannot be loaded or does not
// match, the current one stays and Reload returns the error. In other modes
// it is a no-op. Safe for concurrent use.
func (m *Manager) Reload() error {
	if m.mode != ModeFiles {
		return nil
	}
	c, err := m.loadFiles()
	if err != nil {
		m.reloads.WithLabelValues(resultFailure).Inc()
		m.log.Error("certificate reload failed; keeping the current certificate", slog.Any("error", err))
		return fmt.Errorf("tlsmgr: reload: %w", err)
	}
	m.cert.Store(c)
	m.reloads.WithLabelValues(resultSuccess).Inc()
	m.log.Info("certificate reloaded",
		slog.String("serial", c.Leaf.SerialNumber.Text(16)),
		slog.Time("not_after", c.Leaf.NotAfter))
	return nil
}

// CAPEM returns the PEM of the local CA in self-signed mode, after Start
// (for `hipconnect tls export-ca`). It is an error in other modes or before
// Start.
func (m *Manager) CAPEM() ([]byte, error) {
	if m.mode != ModeSelfSigned {
		return nil, fmt.Errorf("tlsmgr: ca pem: mode is %q, not self-signed", m.mode)
	}
	p := m.caPEM.Load()
	if p == nil {
		return nil, errors.New("tlsmgr: ca pem: not started")
	}
	return append([]byte(nil), *p...), nil
}

// Leaf returns the certificate currently served for Host, or nil in off
// mode and before one is available. The result must not be modified.
func (m *Manager) Leaf() *x509.Certificate {
	switch m.mode {
	case ModeFiles, ModeSelfSigned:
		if c := m.cert.Load(); c != nil {
			return c.Leaf
		}
	case ModeACME:
		var leaf *x509.Certificate
		for _, c := range m.cache.AllMatchingCertificates(m.host) {
			if c.Leaf != nil && (leaf == nil || c.Leaf.NotAfter.After(leaf.NotAfter)) {
				leaf = c.Leaf
			}
		}
		return leaf
	}
	return nil
}

// Stop stops background work (certmagic's maintenance and any obtain or
// renewal under way, the self-signed renewal check) and waits for it. It is
// idempotent; a stopped Manager cannot be started again, but TLSConfig
// keeps serving the last certificate.
func (m *Manager) Stop() {
	m.stop.Do(func() {
		m.cancel()
		if m.cache != nil {
			m.cache.Stop()
		}
		m.wg.Wait()
	})
}
