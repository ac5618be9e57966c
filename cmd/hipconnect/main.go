// Command hipconnect hosts a HipChat Connect add-on for an on-premise
// HipChat Server: slash commands, install and uninstall, and the ops
// endpoints Prometheus and systemd use. See docs/ and `hipconnect help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hipconnect/hipconnect/internal/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: hipconnect <command> [flags]

commands:
  serve --config FILE                     run the daemon
  check --config FILE [--hipchat URL]...  preflight: config, hosts, HipChat, certificate, connections
  descriptor --config FILE                print the capability descriptor
  installations list|show ID|remove ID --config FILE
  outbox list|retry ID|drop ID --config FILE   commands awaiting delivery, dead letters
  integrations url|rotate NAME --config FILE   a "Build your own" integration's webhook URL
  notify NAME TEXT [--format text|html] [--color C] --config FILE   post to an integration's room
  backup --config FILE OUTFILE            hot backup of the store (daemon may run)
  restore --config FILE BACKUPFILE        replace the store by a backup (daemon stopped)
  store copy --from-config OLD --to-config NEW [--force]   copy a stopped store into another (bbolt to PostgreSQL)
  tls export-ca --config FILE             print the self-signed mode's CA certificate
  version                                 print the version

Without --config, HIPCONNECT_CONFIG names the file; without either, the
built-in defaults apply. HIPCONNECT_* variables override the file
(HIPCONNECT_SERVER__BASE_URL sets server.base_url; see docs/configuration.md).
`

// errUsage marks errors that are the caller's wording.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Environ(), reload, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hipconnect:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// env is what a subcommand gets from its caller.
type env struct {
	getenv  func(string) string
	environ []string
	reload  <-chan struct{}
	stdout  io.Writer
	stderr  io.Writer
}

// run runs one subcommand. It is main without the process: tests call it.
func run(ctx context.Context, args []string, getenv func(string) string, environ []string,
	reload <-chan struct{}, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	e := env{getenv: getenv, environ: environ, reload: reload, stdout: stdout, stderr: stderr}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return e.serve(ctx, rest)
	case "check":
		return e.check(ctx, rest)
	case "descriptor":
		return e.descriptor(rest)
	case "installations":
		return e.installations(ctx, rest)
	case "outbox":
		return e.outbox(ctx, rest)
	case "integrations":
		return e.integrations(ctx, rest)
	case "notify":
		return e.notify(ctx, rest)
	case "backup":
		return e.backup(ctx, rest)
	case "restore":
		return e.restore(rest)
	case "tls":
		return e.tls(ctx, rest)
	case "store":
		return e.store(ctx, rest)
	case "version", "--version":
		fmt.Fprintln(stdout, "hipconnect", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
}

// flags parses a subcommand's flags: --config and whatever extra adds. It
// returns the loaded configuration and the positional arguments.
func (e env) flags(name string, args []string, extra func(*flag.FlagSet)) (*config.Config, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	path := fs.String("config", e.getenv("HIPCONNECT_CONFIG"), "configuration `file` (YAML)")
	if extra != nil {
		extra(fs)
	}
	// Accept flags after positional arguments too (hipconnect backup OUT --config F).
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", errUsage, name, err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	cfg, err := config.Load(*path, e.environ)
	if err != nil {
		return nil, nil, err
	}
	return cfg, pos, nil
}

// newLogger returns the daemon's logger and the level it filters at, which
// a reload may change.
func newLogger(cfg *config.Config, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}
