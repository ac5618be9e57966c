package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// operatorYAML is the file layout operators rely on; it must keep loading.
const operatorYAML = `
server:
  base_url: https://addon.intranet.example
  listen: ":443"
  redirect_listen: ":80"
  ops_listen: "127.0.0.1:9464"
tls:
  mode: "off"
storage:
  path: /var/lib/hipconnect/hipconnect.db
hipchat:
  allowed_hosts: ["hipchat.intranet.example", "*.chat.example", "10.1.2.3"]
  ca_file: /etc/hipconnect/hipchat-ca.pem
addon:
  key: com.example.blogsearch
  name: Blog Search
commands:
  - name: hascode
    search_url: "https://blog.example/wp-content/byTag.php?tag={term}"
    results_path: ""
    title_field: title
    url_field: url
    max_results: 10
    show_all_url: "https://blog.example/tag/{term}"
  - name: echo
    kind: echo
`

// writeFile writes content to a file in a fresh temporary directory and
// returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hipconnect.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// operatorWant is what operatorYAML loads to.
func operatorWant() Config {
	want := Default()
	want.Server.BaseURL = "https://addon.intranet.example"
	want.Server.Listen = ":443"
	want.Server.RedirectListen = ":80"
	want.Server.OpsListen = "127.0.0.1:9464"
	want.TLS.Mode = tlsmgr.ModeOff
	want.Storage.Path = "/var/lib/hipconnect/hipconnect.db"
	want.HipChat.AllowedHosts = []string{"hipchat.intranet.example", "*.chat.example", "10.1.2.3"}
	want.HipChat.CAFile = "/etc/hipconnect/hipchat-ca.pem"
	want.Commands = []Command{
		{
			Name:        "hascode",
			Kind:        command.KindSearch,
			SearchURL:   "https://blog.example/wp-content/byTag.php?tag={term}",
			ResultsPath: "",
			TitleField:  "title",
			URLField:    "url",
			MaxResults:  10,
			ShowAllURL:  "https://blog.example/tag/{term}",
			Timeout:     5 * time.Second,
			Reply:       command.ReplyAuto,
			ReplyBudget: 2 * time.Second,
		},
		{Name: "echo", Kind: command.KindEcho, Reply: command.ReplyAuto, ReplyBudget: 2 * time.Second},
	}
	return want
}

func TestDefaultValidates(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v, want nil", err)
	}
	if got, want := c, Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Validate changed the defaults:\ngot  %+v\nwant %+v", got, want)
	}
}

func TestLoadDefaults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
	}{
		{"nil environment", nil},
		{"unrelated variables", []string{"PATH=/usr/bin", "HOME=/root", "HIPCONNECTX=1", "hipconnect_server__listen=x"}},
		{"config file variable is not a key", []string{"HIPCONNECT_CONFIG=/etc/hipconnect/hipconnect.yaml"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Load("", tc.environ)
			if err != nil {
				t.Fatalf("Load = %v", err)
			}
			if want := Default(); !reflect.DeepEqual(*got, want) {
				t.Errorf("Load(\"\") =\n%+v\nwant\n%+v", *got, want)
			}
		})
	}
}

