// Package httpapi is hipconnect's HTTP side: the public handler HipChat and
// browsers talk to (descriptor, install, uninstall, webhooks) and the ops
// handler Prometheus and systemd's helpers talk to.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/metrics"
)

// Deps are everything the public handler needs. All fields are required
// unless marked otherwise.
type Deps struct {
	BaseURL    *url.URL
	Descriptor descriptor.Descriptor
	Store      addon.Store
	HipChat    *hipchat.Client   // capabilities, token proof, installable_url
	Verifier   *hipchat.Verifier // JWTs HipChat sends
	Commands   *command.Runner
	Metrics    *metrics.Metrics
	Logger     *slog.Logger
	// AllowHost reports whether a host is on the operator's allowlist; it
	// guards the uninstall redirect.
	AllowHost    func(host string) bool
	MaxBodyBytes int64
	// UI serves the pages, glance and their API on the patterns UIPaths.
	UI      http.Handler
	UIPaths []string
	Now     func() time.Time // optional, time.Now
}

type server struct {
	Deps
	descriptorJSON []byte
	scopes         []string
	outboundSlots  chan struct{} // see limited
}

// NewServer returns the public handler.
func NewServer(d Deps) http.Handler {
	if d.Now == nil {
		d.Now = time.Now
	}
	s := &server{
		Deps:           d,
		descriptorJSON: d.Descriptor.JSON(),
		scopes:         d.Descriptor.Capabilities.HipchatAPIConsumer.Scopes,
		outboundSlots:  make(chan struct{}, maxOutboundRequests),
	}
	return s.routes()
}

type ctxKey int

const authKey ctxKey = 0

type auth struct {
	inst   addon.Installation
	claims hipchat.Claims
}

func authFrom(ctx context.Context) auth {
	a, _ := ctx.Value(authKey).(auth)
	return a
}

func withAuth(ctx context.Context, a auth) context.Context {
	return context.WithValue(ctx, authKey, a)
}
