// Package outbound builds the one HTTP client hipconnect uses to contact
// anything: HipChat Server (capabilities, tokens, API), search backends,
// installable URLs and the ACME CA. It enforces the operator's allowlist so
// that the daemon cannot be used to reach hosts the operator did not allow
// (SSRF, DNS rebinding, odd spellings of 127.0.0.1).
//
// The checks, in order:
//
//  1. Before any dial, for the first request and for every redirect hop: the
//     scheme is http or https, the URL carries no userinfo, and its host
//     passes allowlist.List.AllowHost.
//  2. At dial time (direct connections): an IP literal must be allowed by an
//     IP or CIDR entry; a name is resolved once, and every address it
//     resolves to must be acceptable: an address allowed by an IP or CIDR
//     entry always is; any other address is refused if it is loopback,
//     unspecified (or in 0.0.0.0/8), link-local (169.254.169.254 included),
//     multicast, or IPv4-compatible IPv6 (::/96). The connection goes to the
//     checked address itself, so there is no second resolution and no DNS
//     rebinding window.
//  3. Redirects: at most Options.MaxRedirects, never from https to http.
//  4. Response bodies are capped at Options.MaxResponseBytes.
//
// Refusals wrap ErrForbiddenHost in an *Error that names the host but never
// the URL's path or query, which may carry tokens. http.Client itself wraps
// every error in a *url.Error holding the URL (query included, password
// removed): pass errors through Redact before logging them.
package outbound

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/allowlist"
)

// Defaults for zero Options fields, and fixed timeouts.
const (
	DefaultTimeout          = 10 * time.Second
	DefaultMaxResponseBytes = 4 << 20
	DefaultMaxRedirects     = 5

	dialTimeout           = 5 * time.Second // name resolution and TCP connect together
	tlsHandshakeTimeout   = 5 * time.Second
	responseHeaderTimeout = 10 * time.Second
	maxResponseHeader     = 64 << 10
)

// Sentinel errors, for errors.Is. They reach callers wrapped in an *Error,
// itself wrapped by http.Client in a *url.Error.
var (
	// ErrForbiddenHost: the URL or an address its host resolves to is not
	// allowed (allowlist, scheme, userinfo, special address).
	ErrForbiddenHost = errors.New("host not allowed")
	// ErrResponseTooLarge: the response body is over MaxResponseBytes.
	ErrResponseTooLarge = errors.New("response too large")
	// ErrInsecureRedirect: a redirect from https to http.
	ErrInsecureRedirect = errors.New("redirect from https to http")
	// ErrTooManyRedirects: more than MaxRedirects redirects.
	ErrTooManyRedirects = errors.New("too many redirects")
)

// Error is an outbound failure tied to one host. Host is the host name or
// address alone: never userinfo, path or query.
type Error struct {
	Host   string
	Reason string // what was wrong, for the log
	Err    error  // one of the sentinels above
}

