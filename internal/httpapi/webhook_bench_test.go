package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
	"github.com/hipconnect/hipconnect/internal/metrics"
	"github.com/hipconnect/hipconnect/internal/store"
)

// newTestServer returns the public handler on a real bbolt store with one
// room installation, and a signer of JWTs for it.
func newTestServer(tb testing.TB) (http.Handler, *store.DB, func() string) {
	tb.Helper()
	e := newTestEnv(tb, envOptions{})
	return e.h, e.db, e.sign
}

// envOptions vary newTestEnv's server; zero values give newTestServer's.
type envOptions struct {
	// wrap returns the store the handler and verifier use, given the bbolt
	// store and the installation in it; nil means the bbolt store.
	wrap         func(*store.DB, addon.Installation) addon.Store
	baseURL      string    // "https://addon.example" if empty
	maxBodyBytes int64     // 1 MiB if 0
	log          io.Writer // JSON log lines at debug level; nil discards them
	pages        Pages     // the UI routes' handlers; nil: none
}

// testEnv is a public handler and what a test inspects of it.
type testEnv struct {
	h    http.Handler
	db   *store.DB
	tok  string        // a JWT for the installation
	sign func() string // signs a new JWT for it (a new jti), as HipChat does per request
	// signRoom is sign with another context.room_id (0: none).
	signRoom func(room int64) string
	m        *metrics.Metrics
}

