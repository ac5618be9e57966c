// Package daemon is hipconnect's composition root: it builds every adapter
// from the configuration, starts them in order (store, TLS, dispatcher,
// listeners), reports readiness, and stops them in reverse.
package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/allowlist"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/httpapi"
	"github.com/hipconnect/hipconnect/internal/metrics"
	"github.com/hipconnect/hipconnect/internal/outbound"
	"github.com/hipconnect/hipconnect/internal/sdnotify"
	"github.com/hipconnect/hipconnect/internal/store"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
	"github.com/hipconnect/hipconnect/internal/ui"
)

// deliveryWorkers is how many deliveries run at once (delivery.Options.Workers,
// whose default is 8). A delivery mostly waits: for HipChat, for the search
// backend and for the commit of the search history, so a loaded daemon needs
// many in flight to keep 2 cores busy; 64 gave /hascode a third more
// throughput than 16, at less CPU per command (docs/performance.md). Pacing
// per room and per token is unchanged, and one room still has at most one
// delivery in flight.
const deliveryWorkers = 64

// Scopes are the HipChat API scopes hipconnect asks for.
var Scopes = []string{"send_notification", "view_room"}

// Options are what Run needs besides the configuration.
type Options struct {
	Version string
	Logger  *slog.Logger
	Getenv  func(string) string // for NOTIFY_SOCKET and WATCHDOG_USEC
	Now     func() time.Time    // nil: time.Now
	// Reload receives a value for each SIGHUP: the configuration is read
	// again with LoadConfig and what can change while running (log level,
	// commands, certificate files) takes effect; the listeners are kept.
	Reload     <-chan struct{}
	LoadConfig func() (*config.Config, error) // nil: reload certificates only
	LogLevel   *slog.LevelVar                 // the level Logger filters at; nil: not reloadable
}

// Descriptor returns the capability descriptor cfg describes.
func Descriptor(cfg *config.Config) (descriptor.Descriptor, error) {
	names := commandNames(cfg)
	return descriptor.Build(descriptor.Spec{
		BaseURL: cfg.Server.BaseURL, Key: cfg.Addon.Key, Name: cfg.Addon.Name, Description: cfg.Addon.Description,
		VendorName: cfg.Addon.VendorName, VendorURL: cfg.Addon.VendorURL, Commands: names, Scopes: Scopes,
		UI: true,
	})
}

// Allowlist returns the hosts the daemon may contact: hipchat.allowed_hosts
// plus the hosts of the configured search URLs and the ACME directory.
func Allowlist(cfg *config.Config) (*allowlist.List, error) {
	entries := append([]string(nil), cfg.HipChat.AllowedHosts...)
	for _, c := range cfg.Commands {
		if c.SearchURL != "" {
			u, err := url.Parse(c.SearchURL)
			if err != nil {
				return nil, fmt.Errorf("daemon: commands.%s.search_url: %w", c.Name, err)
			}
			entries = append(entries, u.Hostname())
		}
	}
	if cfg.TLS.Mode == "acme" {
		u, err := url.Parse(cfg.TLS.ACME.Directory)
		if err != nil {
			return nil, fmt.Errorf("daemon: tls.acme.directory: %w", err)
		}
		entries = append(entries, u.Hostname())
	}
	l, err := allowlist.Parse(entries)
	if err != nil {
		return nil, fmt.Errorf("daemon: hipchat.allowed_hosts: %w", err)
	}
	return l, nil
}

// RootCAs returns the system roots plus the PEM certificates in caFile.
func RootCAs(caFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile == "" {
		return pool, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("daemon: hipchat.ca_file: %w", err)
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("daemon: hipchat.ca_file: no PEM certificate in %s", caFile)
	}
	return pool, nil
}

