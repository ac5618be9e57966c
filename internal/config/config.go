// Package config loads hipconnect's configuration: built-in defaults, then an
// optional YAML file, then HIPCONNECT_* environment variables, each layer
// overriding the one before. Loading is strict: unknown keys and values of
// the wrong type are refused with an error that names the key, and the result
// is validated before it is returned.
//
// The package reads no global state: the environment is passed in, so tests
// (and callers) decide what Load sees.
package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"

	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// EnvPrefix starts every environment variable Load reads. After the prefix,
// the name is lowercased and a double underscore separates levels, so
// HIPCONNECT_SERVER__BASE_URL sets server.base_url and
// HIPCONNECT_TLS__ACME__DIRECTORY sets tls.acme.directory.
const EnvPrefix = "HIPCONNECT_"

// EnvConfigFile is reserved for the path of the configuration file, which
// the command line reads. It names no key: Load skips it instead of refusing
// it as unknown.
const EnvConfigFile = EnvPrefix + "CONFIG"

// Redaction replaces secrets in the Config returned by Redacted.
const Redaction = "REDACTED"

// Default returns the built-in configuration: it validates, and with it
// `hipconnect serve` starts on a fresh machine with no file at all, serving
// plain HTTP on 127.0.0.1:8080 and writing hipconnect.db in the working
// directory. Each call returns a fresh value that shares no memory with
// another.
func Default() Config {
	return Config{
		Server: Server{
			BaseURL:        "http://localhost:8080",
			Listen:         "127.0.0.1:8080",
			RedirectListen: "",
			OpsListen:      "127.0.0.1:9464",
			MaxBodyBytes:   1 << 20,
			ReadTimeout:    10 * time.Second,
			WriteTimeout:   30 * time.Second,
			IdleTimeout:    120 * time.Second,
			ShutdownGrace:  10 * time.Second,
			Pprof:          false,
		},
		TLS: TLS{Mode: tlsmgr.ModeOff},
		Storage: Storage{
			Backend:     BackendBolt,
			Path:        "hipconnect.db",
			KeyFile:     "",
			OpenTimeout: 5 * time.Second,
			MaxPending:  1000,
		},
		HipChat: HipChat{AllowedHosts: []string{}},
		Outbound: Outbound{
			Timeout:          10 * time.Second,
			MaxResponseBytes: 4 << 20,
		},
		Addon: Addon{
			Key:         "com.example.blogsearch",
			Name:        "Blog Search",
			Description: "Search the blog with /hascode tag",
			VendorName:  "Example Corp",
			VendorURL:   "https://example.com",
		},
		Commands: []Command{
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
				ReplyBudget: DefaultReplyBudget,
			},
			{Name: "echo", Kind: command.KindEcho, Reply: command.ReplyAuto, ReplyBudget: DefaultReplyBudget},
		},
		Integrations: []Integration{},
		Log:          Log{Level: "info", Format: "text"},
	}
}

// DefaultReplyBudget is how long a webhook's response waits for the reply
// of a command with reply: auto (commands[].reply_budget) before it is
// acknowledged and the reply posted through the API.
const DefaultReplyBudget = 2 * time.Second

// DefaultTokenRate is HipChat Server's default budget of a user-generated
// (room or personal) token: 100 requests per 5 minutes.
const DefaultTokenRate = "100/5m"

// commandDefaults are filled into a search command entry of the file for
// each key the entry omits. A key present in the file, even with a zero
// value, is kept as written so that Validate can refuse it.
func commandDefaults() map[string]any {
	return map[string]any{
		"title_field": "title",
		"url_field":   "url",
		"max_results": 10,
		"timeout":     5 * time.Second,
	}
}

