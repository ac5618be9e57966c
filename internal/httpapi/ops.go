package httpapi

import (
	"context"
	"net/http"
	"net/http/pprof"
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

// NewOps returns the handler of the ops listener: /healthz (the process
// answers), /readyz (ready and the store answers), /metrics, and, when
// enabled, /debug/pprof/.
func NewOps(d OpsDeps) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !d.Ready() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := d.Ping(ctx); err != nil {
			http.Error(w, "store not answering", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", d.Metrics)
	if d.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}
