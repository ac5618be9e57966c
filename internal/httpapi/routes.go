package httpapi

import (
	"net/http"

	"github.com/hipconnect/hipconnect/internal/descriptor"
)

// routes lists every public route.
func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern, route string, h http.HandlerFunc) {
		mux.Handle(pattern, s.instrument(route, h))
	}
	handle("GET "+descriptor.PathDescriptor, "descriptor", s.descriptor)
	handle("GET /{$}", "home", s.home)
	handle("POST "+descriptor.PathInstallable, "install", s.limited(s.install))
	handle("POST "+descriptor.PathUpdated, "update", s.limited(s.update))
	handle("DELETE "+descriptor.PathInstallable+"/{oauthId}", "uninstall", s.requireJWT(s.uninstall))
	handle("GET "+descriptor.PathUninstalled, "uninstalled", s.limited(s.uninstalled))
	handle("POST "+descriptor.PathWebhook+"{command}", "webhook", s.requireJWT(s.webhook))
	for _, p := range s.UIPaths {
		mux.Handle(p, s.instrument("ui", s.UI.ServeHTTP))
	}
	return s.secure(mux)
}