func newTestEnv(tb testing.TB, o envOptions) *testEnv {
	tb.Helper()
	db, err := store.Open(filepath.Join(tb.TempDir(), "hipconnect.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	inst := addon.Installation{OAuthID: "inst-1", OAuthSecret: "s3cret", GroupID: 1, RoomID: 100,
		APIURL: "https://127.0.0.2/v2/", TokenURL: "https://127.0.0.2/v2/oauth/token", HipChatOrigin: "https://127.0.0.2"}
	if err := db.PutInstallation(context.Background(), inst); err != nil {
		tb.Fatal(err)
	}
	if o.baseURL == "" {
		o.baseURL = "https://addon.example"
	}
	base, err := url.Parse(o.baseURL)
	if err != nil {
		tb.Fatal(err)
	}
	desc, err := descriptor.Build(descriptor.Spec{BaseURL: base.String(), Key: "k", Name: "Blog Search",
		Description: "d", Commands: []string{"echo"}, Scopes: []string{"send_notification"}})
	if err != nil {
		tb.Fatal(err)
	}
	var st addon.Store = db
	if o.wrap != nil {
		st = o.wrap(db, inst)
	}
	if o.maxBodyBytes == 0 {
		o.maxBodyBytes = 1 << 20
	}
	logger := slog.New(slog.DiscardHandler)
	if o.log != nil {
		logger = slog.New(slog.NewJSONHandler(o.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e := &testEnv{db: db, m: metrics.New("test", nil)}
	e.h = NewServer(Deps{
		BaseURL: base, Descriptor: desc, Outbox: st,
		Installs: &install.Service{Store: st, HipChat: &hipchat.Client{}, Logger: logger},
		Auth:     jwtauth.Auth{Verifier: &hipchat.Verifier{Store: st}, Log: logger},
		Commands: command.New(http.DefaultClient, "x", []command.Spec{{Name: "echo", Kind: command.KindEcho}}),
		Metrics:  Metrics{Installs: e.m.Installs, Uninstalls: e.m.Uninstalls, Webhooks: e.m.Webhooks, HTTPDuration: e.m.HTTPDuration},
		Pages:    o.pages,
		Logger:   logger, AllowHost: func(string) bool { return false }, MaxBodyBytes: o.maxBodyBytes,
	})
	var jti atomic.Uint64
	e.signRoom = func(room int64) string {
		now := time.Now()
		tok, err := hipchat.SignJWT(inst.OAuthID, inst.OAuthSecret, hipchat.Claims{Subject: "1", RoomID: room,
			IssuedAt: now, ExpiresAt: now.Add(time.Hour), ID: strconv.FormatUint(jti.Add(1), 10)})
		if err != nil {
			tb.Fatal(err)
		}
		return tok
	}
	e.sign = func() string { return e.signRoom(100) }
	e.tok = e.sign()
	return e
}

// signN signs n JWTs ahead of a benchmark's loop.
func (e *testEnv) signN(n int) []string {
	toks := make([]string, n)
	for i := range toks {
		toks[i] = e.sign()
	}
	return toks
}

func webhookRequest(tok, msgID string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "https://addon.example/webhook/echo",
		bytes.NewReader(hipchattest.RoomMessage("inst-1", 100, msgID, "/echo hello")))
	r.Header.Set("Authorization", "JWT "+tok)
	r.Header.Set("Content-Type", "application/json")
	return r
}

// BenchmarkWebhook measures the webhook path as HipChat drives it: JWT
// verification, installation lookup, parsing, and the durable enqueue
// (bbolt batches concurrent commits into one fsync).
func BenchmarkWebhook(b *testing.B) {
	e := newTestEnv(b, envOptions{})
	toks := e.signN(b.N + 1)
	var n atomic.Int64
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w := httptest.NewRecorder()
			k := n.Add(1)
			e.h.ServeHTTP(w, webhookRequest(toks[k], fmt.Sprint("m", k)))
			if w.Code != http.StatusNoContent {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
	})
}

// memPath is a store for BenchmarkWebhookHandler: the installation lookup
// and the enqueue the webhook path makes are answered from memory, every
// other method goes to the bbolt store.
type memPath struct {
	*store.DB
	inst addon.Installation
}

func (m memPath) Installation(ctx context.Context, oauthID string) (addon.Installation, error) {
	if oauthID == m.inst.OAuthID {
		return m.inst, nil
	}
	return m.DB.Installation(ctx, oauthID)
}

func (m memPath) Enqueue(_ context.Context, j addon.Job) (addon.Job, bool, error) {
	return j, true, nil
}

// BenchmarkWebhookHandler is BenchmarkWebhook without the store's cost (an
// in-memory installation lookup, an enqueue that stores nothing): what
// remains is the handler's own work, from the middleware to the job.
func BenchmarkWebhookHandler(b *testing.B) {
	e := newTestEnv(b, envOptions{wrap: func(db *store.DB, inst addon.Installation) addon.Store {
		return memPath{DB: db, inst: inst}
	}})
	toks := e.signN(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w := httptest.NewRecorder()
		e.h.ServeHTTP(w, webhookRequest(toks[i], "m"+strconv.Itoa(i)))
		if w.Code != http.StatusNoContent {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}

func TestWebhookStatuses(t *testing.T) {
	h, db, sign := newTestServer(t)
	tok := sign() // reused with the same body only
	rows := []struct {
		name string
		req  func() *http.Request
		want int
	}{
		{"accepted", func() *http.Request { return webhookRequest(tok, "a") }, http.StatusNoContent},
		{"duplicate with a new JWT", func() *http.Request { return webhookRequest(sign(), "a") }, http.StatusNoContent},
		{"duplicate", func() *http.Request { return webhookRequest(tok, "a") }, http.StatusNoContent},
		{"no jwt", func() *http.Request {
			r := webhookRequest(sign(), "b")
			r.Header.Del("Authorization")
			return r
		}, http.StatusUnauthorized},
		{"signed_request query", func() *http.Request {
			q := sign()
			r := webhookRequest(q, "c")
			r.Header.Del("Authorization")
			r.URL.RawQuery = "signed_request=" + q
			return r
		}, http.StatusNoContent},
		{"unknown host", func() *http.Request {
			r := webhookRequest(sign(), "d")
			r.Host = "evil.example"
			return r
		}, http.StatusMisdirectedRequest},
		{"wrong method", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "https://addon.example/webhook/echo", nil)
		}, http.StatusMethodNotAllowed},
		{"unknown command", func() *http.Request {
			r := webhookRequest(sign(), "e")
			r.URL.Path = "/webhook/nope"
			return r
		}, http.StatusBadRequest},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, tt.req())
			if w.Code != tt.want {
				t.Errorf("status = %d, want %d (%s)", w.Code, tt.want, w.Body)
			}
			if w.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("security headers missing")
			}
		})
	}
	jobs, err := db.Pending(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 {
		t.Errorf("%d jobs stored, want 2 (accepted and signed_request)", len(jobs))
	}
}
