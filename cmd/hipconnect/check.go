package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/allowlist"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/integration"
)

// multiFlag collects a repeatable flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// checker prints one line per finding and remembers failures.
type checker struct {
	w      io.Writer
	failed int
}

func (c *checker) ok(format string, args ...any)   { fmt.Fprintf(c.w, "ok    "+format+"\n", args...) }
func (c *checker) warn(format string, args ...any) { fmt.Fprintf(c.w, "warn  "+format+"\n", args...) }
func (c *checker) fail(format string, args ...any) {
	c.failed++
	fmt.Fprintf(c.w, "FAIL  "+format+"\n", args...)
}

// check is the operator's preflight. It exits 0 only when every check
// passed; warnings do not fail it.
func (e env) check(ctx context.Context, args []string) error {
	var hipchats multiFlag
	cfg, pos, err := e.flags("check", args, func(fs *flag.FlagSet) {
		fs.Var(&hipchats, "hipchat", "capabilities `URL` of a HipChat Server to fetch (repeatable)")
	})
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: check takes no arguments", errUsage)
	}
	c := &checker{w: e.stdout}
	c.ok("configuration is valid (tls.mode %s, base_url %s)", cfg.TLS.Mode, cfg.Server.BaseURL)
	if _, err := daemon.Descriptor(cfg); err != nil {
		c.fail("descriptor: %v", err)
	} else {
		c.ok("descriptor passes HipChat's schema rules")
	}
	clients, err := daemon.NewClients(cfg, "hipconnect-check/"+version, nil)
	if err != nil {
		c.fail("%v", err)
	} else {
		c.ok("allowlist: %s", clients.Allow)
		checkResolve(ctx, c, clients.Allow)
		checkHipChats(ctx, c, clients.HipChat, hipchats)
		checkIntegrations(ctx, c, cfg, clients)
	}
	checkCertificate(c, cfg)
	printConnections(e.stdout, cfg)
	if c.failed > 0 {
		return fmt.Errorf("check: %d problem(s) found", c.failed)
	}
	fmt.Fprintln(e.stdout, "all checks passed")
	return nil
}

