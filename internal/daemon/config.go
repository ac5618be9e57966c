package daemon

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/hipconnect/hipconnect/internal/allowlist"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/outbound"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// This file derives from the configuration what the daemon and the CLI
// both need: the descriptor, the allowlist and the clients that obey it,
// the commands, and the store's paths.

// Scopes are the HipChat API scopes hipconnect asks for.
var Scopes = []string{"send_notification", "view_room"}

// Descriptor returns the capability descriptor cfg describes.
func Descriptor(cfg *config.Config) (descriptor.Descriptor, error) {
	names := commandNames(cfg)
	return descriptor.Build(descriptor.Spec{
		BaseURL: cfg.Server.BaseURL, Key: cfg.Addon.Key, Name: cfg.Addon.Name, Description: cfg.Addon.Description,
		VendorName: cfg.Addon.VendorName, VendorURL: cfg.Addon.VendorURL, Commands: names, Scopes: Scopes,
		UI: true,
	})
}

// allowlistOf returns the hosts the daemon may contact: hipchat.allowed_hosts
// plus the hosts of the configured search URLs and the ACME directory.
func allowlistOf(cfg *config.Config) (*allowlist.List, error) {
	entries := append([]string(nil), cfg.HipChat.AllowedHosts...)
	for _, c := range cfg.Commands {
		if c.SearchURL != "" {
			u, err := url.Parse(c.SearchURL)
			if err != nil {
				return nil, fmt.Errorf("daemon: commands.%s.search_url: %w", c.Name, err)
			}
			entries = append(entries, u.Hostname())
		}
	}
	if cfg.TLS.Mode == tlsmgr.ModeACME {
		u, err := url.Parse(cfg.TLS.ACME.Directory)
		if err != nil {
			return nil, fmt.Errorf("daemon: tls.acme.directory: %w", err)
		}
		entries = append(entries, u.Hostname())
	}
	l, err := allowlist.Parse(entries)
	if err != nil {
		return nil, fmt.Errorf("daemon: hipchat.allowed_hosts: %w", err)
	}
	return l, nil
}

// rootCAs returns the system roots plus the PEM certificates in caFile.
func rootCAs(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("daemon: hipchat.ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("daemon: hipchat.ca_file: no PEM certificate in %s", caFile)
	}
	return pool, nil
}

// outboundClient returns the one HTTP client for everything the daemon
// contacts, restricted to allow.
func outboundClient(cfg *config.Config, allow *allowlist.List) (*http.Client, error) {
	roots, err := rootCAs(cfg.HipChat.CAFile)
	if err != nil {
		return nil, err
	}
	var proxy *url.URL
	if cfg.Outbound.Proxy != "" {
		if proxy, err = url.Parse(cfg.Outbound.Proxy); err != nil {
			return nil, fmt.Errorf("daemon: outbound.proxy: %w", err)
		}
	}
	return outbound.New(outbound.Options{Allow: allow, RootCAs: roots, Proxy: proxy,
		Timeout: cfg.Outbound.Timeout, MaxResponseBytes: cfg.Outbound.MaxResponseBytes}), nil
}

// Commands converts the configured commands.
func Commands(cfg *config.Config) []command.Spec {
	specs := make([]command.Spec, len(cfg.Commands))
	for i, c := range cfg.Commands {
		specs[i] = command.Spec{Name: c.Name, Kind: c.Kind, SearchURL: c.SearchURL, ResultsPath: c.ResultsPath,
			TitleField: c.TitleField, URLField: c.URLField, MaxResults: c.MaxResults, ShowAllURL: c.ShowAllURL, Timeout: c.Timeout,
			Reply: c.Reply, ReplyBudget: c.ReplyBudget}
	}
	return specs
}

// KeyFile is the path of the key that encrypts secrets in the store.
func KeyFile(cfg *config.Config) string {
	if cfg.Storage.KeyFile != "" {
		return cfg.Storage.KeyFile
	}
	return cfg.Storage.Path + ".key"
}

// AdminSocket is the path of the admin socket of the daemon using cfg.
func AdminSocket(cfg *config.Config) string { return cfg.Storage.Path + ".sock" }

// Clients are what the daemon (and `hipconnect check`) use to reach the
// outside: every connection goes through HTTP, which dials only hosts on
// Allow; HipChat calls (and uninstall redirects) go only to HipChatHosts,
// never to the search or ACME hosts Allow also has.
type Clients struct {
	Allow        *allowlist.List
	HipChatHosts *allowlist.List
	HTTP         *http.Client
	HipChat      *hipchat.Client
}

// NewClients builds the Clients cfg describes; userAgent names the program
// to HipChat.
func NewClients(cfg *config.Config, userAgent string, now func() time.Time) (*Clients, error) {
	allow, err := allowlistOf(cfg)
	if err != nil {
		return nil, err
	}
	client, err := outboundClient(cfg, allow)
	if err != nil {
		return nil, err
	}
	hosts, err := allowlist.Parse(cfg.HipChat.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("daemon: hipchat.allowed_hosts: %w", err)
	}
	return &Clients{Allow: allow, HipChatHosts: hosts, HTTP: client,
		HipChat: &hipchat.Client{HTTP: client, Allowed: hosts.AllowHost, UserAgent: userAgent, Now: now}}, nil
}

func commandNames(cfg *config.Config) []string {
	names := make([]string, len(cfg.Commands))
	for i, c := range cfg.Commands {
		names[i] = c.Name
	}
	return names
}

// portOf is the port of a listen address, def when it names none.
func portOf(addr string, def int) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return def
	}
	n, err := strconv.Atoi(p)
	if err != nil || n == 0 {
		return def
	}
	return n
}
