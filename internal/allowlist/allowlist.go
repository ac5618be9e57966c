// Package allowlist holds the operator's list of hosts the daemon may
// contact: exact host names, *.suffix wildcards, IP addresses and CIDRs.
//
// A List only answers "is this host (or address) on the list"; checking the
// addresses a name resolves to at dial time is the job of package outbound.
package allowlist

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// List is an immutable set of allowed hosts, safe for concurrent use.
// The nil *List allows nothing.
type List struct {
	entries  []string            // canonical spelling, in order, for String
	names    map[string]struct{} // exact host names, lower case, no trailing dot
	suffixes []string            // from "*.chat.example": ".chat.example"
	prefixes []netip.Prefix      // IP entries as /32 or /128, and CIDRs; IPv4 never mapped
}

// Parse builds a List from entries. Each entry is one of:
//
//   - an exact host name, "chat.example": compared case-insensitively, a
//     trailing dot ignored; ASCII only (no IDNA);
//   - a wildcard, "*.chat.example": any name below chat.example at any depth
//     ("a.chat.example", "a.b.chat.example"), never chat.example itself; the
//     suffix needs at least two labels ("*.com" is refused);
//   - an IP address, "10.0.0.5", "fd00::5" or "[fd00::5]"; IPv4-mapped IPv6
//     addresses are stored as IPv4;
//   - a CIDR, "10.0.0.0/8", "fd00::/8", with no host bits set.
//
// Ports, schemes, paths, userinfo, whitespace, zones, "*" anywhere but as a
// whole leftmost label, and numeric names that are not valid dotted-quad
// addresses ("127.1", "0x7f.1", "2130706433") are refused. The error names
// every bad entry. An empty slice gives a List that allows nothing.
func Parse(entries []string) (*List, error) {
	l := &List{names: make(map[string]struct{})}
	var errs []error
	seen := make(map[string]bool)
	for _, e := range entries {
		if err := l.add(e, seen); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return l, nil
}

// String lists the entries in their canonical spelling, comma separated, in
// the order they were given.
func (l *List) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.entries, ", ")
}

// Entries returns a copy of the entries in their canonical spelling.
func (l *List) Entries() []string {
	if l == nil {
		return nil
	}
	return append([]string(nil), l.entries...)
}

