// Package httpapi is hipconnect's HTTP side: the public handler HipChat and
// browsers talk to (descriptor, install, uninstall, webhooks, and the pages
// of package ui), the ops handler Prometheus and systemd's helpers talk to,
// and the admin handler the CLI talks to over a unix socket. Every route of
// the three is listed in routes.go. Handlers only decode, call the use
// case (package install for the lifecycle, the outbox for webhooks) and
// answer; every error response is written by httperr.Write, every JWT is
// checked by jwtauth.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
)

// Lifecycle is the installation lifecycle the HipChat callbacks call; an
// *install.Service has it.
type Lifecycle interface {
	Install(ctx context.Context, req install.Request) (addon.Installation, error)
	Update(ctx context.Context, oauthID, capabilitiesURL string) (addon.Installation, error)
	Uninstall(ctx context.Context, inst addon.Installation) (install.Outcome, error)
	UninstallFrom(ctx context.Context, installableURL string) (install.Outcome, error)
	Known(ctx context.Context, oauthID string) (bool, error)
}

// Enqueuer stores an acknowledged command (addon.Outbox's Enqueue).
type Enqueuer interface {
	Enqueue(ctx context.Context, j addon.Job) (addon.Job, bool, error)
}

// Commands splits a slash command message into the configured command's
// name and its arguments, and gives a command's spec (its reply mode); a
// *command.Runner has them.
type Commands interface {
	Parse(message string) (name, args string, ok bool)
	Spec(name string) (command.Spec, bool)
}

// Replies lets a webhook request wait for its reply to answer with it; a
// *delivery.Dispatcher has it (see delivery.Dispatcher.Await).
type Replies interface {
	Await(oauthID, messageID string) *delivery.Awaiting
}

// Pages are the handlers of the UI surfaces; a *ui.UI has them. Every one
// but Static expects the jwtauth.Session in its request's context, and
// ErrorPage renders refusals of those routes.
type Pages interface {
	Glance(w http.ResponseWriter, r *http.Request)
	GlancePreflight(w http.ResponseWriter, r *http.Request)
	Sidebar(w http.ResponseWriter, r *http.Request)
	Dialog(w http.ResponseWriter, r *http.Request)
	Configure(w http.ResponseWriter, r *http.Request)
	Static(w http.ResponseWriter, r *http.Request)
	GetSettings(w http.ResponseWriter, r *http.Request)
	PutSettings(w http.ResponseWriter, r *http.Request)
	Search(w http.ResponseWriter, r *http.Request)
	Post(w http.ResponseWriter, r *http.Request)
	History(w http.ResponseWriter, r *http.Request)
	ErrorPage(w http.ResponseWriter, r *http.Request, code int, msg string)
}

// Metrics are the collectors the public handler updates (package metrics
// registers them).
type Metrics struct {
	Installs     *prometheus.CounterVec // result
	Uninstalls   *prometheus.CounterVec // result
	Webhooks     *prometheus.CounterVec // result
	HTTPDuration prometheus.ObserverVec // route, code
}

// Deps are everything the public handler needs. All fields are required
// unless marked otherwise.
type Deps struct {
	BaseURL    *url.URL
	Descriptor descriptor.Descriptor
	Installs   Lifecycle
	Outbox     Enqueuer
	Auth       jwtauth.Auth // verifies every JWT HipChat sends
	Commands   Commands
	Replies    Replies // optional: every reply goes through the API when nil
	// Integrations are the "Build your own" integrations; optional: no
	// integration route when nil.
	Integrations Integrations
	Pages        Pages // optional: no UI routes when nil
	Metrics      Metrics
	Logger       *slog.Logger
	// AllowHost reports whether a host is on the operator's allowlist; it
	// guards the uninstall redirect.
	AllowHost    func(host string) bool
	MaxBodyBytes int64
	Now          func() time.Time // optional, time.Now
}

type server struct {
	Deps
	descriptorJSON []byte
	outboundSlots  chan struct{} // see limited
	replays        *replayCache  // JWT ids seen on webhooks
}

// NewServer returns the public handler.
func NewServer(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &server{
		Deps:           d,
		descriptorJSON: d.Descriptor.JSON(),
		outboundSlots:  make(chan struct{}, maxOutboundRequests),
		replays:        newReplayCache(maxReplayEntries),
	}
	return s.routes()
}
