package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
	"github.com/hipconnect/hipconnect/internal/slash"
	"github.com/hipconnect/hipconnect/internal/store"
)

// Interface guard: the slash-command service is what the daemon passes.
var _ Slash = (*slash.Service)(nil)

const (
	testOAuthID = "cba74fbc-1b26-407e-811d-b9e377e4c440"
	testSecret  = "NothWQ2HtSdsidQxxxkmMUzsACNzPSR"
	testRoom    = int64(100)
	testOrigin  = "https://hipchat.intranet.example"
	glanceKey   = "blogsearch-glance"
)

// posted is one Deps.Post call.
type posted struct {
	OAuthID string
	RoomID  int64
	N       addon.Notification
}

// pushed is one Deps.PushGlance call.
type pushed struct {
	OAuthID string
	RoomID  int64
	G       hipchat.Glance
}

// fixture is a UI on a real bbolt store with one installation, a fake
// blog backend, and fakes recording what is posted and pushed.
type fixture struct {
	t     testing.TB
	db    *store.DB
	kv    addon.KV // the slash service's
	slash *slash.Service
	ui    *UI
	h     http.Handler // the UI's routes as the public listener mounts them
	inst  addon.Installation

	mu      sync.Mutex
	now     time.Time
	posts   []posted
	glances []pushed
	blog    *httptest.Server
	hits    int // hits the blog answers
}

type fixtureOpts struct {
	origin   string // the installation's HipChat origin; default testOrigin
	blogAddr string // where the blog listens; default 127.0.0.1:0
	realTime bool   // use time.Now instead of a fixed clock
	push     func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error
	inst     func(*addon.Installation)
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	if o.origin == "" {
		o.origin = testOrigin
	}
	f := &fixture{t: t, now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), hits: 25}

	db, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{Now: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	f.db = db

	f.blog = listen(t, o.blogAddr, http.HandlerFunc(f.serveBlog))
	runner := command.New(&http.Client{Timeout: 5 * time.Second}, "Blog Search", []command.Spec{
		{Name: "hascode", Kind: command.KindSearch, SearchURL: f.blog.URL + "/search?q={term}", ResultsPath: "results",
			TitleField: "title", URLField: "url", MaxResults: 5, Timeout: 5 * time.Second},
		{Name: "echo", Kind: command.KindEcho},
	})

	f.inst = addon.Installation{OAuthID: testOAuthID, OAuthSecret: testSecret, CapabilitiesURL: o.origin + "/v2/capabilities",
		GroupID: 1, RoomID: testRoom, APIURL: o.origin + "/v2/", TokenURL: o.origin + "/v2/oauth/token",
		HipChatOrigin: o.origin, InstalledAt: f.now, UpdatedAt: f.now}
	if o.inst != nil {
		o.inst(&f.inst)
	}
	if err := db.PutInstallation(context.Background(), f.inst); err != nil {
		t.Fatal(err)
	}

	clock := f.clock
	if o.realTime {
		clock = time.Now
	}
	push := o.push
	if push == nil {
		push = func(_ context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.glances = append(f.glances, pushed{inst.OAuthID, roomID, g})
			return nil
		}
	}
	f.kv = db.KV("ui")
	f.slash = slash.New(slash.Deps{Commands: runner, KV: f.kv, CommandNames: []string{"hascode", "echo"},
		PushGlance: push, GlanceKey: glanceKey, Now: clock})
	f.ui = New(Deps{
		Installations: db,
		Slash:         f.slash,
		Post: func(_ context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.posts = append(f.posts, posted{inst.OAuthID, roomID, n})
			return nil
		},
		Now: clock,
	})
	f.h = mount(f.ui, jwtauth.Auth{Verifier: &hipchat.Verifier{Store: db, Now: clock}, Log: slog.New(slog.DiscardHandler)})
	return f
}

