package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzLoad loads a fuzzed YAML file with fuzzed environment variables
// (newline separated). Properties:
//   - Load never panics, and returns either a *Config or an error, never
//     both or neither; the error, and each one it joins, starts "config: ";
//   - Load is deterministic: the same file and environment give an equal
//     Config, or the same error text;
//   - a loaded Config is valid and normalised: Validate on a copy returns
//     nil and changes nothing;
//   - a loaded Config written back as a file (every key, durations as
//     Go durations) loads, with no environment, to the same Config, unless
//     a value is not valid UTF-8, which only the environment can give
//     (YAML refuses it; Load takes it as it is).
func FuzzLoad(f *testing.F) {
	f.Add(operatorYAML, "HIPCONNECT_LOG__LEVEL=debug\nHIPCONNECT_HIPCHAT__ALLOWED_HOSTS= a.example , *.b.example\nPATH=/bin")
	f.Add("", "")
	f.Add("server:\n  base_url: https://addon.example///\n  listen: \"[::1]:0\"\n  ops_listen: \"[::1]:0\"\n  read_timeout: 1m30s\n",
		"HIPCONNECT_SERVER__MAX_BODY_BYTES=2048\nHIPCONNECT_SERVER__PPROF=true\nHIPCONNECT_CONFIG=/etc/x.yaml")
	f.Add("tls:\n  mode: off\nstorage:\n  path:\n  max_pending: 1e3\n", "HIPCONNECT_TLS__MODE=acme\nHIPCONNECT_TLS__ACME__DIRECTORY=https://ca.example/dir")
	f.Add("commands:\n  - name: a\n    search_url: http://s.example/?q={term}\n  - &e {name: echo, kind: echo, timeout: -5s}\n  - *e\n", "")
	f.Add("commands:\n  - {name: hascode, search_url: 'https://x/{term}', max_results: 50.0, timeout: 10s, reply: response}\n"+
		"integrations:\n  - {name: ops, room_url_file: /etc/hipconnect/ops.url, commands: [hascode]}\n", "HIPCONNECT_STORAGE__MAX_PENDING=7")
	f.Add("addon: {key: k, name: \"\\u00e9\\x7f\\0\", vendor_url: \"\"}\nlog: {level: warn, format: json}\n", "HIPCONNECT_ADDON__DESCRIPTION=\u0080\u2028")
	f.Add("hipchat:\n  allowed_hosts: [1, true, ~, '*']\noutbound: {proxy: 'http://u:p@proxy:3128', max_response_bytes: .inf}\n", "HIPCONNECT_OUTBOUND__TIMEOUT=10")
	f.Add("server: [a]\nunknown: 1\nserver.listen: x\n", "HIPCONNECT_SERVER=1\nHIPCONNECT_SERVER.LISTEN=x\nHIPCONNECT_=\nHIPCONNECT_INTEGRATIONS=x")
	f.Add("\t- {", "HIPCONNECT_LOG__LEVEL")

	f.Fuzz(func(t *testing.T, file, environ string) {
		dir := t.TempDir()
		path := filepath.Join(dir, "hipconnect.yaml")
		if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
		var env []string
		if environ != "" {
			env = strings.Split(environ, "\n")
		}
		c, err := Load(path, env)
		if (c == nil) == (err == nil) {
			t.Fatalf("Load = %v, %v: want exactly one", c, err)
		}
		again, errAgain := Load(path, env)
		if !reflect.DeepEqual(c, again) || fmt.Sprint(err) != fmt.Sprint(errAgain) {
			t.Fatalf("Load is not deterministic:\n%+v, %v\n%+v, %v", c, err, again, errAgain)
		}
		if err != nil {
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "config: ") {
					t.Fatalf("error %q does not start with \"config: \" (in %q)", e, err)
				}
			}
			return
		}

		cp := deepCopy(*c)
		if err := cp.Validate(); err != nil {
			t.Fatalf("loaded config does not validate: %v\n%+v", err, *c)
		}
		if !reflect.DeepEqual(cp, *c) {
			t.Fatalf("Validate changed a loaded config:\n%+v\nto\n%+v", *c, cp)
		}

		if !validUTF8(reflect.ValueOf(*c)) {
			return // from the environment; a YAML file cannot carry it
		}
		out := filepath.Join(dir, "written.yaml")
		if err := os.WriteFile(out, fileOf(t, *c), 0o600); err != nil {
			t.Fatal(err)
		}
		back, err := Load(out, nil)
		if err != nil {
			t.Fatalf("loaded config written back does not load: %v\n%s", err, fileOf(t, *c))
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("loaded config written back loads differently:\n%+v\nwant\n%+v\nfile:\n%s", *back, *c, fileOf(t, *c))
		}
	})
}

// deepCopy copies c and every slice in it.
func deepCopy(c Config) Config {
	d := c
	d.HipChat.AllowedHosts = slices.Clone(c.HipChat.AllowedHosts)
	d.Commands = slices.Clone(c.Commands)
	d.Integrations = slices.Clone(c.Integrations)
	for i := range d.Integrations {
		d.Integrations[i].Commands = slices.Clone(c.Integrations[i].Commands)
	}
	return d
}

// fileOf writes c as a configuration file with every key: JSON, which YAML
// reads, with durations as Go durations and every character from DEL on
// escaped (YAML allows only printable characters in a file).
func fileOf(t *testing.T, c Config) []byte {
	t.Helper()
	b, err := json.Marshal(fileValue(toMap(reflect.ValueOf(c))))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, r := range string(b) {
		switch {
		case r < 0x7f:
			out.WriteRune(r)
		case r <= 0xffff:
			fmt.Fprintf(&out, `\u%04x`, r)
		default:
			fmt.Fprintf(&out, `\U%08x`, r)
		}
	}
	return []byte(out.String())
}

// validUTF8 reports whether every string in v is valid UTF-8.
func validUTF8(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		return utf8.ValidString(v.String())
	case reflect.Struct:
		for i := range v.NumField() {
			if !validUTF8(v.Field(i)) {
				return false
			}
		}
	case reflect.Slice:
		for i := range v.Len() {
			if !validUTF8(v.Index(i)) {
				return false
			}
		}
	}
	return true
}

// fileValue is v, a value of toMap's, as a configuration file spells it.
func fileValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = fileValue(x)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = fileValue(x)
		}
		return l
	case time.Duration:
		return v.String()
	}
	return v
}