func (e *Error) Error() string {
	return fmt.Sprintf("outbound: %q: %s: %v", e.Host, e.Reason, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Options configures New. The zero value of each field selects its default.
type Options struct {
	// Allow is the allowlist every contacted host must be on. nil allows
	// nothing: every request fails with ErrForbiddenHost.
	Allow *allowlist.List
	// RootCAs verifies servers' certificates; nil uses the system roots.
	RootCAs *x509.CertPool
	// Proxy, if set, receives every request (http, https via CONNECT, or
	// socks5). nil means direct connections. HTTP_PROXY, HTTPS_PROXY and
	// NO_PROXY are always ignored.
	//
	// With a Proxy, only the proxy's own address is ever dialed, and the
	// allowlist is checked on the request URL (rule 1) only: the proxy
	// resolves names, so rule 2 (addresses a name resolves to) cannot be
	// applied here. IP-literal URLs are still checked against IP and CIDR
	// entries. The operator's proxy must not itself be able to reach what the
	// daemon should not.
	Proxy *url.URL
	// Timeout bounds a whole request, redirects and body reading included
	// (http.Client.Timeout). Default DefaultTimeout.
	Timeout time.Duration
	// MaxResponseBytes caps each response body; reading past it fails with
	// ErrResponseTooLarge. A response whose Content-Length is already over
	// it fails at once. Default DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// MaxRedirects is how many redirects one request may follow. Default
	// DefaultMaxRedirects; negative follows none (the 3xx response is
	// returned as is).
	MaxRedirects int
	// LookupIP resolves a host name to its addresses. nil uses
	// net.DefaultResolver. It is a function rather than a *net.Resolver so
	// tests (and callers with their own DNS) can plug in a map; a
	// *net.Resolver r fits as
	//	func(ctx context.Context, host string) ([]netip.Addr, error) {
	//		return r.LookupNetIP(ctx, "ip", host)
	//	}
	LookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
}

// New returns an *http.Client enforcing the rules of the package doc. The
// client has no cookie jar, is safe for concurrent use, and keeps its own
// connection pool; its CloseIdleConnections closes it.
func New(o Options) *http.Client {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.MaxRedirects == 0 {
		o.MaxRedirects = DefaultMaxRedirects
	}
	if o.LookupIP == nil {
		o.LookupIP = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}

	d := &dialer{
		allow:    o.Allow,
		lookupIP: o.LookupIP,
		net:      &net.Dialer{KeepAlive: 30 * time.Second},
	}
	tr := &http.Transport{
		Proxy:                  nil, // never http.ProxyFromEnvironment
		DialContext:            d.dialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: o.RootCAs},
		TLSHandshakeTimeout:    tlsHandshakeTimeout,
		ResponseHeaderTimeout:  responseHeaderTimeout,
		ExpectContinueTimeout:  1 * time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    16,
		MaxResponseHeaderBytes: maxResponseHeader,
		ForceAttemptHTTP2:      true,
		// No HPACK indexing of request headers: every installation has its
		// own bearer token, which RFC 7541 section 7.1.3 advises not to keep
		// in the compression table, and hundreds of them only churned it
		// (adding and evicting cost more CPU than the bytes saved;
		// docs/performance.md).
		HTTP2: &http.HTTP2Config{MaxEncoderHeaderTableSize: 1},
	}
	if o.Proxy != nil {
		p := *o.Proxy
		tr.Proxy = http.ProxyURL(&p)
		d.proxyHost, d.proxyPort = p.Hostname(), proxyPort(&p)
		d.viaProxy = true
	}

	return &http.Client{
		Transport: &guard{allow: o.Allow, next: tr, max: o.MaxResponseBytes},
		Timeout:   o.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if o.MaxRedirects < 0 {
				return http.ErrUseLastResponse
			}
			host := req.URL.Hostname()
			if len(via) > o.MaxRedirects {
				return &Error{Host: host, Reason: fmt.Sprintf("stopped after %d redirects", o.MaxRedirects), Err: ErrTooManyRedirects}
			}
			if prev := via[len(via)-1]; prev.URL.Scheme == "https" && req.URL.Scheme != "https" {
				return &Error{Host: host, Reason: "redirect from " + strconv.Quote(prev.URL.Hostname()) + " refused", Err: ErrInsecureRedirect}
			}
			return checkURL(o.Allow, req.URL)
		},
	}
}

// Redact returns err with the URL of a top-level *url.Error (as returned by
// http.Client) cut down to scheme, host and path, dropping the query and
// fragment, which may carry tokens. errors.Is and errors.As still see the
// wrapped error. Any other err is returned as is.
func Redact(err error) error {
	ue, ok := err.(*url.Error)
	if !ok {
		return err
	}
	u, perr := url.Parse(ue.URL)
	if perr != nil {
		return &url.Error{Op: ue.Op, URL: "(unparsable URL)", Err: ue.Err}
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment, u.ForceQuery = nil, "", "", "", false
	return &url.Error{Op: ue.Op, URL: u.String(), Err: ue.Err}
}

// checkURL applies rule 1 to u.
func checkURL(allow *allowlist.List, u *url.URL) error {
	host := u.Hostname()
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return &Error{Host: host, Reason: "scheme " + strconv.Quote(u.Scheme) + " not allowed", Err: ErrForbiddenHost}
	case u.User != nil:
		return &Error{Host: host, Reason: "URL with userinfo refused", Err: ErrForbiddenHost}
	case host == "":
		return &Error{Host: host, Reason: "URL without host", Err: ErrForbiddenHost}
	case !allow.AllowHost(host):
		return &Error{Host: host, Reason: "not on the allowlist", Err: ErrForbiddenHost}
	}
	return nil
}

// guard is the client's RoundTripper: it checks each request's URL before
// handing it to the transport, and caps the response body.
type guard struct {
	allow *allowlist.List
	next  *http.Transport
	max   int64
}