// AllowIP reports whether ip is allowed by an IP or CIDR entry. An
// IPv4-mapped IPv6 address is compared as IPv4, so an IPv6 CIDR that spans
// ::ffff:0:0/96 (such as ::/80) does not allow it; an address with a zone is
// never allowed.
func (l *List) AllowIP(ip netip.Addr) bool {
	if l == nil || !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	for _, p := range l.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// AllowHost reports whether host, as returned by url.URL.Hostname (no port;
// brackets around IPv6 tolerated), is allowed.
//
// An IP literal is allowed only by IP or CIDR entries (see AllowIP). A name is
// allowed only by exact and wildcard entries. A name that looks numeric, i.e.
// whose last label is all digits or 0x-hex, but is not a valid address for
// net/netip ("127.1", "0x7f.0.0.1", "2130706433", "017.0.0.1") is never
// allowed: some resolvers would read it as an IPv4 address.
func (l *List) AllowHost(host string) bool {
	if l == nil {
		return false
	}
	if ip, ok := HostIP(host); ok {
		return l.AllowIP(ip)
	}
	h, err := canonicalName(host)
	if err != nil {
		return false
	}
	if _, ok := l.names[h]; ok {
		return true
	}
	for _, s := range l.suffixes {
		// canonicalName guarantees h has no empty label, so a match leaves
		// at least one label in front of the suffix: the apex never matches.
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// HostIP reports whether host is an IP literal and returns it, unmapped. It
// accepts what url.URL.Hostname returns, with optional brackets around an
// IPv6 address and an optional trailing dot after an IPv4 one. An address
// with a zone ("fe80::1%eth0") is returned with its zone.
func HostIP(host string) (netip.Addr, bool) {
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !ip.Is6() {
			return netip.Addr{}, false
		}
		return ip.Unmap(), true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), true // a zone may end in a dot: "fe80::1%eth0."
	}
	if v4, ok := strings.CutSuffix(host, "."); ok {
		if ip, err := netip.ParseAddr(v4); err == nil && ip.Is4() {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// add parses one entry and adds it unless seen already.
func (l *List) add(e string, seen map[string]bool) error {
	canon, err := l.parseEntry(e)
	if err != nil {
		return fmt.Errorf("allowlist: entry %q: %w", e, err)
	}
	if seen[canon] {
		return nil
	}
	seen[canon] = true
	l.entries = append(l.entries, canon)
	switch {
	case strings.HasPrefix(canon, "*."):
		l.suffixes = append(l.suffixes, canon[1:])
	case strings.Contains(canon, "/"):
		l.prefixes = append(l.prefixes, netip.MustParsePrefix(canon))
	default:
		if ip, err := netip.ParseAddr(canon); err == nil {
			l.prefixes = append(l.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
		} else {
			l.names[canon] = struct{}{}
		}
	}
	return nil
}

// parseEntry validates e and returns its canonical spelling: a lower-case
// name without trailing dot, "*." and such a name, an unmapped IP address
// without brackets, or a masked prefix.
func (l *List) parseEntry(e string) (string, error) {
	switch {
	case e == "":
		return "", errors.New("empty entry")
	case strings.ContainsFunc(e, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "", errors.New("contains whitespace or a control character")
	case strings.Contains(e, "://"):
		return "", errors.New("a scheme is not allowed: give the host only")
	case strings.Contains(e, "@"):
		return "", errors.New("userinfo is not allowed: give the host only")
	}

	if i := strings.IndexByte(e, '/'); i >= 0 {
		if _, err := netip.ParseAddr(e[:i]); err != nil {
			return "", errors.New("a path is not allowed: give the host only")
		}
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return "", fmt.Errorf("invalid CIDR: %w", err)
		}
		if p != p.Masked() {
			return "", fmt.Errorf("invalid CIDR: host bits set (did you mean %s?)", p.Masked())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.String(), nil
	}

	if strings.HasPrefix(e, "[") {
		if strings.Contains(e, "]:") {
			return "", errors.New("a port is not allowed: give the host only")
		}
		if !strings.HasSuffix(e, "]") {
			return "", errors.New("invalid bracketed IPv6 address")
		}
		ip, err := netip.ParseAddr(e[1 : len(e)-1])
		if err != nil || !ip.Is6() {
			return "", errors.New("invalid bracketed IPv6 address")
		}
		e = e[1 : len(e)-1]
	}

	if ip, err := netip.ParseAddr(e); err == nil {
		if ip.Zone() != "" {
			return "", errors.New("an IPv6 zone is not allowed")
		}
		return ip.Unmap().String(), nil
	}

	if strings.Contains(e, ":") {
		if strings.Count(e, ":") == 1 {
			return "", errors.New("a port is not allowed: give the host only")
		}
		return "", errors.New("invalid IPv6 address")
	}

	if e == "*" || e == "*." {
		return "", errors.New("a bare * is not allowed")
	}
	if rest, ok := strings.CutPrefix(e, "*."); ok {
		name, err := canonicalName(rest)
		if err != nil {
			return "", fmt.Errorf("wildcard suffix: %w", err)
		}
		if !strings.Contains(name, ".") {
			return "", errors.New("a wildcard suffix needs at least two labels, as in *.chat.example")
		}
		return "*." + name, nil
	}
	if strings.Contains(e, "*") {
		return "", errors.New("* is only allowed as the whole leftmost label, as in *.chat.example")
	}
	return canonicalName(e)
}

// canonicalName validates a host name and returns it in lower case without
// its trailing dot. Names are ASCII letters, digits, '-' and '_' in labels of
// 1 to 63 characters, 253 characters in all. A name whose last label is
// numeric (all digits, or 0x followed by hex digits) is refused: it is an IPv4
// address in some spelling, and not one net/netip accepts.
func canonicalName(s string) (string, error) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", errors.New("empty host name")
	}
	if len(s) > 253 {
		return "", errors.New("host name longer than 253 characters")
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return "", fmt.Errorf("invalid character %q in host name", rune(c))
		}
	}
	s = string(b)
	labels := strings.Split(s, ".")
	for _, lb := range labels {
		if lb == "" {
			return "", errors.New("empty label in host name")
		}
		if len(lb) > 63 {
			return "", errors.New("label longer than 63 characters in host name")
		}
	}
	if numeric(labels[len(labels)-1]) {
		return "", errors.New("not a valid IP address, and numeric host names are not allowed (write IPv4 as four decimal octets)")
	}
	return s, nil
}

// numeric reports whether label would be read as a number by an IPv4 parser
// in the style of inet_aton: decimal, octal or 0x-hex digits.
func numeric(label string) bool {
	digits := label
	hex := false
	if len(label) >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X') {
		digits, hex = label[2:], true
		if digits == "" {
			return true // "0x" alone is zero to inet_aton
		}
	}
	for _, c := range []byte(digits) {
		switch {
		case '0' <= c && c <= '9':
		case hex && ('a' <= c && c <= 'f' || 'A' <= c && c <= 'F'):
		default:
			return false
		}
	}
	return true
}
