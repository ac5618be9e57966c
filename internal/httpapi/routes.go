package httpapi

import (
	"net/http"
	"net/http/pprof"

	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
)

// This file lists every route of the daemon's three handlers: the public
// listener (routes), the ops listener (opsRoutes) and the admin socket
// (adminRoutes).

// routes lists every public route. HipChat's signed callbacks and the UI
// take their JWT from jwtauth; install, update and uninstalled make the
// daemon call HipChat before any credential is proven, so they are
// limited.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern, route string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(route, h))
	}
	signed := func(h http.HandlerFunc) http.HandlerFunc { return s.Auth.Require(jwtauth.Anywhere, nil, h) }
	handle("GET "+descriptor.PathDescriptor, "descriptor", s.descriptor)
	handle("GET /{$}", "home", s.home)
	handle("POST "+descriptor.PathInstallable, "install", s.limited(s.install))
	handle("POST "+descriptor.PathUpdated, "update", s.limited(s.update))
	handle("DELETE "+descriptor.PathInstallable+"/{oauthId}", "uninstall", s.unknownUninstall(signed(s.uninstall)))
	handle("GET "+descriptor.PathUninstalled, "uninstalled", s.limited(s.uninstalled))
	handle("POST "+descriptor.PathWebhook+"{command}", "webhook", signed(s.webhook))
	if s.Integrations != nil {
		handle("POST /integrations/{name}/{secret}", "integration", s.byoWebhook)
	}

	if p := s.Pages; p != nil {
		page := func(h http.HandlerFunc) http.HandlerFunc { return s.Auth.Require(jwtauth.Anywhere, p.ErrorPage, h) }
		api := func(h http.HandlerFunc) http.HandlerFunc { return s.Auth.Require(jwtauth.HeaderOnly, p.ErrorPage, h) }
		handle("GET "+descriptor.PathGlance, "ui", page(p.Glance))
		handle("OPTIONS "+descriptor.PathGlance, "ui", page(p.GlancePreflight))
		handle("GET "+descriptor.PathSidebar, "ui", page(p.Sidebar))
		handle("GET "+descriptor.PathDialog, "ui", page(p.Dialog))
		handle("GET "+descriptor.PathConfigure, "ui", page(p.Configure))
		handle("GET "+descriptor.PathStatic, "ui", p.Static)
		handle("GET /api/settings", "ui", api(p.GetSettings))
		handle("PUT /api/settings", "ui", api(p.PutSettings))
		handle("POST /api/search", "ui", api(p.Search))
		handle("POST /api/post", "ui", api(p.Post))
		handle("GET /api/history", "ui", api(p.History))
	}
	return s.secure(mux)
}

// opsRoutes lists the routes of the ops listener.
func (o ops) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", o.healthz)
	mux.HandleFunc("GET /readyz", o.readyz)
	mux.Handle("GET /metrics", o.Metrics)
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// adminRoutes lists the routes of the admin socket.
func (a admin) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /installations", a.listInstallations)
	mux.HandleFunc("GET /installations/{id}", a.showInstallation)
	mux.HandleFunc("GET /uninstalls", a.pendingUninstalls)
	mux.HandleFunc("DELETE /installations/{id}", a.removeInstallation)
	mux.HandleFunc("GET /outbox", a.outbox)
	mux.HandleFunc("GET /integrations/{name}/url", a.integrationURL)
	mux.HandleFunc("POST /integrations/{name}/rotate", a.rotateIntegration)
	mux.HandleFunc("POST /notify", a.notify)
	mux.HandleFunc("POST /outbox/dead/{id}", a.retryDead)
	mux.HandleFunc("DELETE /outbox/dead/{id}", a.dropDead)
	mux.HandleFunc("GET /backup", a.backup)
	mux.HandleFunc("GET /tls/ca", a.tlsCA)
	return mux
}
