package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TLS modes, the values of tls.mode.
const (
	TLSOff        = "off"         // plain HTTP (a proxy in front may terminate TLS)
	TLSSelfSigned = "self-signed" // a certificate made up at start
	TLSFiles      = "files"       // tls.cert_file and tls.key_file
	TLSACME       = "acme"        // from the ACME directory tls.acme.directory
)

// Command kinds, the values of commands[].kind.
const (
	KindSearch = "search" // query search_url and list the hits
	KindEcho   = "echo"   // answer with the arguments
)

var (
	tlsModes   = []string{TLSOff, TLSSelfSigned, TLSFiles, TLSACME}
	kinds      = []string{KindSearch, KindEcho}
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}

	addonKeyRE    = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,40}$`)
	commandNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	hostnameRE    = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)
)

// Validate normalises c in place and then checks it, returning every problem
// found (joined with errors.Join), each naming its key, or nil.
//
// Normalising removes trailing slashes from server.base_url and turns an
// empty commands[].kind into "search". Validate checks syntax only: it opens
// no file and resolves no name. Load calls it; call it again after changing
// a Config by hand.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: "+format, append([]any{key}, args...)...))
	}
	checkURL := func(key, s string, withTerm bool) {
		if err := checkHTTPURL(s, withTerm); err != nil {
			bad(key, "%v", err)
		}
	}
	positive := func(key string, n int64) {
		if n <= 0 {
			bad(key, "must be greater than zero")
		}
	}

	// server
	s := &c.Server
	if err := checkHTTPURL(s.BaseURL, false); err != nil {
		bad("server.base_url", "%v", err)
	} else if u, _ := url.Parse(s.BaseURL); u.RawQuery != "" || u.ForceQuery || strings.Contains(s.BaseURL, "#") {
		bad("server.base_url", "must not have a query or fragment")
	} else if u.User != nil {
		bad("server.base_url", "must not contain a user or password")
	} else {
		s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	}
	if s.Listen == "" {
		bad("server.listen", "must be set, as host:port")
	}
	listeners := map[string]string{}
	for _, l := range []struct{ key, addr string }{
		{"server.listen", s.Listen},
		{"server.redirect_listen", s.RedirectListen},
		{"server.ops_listen", s.OpsListen},
	} {
		if l.addr == "" {
			continue
		}
		port, err := checkHostPort(l.addr)
		if err != nil {
			bad(l.key, "%v", err)
			continue
		}
		if other, dup := listeners[l.addr]; dup && port != 0 {
			bad(l.key, "%q is also %s", l.addr, other)
		}
		listeners[l.addr] = l.key
	}
	positive("server.max_body_bytes", s.MaxBodyBytes)
	positive("server.read_timeout", int64(s.ReadTimeout))
	positive("server.write_timeout", int64(s.WriteTimeout))
	positive("server.idle_timeout", int64(s.IdleTimeout))
	positive("server.shutdown_grace", int64(s.ShutdownGrace))

	// tls
	t := &c.TLS
	switch t.Mode {
	case TLSOff, TLSSelfSigned:
	case TLSFiles:
		if t.CertFile == "" {
			bad("tls.cert_file", "must be set when tls.mode is %q", TLSFiles)
		}
		if t.KeyFile == "" {
			bad("tls.key_file", "must be set when tls.mode is %q", TLSFiles)
		}
	case TLSACME:
		a := t.ACME
		if a.Directory == "" {
			bad("tls.acme.directory", "must be set when tls.mode is %q", TLSACME)
		} else if err := checkHTTPURL(a.Directory, false); err != nil {
			bad("tls.acme.directory", "%v", err)
		} else if !strings.HasPrefix(strings.ToLower(a.Directory), "https://") {
			bad("tls.acme.directory", "must be an https URL, got %q", a.Directory)
		}
		if a.Email != "" {
			if _, err := mail.ParseAddress(a.Email); err != nil {
				bad("tls.acme.email", "must be an email address, got %q", a.Email)
			}
		}
		if (a.EABKID == "") != (a.EABHMAC == "") {
			bad("tls.acme.eab_kid", "tls.acme.eab_kid and tls.acme.eab_hmac must be set together or not at all")
		}
	default:
		bad("tls.mode", "must be one of %s, got %q", strings.Join(tlsModes, ", "), t.Mode)
	}

	// storage
	if c.Storage.Path == "" {
		bad("storage.path", "must be set")
	}
	positive("storage.open_timeout", int64(c.Storage.OpenTimeout))
	positive("storage.max_pending", int64(c.Storage.MaxPending))

	// hipchat
	for i, h := range c.HipChat.AllowedHosts {
		key := fmt.Sprintf("hipchat.allowed_hosts[%d]", i)
		switch strings.TrimSpace(h) {
		case "":
			bad(key, "must not be empty")
		case "*":
			bad(key, "\"*\" would accept any host; list the HipChat Server hosts")
		}
	}

	// outbound
	if c.Outbound.Proxy != "" {
		if err := checkHTTPURL(c.Outbound.Proxy, false); err != nil {
			// The value may hold a password: do not repeat it.
			bad("outbound.proxy", "must be an absolute http or https URL with a host")
		}
	}
	positive("outbound.timeout", int64(c.Outbound.Timeout))
	positive("outbound.max_response_bytes", c.Outbound.MaxResponseBytes)

	// addon
	if !addonKeyRE.MatchString(c.Addon.Key) {
		bad("addon.key", "must be 1 to 40 characters of a-z A-Z 0-9 _ . -, got %q", c.Addon.Key)
	}
	if n := utf8.RuneCountInString(c.Addon.Name); n < 1 || n > 100 {
		bad("addon.name", "must be 1 to 100 characters, got %d", n)
	}
	if c.Addon.VendorURL != "" {
		checkURL("addon.vendor_url", c.Addon.VendorURL, false)
	}

	// commands
	if len(c.Commands) == 0 {
		bad("commands", "must list at least one command")
	}
	names := map[string]int{}
	for i := range c.Commands {
		cmd := &c.Commands[i]
		key := func(k string) string { return fmt.Sprintf("commands[%d].%s", i, k) }
		if !commandNameRE.MatchString(cmd.Name) {
			bad(key("name"), "must match %s, got %q", commandNameRE, cmd.Name)
		} else if j, dup := names[cmd.Name]; dup {
			bad(key("name"), "%q is also the name of commands[%d]", cmd.Name, j)
		} else {
			names[cmd.Name] = i
		}
		if cmd.Kind == "" {
			cmd.Kind = KindSearch
		}
		switch cmd.Kind {
		case KindSearch:
			if cmd.SearchURL == "" {
				bad(key("search_url"), "must be set for a search command")
			} else {
				checkURL(key("search_url"), cmd.SearchURL, true)
			}
			if cmd.TitleField == "" {
				bad(key("title_field"), "must not be empty")
			}
			if cmd.URLField == "" {
				bad(key("url_field"), "must not be empty")
			}
			if cmd.MaxResults < 1 || cmd.MaxResults > 50 {
				bad(key("max_results"), "must be between 1 and 50, got %d", cmd.MaxResults)
			}
			positive(key("timeout"), int64(cmd.Timeout))
			if cmd.ShowAllURL != "" {
				checkURL(key("show_all_url"), cmd.ShowAllURL, false)
			}
		case KindEcho:
		default:
			bad(key("kind"), "must be one of %s, got %q", strings.Join(kinds, ", "), cmd.Kind)
		}
	}

	// log
	if !slices.Contains(logLevels, c.Log.Level) {
		bad("log.level", "must be one of %s, got %q", strings.Join(logLevels, ", "), c.Log.Level)
	}
	if !slices.Contains(logFormats, c.Log.Format) {
		bad("log.format", "must be one of %s, got %q", strings.Join(logFormats, ", "), c.Log.Format)
	}

	return errors.Join(errs...)
}

// checkHTTPURL checks that s is an absolute http or https URL with a host.
// With withTerm, s must contain {term}, outside the host (the host decides
// where the request goes, and must not depend on what a user types); s is
// checked with {term} replaced.
func checkHTTPURL(s string, withTerm bool) error {
	const placeholder = "hipconnect-term"
	orig := s
	if withTerm {
		if !strings.Contains(s, "{term}") {
			return fmt.Errorf("must contain {term}, got %q", s)
		}
		s = strings.ReplaceAll(s, "{term}", placeholder)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("must be an absolute http or https URL with a host, got %q", orig)
	}
	if withTerm && (strings.Contains(u.Host, placeholder) || strings.Contains(u.User.String(), placeholder)) {
		return fmt.Errorf("{term} must not be in the host or user part, got %q", orig)
	}
	return nil
}

// checkHostPort checks a listen address, host:port with an optional host (an
// IP address or a name) and a numeric port 0-65535, and returns the port.
func checkHostPort(addr string) (int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("must be host:port, such as \"127.0.0.1:8080\" or \":443\", got %q", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return 0, fmt.Errorf("port must be a number from 0 to 65535, got %q", portStr)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && !hostnameRE.MatchString(host) {
			return 0, fmt.Errorf("host must be an IP address or a name, got %q", host)
		}
	}
	return port, nil
}

// redactURL hides the password of a URL, if it has one.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return Redaction
		}
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Redaction)
		return u.String()
	}
	return s
}
