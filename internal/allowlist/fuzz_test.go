package allowlist

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// FuzzAllowlist parses a list of entries (newline separated) and asks it
// about host. Properties:
//   - what Parse accepts round-trips: Parse(Entries()) gives the same
//     entries, each canonical entry parses to itself alone, and String is
//     Entries joined;
//   - each entry allows what it names: an exact name itself (in any case,
//     with a trailing dot), a wildcard a name below its suffix but never the
//     suffix itself (unless another entry allows it), an IP itself, a CIDR
//     its first and last address (but an IPv6 CIDR no IPv4-mapped one);
//   - a host allowed is allowed again after canonicalization (lower case
//     and trailing dot for names, the canonical address, bracketed or not,
//     for IPs), and AllowHost of an IP literal is AllowIP of it;
//   - a name whose last label is numeric is never allowed;
//   - HostIP returns unmapped addresses, and reads its own output back.
func FuzzAllowlist(f *testing.F) {
	f.Add("chat.example\n*.corp.example\n10.0.0.0/8\nfd00::5", "a.b.corp.example")
	f.Add("Chat.Example.\n[fd00::5]\n::ffff:10.0.0.5", "CHAT.EXAMPLE.")
	f.Add("::ffff:10.0.0.0/104\n192.168.1.1/32", "[::ffff:10.1.2.3]")
	f.Add("hipchat\n*.Chat.Example.", "10.0.0.5.")
	f.Add("127.1\n0x7f.1\n2130706433", "127.1")
	f.Add("*.com\na*.b\n[fd00::5]:443\nuser@chat.example", "fe80::1%eth0")
	f.Add("deadbeef.example\n0.0.0.0/0", "0x7f.0.0.1")
	f.Add("::/0", "::ffff:127.0.0.1")

	f.Fuzz(func(t *testing.T, entries, host string) {
		var in []string
		if entries != "" {
			in = strings.Split(entries, "\n")
		}
		l, err := Parse(in)
		if err != nil {
			if l != nil {
				t.Fatalf("Parse failed (%v) but returned a list", err)
			}
			if l.AllowHost(host) {
				t.Fatalf("the nil list allows %q", host)
			}
			checkHostIP(t, host)
			return
		}
		canon := l.Entries()
		if l.String() != strings.Join(canon, ", ") {
			t.Fatalf("String() = %q, Entries() = %q", l.String(), canon)
		}
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(Entries() = %q): %v", canon, err)
		}
		if got := again.Entries(); !reflect.DeepEqual(got, canon) && len(got)+len(canon) > 0 {
			t.Fatalf("Parse(Entries()) = %q, want %q", got, canon)
		}
		for _, e := range canon {
			one, err := Parse([]string{e})
			if err != nil || one.String() != e {
				t.Fatalf("canonical entry %q parses to %v, %v", e, one, err)
			}
			checkEntryAllows(t, l, one, e)
		}

		checkHost(t, l, host)
		checkHostIP(t, host)
	})
}