func (g *guard) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkURL(g.allow, req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := g.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	host := req.URL.Hostname()
	if req.Method != http.MethodHead && resp.ContentLength > g.max {
		resp.Body.Close()
		return nil, &Error{Host: host, Reason: fmt.Sprintf("Content-Length %d over %d bytes", resp.ContentLength, g.max), Err: ErrResponseTooLarge}
	}
	resp.Body = &limitedBody{rc: resp.Body, left: g.max, host: host, max: g.max}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport.
func (g *guard) CloseIdleConnections() { g.next.CloseIdleConnections() }

// limitedBody returns at most max bytes, then ErrResponseTooLarge if the
// underlying body has more.
type limitedBody struct {
	rc   io.ReadCloser
	left int64 // bytes still allowed
	host string
	max  int64
	err  error // sticky ErrResponseTooLarge
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read one byte more than allowed to tell "exactly max" from "over max".
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		n = int(b.left)
		b.left = 0
		b.err = &Error{Host: b.host, Reason: fmt.Sprintf("body over %d bytes", b.max), Err: ErrResponseTooLarge}
		return n, b.err
	}
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

// dialer implements rule 2.
type dialer struct {
	allow    *allowlist.List
	lookupIP func(ctx context.Context, host string) ([]netip.Addr, error)
	net      *net.Dialer

	viaProxy             bool
	proxyHost, proxyPort string
}

func (d *dialer) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("outbound: dial %q: %w", addr, err)
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()

	if d.viaProxy {
		// With a proxy, the transport only ever dials the proxy.
		if !strings.EqualFold(host, d.proxyHost) || portStr != d.proxyPort {
			return nil, &Error{Host: host, Reason: "direct dial refused: a proxy is configured", Err: ErrForbiddenHost}
		}
		return d.net.DialContext(ctx, network, addr)
	}

	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("outbound: dial %q: invalid port: %w", host, err)
	}
	ips, err := d.resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		c, err := d.net.DialContext(ctx, network, netip.AddrPortFrom(ip, uint16(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("outbound: dial %q: %w", host, errors.Join(errs...))
}

// resolve returns the checked addresses to dial for host, each unmapped.
func (d *dialer) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, ok := allowlist.HostIP(host); ok {
		if !d.allow.AllowIP(ip) {
			return nil, &Error{Host: host, Reason: "address not on the allowlist", Err: ErrForbiddenHost}
		}
		return []netip.Addr{ip}, nil
	}
	// Rule 1 ran already; checking again keeps the dialer safe on its own.
	if !d.allow.AllowHost(host) {
		return nil, &Error{Host: host, Reason: "not on the allowlist", Err: ErrForbiddenHost}
	}
	found, err := d.lookupIP(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("outbound: resolve %q: %w", host, err)
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("outbound: resolve %q: no addresses", host)
	}
	ips := make([]netip.Addr, 0, len(found))
	for _, ip := range found {
		ip = ip.Unmap()
		if why := special(ip); why != "" && !d.allow.AllowIP(ip) {
			return nil, &Error{Host: host, Reason: fmt.Sprintf("resolves to %s address %s, not on the allowlist", why, ip), Err: ErrForbiddenHost}
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

var (
	// thisNetwork is 0.0.0.0/8: Linux connects 0.0.0.0 to the local host.
	thisNetwork = netip.MustParsePrefix("0.0.0.0/8")
	// v4Compatible is the deprecated IPv4-compatible IPv6 range (::a.b.c.d),
	// which no legitimate server uses and which spells IPv4 addresses,
	// loopback included, in yet another way.
	v4Compatible = netip.MustParsePrefix("::/96")
)

// special names the kind of address ip is if a name allowed by name must not
// resolve to it without an IP or CIDR entry, or returns "".
func special(ip netip.Addr) string {
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.Zone() != "":
		return "zoned"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsUnspecified(), thisNetwork.Contains(ip):
		return "unspecified"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast():
		return "multicast"
	case v4Compatible.Contains(ip):
		return "IPv4-compatible"
	}
	return ""
}

// proxyPort is the port the transport dials for proxy p.
func proxyPort(p *url.URL) string {
	if port := p.Port(); port != "" {
		return port
	}
	switch p.Scheme {
	case "https":
		return "443"
	case "socks5", "socks5h":
		return "1080"
	}
	return "80"
}