// OutboundClient returns the one HTTP client for everything the daemon
// contacts, restricted to allow.
func OutboundClient(cfg *config.Config, allow *allowlist.List) (*http.Client, error) {
	roots, err := RootCAs(cfg.HipChat.CAFile)
	if err != nil {
		return nil, err
	}
	var proxy *url.URL
	if cfg.Outbound.Proxy != "" {
		if proxy, err = url.Parse(cfg.Outbound.Proxy); err != nil {
			return nil, fmt.Errorf("daemon: outbound.proxy: %w", err)
		}
	}
	return outbound.New(outbound.Options{Allow: allow, RootCAs: roots, Proxy: proxy,
		Timeout: cfg.Outbound.Timeout, MaxResponseBytes: cfg.Outbound.MaxResponseBytes}), nil
}

func commandNames(cfg *config.Config) []string {
	names := make([]string, len(cfg.Commands))
	for i, c := range cfg.Commands {
		names[i] = c.Name
	}
	return names
}

// appStore is the store as the handlers see it: deleting an installation
// also removes what the UI keeps for it and has the dispatcher reread the
// outbox. (Jobs the store adds reach the dispatcher through
// store.DB.OnAdded.)
type appStore struct {
	*store.DB
	ui   *ui.UI
	jobs *delivery.Dispatcher
}

// DeleteInstallation removes the installation, everything the store keeps
// for it (its pending jobs too: the dispatcher rereads the outbox), and its
// UI settings and history.
func (s appStore) DeleteInstallation(ctx context.Context, oauthID string) error {
	if err := s.DB.DeleteInstallation(ctx, oauthID); err != nil {
		return err
	}
	s.jobs.Wake()
	return s.ui.Forget(ctx, oauthID)
}

// Commands converts the configured commands.
func Commands(cfg *config.Config) []command.Spec {
	specs := make([]command.Spec, len(cfg.Commands))
	for i, c := range cfg.Commands {
		specs[i] = command.Spec{Name: c.Name, Kind: c.Kind, SearchURL: c.SearchURL, ResultsPath: c.ResultsPath,
			TitleField: c.TitleField, URLField: c.URLField, MaxResults: c.MaxResults, ShowAllURL: c.ShowAllURL, Timeout: c.Timeout}
	}
	return specs
}

