package allowlist

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		want  string // canonical spelling
	}{
		{"exact name", "chat.example", "chat.example"},
		{"upper case", "Chat.Example", "chat.example"},
		{"trailing dot", "chat.example.", "chat.example"},
		{"single label", "hipchat", "hipchat"},
		{"underscore and hyphen", "my_host-1.corp.example", "my_host-1.corp.example"},
		{"wildcard", "*.chat.example", "*.chat.example"},
		{"wildcard upper case trailing dot", "*.Chat.Example.", "*.chat.example"},
		{"ipv4", "10.0.0.5", "10.0.0.5"},
		{"ipv6", "fd00::5", "fd00::5"},
		{"ipv6 bracketed", "[fd00::5]", "fd00::5"},
		{"ipv6 long form", "fd00:0:0:0:0:0:0:5", "fd00::5"},
		{"ipv4-mapped unmapped", "::ffff:10.0.0.5", "10.0.0.5"},
		{"cidr v4", "10.0.0.0/8", "10.0.0.0/8"},
		{"cidr v4 host", "127.0.0.1/32", "127.0.0.1/32"},
		{"cidr v6", "fd00::/8", "fd00::/8"},
		{"cidr v4-mapped unmapped", "::ffff:10.0.0.0/104", "10.0.0.0/8"},
		{"hex-looking name that is not numeric", "deadbeef.example", "deadbeef.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse([]string{tt.entry})
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.entry, err)
			}
			if got := l.String(); got != tt.want {
				t.Errorf("Parse(%q).String() = %q, want %q", tt.entry, got, tt.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name  string
		entry string
		want  string // part of the error
	}{
		{"empty", "", "empty entry"},
		{"bare star", "*", "bare *"},
		{"star dot", "*.", "bare *"},
		{"single-label suffix", "*.com", "at least two labels"},
		{"single-label suffix trailing dot", "*.com.", "at least two labels"},
		{"star glued to label", "a*.b", "leftmost label"},
		{"star prefix in label", "*a.b", "leftmost label"},
		{"star in the middle", "a.*.b", "leftmost label"},
		{"double wildcard", "*.*.b.c", "wildcard suffix"},
		{"port on name", "chat.example:443", "port"},
		{"port on ipv4", "10.0.0.5:443", "port"},
		{"port on bracketed ipv6", "[fd00::5]:443", "port"},
		{"scheme", "https://chat.example", "scheme"},
		{"path", "chat.example/api", "path"},
		{"userinfo", "user@chat.example", "userinfo"},
		{"leading space", " chat.example", "whitespace"},
		{"inner space", "chat .example", "whitespace"},
		{"tab", "chat.example\t", "whitespace"},
		{"invalid cidr bits", "10.0.0.0/33", "invalid CIDR"},
		{"invalid cidr host bits", "10.0.0.1/8", "host bits"},
		{"invalid cidr garbage", "10.0.0.0/x", "invalid CIDR"},
		{"empty label", "a..b", "empty label"},
		{"leading dot", ".chat.example", "empty label"},
		{"bad character", "chat!.example", "invalid character"},
		{"non-ascii", "chät.example", "invalid character"},
		{"short ipv4", "127.1", "numeric"},
		{"hex ipv4", "0x7f.1", "numeric"},
		{"decimal ipv4", "2130706433", "numeric"},
		{"octal ipv4", "017.0.0.1", "numeric"},
		{"numeric wildcard", "*.0.1", "numeric"},
		{"zone", "fe80::1%eth0", "zone"},
		{"bracketed ipv4", "[10.0.0.5]", "bracketed"},
		{"bad ipv6", "fd00:::5", "invalid IPv6"},
		{"label too long", strings.Repeat("a", 64) + ".example", "63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Parse([]string{"ok.example", tt.entry})
			if err == nil {
				t.Fatalf("Parse(%q) = %q, want error", tt.entry, l)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.entry, err, tt.want)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.entry)) {
				t.Errorf("Parse(%q) error = %q, want it to name the entry", tt.entry, err)
			}
		})
	}
}

func TestParseNamesEveryBadEntry(t *testing.T) {
	_, err := Parse([]string{"*.com", "ok.example", "a:1"})
	if err == nil {
		t.Fatal("Parse: got nil error, want one")
	}
	for _, e := range []string{`"*.com"`, `"a:1"`} {
		if !strings.Contains(err.Error(), e) {
			t.Errorf("error %q does not name %s", err, e)
		}
	}
}

