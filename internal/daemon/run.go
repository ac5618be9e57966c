package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/httpapi"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/sdnotify"
	"github.com/hipconnect/hipconnect/internal/store"
)

// Run builds the App cfg describes and runs it until ctx ends, then shuts
// down gracefully: it stops accepting, lets deliveries in flight finish
// within the shutdown grace, and closes the store. What is not delivered
// stays in the outbox.
func Run(ctx context.Context, cfg *config.Config, o Options) (err error) {
	start := time.Now()
	a, err := Build(ctx, cfg, o)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	return a.Serve(ctx, start)
}

// Serve opens the listeners and the admin socket, starts certificate
// management, the dispatcher and the background jobs, tells systemd it is
// ready, and serves until ctx ends or a listener fails; then it stops them
// all within the shutdown grace. It does not close the App. start is when
// the process began, for the log's startup time.
func (a *App) Serve(ctx context.Context, start time.Time) error {
	servers, err := a.open(ctx)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errc := make(chan error, len(servers))
	if a.cluster == nil {
		wg.Go(func() { _ = a.Dispatcher.Run(runCtx) })
	} else {
		// The leases are renewed until the dispatcher has finished what it
		// had in flight (up to the shutdown grace), then given up.
		leaseCtx, stopLeases := context.WithCancel(context.WithoutCancel(runCtx))
		leasing := make(chan struct{})
		go func() { a.cluster.run(leaseCtx); close(leasing) }()
		wg.Go(func() {
			_ = a.Dispatcher.Run(runCtx)
			stopLeases()
			<-leasing
			a.cluster.release() // nothing of ours in flight any more
		})
	}
	wg.Go(func() { prune(runCtx, a.DB, a.Options.Now, a.Options.Logger) })
	wg.Go(func() { recheckUninstalls(runCtx, a.Installs, a.Options.Logger) })
	for _, s := range servers {
		wg.Go(func() {
			if err := s.serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("daemon: %s listener: %w", s.name, err)
			}
		})
	}
	a.ready.Store(true)
	a.notifyReady(runCtx, &wg, servers, start)

	cfg := a.Config
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case runErr = <-errc:
			break loop
		case <-a.Options.Reload:
			cfg = a.reload(cfg)
		}
	}
	a.ready.Store(false)
	_, _ = sdnotify.Notify(a.Options.Getenv, "STOPPING=1")
	a.shutdown(ctx, servers, cfg.Server.ShutdownGrace)
	stop() // the dispatcher finishes what is in flight, within its grace
	wg.Wait()
	a.Options.Logger.Info("stopped")
	return runErr
}

// open binds every listener and the admin socket, then starts certificate
// management: challenges are answered on the daemon's own listeners, so
// only once they are bound.
func (a *App) open(ctx context.Context) ([]server, error) {
	servers, err := a.listen()
	if err != nil {
		return nil, err
	}
	adminSrv, err := listenAdmin(AdminSocket(a.Config), a.Admin, a.Options.Logger)
	if err != nil {
		closeListeners(servers)
		return nil, err
	}
	servers = append(servers, adminSrv)
	if err := a.Certs.Start(ctx); err != nil {
		closeListeners(servers)
		return nil, err
	}
	return servers, nil
}

// notifyReady tells systemd the daemon is ready, starts the watchdog when
// systemd asks for one, and logs where it listens.
func (a *App) notifyReady(ctx context.Context, wg *sync.WaitGroup, servers []server, start time.Time) {
	log, getenv := a.Options.Logger, a.Options.Getenv
	if _, err := sdnotify.Notify(getenv, "READY=1\nSTATUS=serving"); err != nil {
		log.Warn("sd_notify READY failed", slog.Any("err", err))
	}
	if iv, ok := sdnotify.WatchdogInterval(getenv, os.Getpid()); ok {
		ping := a.DB.Ping
		if a.cluster != nil {
			// The database is not this process: an outage of it must not
			// have systemd restart every node (/readyz reports it).
			ping = func(context.Context) error { return nil }
		}
		wg.Go(func() { watchdog(ctx, iv, ping, getenv, log) })
	}
	attrs := []any{slog.String("version", a.Options.Version), slog.String("base_url", a.Config.Server.BaseURL),
		slog.String("tls", string(a.Config.TLS.Mode)), slog.Duration("startup", time.Since(start))}
	for _, s := range servers {
		attrs = append(attrs, slog.String(s.name, s.ln.Addr().String()))
	}
	log.Info("hipconnect ready", attrs...)
}

// shutdown stops the listeners, waiting up to grace for requests in flight.
func (a *App) shutdown(ctx context.Context, servers []server, grace time.Duration) {
	log := a.Options.Logger
	log.Info("shutting down", slog.Duration("grace", grace))
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(shutdownCtx); err != nil {
			log.Warn("listener did not close in time", slog.String("listener", s.name), slog.Any("err", err))
		}
	}
}

// reload applies a SIGHUP: the configuration file is read again and what
// can change at run time takes effect (log level, commands, certificate
// files). Settings that need a restart are named in the log. A file that
// does not load keeps the running configuration. It returns the
// configuration now in force.
func (a *App) reload(cur *config.Config) *config.Config {
	o, runner, certs, m := a.Options, a.Runner, a.Certs, a.Metrics
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
		{"integrations", reflect.DeepEqual(a.Integrations, b.Integrations)},
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

// prune forgets, hourly, message ids older than store.SeenRetention and
// dead letters older than store.DeadRetention.
func prune(ctx context.Context, db Store, now func() time.Time, log *slog.Logger) {
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

// recheckUninstalls asks HipChat, every second, about the requested
// uninstalls that are due (install.Service.Recheck keeps the schedule).
func recheckUninstalls(ctx context.Context, s *install.Service, log *slog.Logger) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := s.Recheck(ctx); err != nil && ctx.Err() == nil {
			log.Warn("uninstall re-check", slog.Any("err", err))
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
func (a *App) listen() ([]server, error) {
	cfg, certs, log := a.Config, a.Certs, a.Options.Logger
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
	err := add("public", cfg.Server.Listen, a.Public, tc)
	if err == nil && tc != nil {
		err = add("redirect", cfg.Server.RedirectListen, certs.HTTPHandler(redirectHandler(a.BaseURL)), nil)
	}
	if err == nil {
		err = add("ops", cfg.Server.OpsListen, a.Ops, nil)
	}
	if err != nil {
		closeListeners(out)
		return nil, err
	}
	return out, nil
}

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