// Load builds the configuration from three layers, each overriding the one
// before: Default(), the YAML file at path (skipped when path is ""), and the
// HIPCONNECT_* variables in environ (a list of "NAME=value" strings, as
// os.Environ returns; Load never reads the process environment itself).
// HIPCONNECT_CONFIG (EnvConfigFile) is skipped: it is the caller's to read.
//
// Maps merge key by key; any other value, lists included, replaces the
// value below it. So a file that lists commands replaces the default
// commands entirely, and a search command entry that omits title_field,
// url_field, max_results or timeout gets "title", "url", 10 and 5s (and
// Validate fills in the reply keys, see there). A YAML key with an empty (null) value counts as absent. Commands and
// integrations can only be set in the file.
//
// An environment value is a string; it is converted to the key's type, and
// for a list (hipchat.allowed_hosts) it is split on commas, with spaces
// around each item trimmed and "" meaning the empty list.
//
// Unknown keys, in the file (including inside a command entry) or in the
// environment, and values that do not convert to the key's type are
// errors naming the key. The result is validated (see Validate); on any error
// Load returns a nil *Config and an error starting "config: ".
func Load(path string, environ []string) (*Config, error) {
	ko := koanf.New(".")
	if err := ko.Load(confmap.Provider(toMap(reflect.ValueOf(Default())), ""), nil); err != nil {
		return nil, fmt.Errorf("config: load defaults: %w", err)
	}

	// Key errors from the file and the environment are reported together.
	var keyErrs []error
	if path != "" {
		m, errs, err := readFile(path)
		if err != nil {
			return nil, err
		}
		keyErrs = append(keyErrs, errs...)
		if err := ko.Load(confmap.Provider(m, ""), nil); err != nil {
			return nil, fmt.Errorf("config: load %s: %w", path, err)
		}
	}

	var envErrs []error
	ep := env.Provider(".", env.Opt{
		Prefix:      EnvPrefix,
		EnvironFunc: func() []string { return environ },
		TransformFunc: func(name, value string) (string, any) {
			if name == EnvConfigFile {
				return "", nil
			}
			key, err := envKey(name)
			if err != nil {
				envErrs = append(envErrs, err)
				return "", nil
			}
			return key, value
		},
	})
	if err := ko.Load(ep, nil); err != nil {
		return nil, fmt.Errorf("config: load environment: %w", err)
	}
	sortErrors(envErrs)
	if keyErrs = append(keyErrs, envErrs...); len(keyErrs) > 0 {
		return nil, errors.Join(keyErrs...)
	}

	var c Config
	if err := decode(ko.Raw(), &c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// readFile parses the YAML file at path. It returns the nested map with null
// values removed and command defaults filled in, and the key errors found in
// it; err is for a file that cannot be read or parsed.
func readFile(path string) (m map[string]any, keyErrs []error, err error) {
	// A koanf instance of its own, so that the file's keys can be checked
	// before they are merged with the defaults.
	fk := koanf.New(".")
	if err := fk.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	m = fk.Raw()
	dropNil(m)
	if keyErrs = checkKeys(m, reflect.TypeFor[Config](), ""); len(keyErrs) > 0 {
		for i, err := range keyErrs {
			keyErrs[i] = fmt.Errorf("%w in %s", err, path)
		}
		return m, keyErrs, nil
	}
	if cmds, ok := m["commands"].([]any); ok {
		for _, e := range cmds {
			entry := e.(map[string]any) // checkKeys made sure
			if kind, _ := entry["kind"].(string); kind != "" && command.Kind(kind) != command.KindSearch {
				continue
			}
			for k, v := range commandDefaults() {
				if _, ok := entry[k]; !ok {
					entry[k] = v
				}
			}
		}
	}
	return m, nil, nil
}

// envKey maps an environment variable name to a configuration key, or
// explains why it does not name one.
func envKey(name string) (string, error) {
	rest := strings.TrimPrefix(name, EnvPrefix)
	if strings.Contains(rest, ".") {
		return "", fmt.Errorf("config: %s: separate levels with __, not '.'", name)
	}
	key := strings.ReplaceAll(strings.ToLower(rest), "__", ".")
	parts := strings.Split(key, ".")
	if parts[0] == "commands" || parts[0] == "integrations" {
		return "", fmt.Errorf("config: %s: %s can only be set in the config file", name, parts[0])
	}
	t := reflect.TypeFor[Config]()
	for i, p := range parts {
		f, ok := fieldByTag(t, p)
		if !ok {
			return "", fmt.Errorf("config: unknown key %q from %s", key, name)
		}
		t = f.Type
		if i < len(parts)-1 && t.Kind() != reflect.Struct {
			return "", fmt.Errorf("config: unknown key %q from %s", key, name)
		}
	}
	if t.Kind() == reflect.Struct {
		return "", fmt.Errorf("config: %s: %q is a section, not a key; set its keys, such as %s__%s",
			name, key, name, strings.ToUpper(tagOf(t.Field(0))))
	}
	return key, nil
}

// checkKeys reports every key of m that has no field in the struct type t,
// and every value that should be a mapping or a list of mappings and is not.
// prefix is the dotted path of m, "" at the top.
func checkKeys(m map[string]any, t reflect.Type, prefix string) []error {
	var errs []error
	for k, v := range m {
		key := join(prefix, k)
		if strings.Contains(k, ".") {
			errs = append(errs, fmt.Errorf("config: key %q: nest it instead of writing a dotted path", key))
			continue
		}
		f, ok := fieldByTag(t, k)
		if !ok {
			errs = append(errs, fmt.Errorf("config: unknown key %q", key))
			continue
		}
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct && ft != durationType:
			sub, ok := v.(map[string]any)
			if !ok {
				errs = append(errs, fmt.Errorf("config: %s: must be a mapping of keys, got %s", key, describe(v)))
				continue
			}
			errs = append(errs, checkKeys(sub, ft, key)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			list, ok := v.([]any)
			if !ok {
				errs = append(errs, fmt.Errorf("config: %s: must be a list, got %s", key, describe(v)))
				continue
			}
			for i, e := range list {
				ekey := fmt.Sprintf("%s[%d]", key, i)
				sub, ok := e.(map[string]any)
				if !ok {
					errs = append(errs, fmt.Errorf("config: %s: must be a mapping of keys, got %s", ekey, describe(e)))
					continue
				}
				errs = append(errs, checkKeys(sub, ft.Elem(), ekey)...)
			}
		}
	}
	sortErrors(errs)
	return errs
}

// dropNil removes null values from m and from the mappings nested in it,
// lists included, so that an empty YAML key reads as an absent one.
func dropNil(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNil(v)
		case []any:
			for _, e := range v {
				if sub, ok := e.(map[string]any); ok {
					dropNil(sub)
				}
			}
		}
	}
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	stringSliceType = reflect.TypeFor[[]string]()
)