func TestLoadOperatorFile(t *testing.T) {
	got, err := Load(writeFile(t, operatorYAML), nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if want := operatorWant(); !reflect.DeepEqual(*got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", *got, want)
	}
}

func TestLoadDevFile(t *testing.T) {
	got, err := Load("../../docs/hipconnect.dev.yaml", nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	checks := []struct{ key, got, want string }{
		{"tls.mode", string(got.TLS.Mode), string(tlsmgr.ModeOff)},
		{"server.listen", got.Server.Listen, "127.0.0.1:8080"},
		{"server.base_url", got.Server.BaseURL, "http://localhost:8080"},
		{"server.ops_listen", got.Server.OpsListen, "127.0.0.1:9464"},
		{"storage.path", got.Storage.Path, "./hipconnect.db"},
		{"hipchat.allowed_hosts", strings.Join(got.HipChat.AllowedHosts, ","), "localhost,127.0.0.1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.key, c.got, c.want)
		}
	}
	if want := Default().Commands; !reflect.DeepEqual(got.Commands, want) {
		t.Errorf("commands =\n%+v\nwant\n%+v", got.Commands, want)
	}
}

func TestLoadEnvOverridesFile(t *testing.T) {
	path := writeFile(t, operatorYAML)
	environ := []string{
		"PATH=/usr/bin",
		"HIPCONNECT_SERVER__BASE_URL=https://other.intranet.example/addon/",
		"HIPCONNECT_SERVER__REDIRECT_LISTEN=",
		"HIPCONNECT_SERVER__READ_TIMEOUT=3s",
		"HIPCONNECT_SERVER__MAX_BODY_BYTES=2048",
		"HIPCONNECT_SERVER__PPROF=true",
		"HIPCONNECT_TLS__MODE=acme",
		"HIPCONNECT_TLS__ACME__DIRECTORY=https://ca.intranet.example/acme/directory",
		"HIPCONNECT_TLS__ACME__EAB_KID=kid",
		"HIPCONNECT_TLS__ACME__EAB_HMAC=c2VjcmV0",
		"HIPCONNECT_HIPCHAT__ALLOWED_HOSTS=hipchat.a.example, 10.0.0.0/8",
		"HIPCONNECT_LOG__LEVEL=debug",
	}
	got, err := Load(path, environ)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := operatorWant()
	want.Server.BaseURL = "https://other.intranet.example/addon" // trailing slash removed
	want.Server.RedirectListen = ""
	want.Server.ReadTimeout = 3 * time.Second
	want.Server.MaxBodyBytes = 2048
	want.Server.Pprof = true
	want.TLS.Mode = tlsmgr.ModeACME
	want.TLS.ACME.Directory = "https://ca.intranet.example/acme/directory"
	want.TLS.ACME.EABKID = "kid"
	want.TLS.ACME.EABHMAC = "c2VjcmV0"
	want.HipChat.AllowedHosts = []string{"hipchat.a.example", "10.0.0.0/8"}
	want.Log.Level = "debug"
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", *got, want)
	}
}

func TestLoadEnvEmptyList(t *testing.T) {
	got, err := Load(writeFile(t, operatorYAML), []string{"HIPCONNECT_HIPCHAT__ALLOWED_HOSTS="})
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if len(got.HipChat.AllowedHosts) != 0 {
		t.Errorf("allowed_hosts = %q, want empty", got.HipChat.AllowedHosts)
	}
}

func TestLoadCommandDefaults(t *testing.T) {
	got, err := Load(writeFile(t, `
commands:
  - name: wiki
    search_url: "https://wiki.example/search?q={term}"
  - name: blog
    kind: search
    search_url: "https://blog.example/?q={term}"
    max_results: 3
    timeout: 1s
  - name: echo
    kind: echo
`), nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := []Command{
		{Name: "wiki", Kind: command.KindSearch, SearchURL: "https://wiki.example/search?q={term}",
			TitleField: "title", URLField: "url", MaxResults: 10, Timeout: 5 * time.Second, Reply: command.ReplyAuto, ReplyBudget: 2 * time.Second},
		{Name: "blog", Kind: command.KindSearch, SearchURL: "https://blog.example/?q={term}",
			TitleField: "title", URLField: "url", MaxResults: 3, Timeout: time.Second, Reply: command.ReplyAuto, ReplyBudget: 2 * time.Second},
		{Name: "echo", Kind: command.KindEcho, Reply: command.ReplyAuto, ReplyBudget: 2 * time.Second},
	}
	if !reflect.DeepEqual(got.Commands, want) {
		t.Errorf("commands =\n%+v\nwant\n%+v", got.Commands, want)
	}
}

func TestLoadIntegration(t *testing.T) {
	got, err := Load(writeFile(t, `
commands:
  - name: echo
    kind: echo
    reply: response
integrations:
  - name: ops-room
    room_url_file: /etc/hipconnect/ops-room.url
    commands: [echo]
  - name: dev
    room_url_file: /etc/hipconnect/dev.url
    commands: [echo]
    reply: api
    token_rate: 1000/5m
`), nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := []Integration{
		{Name: "ops-room", RoomURLFile: "/etc/hipconnect/ops-room.url", Commands: []string{"echo"}, Reply: command.ReplyResponse, TokenRate: "100/5m"},
		{Name: "dev", RoomURLFile: "/etc/hipconnect/dev.url", Commands: []string{"echo"}, Reply: command.ReplyAPI, TokenRate: "1000/5m"},
	}
	if !reflect.DeepEqual(got.Integrations, want) {
		t.Errorf("integrations =\n%+v\nwant\n%+v", got.Integrations, want)
	}
	if c := got.Commands[0]; c.Reply != command.ReplyResponse || c.ReplyBudget != DefaultReplyBudget {
		t.Errorf("echo reply %q budget %v, want response and the default budget", c.Reply, c.ReplyBudget)
	}
	if n, per, err := ParseRate("1000/5m"); n != 1000 || per != 5*time.Minute || err != nil {
		t.Errorf("ParseRate = %d, %v, %v", n, per, err)
	}
}

func TestLoadPostgres(t *testing.T) {
	got, err := Load(writeFile(t, `
storage:
  backend: postgres
  postgres:
    dsn: "postgres://hipconnect@db.intranet.example/hipconnect?sslmode=verify-full&sslrootcert=/etc/hipconnect/db-ca.pem"
    password_file: /etc/hipconnect/db-password
integrations:
  - name: ops
    room_url_file: /etc/hipconnect/ops.url
    commands: [echo]
`), []string{"HIPCONNECT_STORAGE__POSTGRES__MAX_CONNS=20"})
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := Postgres{DSN: "postgres://hipconnect@db.intranet.example/hipconnect?sslmode=verify-full&sslrootcert=/etc/hipconnect/db-ca.pem",
		PasswordFile: "/etc/hipconnect/db-password", MaxConns: 20}
	if got.Storage.Backend != BackendPostgres || got.Storage.Postgres != want {
		t.Errorf("storage = %+v, want backend postgres with %+v", got.Storage, want)
	}
	if r := got.Integrations[0].Reply; r != command.ReplyAPI {
		t.Errorf("integration reply on postgres defaults to %q, want api", r)
	}
	if d := Default(); d.Storage.Backend != BackendBolt || d.Storage.Postgres != (Postgres{}) {
		t.Errorf("default storage %+v, want bbolt and no postgres keys", d.Storage)
	}
}

func TestLoadNulls(t *testing.T) {
	// An empty section or key keeps the defaults.
	got, err := Load(writeFile(t, `
server:
  ops_listen:
tls:
log:
  level: warn
`), nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	want := Default()
	want.Log.Level = "warn"
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("got\n%+v\nwant\n%+v", *got, want)
	}
}

func TestLoadUnquotedOff(t *testing.T) {
	// YAML 1.2 reads an unquoted off as text, so both spellings work.
	got, err := Load(writeFile(t, "tls:\n  mode: off\n"), nil)
	if err != nil {
		t.Fatalf("Load = %v", err)
	}
	if got.TLS.Mode != tlsmgr.ModeOff {
		t.Errorf("tls.mode = %q, want \"off\"", got.TLS.Mode)
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path, nil)
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("errors.Is(err, fs.ErrNotExist) = false for %v", err)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "config: ") || !strings.Contains(msg, path) {
		t.Errorf("error %q should start with \"config: \" and name %s", msg, path)
	}
}

func TestLoadBadYAML(t *testing.T) {
	_, err := Load(writeFile(t, "server: [unclosed\n"), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "config: read ") {
		t.Errorf("Load = %v, want a \"config: read\" error", err)
	}
}

// TestLoadRefused covers unknown keys, wrong types and invalid values, from
// the file and from the environment: each must fail with an error naming the
// key.
func TestLoadRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string // "" = no file
		environ []string
		want    []string // substrings of the error
	}{
		// unknown keys
		{name: "unknown key in file", file: "server:\n  base_ur: https://x.example\n",
			want: []string{`config: unknown key "server.base_ur" in `}},
		{name: "unknown top-level key", file: "sever:\n  listen: :80\n",
			want: []string{`unknown key "sever"`}},
		{name: "unknown key in command entry",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    serch_url: y\n",
			want: []string{`unknown key "commands[0].serch_url"`}},
		{name: "dotted key in file", file: "log.level: debug\n",
			want: []string{`config: key "log.level": nest it`}},
		{name: "wrong case is unknown", file: "Server:\n  listen: :80\n",
			want: []string{`unknown key "Server"`}},
		{name: "unknown key in env", environ: []string{"HIPCONNECT_SERVER__BASE_UR=x"},
			want: []string{`config: unknown key "server.base_ur" from HIPCONNECT_SERVER__BASE_UR`}},
		{name: "single underscore between levels", environ: []string{"HIPCONNECT_SERVER_BASE_URL=x"},
			want: []string{`unknown key "server_base_url" from HIPCONNECT_SERVER_BASE_URL`}},
		{name: "env below a leaf", environ: []string{"HIPCONNECT_LOG__LEVEL__X=x"},
			want: []string{`unknown key "log.level.x"`}},
		{name: "env section", environ: []string{"HIPCONNECT_TLS__ACME=x"},
			want: []string{`HIPCONNECT_TLS__ACME: "tls.acme" is a section`}},
		{name: "env commands", environ: []string{"HIPCONNECT_COMMANDS=x"},
			want: []string{"HIPCONNECT_COMMANDS: commands can only be set in the config file"}},
		{name: "file and env key errors together",
			file: "log:\n  levl: debug\n", environ: []string{"HIPCONNECT_LOG__FORMT=json"},
			want: []string{`unknown key "log.levl"`, `unknown key "log.formt"`}},

		// shapes and types
		{name: "section not a mapping", file: "server: localhost\n",
			want: []string{`config: server: must be a mapping`}},
		{name: "commands not a list", file: "commands:\n  name: x\n",
			want: []string{`config: commands: must be a list`}},
		{name: "command entry not a mapping", file: "commands:\n  - hascode\n",
			want: []string{`config: commands[0]: must be a mapping`}},
		{name: "max_results not a number",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    max_results: lots\n",
			want: []string{`config: commands[0].max_results: cannot use "lots" as an integer`}},
		{name: "reply mode unknown", file: "commands:\n  - name: echo\n    kind: echo\n    reply: webhook\n",
			want: []string{`config: commands[0].reply: must be one of auto, api, response, got "webhook"`}},
		{name: "reply budget too long", file: "commands:\n  - name: echo\n    kind: echo\n    reply_budget: 30s\n",
			want: []string{`config: commands[0].reply_budget: must be more than 0 and at most 10s, got 30s`}},
		{name: "integration wrong in every key",
			file: "commands:\n  - name: echo\n    kind: echo\nintegrations:\n  - name: Ops_Room\n    room_url_file: ops.url\n" +
				"    commands: [echo, hascode]\n    reply: auto\n    token_rate: 100 per 5m\n  - name: ops\n    room_url_file: /a\n    commands: [echo]\n  - name: ops\n    room_url_file: /b\n",
			want: []string{`config: integrations[0].name: must match`, `integrations[0].room_url_file: must be an absolute path, got "ops.url"`,
				`integrations[0].commands: "hascode" is not the name of one of commands`, `integrations[0].reply: must be one of response, api, got "auto"`,
				`integrations[0].token_rate: must be a rate such as 100/5m`, `integrations[2].name: "ops" is also the name of integrations[1]`,
				`integrations[2].commands: must list at least one command`}},
		{name: "env integrations", environ: []string{"HIPCONNECT_INTEGRATIONS=x"},
			want: []string{"HIPCONNECT_INTEGRATIONS: integrations can only be set in the config file"}},
		{name: "duration without unit", file: "server:\n  read_timeout: 10\n",
			want: []string{`config: server.read_timeout: invalid duration 10`}},
		{name: "duration not a duration in env", environ: []string{"HIPCONNECT_OUTBOUND__TIMEOUT=soon"},
			want: []string{`config: outbound.timeout: invalid duration "soon"`}},
		{name: "bool", environ: []string{"HIPCONNECT_SERVER__PPROF=maybe"},
			want: []string{`config: server.pprof: cannot use "maybe" as a boolean`}},
		{name: "size in env", environ: []string{"HIPCONNECT_SERVER__MAX_BODY_BYTES=1MB"},
			want: []string{`config: server.max_body_bytes: cannot use "1MB" as an integer`}},
		{name: "fraction for an integer", file: "server:\n  max_body_bytes: 1.5\n",
			want: []string{`config: server.max_body_bytes: cannot use 1.5 as an integer`}},
		{name: "boolean for a string", file: "addon:\n  name: yes\n  description: true\n",
			want: []string{`config: addon.description: cannot use true as a string`}},
		{name: "list for a string", file: "server:\n  listen: [a, b]\n",
			want: []string{`config: server.listen: cannot use a list as a string`}},

		// invalid values: server
		{name: "base_url relative", environ: []string{"HIPCONNECT_SERVER__BASE_URL=addon.example"},
			want: []string{"config: server.base_url: must be an absolute http or https URL"}},
		{name: "base_url scheme", environ: []string{"HIPCONNECT_SERVER__BASE_URL=ftp://addon.example"},
			want: []string{"config: server.base_url: must be an absolute"}},
		{name: "base_url no host", environ: []string{"HIPCONNECT_SERVER__BASE_URL=https:///x"},
			want: []string{"config: server.base_url: must be an absolute"}},
		{name: "base_url query", environ: []string{"HIPCONNECT_SERVER__BASE_URL=https://a.example/?x=1"},
			want: []string{"config: server.base_url: must not have a query or fragment"}},
		{name: "base_url fragment", environ: []string{"HIPCONNECT_SERVER__BASE_URL=https://a.example/#x"},
			want: []string{"config: server.base_url: must not have a query or fragment"}},
		{name: "base_url user", environ: []string{"HIPCONNECT_SERVER__BASE_URL=https://u:p@a.example/"},
			want: []string{"config: server.base_url: must not contain a user"}},
		{name: "listen empty", environ: []string{"HIPCONNECT_SERVER__LISTEN="},
			want: []string{"config: server.listen: must be set"}},
		{name: "listen no port", environ: []string{"HIPCONNECT_SERVER__LISTEN=localhost"},
			want: []string{"config: server.listen: must be host:port"}},
		{name: "listen bad port", environ: []string{"HIPCONNECT_SERVER__LISTEN=:http"},
			want: []string{"config: server.listen: port must be a number"}},
		{name: "listen port too big", environ: []string{"HIPCONNECT_SERVER__LISTEN=:65536"},
			want: []string{"config: server.listen: port must be a number"}},
		{name: "listen bad host", environ: []string{"HIPCONNECT_SERVER__LISTEN=a b:80"},
			want: []string{"config: server.listen: host must be"}},
		{name: "redirect_listen", environ: []string{"HIPCONNECT_SERVER__REDIRECT_LISTEN=80"},
			want: []string{"config: server.redirect_listen: must be host:port"}},
		{name: "ops_listen", environ: []string{"HIPCONNECT_SERVER__OPS_LISTEN=localhost:"},
			want: []string{"config: server.ops_listen: port must be a number"}},
		{name: "ops_listen same as listen", environ: []string{"HIPCONNECT_SERVER__OPS_LISTEN=127.0.0.1:8080"},
			want: []string{`config: server.ops_listen: "127.0.0.1:8080" is also server.listen`}},
		{name: "max_body_bytes", environ: []string{"HIPCONNECT_SERVER__MAX_BODY_BYTES=0"},
			want: []string{"config: server.max_body_bytes: must be greater than zero"}},
		{name: "read_timeout", environ: []string{"HIPCONNECT_SERVER__READ_TIMEOUT=0s"},
			want: []string{"config: server.read_timeout: must be greater than zero"}},
		{name: "write_timeout", environ: []string{"HIPCONNECT_SERVER__WRITE_TIMEOUT=-1s"},
			want: []string{"config: server.write_timeout: must be greater than zero"}},
		{name: "idle_timeout", environ: []string{"HIPCONNECT_SERVER__IDLE_TIMEOUT=0s"},
			want: []string{"config: server.idle_timeout: must be greater than zero"}},
		{name: "shutdown_grace", environ: []string{"HIPCONNECT_SERVER__SHUTDOWN_GRACE=0s"},
			want: []string{"config: server.shutdown_grace: must be greater than zero"}},

		// tls
		{name: "tls mode", environ: []string{"HIPCONNECT_TLS__MODE=on"},
			want: []string{`config: tls.mode: must be one of off, self-signed, files, acme, got "on"`}},
		{name: "tls mode unquoted false", file: "tls:\n  mode: false\n",
			want: []string{`config: tls.mode: cannot use false as a string`}},
		{name: "files without cert and key", environ: []string{"HIPCONNECT_TLS__MODE=files"},
			want: []string{"config: tls.cert_file: must be set", "config: tls.key_file: must be set"}},
		{name: "acme without directory", environ: []string{"HIPCONNECT_TLS__MODE=acme"},
			want: []string{"config: tls.acme.directory: must be set"}},
		{name: "acme directory http",
			environ: []string{"HIPCONNECT_TLS__MODE=acme", "HIPCONNECT_TLS__ACME__DIRECTORY=http://ca.example/dir"},
			want:    []string{"config: tls.acme.directory: must be an https URL"}},
		{name: "acme eab half",
			environ: []string{"HIPCONNECT_TLS__MODE=acme", "HIPCONNECT_TLS__ACME__DIRECTORY=https://ca.example/dir",
				"HIPCONNECT_TLS__ACME__EAB_HMAC=secret"},
			want: []string{"config: tls.acme.eab_kid: tls.acme.eab_kid and tls.acme.eab_hmac must be set together"}},
		{name: "acme email",
			environ: []string{"HIPCONNECT_TLS__MODE=acme", "HIPCONNECT_TLS__ACME__DIRECTORY=https://ca.example/dir",
				"HIPCONNECT_TLS__ACME__EMAIL=nobody"},
			want: []string{"config: tls.acme.email: must be an email address"}},

		// storage, hipchat, outbound
		{name: "storage path", environ: []string{"HIPCONNECT_STORAGE__PATH="},
			want: []string{"config: storage.path: must be set"}},
		{name: "storage open_timeout", environ: []string{"HIPCONNECT_STORAGE__OPEN_TIMEOUT=0s"},
			want: []string{"config: storage.open_timeout: must be greater than zero"}},
		{name: "allowed_hosts empty entry", environ: []string{"HIPCONNECT_HIPCHAT__ALLOWED_HOSTS=a.example,,b.example"},
			want: []string{"config: hipchat.allowed_hosts[1]: must not be empty"}},
		{name: "allowed_hosts star", file: "hipchat:\n  allowed_hosts: [\"*\"]\n",
			want: []string{`config: hipchat.allowed_hosts[0]: "*" would accept any host`}},
		{name: "proxy", environ: []string{"HIPCONNECT_OUTBOUND__PROXY=socks5://u:hunter2@proxy:1080"},
			want: []string{"config: outbound.proxy: must be an absolute http or https URL"}},
		{name: "outbound timeout", environ: []string{"HIPCONNECT_OUTBOUND__TIMEOUT=0s"},
			want: []string{"config: outbound.timeout: must be greater than zero"}},
		{name: "outbound max_response_bytes", environ: []string{"HIPCONNECT_OUTBOUND__MAX_RESPONSE_BYTES=-1"},
			want: []string{"config: outbound.max_response_bytes: must be greater than zero"}},

		// addon
		{name: "addon key chars", environ: []string{"HIPCONNECT_ADDON__KEY=com example"},
			want: []string{"config: addon.key: must be 1 to 40 characters"}},
		{name: "addon key empty", environ: []string{"HIPCONNECT_ADDON__KEY="},
			want: []string{"config: addon.key: must be 1 to 40 characters"}},
		{name: "addon key long", environ: []string{"HIPCONNECT_ADDON__KEY=" + strings.Repeat("k", 41)},
			want: []string{"config: addon.key: must be 1 to 40 characters"}},
		{name: "addon name empty", environ: []string{"HIPCONNECT_ADDON__NAME="},
			want: []string{"config: addon.name: must be 1 to 100 characters"}},
		{name: "addon name long", environ: []string{"HIPCONNECT_ADDON__NAME=" + strings.Repeat("n", 101)},
			want: []string{"config: addon.name: must be 1 to 100 characters"}},
		{name: "vendor_url", environ: []string{"HIPCONNECT_ADDON__VENDOR_URL=example.com"},
			want: []string{"config: addon.vendor_url: must be an absolute"}},

		// commands
		{name: "no commands", file: "commands: []\n",
			want: []string{"config: commands: must list at least one command"}},
		{name: "command name", file: "commands:\n  - name: Has Code\n    kind: echo\n",
			want: []string{"config: commands[0].name: must match"}},
		{name: "command name missing", file: "commands:\n  - kind: echo\n",
			want: []string{`config: commands[0].name: must match`}},
		{name: "command name too long", file: "commands:\n  - name: " + strings.Repeat("a", 33) + "\n    kind: echo\n",
			want: []string{"config: commands[0].name: must match"}},
		{name: "duplicate names", file: "commands:\n  - name: x\n    kind: echo\n  - name: x\n    kind: echo\n",
			want: []string{`config: commands[1].name: "x" is also the name of commands[0]`}},
		{name: "kind", file: "commands:\n  - name: x\n    kind: lookup\n",
			want: []string{`config: commands[0].kind: must be one of search, echo, got "lookup"`}},
		{name: "search_url missing", file: "commands:\n  - name: x\n",
			want: []string{"config: commands[0].search_url: must be set"}},
		{name: "search_url without term", file: "commands:\n  - name: x\n    search_url: https://s.example/\n",
			want: []string{"config: commands[0].search_url: must contain {term}"}},
		{name: "search_url term in host", file: "commands:\n  - name: x\n    search_url: https://{term}.s.example/\n",
			want: []string{"config: commands[0].search_url: {term} must not be in the host"}},
		{name: "search_url relative", file: "commands:\n  - name: x\n    search_url: /search?q={term}\n",
			want: []string{"config: commands[0].search_url: must be an absolute"}},
		{name: "title_field empty",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    title_field: \"\"\n",
			want: []string{"config: commands[0].title_field: must not be empty"}},
		{name: "url_field empty",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    url_field: \"\"\n",
			want: []string{"config: commands[0].url_field: must not be empty"}},
		{name: "max_results zero",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    max_results: 0\n",
			want: []string{"config: commands[0].max_results: must be between 1 and 50, got 0"}},
		{name: "max_results too many",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    max_results: 51\n",
			want: []string{"config: commands[0].max_results: must be between 1 and 50, got 51"}},
		{name: "command timeout",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    timeout: 0s\n",
			want: []string{"config: commands[0].timeout: must be greater than zero"}},
		{name: "show_all_url",
			file: "commands:\n  - name: x\n    search_url: https://s.example/?q={term}\n    show_all_url: s.example/{term}\n",
			want: []string{"config: commands[0].show_all_url: must be an absolute"}},

		// log
		{name: "log level", environ: []string{"HIPCONNECT_LOG__LEVEL=verbose"},
			want: []string{`config: log.level: must be one of debug, info, warn, error, got "verbose"`}},
		{name: "log format", environ: []string{"HIPCONNECT_LOG__FORMAT=xml"},
			want: []string{`config: log.format: must be one of text, json, got "xml"`}},

		// storage backends
		{name: "backend unknown", environ: []string{"HIPCONNECT_STORAGE__BACKEND=mysql"},
			want: []string{`config: storage.backend: must be one of bbolt, postgres, got "mysql"`}},
		{name: "postgres without dsn", environ: []string{"HIPCONNECT_STORAGE__BACKEND=postgres"},
			want: []string{`config: storage.postgres.dsn: must be set when storage.backend is "postgres"`}},
		{name: "postgres keys with bbolt", environ: []string{"HIPCONNECT_STORAGE__POSTGRES__DSN=host=db"},
			want: []string{`config: storage.postgres: is for storage.backend "postgres" only (storage.backend is "bbolt")`}},
		{name: "postgres password file relative and pool too big",
			file: "storage:\n  backend: postgres\n  postgres:\n    dsn: host=db\n    password_file: pw\n    max_conns: 5000\n",
			want: []string{`storage.postgres.password_file: must be an absolute path, got "pw"`, `storage.postgres.max_conns: must be 0 (pgx's default) to 1000, got 5000`}},
		{name: "postgres key misspelt", file: "storage:\n  backend: postgres\n  postgres:\n    dns: host=db\n",
			want: []string{`unknown key "storage.postgres.dns"`}},
		{name: "reply in the response on postgres",
			file: "storage:\n  backend: postgres\n  postgres:\n    dsn: host=db\ncommands:\n  - name: echo\n    kind: echo\n    reply: response\n" +
				"integrations:\n  - name: ops\n    room_url_file: /etc/hipconnect/ops.url\n    commands: [echo]\n    reply: response\n",
			want: []string{`config: commands[0].reply: "response" is not possible with storage.backend "postgres"`,
				`config: integrations[0].reply: "response" is not possible with storage.backend "postgres"`}},

		// several at once
		{name: "all problems reported",
			environ: []string{"HIPCONNECT_LOG__LEVEL=x", "HIPCONNECT_LOG__FORMAT=y", "HIPCONNECT_STORAGE__PATH="},
			want:    []string{"config: log.level:", "config: log.format:", "config: storage.path:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			c, err := Load(path, tc.environ)
			if err == nil {
				t.Fatalf("Load succeeded, want an error containing %q", tc.want)
			}
			if c != nil {
				t.Errorf("Load returned a Config with its error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if !strings.HasPrefix(line, "config: ") {
					t.Errorf("error line %q lacks the \"config: \" prefix", line)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q repeats a password", err)
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(*Config)
	}{
		{"base_url with path prefix", func(c *Config) { c.Server.BaseURL = "https://intranet.example/hipconnect" }},
		{"listen on port 0", func(c *Config) { c.Server.Listen = ":0"; c.Server.OpsListen = ":0" }},
		{"listen on IPv6", func(c *Config) { c.Server.Listen = "[::1]:8443" }},
		{"ops listener off", func(c *Config) { c.Server.OpsListen = "" }},
		{"self-signed", func(c *Config) { c.TLS.Mode = tlsmgr.ModeSelfSigned }},
		{"files", func(c *Config) { c.TLS = TLS{Mode: tlsmgr.ModeFiles, CertFile: "c.pem", KeyFile: "k.pem"} }},
		{"acme without eab", func(c *Config) {
			c.TLS = TLS{Mode: tlsmgr.ModeACME, ACME: ACME{Directory: "https://ca.example/dir", CARoot: "/etc/ca.pem"}}
		}},
		{"acme with eab", func(c *Config) {
			c.TLS = TLS{Mode: tlsmgr.ModeACME, ACME: ACME{Directory: "https://ca.example/dir", EABKID: "k", EABHMAC: "h"}}
		}},
		{"http proxy", func(c *Config) { c.Outbound.Proxy = "http://proxy.intranet:3128" }},
		{"echo only", func(c *Config) { c.Commands = []Command{{Name: "echo", Kind: command.KindEcho}} }},
		{"show_all_url without term", func(c *Config) { c.Commands[0].ShowAllURL = "https://blog.example/" }},
		{"json logs", func(c *Config) { c.Log = Log{Level: "debug", Format: "json"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.modify(&c)
			if err := c.Validate(); err != nil {
				t.Errorf("Validate = %v, want nil", err)
			}
		})
	}
}

func TestValidateNormalises(t *testing.T) {
	c := Default()
	c.Server.BaseURL = "https://intranet.example/hipconnect/"
	c.Commands[0].Kind = ""
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	if got, want := c.Server.BaseURL, "https://intranet.example/hipconnect"; got != want {
		t.Errorf("base_url = %q, want %q", got, want)
	}
	if got, want := c.Commands[0].Kind, command.KindSearch; got != want {
		t.Errorf("kind = %q, want %q", got, want)
	}
}

func TestRedacted(t *testing.T) {
	c := Default()
	c.TLS.ACME.EABHMAC = "c2VjcmV0"
	c.Outbound.Proxy = "http://user:hunter2@proxy.intranet:3128"
	c.HipChat.AllowedHosts = []string{"a.example"}

	r := c.Redacted()
	if got, want := r.TLS.ACME.EABHMAC, "REDACTED"; got != want {
		t.Errorf("eab_hmac = %q, want %q", got, want)
	}
	if got, want := r.Outbound.Proxy, "http://user:REDACTED@proxy.intranet:3128"; got != want {
		t.Errorf("proxy = %q, want %q", got, want)
	}
	if c.TLS.ACME.EABHMAC != "c2VjcmV0" || c.Outbound.Proxy != "http://user:hunter2@proxy.intranet:3128" {
		t.Errorf("Redacted changed the original")
	}
	r.HipChat.AllowedHosts[0] = "changed"
	r.Commands[0].Name = "changed"
	if c.HipChat.AllowedHosts[0] != "a.example" || c.Commands[0].Name != "hascode" {
		t.Errorf("the copy shares memory with the original")
	}

	for dsn, want := range map[string]string{
		"postgres://hc:hunter2@db.example/hc?sslmode=verify-full":   "postgres://hc:REDACTED@db.example/hc?sslmode=verify-full",
		"postgres://db.example/hc?password=hunter2&sslmode=require": "postgres://db.example/hc?password=REDACTED&sslmode=require",
		"host=db user=hc password='hun ter\\'2' dbname=hc":          "host=db user=hc password=REDACTED dbname=hc",
		"host=db password = hunter2 dbname=hc":                      "host=db password = REDACTED dbname=hc",
		"host=db dbname=hc":                                         "host=db dbname=hc",
	} {
		c.Storage.Postgres.DSN = dsn
		if got := c.Redacted().Storage.Postgres.DSN; got != want {
			t.Errorf("dsn %q redacted to %q, want %q", dsn, got, want)
		}
	}

	if got := Default().Redacted().TLS.ACME.EABHMAC; got != "" {
		t.Errorf("unset eab_hmac redacted to %q, want \"\"", got)
	}
	if got, want := Default().Redacted(), Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("Redacted changed a config without secrets")
	}
}
