package config

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// The patterns are compiled once and only read afterwards.
var (
	addonKeyRE    = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,40}$`)
	commandNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	hostnameRE    = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*$`)
)

// logLevels returns the values of log.level, in the order error messages
// list them.
func logLevels() []string { return []string{"debug", "info", "warn", "error"} }

// logFormats returns the values of log.format, in the order error messages
// list them.
func logFormats() []string { return []string{"text", "json"} }

// Validate normalises c in place and then checks it, returning every problem
// found (joined with errors.Join), each naming its key, or nil.
//
// Normalising removes trailing slashes from server.base_url, turns an
// empty commands[].kind into "search", an empty commands[].reply into
// "auto" and a zero reply_budget into DefaultReplyBudget, and an empty
// integrations[].reply into "response" ("api" with storage.backend
// postgres) and token_rate into
// DefaultTokenRate. Validate checks syntax only: it opens
// no file and resolves no name. Load calls it; call it again after changing
// a Config by hand.
//
// The sections are checked in the order server, tls, storage, hipchat,
// outbound, addon, commands, integrations, log, and the problems are reported in the
// order they are found.
func (c *Config) Validate() error {
	var p problems
	c.Server.validate(&p)
	c.TLS.validate(&p)
	c.Storage.validate(&p)
	c.HipChat.validate(&p)
	c.Outbound.validate(&p)
	c.Addon.validate(&p)
	validateCommands(c.Commands, &p)
	validateIntegrations(c.Integrations, c.Commands, c.Storage.Backend, &p)
	c.validateCluster(&p)
	c.Log.validate(&p)
	return errors.Join(p...)
}

// problems collects what Validate finds wrong, in the order found. Each
// entry reads "config: <key>: <problem>".
type problems []error

// add records a problem with key, described by format and args.
func (p *problems) add(key, format string, args ...any) {
	*p = append(*p, fmt.Errorf("config: %s: "+format, append([]any{key}, args...)...))
}

// wrap records err as a problem with key.
func (p *problems) wrap(key string, err error) {
	*p = append(*p, fmt.Errorf("config: %s: %w", key, err))
}

// httpURL records a problem with key unless s is an absolute http or https
// URL with a host (with {term} outside the host when withTerm; see
// checkHTTPURL).
func (p *problems) httpURL(key, s string, withTerm bool) {
	if err := checkHTTPURL(s, withTerm); err != nil {
		p.wrap(key, err)
	}
}

// positive records a problem with key unless n is greater than zero.
func (p *problems) positive(key string, n int64) {
	if n <= 0 {
		p.add(key, "must be greater than zero")
	}
}

// oneOf lists values for an error message, as "a, b, c".
func oneOf[T ~string](values []T) string {
	s := make([]string, len(values))
	for i, v := range values {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// validate checks the server section and removes trailing slashes from
// BaseURL when it is otherwise valid.
func (s *Server) validate(p *problems) {
	s.validateBaseURL(p)
	if s.Listen == "" {
		p.add("server.listen", "must be set, as host:port")
	}
	s.validateListeners(p)
	p.positive("server.max_body_bytes", s.MaxBodyBytes)
	p.positive("server.read_timeout", int64(s.ReadTimeout))
	p.positive("server.write_timeout", int64(s.WriteTimeout))
	p.positive("server.idle_timeout", int64(s.IdleTimeout))
	p.positive("server.shutdown_grace", int64(s.ShutdownGrace))
}

// validateBaseURL checks server.base_url: an absolute http or https URL
// without query, fragment or user information. Only a valid value is
// normalised (trailing slashes removed); at most one problem is recorded.
func (s *Server) validateBaseURL(p *problems) {
	const key = "server.base_url"
	if err := checkHTTPURL(s.BaseURL, false); err != nil {
		p.wrap(key, err)
	} else if u, _ := url.Parse(s.BaseURL); u.RawQuery != "" || u.ForceQuery || strings.Contains(s.BaseURL, "#") {
		p.add(key, "must not have a query or fragment")
	} else if u.User != nil {
		p.add(key, "must not contain a user or password")
	} else {
		s.BaseURL = strings.TrimRight(s.BaseURL, "/")
	}
}

// validateListeners checks the syntax of listen, redirect_listen and
// ops_listen (an empty one is skipped) and that no two of them share an
// address, except with port 0 (a port the system picks).
func (s *Server) validateListeners(p *problems) {
	listeners := map[string]string{} // address -> key
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
			p.wrap(l.key, err)
			continue
		}
		if other, dup := listeners[l.addr]; dup && port != 0 {
			p.add(l.key, "%q is also %s", l.addr, other)
		}
		listeners[l.addr] = l.key
	}
}

