// Package daemon is hipconnect's composition root. Build makes the
// application from the configuration: every component, wired, with the
// store open and nothing listening (App, testable as it is); Run builds it
// and runs it: listeners, the dispatcher and the background jobs,
// sd_notify, reload on SIGHUP, and the graceful stop. config.go derives
// from the configuration what the CLI needs too (descriptor, clients,
// store paths).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/httpapi"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/integration"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
	"github.com/hipconnect/hipconnect/internal/metrics"
	"github.com/hipconnect/hipconnect/internal/pgstore"
	"github.com/hipconnect/hipconnect/internal/slash"
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

// Options are what Build and Run need besides the configuration.
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

// App is the built application: every component of a running daemon,
// wired, with the store open and the certificate manager made but not
// started, and nothing listening. Close releases it.
type App struct {
	Config     *config.Config
	Options    Options
	BaseURL    *url.URL
	Descriptor descriptor.Descriptor
	Clients    *Clients
	DB         Store
	Metrics    *metrics.Metrics
	Certs      *tlsmgr.Manager
	Tokens     *hipchat.Tokens
	Runner     *command.Runner
	Slash      *slash.Service
	Installs   *install.Service
	// Integrations are the "Build your own" integrations.
	Integrations *integration.Service
	Dispatcher   *delivery.Dispatcher
	Public       http.Handler // the public listener's handler
	Ops          http.Handler // the ops listener's handler
	Admin        http.Handler // the admin socket's handler

	ready   atomic.Bool // Serve: the listeners are up
	cluster *cluster    // storage.backend postgres: this node among the others
}

// Build makes the App cfg describes. It opens (or creates) the store and
// its key, so no other process may have it open; an error closes what was
// opened.
func Build(ctx context.Context, cfg *config.Config, o Options) (_ *App, err error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Getenv == nil {
		o.Getenv = func(string) string { return "" }
	}
	a := &App{Config: cfg, Options: o}
	if a.Descriptor, err = Descriptor(cfg); err != nil {
		return nil, err
	}
	if a.BaseURL, err = url.Parse(cfg.Server.BaseURL); err != nil {
		return nil, fmt.Errorf("daemon: server.base_url: %w", err)
	}
	if a.Clients, err = NewClients(cfg, "hipconnect/"+o.Version, o.Now); err != nil {
		return nil, err
	}
	if a.DB, err = OpenStore(ctx, cfg, true, o.Now); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Close())
		}
	}()
	for _, w := range a.DB.Warnings() {
		o.Logger.Warn("store: " + w)
	}
	a.Metrics = metrics.New(o.Version, a.stats)
	if a.Certs, err = a.newCerts(ctx); err != nil {
		return nil, err
	}
	if err := a.Metrics.Registry.Register(a.Certs.Collector()); err != nil {
		return nil, fmt.Errorf("daemon: register tls metrics: %w", err)
	}
	if err := a.buildIntegrations(ctx); err != nil {
		return nil, err
	}
	a.buildServices()
	a.buildHandlers()
	return a, nil
}

// Close stops the certificate manager and closes the store.
func (a *App) Close() error {
	if a.Certs != nil {
		a.Certs.Stop()
	}
	if a.DB == nil {
		return nil
	}
	return a.DB.Close()
}

func (a *App) stats(ctx context.Context) (metrics.Stats, error) {
	s, err := storeStats(ctx, a.DB)
	if err != nil {
		return metrics.Stats{}, err
	}
	pending, err := a.Installs.PendingUninstalls(ctx)
	s.PendingUninstalls = len(pending)
	return s, err
}

func (a *App) newCerts(ctx context.Context) (*tlsmgr.Manager, error) {
	cfg := a.Config
	return tlsmgr.New(ctx, tlsmgr.Options{
		Mode: cfg.TLS.Mode, Host: a.BaseURL.Hostname(), CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile,
		ACME: tlsmgr.ACME{Directory: cfg.TLS.ACME.Directory, CARootFile: cfg.TLS.ACME.CARoot, Email: cfg.TLS.ACME.Email,
			EABKeyID: cfg.TLS.ACME.EABKID, EABHMAC: cfg.TLS.ACME.EABHMAC},
		Storage: a.DB.CertStorage(), Logger: a.Options.Logger,
		HTTPPort: portOf(cfg.Server.RedirectListen, 80), TLSPort: portOf(cfg.Server.Listen, 443), Now: a.Options.Now,
	})
}