func TestAllowHost(t *testing.T) {
	l, err := Parse([]string{
		"chat.example",
		"*.corp.example",
		"10.1.2.3",
		"127.0.0.0/30",
		"fd00::/16",
		"2001:db8::1",
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		host string
		want bool
	}{
		{"exact", "chat.example", true},
		{"exact upper case", "CHAT.Example", true},
		{"exact trailing dot", "chat.example.", true},
		{"exact subdomain not covered", "a.chat.example", false},
		{"suffix trick", "evilchat.example", false},
		{"suffix as subdomain trick", "chat.example.evil.example", false},
		{"wildcard one level", "a.corp.example", true},
		{"wildcard two levels", "a.b.corp.example", true},
		{"wildcard upper case trailing dot", "A.Corp.Example.", true},
		{"wildcard apex refused", "corp.example", false},
		{"wildcard apex trailing dot refused", "corp.example.", false},
		{"wildcard glued label", "xcorp.example", false},
		{"empty label before suffix", ".corp.example", false},
		{"empty", "", false},
		{"ipv4 entry", "10.1.2.3", true},
		{"ipv4 trailing dot", "10.1.2.3.", true},
		{"ipv4 not listed", "10.1.2.4", false},
		{"cidr v4 inside", "127.0.0.1", true},
		{"cidr v4 edge", "127.0.0.3", true},
		{"cidr v4 outside", "127.0.0.4", false},
		{"cidr v6 inside", "fd00::1234", true},
		{"cidr v6 bracketed", "[fd00::1234]", true},
		{"cidr v6 outside", "fd01::1", false},
		{"ipv6 entry other spelling", "2001:DB8:0::1", true},
		{"ipv4-mapped in cidr", "::ffff:7f00:1", true},
		{"ipv4-mapped bracketed in cidr", "[::ffff:7f00:1]", true},
		{"ipv4-mapped dotted in cidr", "::ffff:127.0.0.2", true},
		{"ipv4-mapped not allowed", "::ffff:7f00:4", false},
		{"ipv4-mapped of listed ip", "::ffff:10.1.2.3", true},
		{"zoned address", "fd00::1%eth0", false},
		{"hex ipv4", "0x7f.1", false},
		{"hex ipv4 four parts", "0x7f.0.0.1", false},
		{"decimal ipv4", "2130706433", false},
		{"short ipv4", "127.1", false},
		{"octal ipv4", "017.0.0.1", false},
		{"octal zero-padded", "0127.0.0.1", false},
		{"ip-looking name is not a name", "10.1.2.3.corp.example", true},
		{"bracketed ipv4", "[10.1.2.3]", false},
		{"ip as name not in names", "chat.example.10.1.2.3", false},
		{"non-ascii that lowercases to ascii", "\u212Aa.corp.example", false},
		{"userinfo in host", "user@chat.example", false},
		{"port in host", "chat.example:443", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := l.AllowHost(tt.host); got != tt.want {
				t.Errorf("AllowHost(%q) = %v, want %v", tt.host, got, tt.want)
			}
		})
	}
}

func TestAllowIP(t *testing.T) {
	l, err := Parse([]string{"127.0.0.1", "fd00::/16", "chat.example"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ip   netip.Addr
		want bool
	}{
		{"listed", netip.MustParseAddr("127.0.0.1"), true},
		{"mapped listed", netip.MustParseAddr("::ffff:127.0.0.1"), true},
		{"not listed", netip.MustParseAddr("127.0.0.3"), false},
		{"mapped not listed", netip.MustParseAddr("::ffff:127.0.0.3"), false},
		{"v6 cidr", netip.MustParseAddr("fd00::9"), true},
		{"v6 cidr zoned", netip.MustParseAddr("fd00::9%eth0"), false},
		{"zero value", netip.Addr{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := l.AllowIP(tt.ip); got != tt.want {
				t.Errorf("AllowIP(%v) = %v, want %v", tt.ip, got, tt.want)
			}
		})
	}
}

func TestNilAndEmptyAllowNothing(t *testing.T) {
	empty, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]*List{"nil": nil, "empty": empty} {
		if l.AllowHost("chat.example") || l.AllowHost("127.0.0.1") || l.AllowIP(netip.MustParseAddr("127.0.0.1")) {
			t.Errorf("%s list allows something", name)
		}
		if got := l.String(); got != "" {
			t.Errorf("%s list String() = %q, want empty", name, got)
		}
	}
}

func TestHostIP(t *testing.T) {
	tests := []struct {
		name   string
		host   string
		want   string
		wantOK bool
	}{
		{"ipv4", "127.0.0.1", "127.0.0.1", true},
		{"ipv4 trailing dot", "127.0.0.1.", "127.0.0.1", true},
		{"ipv6", "::1", "::1", true},
		{"ipv6 bracketed", "[::1]", "::1", true},
		{"mapped", "::ffff:7f00:3", "127.0.0.3", true},
		{"ipv6 trailing dot", "::1.", "", false},
		{"bracketed ipv4", "[127.0.0.1]", "", false},
		{"name", "chat.example", "", false},
		{"short ipv4", "127.1", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip, ok := HostIP(tt.host)
			if ok != tt.wantOK {
				t.Fatalf("HostIP(%q) ok = %v, want %v", tt.host, ok, tt.wantOK)
			}
			if ok && ip.String() != tt.want {
				t.Errorf("HostIP(%q) = %v, want %v", tt.host, ip, tt.want)
			}
		})
	}
}