// Run runs the daemon until ctx ends, then shuts down gracefully: it stops
// accepting, lets deliveries in flight finish within the shutdown grace,
// and closes the store. What is not delivered stays in the outbox.
func Run(ctx context.Context, cfg *config.Config, o Options) (err error) {
	start := time.Now()
	log := o.Logger
	if o.Now == nil {
		o.Now = time.Now
	}
	desc, err := Descriptor(cfg)
	if err != nil {
		return err
	}
	base, err := url.Parse(cfg.Server.BaseURL)
	if err != nil {
		return fmt.Errorf("daemon: server.base_url: %w", err)
	}
	allow, err := Allowlist(cfg)
	if err != nil {
		return err
	}
	client, err := OutboundClient(cfg, allow)
	if err != nil {
		return err
	}

	db, err := OpenStore(cfg, true, o.Now)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := db.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	for _, w := range db.Warnings() {
		log.Warn("store: " + w)
	}

	m := metrics.New(o.Version, func(ctx context.Context) (metrics.Stats, error) {
		s, err := db.Stats(ctx)
		return metrics.Stats{Installations: s.Installations, PendingJobs: s.PendingJobs,
			DeadLetters: s.DeadLetters, OldestPending: s.OldestPending}, err
	})

	certs, err := startTLS(ctx, cfg, base, db, log, o.Now)
	if err != nil {
		return err
	}
	defer certs.Stop()
	if err := m.Registry.Register(certs.Collector()); err != nil {
		return fmt.Errorf("daemon: register tls metrics: %w", err)
	}

	// HipChat calls (and uninstall redirects) may only go to the HipChat
	// hosts: the search and ACME hosts the outbound client also allows are
	// no place for an installation's credentials.
	hipchatHosts, err := allowlist.Parse(cfg.HipChat.AllowedHosts)
	if err != nil {
		return fmt.Errorf("daemon: hipchat.allowed_hosts: %w", err)
	}
	hc := &hipchat.Client{HTTP: client, Allowed: hipchatHosts.AllowHost, UserAgent: "hipconnect/" + o.Version, Now: o.Now}
	tokens := hipchat.NewTokens(hc, db, Scopes, time.Minute)
	runner := command.New(client, cfg.Addon.Name, Commands(cfg))
	verifier := &hipchat.Verifier{Store: db, Now: o.Now}
	pages := ui.New(ui.Deps{
		Store: db, KV: db.KV("ui"), Verifier: verifier, Commands: runner, CommandNames: commandNames(cfg),
		// "Post to room" from the dialog goes through the outbox like
		// every reply: durable, paced and retried.
		Post: func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
			_, _, err := db.Enqueue(ctx, addon.Job{OAuthID: inst.OAuthID, RoomID: roomID, Reply: &n, Received: o.Now().UTC()})
			return err
		},
		PushGlance: func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error {
			return tokens.Do(ctx, inst, func(tok string) error {
				return hc.UpdateGlance(ctx, inst, tok, roomID, []hipchat.Glance{g})
			})
		},
		GlanceKey: desc.Capabilities.Glance[0].Key, Logger: log, Now: o.Now,
	})
	dispatcher := delivery.New(delivery.Options{
		Store: db,
		Run: func(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
			n, err := pages.RunCommand(ctx, inst, j.RoomID, j.Command, j.Args)
			result := "ok"
			if err != nil {
				result = "error"
			}
			m.Commands.WithLabelValues(j.Command, result).Inc()
			return n, err
		},
		Send: func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
			return tokens.Do(ctx, inst, func(tok string) error {
				return hc.SendNotification(ctx, inst, tok, roomID, n)
			})
		},
		Observe: func(j addon.Job, outcome string, err error) {
			m.Deliveries.WithLabelValues(outcome).Inc()
			var rl *hipchat.RateLimitError
			if errors.As(err, &rl) {
				m.RateLimited.Inc()
			}
			if outcome == delivery.Delivered {
				m.Delivery.Observe(o.Now().Sub(j.Received).Seconds())
			}
		},
		// A search also pushes the room's glance (ui.AfterSearch): two
		// requests under the installation's token, both paced.
		Requests: func(j addon.Job) int {
			if spec, ok := runner.Spec(j.Command); ok && j.Reply == nil && spec.Kind != command.KindEcho && j.Args != "" {
				return 2
			}
			return 1
		},
		RetryAfter: func(err error, attempt int) (time.Duration, bool) { return retryAfter(err, attempt, o.Now()) },
		Grace:      cfg.Server.ShutdownGrace,
		Workers:    deliveryWorkers,
		Logger:     log,
		Now:        o.Now,
	})

	// Every job the store commits is told to the dispatcher, in commit
	// order, before the request that stored it is answered.
	db.OnAdded(dispatcher.Added)
	st := appStore{DB: db, ui: pages, jobs: dispatcher}

	public := httpapi.NewServer(httpapi.Deps{
		BaseURL: base, Descriptor: desc, Store: st, HipChat: hc, Verifier: verifier,
		UI: pages.Handler(), UIPaths: ui.Paths(),
		Commands: runner, Metrics: m, Logger: log,
		AllowHost: hipchatHosts.AllowHost, MaxBodyBytes: cfg.Server.MaxBodyBytes, Now: o.Now,
	})
	var ready atomic.Bool
	tlsOff := cfg.TLS.Mode == tlsmgr.ModeOff // cfg changes on reload: read it here
	ops := httpapi.NewOps(httpapi.OpsDeps{Metrics: m.Handler(), Ping: db.Ping, Pprof: cfg.Server.Pprof,
		Ready: func() bool { return ready.Load() && (tlsOff || certs.Leaf() != nil) }})

	admin := httpapi.NewAdmin(httpapi.AdminDeps{Store: st, Outbox: st, Backup: db.Backup, CAPEM: certs.CAPEM})

	servers, err := listen(cfg, public, ops, certs, base, log)
	if err != nil {
		return err
	}
	adminSrv, err := listenAdmin(AdminSocket(cfg), admin, log)
	if err != nil {
		closeListeners(servers)
		return err
	}
	servers = append(servers, adminSrv)
	// Challenges are answered on the daemon's own listeners: start
	// certificate management only once they are bound.
	if err := certs.Start(ctx); err != nil {
		closeListeners(servers)
		return err
	}

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, len(servers)+1)
	wg.Go(func() { _ = dispatcher.Run(runCtx) })
	wg.Go(func() { prune(runCtx, db, o.Now, log) })
	for _, s := range servers {
		wg.Go(func() {
			if err := s.serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("daemon: %s listener: %w", s.name, err)
			}
		})
	}
	ready.Store(true)
	getenv := o.Getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if _, err := sdnotify.Notify(getenv, "READY=1\nSTATUS=serving"); err != nil {
		log.Warn("sd_notify READY failed", slog.Any("err", err))
	}
	if iv, ok := sdnotify.WatchdogInterval(getenv, os.Getpid()); ok {
		wg.Go(func() { watchdog(runCtx, iv, db.Ping, getenv, log) })
	}
	attrs := []any{slog.String("version", o.Version), slog.String("base_url", cfg.Server.BaseURL),
		slog.String("tls", cfg.TLS.Mode), slog.Duration("startup", time.Since(start))}
	for _, s := range servers {
		attrs = append(attrs, slog.String(s.name, s.ln.Addr().String()))
	}
	log.Info("hipconnect ready", attrs...)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case runErr = <-errc:
			break loop
		case <-o.Reload:
			cfg = reload(cfg, o, runner, certs, m)
		}
	}
	ready.Store(false)
	_, _ = sdnotify.Notify(getenv, "STOPPING=1")
	log.Info("shutting down", slog.Duration("grace", cfg.Server.ShutdownGrace))
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Server.ShutdownGrace)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("listener did not close in time", slog.String("listener", s.name), slog.Any("err", err))
		}
	}
	stop() // the dispatcher finishes what is in flight, within its grace
	wg.Wait()
	log.Info("stopped")
	return runErr
}

