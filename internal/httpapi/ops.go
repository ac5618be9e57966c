package httpapi

import (
	"context"
	"net/http"
	"time"
)

// OpsDeps are what the ops handler needs.
type OpsDeps struct {
	Metrics http.Handler
	// Ready reports whether the store is open, every listener is up and a
	// certificate can be served; /readyz also pings the store.
	Ready func() bool
	Ping  func(ctx context.Context) error
	Pprof bool
}

type ops struct{ OpsDeps }

// NewOps returns the handler of the ops listener: /healthz (the process
// answers), /readyz (ready and the store answers), /metrics, and, when
// enabled, /debug/pprof/.
func NewOps(d OpsDeps) http.Handler { return ops{d}.routes() }

func (o ops) healthz(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }

func (o ops) readyz(w http.ResponseWriter, r *http.Request) {
	if !o.Ready() {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := o.Ping(ctx); err != nil {
		http.Error(w, "store not answering", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}