// validate checks the tls section: a known mode, and the keys that mode
// needs. An unknown mode is the only problem recorded for the section.
func (t *TLS) validate(p *problems) {
	if !t.Mode.Valid() {
		p.add("tls.mode", "must be one of %s, got %q", oneOf(tlsmgr.Modes()), t.Mode)
		return
	}
	switch t.Mode {
	case tlsmgr.ModeFiles:
		if t.CertFile == "" {
			p.add("tls.cert_file", "must be set when tls.mode is %q", tlsmgr.ModeFiles)
		}
		if t.KeyFile == "" {
			p.add("tls.key_file", "must be set when tls.mode is %q", tlsmgr.ModeFiles)
		}
	case tlsmgr.ModeACME:
		t.ACME.validate(p)
	}
}

// validate checks tls.acme, for tls.mode acme: an https directory, an
// optional email address, and both or neither of the EAB credentials.
func (a *ACME) validate(p *problems) {
	const dirKey = "tls.acme.directory"
	if a.Directory == "" {
		p.add(dirKey, "must be set when tls.mode is %q", tlsmgr.ModeACME)
	} else if err := checkHTTPURL(a.Directory, false); err != nil {
		p.wrap(dirKey, err)
	} else if !strings.HasPrefix(strings.ToLower(a.Directory), "https://") {
		p.add(dirKey, "must be an https URL, got %q", a.Directory)
	}
	if a.Email != "" {
		if _, err := mail.ParseAddress(a.Email); err != nil {
			p.add("tls.acme.email", "must be an email address, got %q", a.Email)
		}
	}
	if (a.EABKID == "") != (a.EABHMAC == "") {
		p.add("tls.acme.eab_kid", "tls.acme.eab_kid and tls.acme.eab_hmac must be set together or not at all")
	}
}

// validate checks the storage section.
func (s *Storage) validate(p *problems) {
	if s.Path == "" {
		p.add("storage.path", "must be set")
	}
	p.positive("storage.open_timeout", int64(s.OpenTimeout))
	p.positive("storage.max_pending", int64(s.MaxPending))
	pg := s.Postgres
	switch s.Backend {
	case BackendBolt:
		if pg != (Postgres{}) {
			p.add("storage.postgres", "is for storage.backend %q only (storage.backend is %q)", BackendPostgres, BackendBolt)
		}
	case BackendPostgres:
		if pg.DSN == "" {
			p.add("storage.postgres.dsn", "must be set when storage.backend is %q", BackendPostgres)
		}
		if pg.PasswordFile != "" && !filepath.IsAbs(pg.PasswordFile) {
			p.add("storage.postgres.password_file", "must be an absolute path, got %q", pg.PasswordFile)
		}
		if pg.MaxConns < 0 || pg.MaxConns > 1000 {
			p.add("storage.postgres.max_conns", "must be 0 (pgx's default) to 1000, got %d", pg.MaxConns)
		}
	default:
		p.add("storage.backend", "must be one of %s, got %q", oneOf([]string{BackendBolt, BackendPostgres}), s.Backend)
	}
}