// checkEntryAllows checks that e, the only entry of one and one of l's,
// allows what it names.
func checkEntryAllows(t *testing.T, l, one *List, e string) {
	t.Helper()
	mustAllow := func(h string) {
		t.Helper()
		if !one.AllowHost(h) || !l.AllowHost(h) {
			t.Fatalf("entry %q does not allow %q", e, h)
		}
	}
	switch {
	case strings.HasPrefix(e, "*."):
		suffix := e[2:]
		mustAllow("a." + suffix)
		mustAllow("x-1.Y." + strings.ToUpper(suffix) + ".")
		if one.AllowHost(suffix) {
			t.Fatalf("wildcard %q allows its suffix", e)
		}
	case strings.Contains(e, "/"):
		p := netip.MustParsePrefix(e)
		first := p.Addr()
		last := first
		for b := p.Bits(); b < first.BitLen(); b++ {
			s := last.AsSlice()
			s[b/8] |= 0x80 >> (b % 8)
			last, _ = netip.AddrFromSlice(s)
		}
		for _, ip := range []netip.Addr{first, last} {
			if ip.Is4In6() {
				// An IPv4-mapped address is IPv4: an IPv6 CIDR around
				// ::ffff:0:0/96 ("::/80") never allows it.
				if one.AllowIP(ip) {
					t.Fatalf("IPv6 CIDR %q allows the IPv4 address %s", e, ip)
				}
				continue
			}
			if !one.AllowIP(ip) || !one.AllowHost(ip.String()) {
				t.Fatalf("CIDR %q does not allow %s", e, ip)
			}
		}
	default:
		mustAllow(e)
		if ip, err := netip.ParseAddr(e); err == nil {
			if ip.Is4() {
				mustAllow(netip.AddrFrom16(ip.As16()).String()) // ::ffff:a.b.c.d
			} else {
				mustAllow("[" + e + "]")
			}
		} else {
			mustAllow(strings.ToUpper(e) + ".")
			if one.AllowHost("a." + e) {
				t.Fatalf("exact entry %q allows a name below it", e)
			}
		}
	}
}

// checkHost checks that l's answer for host does not depend on how host is
// spelled.
func checkHost(t *testing.T, l *List, host string) {
	t.Helper()
	allowed := l.AllowHost(host)
	if ip, ok := HostIP(host); ok {
		if allowed != l.AllowIP(ip) {
			t.Fatalf("AllowHost(%q) = %v but AllowIP(%s) = %v", host, allowed, ip, !allowed)
		}
		if !allowed {
			return
		}
		if ip.Zone() != "" {
			t.Fatalf("AllowHost(%q) allows an address with a zone", host)
		}
		for _, h := range []string{ip.String(), "[" + netip.AddrFrom16(ip.As16()).String() + "]"} {
			if !l.AllowHost(h) {
				t.Fatalf("AllowHost(%q) but not %q", host, h)
			}
		}
		if ip.Is4() && !l.AllowHost(ip.String()+".") {
			t.Fatalf("AllowHost(%q) but not with a trailing dot", host)
		}
		return
	}
	name := strings.TrimSuffix(host, ".")
	labels := strings.Split(name, ".")
	if allowed && numeric(labels[len(labels)-1]) {
		t.Fatalf("AllowHost(%q) allows a numeric name", host)
	}
	if !allowed {
		return
	}
	lower := strings.ToLower(name)
	for _, h := range []string{lower, lower + ".", strings.ToUpper(name)} {
		if !l.AllowHost(h) {
			t.Fatalf("AllowHost(%q) but not %q", host, h)
		}
	}
	// An allowed name is a valid exact entry, and that entry allows it.
	one, err := Parse([]string{host})
	if err != nil || one.String() != lower || !one.AllowHost(host) {
		t.Fatalf("allowed name %q does not make an entry: %v, %v", host, one, err)
	}
}

// checkHostIP checks that HostIP's addresses are unmapped and read back.
func checkHostIP(t *testing.T, host string) {
	t.Helper()
	ip, ok := HostIP(host)
	if !ok {
		if ip.IsValid() {
			t.Fatalf("HostIP(%q) = %v, false", host, ip)
		}
		return
	}
	if !ip.IsValid() || ip.Is4In6() {
		t.Fatalf("HostIP(%q) = %v", host, ip)
	}
	back, ok := HostIP(ip.String())
	if !ok || back != ip {
		t.Fatalf("HostIP(%q) = %v, but HostIP(%q) = %v, %v", host, ip, ip.String(), back, ok)
	}
	// Without its brackets (both) or its trailing dot, host is the address
	// (a zone may end in "]" or ".": "::%]" is an address).
	bare := strings.TrimSuffix(host, ".")
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		bare = host[1 : len(host)-1]
	}
	if _, err := netip.ParseAddr(bare); err != nil {
		if _, err2 := netip.ParseAddr(host); err2 != nil {
			t.Fatalf("HostIP(%q) = %v, but it is no address", host, ip)
		}
	}
}