// decode converts the merged map into c, naming the key of every value
// that does not fit its field.
func decode(m map[string]any, c *Config) error {
	d, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		TagName:          "koanf",
		Result:           c,
		ErrorUnused:      true, // checkKeys and envKey already refuse them; a second line of defence
		WeaklyTypedInput: true, // environment values are strings
		DecodeHook:       mapstructure.ComposeDecodeHookFunc(durationHook, commaListHook, strictHook),
	})
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := d.Decode(m); err != nil {
		var errs []error
		collectDecodeErrors(err, &errs)
		if len(errs) == 0 {
			return fmt.Errorf("config: %w", err)
		}
		sortErrors(errs)
		return errors.Join(errs...)
	}
	return nil
}

// collectDecodeErrors walks a mapstructure error tree and rewrites each
// innermost DecodeError as "config: <key>: <problem>".
func collectDecodeErrors(err error, out *[]error) {
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, x := range e.Unwrap() {
			collectDecodeErrors(x, out)
		}
	case *mapstructure.DecodeError:
		// A nested decode error carries the full key path in the innermost one.
		inner := e.Unwrap()
		var deeper *mapstructure.DecodeError
		if errors.As(inner, &deeper) {
			collectDecodeErrors(inner, out)
			return
		}
		*out = append(*out, fmt.Errorf("config: %s: %s", e.Name(), describeDecodeError(inner)))
	default:
		var de *mapstructure.DecodeError
		if u := errors.Unwrap(err); u != nil && errors.As(u, &de) {
			collectDecodeErrors(u, out)
			return
		}
		*out = append(*out, fmt.Errorf("config: %w", err))
	}
}

