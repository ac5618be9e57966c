// Package packaging holds no Go code: these tests keep the files that
// packaging/build.sh puts into the .deb and .rpm consistent with each other
// and with the daemon, without building a package.
package packaging

import (
	"bufio"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

const (
	configPath = "/etc/hipconnect/hipconnect.yaml" // where nfpm.yaml installs hipconnect.yaml
	storePath  = "/var/lib/hipconnect/hipconnect.db"
	unitFile   = "../systemd/hipconnect.service"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The packaged config must load exactly as the daemon loads it: unknown
// keys would stop the daemon on its first start.
func TestPackagedConfigLoads(t *testing.T) {
	c, err := config.Load("hipconnect.yaml", nil)
	if err != nil {
		t.Fatalf("config.Load(packaging/hipconnect.yaml): %v", err)
	}
	tests := []struct {
		name, got, want string
	}{
		{"tls.mode", string(c.TLS.Mode), string(tlsmgr.ModeSelfSigned)},
		{"server.listen", c.Server.Listen, ":443"},
		{"server.redirect_listen", c.Server.RedirectListen, ":80"},
		{"server.ops_listen", c.Server.OpsListen, "127.0.0.1:9464"},
		{"storage.path", c.Storage.Path, storePath},
		{"hipchat.allowed_hosts", strings.Join(c.HipChat.AllowedHosts, ","), "hipchat.example.com"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	var names []string
	for _, cmd := range c.Commands {
		names = append(names, cmd.Name)
	}
	if !slices.Equal(names, []string{"hascode", "echo"}) {
		t.Errorf("commands = %v, want [hascode echo]", names)
	}
}

// The unit, nfpm.yaml and the packaged config must agree on the paths.
func TestPathsAgree(t *testing.T) {
	unit := read(t, unitFile)
	nfpm := read(t, "nfpm.yaml")
	for _, want := range []string{
		"ExecStart=/usr/bin/hipconnect serve --config " + configPath + "\n",
		"StateDirectory=" + filepath.Base(filepath.Dir(storePath)) + "\n",
		"User=hipconnect\n",
		"Group=hipconnect\n",
	} {
		if !strings.Contains(unit, want) {
			t.Errorf("%s lacks %q", unitFile, strings.TrimSpace(want))
		}
	}
	for _, want := range []string{
		"dst: /usr/bin/hipconnect\n",
		"dst: " + configPath + "\n",
		"dst: " + filepath.Dir(storePath) + "\n",
		"dst: /usr/lib/systemd/system/hipconnect.service\n",
		"dst: /usr/lib/sysusers.d/hipconnect.conf\n",
	} {
		if !strings.Contains(nfpm, want) {
			t.Errorf("nfpm.yaml lacks %q", strings.TrimSpace(want))
		}
	}
}

// preinstall.sh creates the user before unpacking with the same line that
// the package installs in sysusers.d.
func TestSysusersLineInPreinstall(t *testing.T) {
	var lines []string
	for l := range strings.Lines(read(t, "sysusers.conf")) {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("sysusers.conf has %d entries, want 1: %q", len(lines), lines)
	}
	if pre := read(t, "scripts/preinstall.sh"); !strings.Contains(pre, "sysusers_line='"+lines[0]+"'") {
		t.Errorf("scripts/preinstall.sh does not apply %q", lines[0])
	}
}

// Every directive of the unit has a comment above it saying why.
func TestUnitDirectivesCommented(t *testing.T) {
	f, err := os.Open(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	directive := regexp.MustCompile(`^[A-Za-z]+=`)
	prev, n := "", 0
	for s := bufio.NewScanner(f); s.Scan(); prev = s.Text() {
		n++
		if directive.MatchString(s.Text()) && !strings.HasPrefix(prev, "#") {
			t.Errorf("%s:%d: %q has no comment above it", unitFile, n, s.Text())
		}
	}
}