// checkResolve resolves every allowlisted name and says whether the
// outbound client would connect to what it resolves to.
func checkResolve(ctx context.Context, c *checker, allow *allowlist.List) {
	for _, entry := range allow.Entries() {
		if strings.HasPrefix(entry, "*.") || strings.Contains(entry, "/") {
			continue
		}
		if _, isIP := allowlist.HostIP(entry); isIP {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", entry)
		cancel()
		if err != nil {
			c.warn("%s does not resolve: %v", entry, err)
			continue
		}
		var bad []string
		for _, a := range addrs {
			a = a.Unmap()
			if special(a) && !allow.AllowIP(a) {
				bad = append(bad, a.String())
			}
		}
		if len(bad) > 0 {
			c.fail("%s resolves to %s, which the daemon refuses unless that address is on the allowlist too", entry, strings.Join(bad, ", "))
			continue
		}
		c.ok("%s resolves to %v", entry, addrs)
	}
}

func special(a netip.Addr) bool {
	return a.IsLoopback() || a.IsUnspecified() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsMulticast()
}

// checkHipChats reads each capabilities document in urls with the
// daemon's own HipChat client (so through the allowlist).
func checkHipChats(ctx context.Context, c *checker, hc *hipchat.Client, urls []string) {
	if len(urls) == 0 {
		c.warn("no --hipchat capabilities URL given: HipChat Server itself not checked")
		return
	}
	for _, u := range urls {
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		caps, err := hc.Capabilities(rctx, u)
		cancel()
		if err != nil {
			c.fail("HipChat %s: %v", u, err)
			continue
		}
		c.ok("HipChat %s: API %s, token endpoint %s", u, caps.APIURL, caps.TokenURL)
	}
}

// checkIntegrations checks each "Build your own" integration: its room URL
// file reads and parses, its host is allowlisted and resolves (checked
// with the allowlist's names above), and HipChat accepts its token for the
// room (a GET of the room: nothing is posted). Only the redacted URL is
// printed.
func checkIntegrations(ctx context.Context, c *checker, cfg *config.Config, clients *daemon.Clients) {
	for i, ic := range cfg.Integrations {
		u, err := integration.ReadRoomURL(ic.RoomURLFile)
		if err != nil {
			c.fail("integrations[%d] %s: %v", i, ic.Name, err)
			continue
		}
		if !clients.HipChatHosts.AllowHost(u.Host()) {
			c.fail("integration %s: the room URL's host %s is not on hipchat.allowed_hosts", ic.Name, u.Host())
			continue
		}
		if _, isIP := allowlist.HostIP(u.Host()); !isIP {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := net.DefaultResolver.LookupNetIP(rctx, "ip", u.Host())
			cancel()
			if err != nil {
				c.fail("integration %s: the room URL's host %s does not resolve: %v", ic.Name, u.Host(), err)
				continue
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		readable, err := clients.HipChat.CheckRoom(rctx, addon.Installation{APIURL: u.APIURL}, u.Token, u.Room)
		cancel()
		switch {
		case err != nil && ic.Reply == command.ReplyResponse:
			// Replies go in the webhook's response: only hipconnect
			// notify needs the room URL.
			c.warn("integration %s: room URL %s not usable (only hipconnect notify needs it with reply: response): %v", ic.Name, u, err)
			continue
		case err != nil:
			c.fail("integration %s: HipChat refused the room URL %s: %v", ic.Name, u, err)
			continue
		}
		if !readable {
			c.ok("integration %s: HipChat accepts the token of %s (a notification-only token: it may not read the room)", ic.Name, u)
			continue
		}
		c.ok("integration %s: HipChat accepts the token of %s", ic.Name, u)
	}
}

// checkCertificate inspects the public certificate: the files in files
// mode, otherwise whatever the running daemon presents.
func checkCertificate(c *checker, cfg *config.Config) {
	base, _ := url.Parse(cfg.Server.BaseURL)
	host := base.Hostname()
	var leaf *x509.Certificate
	switch cfg.TLS.Mode {
	case "off":
		if base.Scheme == "https" {
			c.ok("tls.mode off: TLS is expected to end at a proxy in front of %s", cfg.Server.BaseURL)
		} else {
			c.warn("base_url is plain http: HipChat Server only installs add-ons over HTTPS")
		}
		return
	case "files":
		b, err := os.ReadFile(cfg.TLS.CertFile)
		if err != nil {
			c.fail("tls.cert_file: %v", err)
			return
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			c.fail("tls.cert_file: no PEM certificate")
			return
		}
		if leaf, err = x509.ParseCertificate(blk.Bytes); err != nil {
			c.fail("tls.cert_file: %v", err)
			return
		}
	default:
		addr := cfg.Server.Listen
		if h, p, err := net.SplitHostPort(addr); err == nil && (h == "" || h == "0.0.0.0" || h == "::") {
			addr = net.JoinHostPort("127.0.0.1", p)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: host, InsecureSkipVerify: true}) // inspecting, not trusting
		if err != nil {
			c.warn("certificate not checked: no daemon answering TLS on %s (%v)", addr, err)
			return
		}
		leaf = conn.ConnectionState().PeerCertificates[0]
		_ = conn.Close()
	}
	days := int(time.Until(leaf.NotAfter).Hours() / 24)
	c.ok("certificate: subject %q, issuer %q, names %v, expires %s (%d days)",
		leaf.Subject.CommonName, leaf.Issuer.CommonName, append(leaf.DNSNames, ipStrings(leaf.IPAddresses)...), leaf.NotAfter.Format(time.DateOnly), days)
	if err := leaf.VerifyHostname(host); err != nil {
		c.fail("certificate does not name %s: %v", host, err)
	}
	switch {
	case days < 0:
		c.fail("certificate expired")
	case days < 14:
		c.warn("certificate expires in %d days", days)
	}
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}

// printConnections lists the connections the appliance needs, for the
// firewall admin (docs/connectivity.md explains each).
func printConnections(w io.Writer, cfg *config.Config) {
	fmt.Fprintln(w, "\nConnections this configuration needs:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIRECTION\tFROM\tTO\tPORT\tPURPOSE")
	_, port, _ := net.SplitHostPort(cfg.Server.Listen)
	fmt.Fprintf(tw, "in\tHipChat Server\tthis host\t%s/tcp\tdescriptor, install, uninstall, webhooks\n", port)
	fmt.Fprintf(tw, "in\tusers' HipChat clients\tthis host\t%s/tcp\tdescriptor URL as %s\n", port, cfg.Server.BaseURL)
	if cfg.Server.RedirectListen != "" && cfg.TLS.Mode != "off" {
		_, rp, _ := net.SplitHostPort(cfg.Server.RedirectListen)
		fmt.Fprintf(tw, "in\tbrowsers, ACME CA\tthis host\t%s/tcp\tredirect to HTTPS, ACME HTTP-01\n", rp)
	}
	if cfg.Server.OpsListen != "" {
		fmt.Fprintf(tw, "in\tPrometheus\t%s\t-\t/metrics /healthz /readyz\n", cfg.Server.OpsListen)
	}
	for _, h := range cfg.HipChat.AllowedHosts {
		fmt.Fprintf(tw, "out\tthis host\t%s\t443/tcp\tHipChat capabilities, token, REST API (notifications, glance)\n", h)
	}
	for _, c := range cfg.Commands {
		if u, err := url.Parse(c.SearchURL); err == nil && c.SearchURL != "" {
			fmt.Fprintf(tw, "out\tthis host\t%s\t%s/tcp\tsearch backend of /%s\n", u.Hostname(), portOrDefault(u), c.Name)
		}
	}
	for _, ic := range cfg.Integrations {
		fmt.Fprintf(tw, "in\tHipChat Server\tthis host\t%s/tcp\tslash commands of integration %s (/integrations/%s/...)\n", port, ic.Name, ic.Name)
		if u, err := integration.ReadRoomURL(ic.RoomURLFile); err == nil {
			p, _ := url.Parse(u.APIURL)
			fmt.Fprintf(tw, "out\tthis host\t%s\t%s/tcp\troom notifications of integration %s (%s)\n", u.Host(), portOrDefault(p), ic.Name, ic.Reply)
		}
	}
	if cfg.TLS.Mode == "acme" {
		if u, err := url.Parse(cfg.TLS.ACME.Directory); err == nil {
			fmt.Fprintf(tw, "out\tthis host\t%s\t%s/tcp\tACME CA (certificate orders, renewal)\n", u.Hostname(), portOrDefault(u))
		}
	}
	if cfg.Outbound.Proxy != "" {
		fmt.Fprintf(tw, "out\tthis host\t%s\t-\tevery outbound connection goes through this proxy\n", cfg.Outbound.Proxy)
	}
	_ = tw.Flush()
}

func portOrDefault(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}
