package tlsmgr

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"
)

// acmeTLS1Protocol is the ALPN protocol of TLS-ALPN-01 challenges (RFC 8737).
const acmeTLS1Protocol = "acme-tls/1"

// newACME builds the certmagic cache, config and ACME issuer. Nothing comes
// from certmagic's package-level Default: the Manager owns its cache, and
// every field that NewACMEIssuer would otherwise fill from DefaultACME that
// matters here is set.
func (m *Manager) newACME() error {
	a := m.o.ACME
	u, err := url.Parse(a.Directory)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("acme directory %q: want an https URL", a.Directory)
	}
	var roots *x509.CertPool
	if a.CARootFile != "" {
		b, err := os.ReadFile(a.CARootFile)
		if err != nil {
			return fmt.Errorf("acme ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("acme ca_root %s: no PEM certificate found", a.CARootFile)
		}
	}
	var eab *acme.EAB
	if a.EABKeyID != "" || a.EABHMAC != "" {
		if a.EABKeyID == "" || a.EABHMAC == "" {
			return fmt.Errorf("acme external account binding needs both eab_kid and eab_hmac")
		}
		eab = &acme.EAB{KeyID: a.EABKeyID, MACKey: a.EABHMAC}
	}

	zl := zap.New(newZapCore(m.log.With(slog.String("lib", "certmagic"))))
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		Logger:           zl,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage: m.o.Storage,
		Logger:  zl,
		// Handshakes without SNI (clients dialling an IP) and for other
		// names get the one certificate there is.
		DefaultServerName:  m.host,
		FallbackServerName: m.host,
		KeySource:          certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		OnEvent:            m.onEvent,
		ShouldEmitFunc:     func(ev string) bool { return ev != "tls_get_certificate" },
	})
	m.issuer = certmagic.NewACMEIssuer(m.cfg, certmagic.ACMEIssuer{
		CA:              a.Directory,
		TrustedRoots:    roots,
		Email:           a.Email,
		Agreed:          true,
		ExternalAccount: eab,
		AltHTTPPort:     m.o.HTTPPort,
		AltTLSALPNPort:  m.o.TLSPort,
		// DNS-01 stays off: DNS01Solver is nil.
		Logger: zl,
		// The daemon ignores proxy environment variables for every
		// connection it opens; the internal CA is reached directly too.
		HTTPProxy: func(*http.Request) (*url.URL, error) { return nil, nil },
	})
	m.cfg.Issuers = []certmagic.Issuer{m.issuer}
	return nil
}

func (m *Manager) startACME() error {
	// ManageAsync: load from storage or obtain in the background, so that
	// the daemon starts serving (and answering challenges) at once; it also
	// never prompts on stdin for an email, as the interactive ManageSync
	// would when Email is empty.
	if err := m.cfg.ManageAsync(m.ctx, []string{m.host}); err != nil {
		return fmt.Errorf("manage %s: %w", m.host, err)
	}
	return nil
}

// onEvent receives certmagic's events (synchronously: keep it quick).
func (m *Manager) onEvent(_ context.Context, event string, data map[string]any) error {
	switch event {
	case "cached_managed_cert":
		m.markReady()
	case "cert_obtained":
		m.renewals.WithLabelValues(resultSuccess).Inc()
		m.log.Info("certificate obtained", slog.Any("identifier", data["identifier"]),
			slog.Any("renewal", data["renewal"]), slog.Any("issuer", data["issuer"]))
	case "cert_failed":
		m.renewals.WithLabelValues(resultFailure).Inc()
		m.log.Error("certificate could not be obtained", slog.Any("identifier", data["identifier"]),
			slog.Any("renewal", data["renewal"]), slog.Any("error", data["error"]))
	}
	return nil
}