// buildServices makes the use cases: tokens, commands, the slash-command
// service, the install lifecycle and the dispatcher.
func (a *App) buildServices() {
	o, hc := a.Options, a.Clients.HipChat
	a.Tokens = hipchat.NewTokens(hc, a.DB, Scopes, time.Minute)
	a.Runner = command.New(a.Clients.HTTP, a.Config.Addon.Name, Commands(a.Config))
	a.Slash = slash.New(slash.Deps{
		Commands: a.Runner, KV: a.DB.KV(uiNamespace), CommandNames: commandNames(a.Config),
		PushGlance: func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error {
			return a.Tokens.Do(ctx, inst, func(tok string) error {
				return hc.UpdateGlance(ctx, inst, tok, roomID, []hipchat.Glance{g})
			})
		},
		GlanceKey: a.Descriptor.Capabilities.Glance[0].Key, Logger: o.Logger, Now: o.Now,
	})
	do := delivery.Options{
		Store: a.DB, Run: a.runCommand, Send: a.send, Observe: a.observe, Requests: a.requests, Pacing: a.DB,
		TokenLimits: a.tokenLimits(),
		Grace:       a.Config.Server.ShutdownGrace, Workers: deliveryWorkers, Logger: o.Logger, Now: o.Now,
	}
	switch db := a.DB.(type) {
	case *pgstore.DB:
		// Several nodes: this one delivers the installations it holds, and
		// hears of every node's jobs through the database (cluster.listen).
		a.cluster = newCluster(db, a.Metrics.Registry, o.Logger, o.Now)
		do.Owns = a.cluster.Owns
		// A node taking an installation over loads its pacing: saved
		// often, so that little of the dead node's last sends is missed.
		do.PaceSave = 250 * time.Millisecond
		a.Dispatcher = delivery.New(do)
		a.cluster.disp = a.Dispatcher
	case *store.DB:
		a.Dispatcher = delivery.New(do)
		// Every job the store commits is told to the dispatcher, in commit
		// order, before the request that stored it is answered; a removal
		// has it read the outbox again.
		db.OnAdded(a.Dispatcher.Added)
	}
	a.Installs = &install.Service{Store: a.DB, HipChat: hc, Scopes: Scopes, AddonName: a.Descriptor.Name,
		Removed: func(string) { a.Dispatcher.Wake() }, Logger: o.Logger, Now: o.Now}
}

// runCommand is the dispatcher's Run: the slash-command service, counted.
func (a *App) runCommand(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
	n, err := a.Slash.Run(ctx, inst, j)
	result := "ok"
	if err != nil {
		result = "error"
	}
	a.Metrics.Commands.WithLabelValues(j.Command, result).Inc()
	return n, err
}

// send is the dispatcher's Send: a room notification under the
// installation's token, or through an integration's room URL.
func (a *App) send(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
	if inst.Integration != "" {
		return a.sendIntegration(ctx, inst, n)
	}
	return a.Tokens.Do(ctx, inst, func(tok string) error {
		return a.Clients.HipChat.SendNotification(ctx, inst, tok, roomID, n)
	})
}

// observe is the dispatcher's Observe: delivery metrics.
func (a *App) observe(j addon.Job, outcome string, err error) {
	a.Metrics.Deliveries.WithLabelValues(outcome).Inc()
	var rl *hipchat.RateLimitError
	if errors.As(err, &rl) {
		a.Metrics.RateLimited.Inc()
	}
	if outcome == delivery.Delivered {
		a.Metrics.Delivery.Observe(a.Options.Now().Sub(j.Received).Seconds())
	}
}

// post is the dialog's "Post to room": through the outbox like every
// reply, so durable, paced and retried.
func (a *App) post(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
	_, _, err := a.DB.Enqueue(ctx, addon.Job{OAuthID: inst.OAuthID, RoomID: roomID, Reply: &n, Received: a.Options.Now().UTC()})
	return err
}

// buildHandlers makes the public, ops and admin handlers.
func (a *App) buildHandlers() {
	o, m := a.Options, a.Metrics
	auth := jwtauth.Auth{Verifier: &hipchat.Verifier{Store: a.DB, Now: o.Now}, Log: o.Logger}
	pages := ui.New(ui.Deps{Installations: a.DB, Slash: a.Slash, Post: a.post, Logger: o.Logger, Now: o.Now})
	a.Public = httpapi.NewServer(httpapi.Deps{
		BaseURL: a.BaseURL, Descriptor: a.Descriptor, Installs: a.Installs, Outbox: a.DB, Auth: auth,
		Commands: a.Runner, Replies: a.Dispatcher, Integrations: a.Integrations, Pages: pages, Logger: o.Logger,
		Metrics:   httpapi.Metrics{Installs: m.Installs, Uninstalls: m.Uninstalls, Webhooks: m.Webhooks, HTTPDuration: m.HTTPDuration},
		AllowHost: a.Clients.HipChatHosts.AllowHost, MaxBodyBytes: a.Config.Server.MaxBodyBytes, Now: o.Now,
	})
	tlsOff := a.Config.TLS.Mode == tlsmgr.ModeOff // the config changes on reload: read it here
	a.Ops = httpapi.NewOps(httpapi.OpsDeps{Metrics: m.Handler(), Ping: a.DB.Ping, Pprof: a.Config.Server.Pprof,
		Ready: func() bool { return a.ready.Load() && (tlsOff || a.Certs.Leaf() != nil) }})
	ops := a.integrationOps()
	backup := func(io.Writer) (int64, error) { return 0, ErrNoHotBackup }
	if db, ok := a.DB.(*store.DB); ok {
		backup = db.Backup
	}
	a.Admin = httpapi.NewAdmin(httpapi.AdminDeps{Store: a.DB, Remove: a.Installs.Remove, Pending: a.Installs.PendingUninstalls, Backup: backup,
		CAPEM: a.Certs.CAPEM, IntegrationURL: ops.URL, RotateIntegration: ops.RotateURL, Notify: ops.Notify, Logger: o.Logger})
}