// validateCluster refuses what several nodes on one database cannot do:
// a reply only in the webhook's response. The reply of an installation's
// job is made by the node holding the installation, which need not be the
// node holding the request, so the request could not be answered; auto
// falls back to the API there, and an integration's reply defaults to api.
func (c *Config) validateCluster(p *problems) {
	if c.Storage.Backend != BackendPostgres {
		return
	}
	for i, cmd := range c.Commands {
		if cmd.Reply == command.ReplyResponse {
			p.add(fmt.Sprintf("commands[%d].reply", i), "%q is not possible with storage.backend %q (the node holding the request may not hold the installation): use auto or api",
				command.ReplyResponse, BackendPostgres)
		}
	}
	for i, in := range c.Integrations {
		if in.Reply == command.ReplyResponse {
			p.add(fmt.Sprintf("integrations[%d].reply", i), "%q is not possible with storage.backend %q (the node holding the request may not hold the integration): use api",
				command.ReplyResponse, BackendPostgres)
		}
	}
}

// validate checks the hipchat section: no allowed host may be empty or "*".
// The entries' syntax is the allowlist's to check.
func (h *HipChat) validate(p *problems) {
	for i, host := range h.AllowedHosts {
		key := fmt.Sprintf("hipchat.allowed_hosts[%d]", i)
		switch strings.TrimSpace(host) {
		case "":
			p.add(key, "must not be empty")
		case "*":
			p.add(key, "\"*\" would accept any host; list the HipChat Server hosts")
		}
	}
}

// validate checks the outbound section. A bad proxy URL is reported without
// its value, which may hold a password.
func (o *Outbound) validate(p *problems) {
	if o.Proxy != "" && checkHTTPURL(o.Proxy, false) != nil {
		p.add("outbound.proxy", "must be an absolute http or https URL with a host")
	}
	p.positive("outbound.timeout", int64(o.Timeout))
	p.positive("outbound.max_response_bytes", o.MaxResponseBytes)
}

// validate checks the addon section.
func (a *Addon) validate(p *problems) {
	if !addonKeyRE.MatchString(a.Key) {
		p.add("addon.key", "must be 1 to 40 characters of a-z A-Z 0-9 _ . -, got %q", a.Key)
	}
	if n := utf8.RuneCountInString(a.Name); n < 1 || n > 100 {
		p.add("addon.name", "must be 1 to 100 characters, got %d", n)
	}
	if a.VendorURL != "" {
		p.httpURL("addon.vendor_url", a.VendorURL, false)
	}
}

// validateCommands checks the commands list: at least one command, unique
// valid names, and each command valid for its kind. It turns an empty kind
// into command.KindSearch in place.
func validateCommands(cmds []Command, p *problems) {
	if len(cmds) == 0 {
		p.add("commands", "must list at least one command")
	}
	names := map[string]int{} // name -> index of its first command
	for i := range cmds {
		cmd := &cmds[i]
		prefix := fmt.Sprintf("commands[%d].", i)
		if !commandNameRE.MatchString(cmd.Name) {
			p.add(prefix+"name", "must match %s, got %q", commandNameRE, cmd.Name)
		} else if j, dup := names[cmd.Name]; dup {
			p.add(prefix+"name", "%q is also the name of commands[%d]", cmd.Name, j)
		} else {
			names[cmd.Name] = i
		}
		cmd.validateKind(prefix, p)
		if cmd.Reply == "" {
			cmd.Reply = command.ReplyAuto
		}
		if cmd.ReplyBudget == 0 {
			cmd.ReplyBudget = DefaultReplyBudget
		}
		if !slices.Contains(command.Replies(), cmd.Reply) {
			p.add(prefix+"reply", "must be one of %s, got %q", oneOf(command.Replies()), cmd.Reply)
		}
		if cmd.ReplyBudget <= 0 || cmd.ReplyBudget > MaxReplyBudget {
			p.add(prefix+"reply_budget", "must be more than 0 and at most %v, got %v", MaxReplyBudget, cmd.ReplyBudget)
		}
	}
}

// MaxReplyBudget bounds commands[].reply_budget: HipChat does not wait
// long for a webhook's answer.
const MaxReplyBudget = 10 * time.Second

var integrationNameRE = regexp.MustCompile(`^[a-z0-9-]{1,40}$`)