func startTLS(ctx context.Context, cfg *config.Config, base *url.URL, db *store.DB, log *slog.Logger, now func() time.Time) (*tlsmgr.Manager, error) {
	httpPort, tlsPort := portOf(cfg.Server.RedirectListen, 80), portOf(cfg.Server.Listen, 443)
	certs, err := tlsmgr.New(ctx, tlsmgr.Options{
		Mode: cfg.TLS.Mode, Host: base.Hostname(), CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
		ACME: tlsmgr.ACME{Directory: cfg.TLS.ACME.Directory, CARootFile: cfg.TLS.ACME.CARoot, Email: cfg.TLS.ACME.Email,
			EABKeyID: cfg.TLS.ACME.EABKID, EABHMAC: cfg.TLS.ACME.EABHMAC},
		Storage: db.CertStorage(), Logger: log, HTTPPort: httpPort, TLSPort: tlsPort, Now: now,
	})
	if err != nil {
		return nil, err
	}
	return certs, nil
}

func portOf(addr string, def int) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return def
	}
	n, err := strconv.Atoi(p)
	if err != nil || n == 0 {
		return def
	}
	return n
}

// reload applies a SIGHUP: the configuration file is read again and what
// can change at run time takes effect (log level, commands, certificate
// files). Settings that need a restart are named in the log. A file that
// does not load keeps the running configuration. It returns the
// configuration now in force.
func reload(cur *config.Config, o Options, runner *command.Runner, certs *tlsmgr.Manager, m *metrics.Metrics) *config.Config {
	log := o.Logger
	next := cur
	if o.LoadConfig != nil {
		cfg, err := o.LoadConfig()
		if err != nil {
			m.ReloadOK.Set(0)
			log.Error("reload: configuration refused, the running one is kept", slog.Any("err", err))
			return cur
		}
		if o.LogLevel != nil {
			_ = o.LogLevel.UnmarshalText([]byte(cfg.Log.Level))
		}
		runner.SetSpecs(Commands(cfg))
		if keys := restartKeys(cur, cfg); len(keys) > 0 {
			log.Warn("reload: these settings take effect only after a restart", slog.Any("keys", keys))
		}
		next = cfg
	}
	if err := certs.Reload(); err != nil {
		m.ReloadOK.Set(0)
		log.Error("reload: certificates kept as they were", slog.Any("err", err))
		return next
	}
	m.ReloadOK.Set(1)
	m.ReloadTime.SetToCurrentTime()
	log.Info("reloaded")
	return next
}