// mount serves u's handlers on the routes httpapi's routes.go gives them,
// behind the same JWT middleware and under the default headers the public
// listener sets on every response (internal/httpapi cannot be imported
// here: it imports ui).
func mount(u *UI, auth jwtauth.Auth) http.Handler {
	page := func(h http.HandlerFunc) http.HandlerFunc { return auth.Require(jwtauth.Anywhere, u.ErrorPage, h) }
	api := func(h http.HandlerFunc) http.HandlerFunc { return auth.Require(jwtauth.HeaderOnly, u.ErrorPage, h) }
	mux := http.NewServeMux()
	for pattern, h := range map[string]http.HandlerFunc{
		"GET /glance":       page(u.Glance),
		"OPTIONS /glance":   page(u.GlancePreflight),
		"GET /sidebar":      page(u.Sidebar),
		"GET /dialog":       page(u.Dialog),
		"GET /configure":    page(u.Configure),
		"GET /static/":      u.Static,
		"GET /api/settings": api(u.GetSettings),
		"PUT /api/settings": api(u.PutSettings),
		"POST /api/search":  api(u.Search),
		"POST /api/post":    api(u.Post),
		"GET /api/history":  api(u.History),
	} {
		mux.HandleFunc(pattern, h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		h.Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

// listen serves h on addr ("127.0.0.1:0" when empty) until the test ends.
func listen(t testing.TB, addr string, h http.Handler) *httptest.Server {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(h)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// serveBlog answers /search?q=term with f.hits results.
func (f *fixture) serveBlog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	f.mu.Lock()
	n := f.hits
	f.mu.Unlock()
	type hit struct {
		Title string `json:"title"`
		URL   string `json:"url"`
	}
	res := []hit{}
	for i := 1; i <= n; i++ {
		res = append(res, hit{Title: fmt.Sprintf("%s article %d <b>", q, i), URL: fmt.Sprintf("https://blog.example/%s/%d", q, i)})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"results": res})
}

func (f *fixture) Posts() []posted {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]posted(nil), f.posts...)
}

func (f *fixture) Glances() []pushed {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pushed(nil), f.glances...)
}

// jwt signs a token for room (0: none) valid from the fixture's clock.
func (f *fixture) jwt(room int64) string {
	return f.sign(testSecret, room, f.clock(), 5*time.Minute)
}

func (f *fixture) sign(secret string, room int64, iat time.Time, ttl time.Duration) string {
	f.t.Helper()
	tok, err := hipchat.SignJWT(f.inst.OAuthID, secret, hipchat.Claims{Subject: "1661743", RoomID: room,
		UserTZ: "Europe/Berlin", IssuedAt: iat, ExpiresAt: iat.Add(ttl), ID: fmt.Sprint(iat.UnixNano())})
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// req is one request to the UI handler.
type req struct {
	method, path string
	query        string // signed_request value, if any
	auth         string // JWT for the Authorization header, if any
	origin       string
	accept       string
	ctype        string
	body         string
}

type resp struct {
	code int
	h    http.Header
	body string
}

func (f *fixture) do(q req) resp {
	f.t.Helper()
	target := q.path
	if q.query != "" {
		target += "?signed_request=" + q.query
	}
	var body io.Reader
	if q.body != "" {
		body = strings.NewReader(q.body)
	}
	r := httptest.NewRequest(q.method, target, body)
	if q.auth != "" {
		r.Header.Set("Authorization", "JWT "+q.auth)
	}
	if q.origin != "" {
		r.Header.Set("Origin", q.origin)
	}
	if q.accept != "" {
		r.Header.Set("Accept", q.accept)
	}
	ct := q.ctype
	if ct == "" && q.body != "" {
		ct = "application/json"
	}
	if ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	return resp{code: w.Code, h: w.Result().Header, body: w.Body.String()}
}

// apiJSON calls an /api/ route with a valid header JWT and decodes the
// answer into v (when not nil), failing the test on another status.
func (f *fixture) apiJSON(method, path, body string, want int, v any) {
	f.t.Helper()
	res := f.do(req{method: method, path: path, auth: f.jwt(testRoom), accept: "application/json", body: body})
	if res.code != want {
		f.t.Fatalf("%s %s = %d %s, want %d", method, path, res.code, res.body, want)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(res.body), v); err != nil {
			f.t.Fatalf("%s %s: %v in %s", method, path, err, res.body)
		}
	}
}
