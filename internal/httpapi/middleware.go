package httpapi

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// secure applies to every public request: only the base URL's host is
// served, bodies are capped, and security headers are set.
func (s *server) secure(next http.Handler) http.Handler {
	host := strings.ToLower(s.BaseURL.Hostname())
	port := s.BaseURL.Port()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		SecurityHeaders(h)
		h.Set("Cache-Control", "no-store")
		if s.BaseURL.Scheme == "https" {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !hostMatches(r.Host, host, port) {
			s.fail(w, r, addon.WithStatus(addon.Invalid, http.StatusMisdirectedRequest, "unknown host %q", addon.Clip(r.Host, 100)))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// SecurityHeaders sets the headers every response of the daemon's public
// listeners carries, whatever its handler (the redirect listener's too).
func SecurityHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
}

// hostMatches reports whether a Host header names the base URL's host (with
// its port, or without one when the base URL has none).
func hostMatches(hostHeader, host, port string) bool {
	h, p, err := net.SplitHostPort(hostHeader)
	if err != nil {
		h, p = hostHeader, ""
	}
	h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
	return h == host && (p == port || p == "")
}

// statusWriter records the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// instrument times a route, logs it at debug level (path only: query
// strings may carry a signed_request; a {secret} in the path redacted) and
// recovers from panics.
func (s *server) instrument(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				s.Logger.Error("panic serving request", slog.String("path", redactedRequest(r).URL.Path), slog.Any("panic", p))
				if sw.code == 0 {
					s.fail(sw, r, addon.Errorf(addon.Internal, "internal error"))
				}
			}
			code := sw.code
			if code == 0 {
				code = http.StatusOK
			}
			s.Metrics.HTTPDuration.WithLabelValues(route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
			if ctx := r.Context(); s.Logger.Enabled(ctx, slog.LevelDebug) {
				s.Logger.LogAttrs(ctx, slog.LevelDebug, "request",
					slog.String("method", r.Method), slog.String("path", redactedRequest(r).URL.Path), slog.Int("status", code),
					slog.Duration("took", time.Since(start)), slog.String("remote", r.RemoteAddr))
			}
		}()
		h(sw, r)
	})
}

// maxOutboundRequests caps the unauthenticated requests that make the
// daemon call HipChat (install, update, uninstall) in flight at once, so
// the appliance cannot be used to flood a HipChat server.
const maxOutboundRequests = 16

// limited answers 503 with Retry-After when maxOutboundRequests requests of
// the routes it wraps are already in flight.
func (s *server) limited(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.outboundSlots <- struct{}{}:
			defer func() { <-s.outboundSlots }()
			h(w, r)
		default:
			w.Header().Set("Retry-After", "5")
			s.fail(w, r, addon.Errorf(addon.Busy, "busy with other installs; retry shortly"))
		}
	}
}