// restartKeys names the sections that differ between a and b and are only
// read at start.
func restartKeys(a, b *config.Config) []string {
	var keys []string
	for _, c := range []struct {
		key  string
		same bool
	}{
		{"server", reflect.DeepEqual(a.Server, b.Server)},
		{"tls (other than the files' contents)", a.TLS.Mode == b.TLS.Mode && a.TLS.CertFile == b.TLS.CertFile &&
			a.TLS.KeyFile == b.TLS.KeyFile && a.TLS.ACME == b.TLS.ACME},
		{"storage", a.Storage == b.Storage},
		{"hipchat", reflect.DeepEqual(a.HipChat, b.HipChat)},
		{"outbound", a.Outbound == b.Outbound},
		{"addon", a.Addon == b.Addon},
		{"command names and search hosts (descriptor, allowlist)", reflect.DeepEqual(commandNames(a), commandNames(b)) &&
			reflect.DeepEqual(searchHosts(a), searchHosts(b))},
	} {
		if !c.same {
			keys = append(keys, c.key)
		}
	}
	return keys
}

func searchHosts(cfg *config.Config) []string {
	var hosts []string
	for _, c := range cfg.Commands {
		if u, err := url.Parse(c.SearchURL); err == nil && c.SearchURL != "" {
			hosts = append(hosts, u.Host)
		}
	}
	return hosts
}

// Bounds of the wait a 429 from HipChat can impose on a room: at least a
// second, and at most maxRateLimitWait whatever its headers say, so that a
// bogus header cannot park a room for a day.
const (
	minRateLimitWait = time.Second
	maxRateLimitWait = 15 * time.Minute
)

// retryAfter decides whether and when a failed delivery is tried again: a
// 429 waits as long as HipChat asked (clamped), other passing failures back
// off exponentially, permanent ones are not retried.
func retryAfter(err error, attempt int, now time.Time) (time.Duration, bool) {
	var rl *hipchat.RateLimitError
	if errors.As(err, &rl) {
		wait := rl.RetryAfter
		if wait <= 0 && !rl.Reset.IsZero() {
			wait = rl.Reset.Sub(now)
		}
		if wait <= 0 {
			wait = delivery.Backoff(attempt, minRateLimitWait, maxRateLimitWait)
		}
		return min(max(wait, minRateLimitWait), maxRateLimitWait), true
	}
	return delivery.DefaultRetryAfter(err, attempt)
}

