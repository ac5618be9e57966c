package config

import (
	"time"

	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// Config is hipconnect's whole configuration. Load fills it from built-in
// defaults, then a YAML file, then HIPCONNECT_* environment variables, and
// validates it; a *Config returned by Load is complete and consistent.
type Config struct {
	Server   Server    `koanf:"server"`
	TLS      TLS       `koanf:"tls"`
	Storage  Storage   `koanf:"storage"`
	HipChat  HipChat   `koanf:"hipchat"`
	Outbound Outbound  `koanf:"outbound"`
	Addon    Addon     `koanf:"addon"`
	Commands []Command `koanf:"commands"`
	// Integrations are HipChat "Build your own" integrations: rooms that
	// reach the commands without a Connect install.
	Integrations []Integration `koanf:"integrations"`
	Log          Log           `koanf:"log"`
}

// Server is the inbound side.
type Server struct {
	BaseURL        string        `koanf:"base_url"`        // public URL HipChat and browsers use
	Listen         string        `koanf:"listen"`          // public listener (descriptor, install, webhooks, pages)
	RedirectListen string        `koanf:"redirect_listen"` // HTTP->HTTPS redirect and ACME HTTP-01; "" disables
	OpsListen      string        `koanf:"ops_listen"`      // /healthz /readyz /metrics; "" disables
	MaxBodyBytes   int64         `koanf:"max_body_bytes"`  // request body cap
	ReadTimeout    time.Duration `koanf:"read_timeout"`
	WriteTimeout   time.Duration `koanf:"write_timeout"`
	IdleTimeout    time.Duration `koanf:"idle_timeout"`
	ShutdownGrace  time.Duration `koanf:"shutdown_grace"`
	Pprof          bool          `koanf:"pprof"` // /debug/pprof on the ops listener
}

// TLS selects how the public listener gets its certificate.
type TLS struct {
	Mode     tlsmgr.Mode `koanf:"mode"` // off | self-signed | files | acme
	CertFile string      `koanf:"cert_file"`
	KeyFile  string      `koanf:"key_file"`
	ACME     ACME        `koanf:"acme"`
}

// ACME configures an (internal) ACME certificate authority.
type ACME struct {
	Directory string `koanf:"directory"`
	CARoot    string `koanf:"ca_root"`
	Email     string `koanf:"email"`
	EABKID    string `koanf:"eab_kid"`
	EABHMAC   string `koanf:"eab_hmac"`
}

// Storage is where hipconnect keeps its state: the bbolt file, or a
// PostgreSQL database several nodes share.
type Storage struct {
	Backend     string        `koanf:"backend"` // BackendBolt (one host) or BackendPostgres (several nodes)
	Path        string        `koanf:"path"`
	KeyFile     string        `koanf:"key_file"`     // secrets-at-rest key; "" = next to Path
	OpenTimeout time.Duration `koanf:"open_timeout"` // wait for the file lock, or for the database at start
	MaxPending  int           `koanf:"max_pending"`  // commands waiting per installation before webhooks get 503
	Postgres    Postgres      `koanf:"postgres"`
}

// Storage backends.
const (
	BackendBolt     = "bbolt"    // the embedded file at storage.path: one host
	BackendPostgres = "postgres" // a PostgreSQL database every node shares
)

// Postgres is the database of storage.backend postgres. With the bbolt
// backend it must be left unset.
type Postgres struct {
	DSN          string `koanf:"dsn"`           // libpq URL or keyword/value form, TLS via sslmode/sslrootcert
	PasswordFile string `koanf:"password_file"` // the password, so none sits in the DSN or the environment
	MaxConns     int    `koanf:"max_conns"`     // pool size per node; 0 = pgx's default (max(4, CPUs))
}

// HipChat describes the HipChat Server(s) hipconnect accepts installs from.
type HipChat struct {
	AllowedHosts []string `koanf:"allowed_hosts"` // exact host, *.suffix, IP or CIDR
	CAFile       string   `koanf:"ca_file"`       // extra PEM roots for HipChat's certificate
}

// Outbound limits every connection the daemon opens.
type Outbound struct {
	Proxy            string        `koanf:"proxy"` // "" = direct; proxy env vars are ignored
	Timeout          time.Duration `koanf:"timeout"`
	MaxResponseBytes int64         `koanf:"max_response_bytes"`
}

// Addon is what the descriptor says about the add-on.
type Addon struct {
	Key         string `koanf:"key"`
	Name        string `koanf:"name"`
	Description string `koanf:"description"`
	VendorName  string `koanf:"vendor_name"`
	VendorURL   string `koanf:"vendor_url"`
}

// Command is one slash command, answered for "/<Name> <args>".
type Command struct {
	Name        string        `koanf:"name"`
	Kind        command.Kind  `koanf:"kind"`         // search (default) | echo
	SearchURL   string        `koanf:"search_url"`   // {term} is replaced by the URL-escaped term
	ResultsPath string        `koanf:"results_path"` // dotted path to the hit list; "" = top-level array
	TitleField  string        `koanf:"title_field"`
	URLField    string        `koanf:"url_field"`
	MaxResults  int           `koanf:"max_results"`
	ShowAllURL  string        `koanf:"show_all_url"` // {term} as in SearchURL; "" = no link
	Timeout     time.Duration `koanf:"timeout"`
	// Reply is how a Connect install gets the reply: in the webhook's
	// response (response), through the REST API (api), or in the response
	// when it is ready within ReplyBudget, else through the API (auto).
	Reply       command.Reply `koanf:"reply"`
	ReplyBudget time.Duration `koanf:"reply_budget"`
}

// Integration is a "Build your own" integration of a room on HipChat
// Server: its notification URL (with the room token) is in RoomURLFile,
// and its slash command posts to {base_url}/integrations/{Name}/{secret}.
type Integration struct {
	Name        string        `koanf:"name"`          // [a-z0-9-]{1,40}
	RoomURLFile string        `koanf:"room_url_file"` // https://host/v2/room/{id_or_name}/notification?auth_token=...
	Commands    []string      `koanf:"commands"`      // names from commands
	Reply       command.Reply `koanf:"reply"`         // response (default) | api: post through the room URL
	TokenRate   string        `koanf:"token_rate"`    // the room token's budget, N/duration; default 100/5m
}

// Log configures log/slog.
type Log struct {
	Level  string `koanf:"level"`  // debug | info | warn | error
	Format string `koanf:"format"` // text | json
}