// validateIntegrations checks the integrations list: unique valid names,
// an absolute room_url_file, commands that are in cmds, a reply mode of
// response or api, and a token_rate ParseRate reads. The room URL file is
// read by the daemon, not here.
func validateIntegrations(list []Integration, cmds []Command, backend string, p *problems) {
	names := map[string]int{}
	for i := range list {
		in := &list[i]
		prefix := fmt.Sprintf("integrations[%d].", i)
		if in.Reply == "" {
			in.Reply = command.ReplyResponse
			if backend == BackendPostgres {
				in.Reply = command.ReplyAPI // see validateCluster
			}
		}
		if in.TokenRate == "" {
			in.TokenRate = DefaultTokenRate
		}
		if !integrationNameRE.MatchString(in.Name) {
			p.add(prefix+"name", "must match %s, got %q", integrationNameRE, in.Name)
		} else if j, dup := names[in.Name]; dup {
			p.add(prefix+"name", "%q is also the name of integrations[%d]", in.Name, j)
		} else {
			names[in.Name] = i
		}
		if !filepath.IsAbs(in.RoomURLFile) {
			p.add(prefix+"room_url_file", "must be an absolute path, got %q", in.RoomURLFile)
		}
		if len(in.Commands) == 0 {
			p.add(prefix+"commands", "must list at least one command")
		}
		for _, name := range in.Commands {
			if !slices.ContainsFunc(cmds, func(c Command) bool { return c.Name == name }) {
				p.add(prefix+"commands", "%q is not the name of one of commands", name)
			}
		}
		if in.Reply != command.ReplyResponse && in.Reply != command.ReplyAPI {
			p.add(prefix+"reply", "must be one of response, api, got %q", in.Reply)
		}
		if _, _, err := ParseRate(in.TokenRate); err != nil {
			p.wrap(prefix+"token_rate", err)
		}
	}
}

// ParseRate reads a rate "N/duration", such as "100/5m": at most N
// requests in any window of that duration, N >= 1.
func ParseRate(s string) (n int, per time.Duration, err error) {
	ns, ds, ok := strings.Cut(s, "/")
	if ok {
		n, err = strconv.Atoi(ns)
	}
	if ok && err == nil {
		per, err = time.ParseDuration(ds)
	}
	if !ok || err != nil || n < 1 || per <= 0 {
		return 0, 0, fmt.Errorf("must be a rate such as 100/5m (requests per duration), got %q", s)
	}
	return n, per, nil
}

// validateKind defaults an empty Kind to command.KindSearch, then checks
// that Kind is known and, for a search command, its search keys. prefix is
// the command's key with a trailing dot, such as "commands[0].".
func (cmd *Command) validateKind(prefix string, p *problems) {
	if cmd.Kind == "" {
		cmd.Kind = command.KindSearch
	}
	if !cmd.Kind.Valid() {
		p.add(prefix+"kind", "must be one of %s, got %q", oneOf(command.Kinds()), cmd.Kind)
		return
	}
	if cmd.Kind == command.KindSearch {
		cmd.validateSearch(prefix, p)
	}
}

// validateSearch checks the keys of a search command. prefix is as for
// validateKind.
func (cmd *Command) validateSearch(prefix string, p *problems) {
	if cmd.SearchURL == "" {
		p.add(prefix+"search_url", "must be set for a search command")
	} else {
		p.httpURL(prefix+"search_url", cmd.SearchURL, true)
	}
	if cmd.TitleField == "" {
		p.add(prefix+"title_field", "must not be empty")
	}
	if cmd.URLField == "" {
		p.add(prefix+"url_field", "must not be empty")
	}
	if cmd.MaxResults < 1 || cmd.MaxResults > 50 {
		p.add(prefix+"max_results", "must be between 1 and 50, got %d", cmd.MaxResults)
	}
	p.positive(prefix+"timeout", int64(cmd.Timeout))
	if cmd.ShowAllURL != "" {
		p.httpURL(prefix+"show_all_url", cmd.ShowAllURL, false)
	}
}

// validate checks the log section.
func (l *Log) validate(p *problems) {
	if !slices.Contains(logLevels(), l.Level) {
		p.add("log.level", "must be one of %s, got %q", strings.Join(logLevels(), ", "), l.Level)
	}
	if !slices.Contains(logFormats(), l.Format) {
		p.add("log.format", "must be one of %s, got %q", strings.Join(logFormats(), ", "), l.Format)
	}
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