// prune forgets, hourly, message ids older than store.SeenRetention and
// dead letters older than store.DeadRetention.
func prune(ctx context.Context, db *store.DB, now func() time.Time, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := db.PruneSeen(ctx, now().Add(-store.SeenRetention)); err != nil && ctx.Err() == nil {
			log.Warn("store: prune seen message ids", slog.Any("err", err))
		} else if n > 0 {
			log.Debug("store: pruned seen message ids", slog.Int("count", n))
		}
		if n, err := db.PruneDead(ctx, now().Add(-store.DeadRetention)); err != nil && ctx.Err() == nil {
			log.Warn("store: prune dead letters", slog.Any("err", err))
		} else if n > 0 {
			log.Info("store: dead letters older than the retention dropped", slog.Int("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// watchdog pets systemd's watchdog every interval while the store answers.
func watchdog(ctx context.Context, every time.Duration, ping func(context.Context) error, getenv func(string) string, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, every)
			err := ping(pctx)
			cancel()
			if err != nil {
				log.Error("watchdog: store not answering; not petting", slog.Any("err", err))
				continue
			}
			_, _ = sdnotify.Notify(getenv, "WATCHDOG=1")
		}
	}
}

type server struct {
	name string
	srv  *http.Server
	ln   net.Listener
	tls  bool
}

func (s server) serve() error {
	if s.tls {
		return s.srv.ServeTLS(s.ln, "", "")
	}
	return s.srv.Serve(s.ln)
}

// closeListeners closes the listeners of servers not started yet.
func closeListeners(servers []server) {
	for _, s := range servers {
		_ = s.ln.Close()
	}
}

// listen opens every configured listener; an error closes those opened.
func listen(cfg *config.Config, public, ops http.Handler, certs *tlsmgr.Manager, base *url.URL, log *slog.Logger) ([]server, error) {
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	// The header is part of the request: it gets no longer than the whole
	// request may take (and at most 5 s, so slow clients let go early).
	readHeaderTimeout := min(5*time.Second, cfg.Server.ReadTimeout)
	newServer := func(h http.Handler, tc *tls.Config) *http.Server {
		return &http.Server{Handler: h, TLSConfig: tc, ErrorLog: errLog,
			ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: cfg.Server.ReadTimeout,
			WriteTimeout: cfg.Server.WriteTimeout, IdleTimeout: cfg.Server.IdleTimeout, MaxHeaderBytes: 32 << 10}
	}
	var out []server
	add := func(name, addr string, h http.Handler, tc *tls.Config) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("daemon: %s listener %s: %w", name, addr, err)
		}
		out = append(out, server{name: name, srv: newServer(h, tc), ln: ln, tls: tc != nil})
		return nil
	}
	tc := certs.TLSConfig()
	err := add("public", cfg.Server.Listen, public, tc)
	if err == nil && tc != nil {
		err = add("redirect", cfg.Server.RedirectListen, certs.HTTPHandler(redirectHandler(base)), nil)
	}
	if err == nil {
		err = add("ops", cfg.Server.OpsListen, ops, nil)
	}
	if err != nil {
		closeListeners(out)
		return nil, err
	}
	return out, nil
}

// KeyFile is the path of the key that encrypts secrets in the store.
func KeyFile(cfg *config.Config) string {
	if cfg.Storage.KeyFile != "" {
		return cfg.Storage.KeyFile
	}
	return cfg.Storage.Path + ".key"
}

// OpenStore opens the configured store with its secrets key. The daemon
// (create true) makes the key on first start; the CLI never does, and opens
// a store without a key file as it is. A key file is never created for a
// store that already holds encrypted secrets: a lost key is reported as
// such instead of being replaced by a new one that cannot read them.
func OpenStore(cfg *config.Config, create bool, now func() time.Time) (*store.DB, error) {
	opts := store.Options{Timeout: cfg.Storage.OpenTimeout, Now: now, MaxPendingPerInstallation: cfg.Storage.MaxPending}
	keyPath := KeyFile(cfg)
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(cfg.Storage.Path); err == nil || !create {
			db, err := store.Open(cfg.Storage.Path, opts)
			if errors.Is(err, store.ErrKeyRequired) {
				return nil, fmt.Errorf("%w: the key file %s is missing; restore it from your backup", err, keyPath)
			}
			if err != nil || !create {
				return db, err
			}
			if err := db.Close(); err != nil {
				return nil, err
			}
		}
	}
	key, err := store.LoadOrCreateKey(keyPath)
	if err != nil {
		return nil, err
	}
	opts.Key = key
	return store.Open(cfg.Storage.Path, opts)
}

// AdminSocket is the path of the admin socket of the daemon using cfg.
func AdminSocket(cfg *config.Config) string { return cfg.Storage.Path + ".sock" }

// listenAdmin opens the admin unix socket, mode 0600, replacing a stale one
// (the store's file lock proves no other daemon uses it).
func listenAdmin(path string, h http.Handler, log *slog.Logger) (server, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return server{}, fmt.Errorf("daemon: admin socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return server{}, fmt.Errorf("daemon: admin socket: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	return server{name: "admin", srv: srv, ln: ln}, nil
}

// redirectHandler sends plain-HTTP requests to the same path under base.
func redirectHandler(base *url.URL) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.SecurityHeaders(w.Header())
		target := *base
		target.Path = base.Path + r.URL.Path
		target.RawQuery = r.URL.RawQuery
		http.Redirect(w, r, target.String(), http.StatusPermanentRedirect)
	})
}