// describeDecodeError words mapstructure's problems for an operator.
func describeDecodeError(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("cannot use %s as %s", describe(pe.Value), typeWord(pe.Expected.Type()))
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("cannot use %s as %s", describe(ue.Value), typeWord(ue.Expected.Type()))
	}
	return err.Error()
}

func typeWord(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration"
	case t.Kind() == reflect.Bool:
		return "a boolean (true or false)"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "an integer"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	case t.Kind() == reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// durationHook reads durations as Go duration strings ("10s", "1m30s") and
// refuses bare numbers, which would otherwise silently mean nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q: write a number with a unit, such as \"10s\" or \"2m\"", v)
		}
		return d, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		return nil, fmt.Errorf("invalid duration %v: a duration needs a unit, such as \"10s\" or \"2m\"", v)
	}
	return data, nil
}

// commaListHook splits a string into a list at commas, trimming spaces
// around items; "" (or only spaces) is the empty list.
func commaListHook(from, to reflect.Type, data any) (any, error) {
	s, ok := data.(string)
	if !ok || to != stringSliceType {
		return data, nil
	}
	if strings.TrimSpace(s) == "" {
		return []string{}, nil
	}
	items := strings.Split(s, ",")
	for i := range items {
		items[i] = strings.TrimSpace(items[i])
	}
	return items, nil
}

// strictHook refuses the conversions of weakly typed input that would hide a
// mistake: YAML true/false where text is expected (an unquoted off is text
// in YAML 1.2, but false is not), and a fraction where an integer is.
func strictHook(_, to reflect.Type, data any) (any, error) {
	switch to.Kind() {
	case reflect.String:
		if b, ok := data.(bool); ok {
			return nil, fmt.Errorf("cannot use %t as a string; quote it if it is meant as text", b)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if f, ok := data.(float64); ok && f != math.Trunc(f) {
			return nil, fmt.Errorf("cannot use %v as an integer", f)
		}
	}
	return data, nil
}

// toMap turns a struct with koanf tags into the nested map koanf merges,
// with lists of structs as lists of maps.
func toMap(v reflect.Value) map[string]any {
	m := make(map[string]any, v.NumField())
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag := tagOf(f)
		if tag == "" {
			continue
		}
		fv := v.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			m[tag] = toMap(fv)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			list := make([]any, fv.Len())
			for j := range fv.Len() {
				list[j] = toMap(fv.Index(j))
			}
			m[tag] = list
		default:
			m[tag] = fv.Interface()
		}
	}
	return m
}

// fieldByTag finds the field of struct type t whose koanf tag is name.
func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	if t.Kind() != reflect.Struct {
		return reflect.StructField{}, false
	}
	for i := range t.NumField() {
		if f := t.Field(i); tagOf(f) == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func tagOf(f reflect.StructField) string {
	tag, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
	if tag == "-" {
		return ""
	}
	return tag
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// describe names a YAML value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		return strconv.Quote(v)
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(v)
	}
	return fmt.Sprintf("%T", v)
}

func sortErrors(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
}

// Redacted returns a deep copy of c that is safe to print or log: secrets
// (tls.acme.eab_hmac, and the password of a proxy URL) are replaced by
// "REDACTED". Empty secrets stay empty, so the copy still shows what is unset.
func (c Config) Redacted() Config {
	r := c
	r.HipChat.AllowedHosts = slices.Clone(c.HipChat.AllowedHosts)
	r.Commands = slices.Clone(c.Commands)
	if r.TLS.ACME.EABHMAC != "" {
		r.TLS.ACME.EABHMAC = Redaction
	}
	r.Outbound.Proxy = redactURL(r.Outbound.Proxy)
	r.Storage.Postgres.DSN = redactDSN(r.Storage.Postgres.DSN)
	return r
}

// dsnPassword matches a password in a DSN: password=... in the keyword
// form (quoted or not) or in a URL's query.
var dsnPassword = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)`)

// redactDSN hides the passwords of a PostgreSQL DSN, URL or keyword form.
func redactDSN(dsn string) string {
	return dsnPassword.ReplaceAllString(redactURL(dsn), "${1}"+Redaction)
}
