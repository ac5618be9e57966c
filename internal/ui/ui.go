// Package ui serves hipconnect's HipChat UI surfaces (PROTOCOL.md sections
// 1, 5 and 7): the glance, whose queryUrl HipChat's client calls and which
// the add-on updates after each search; the sidebar web panel listing the
// room's recent searches; the search dialog, which can post its result to
// the room; and the configuration page, where the installation's admins
// enable or disable commands and set how many results are shown.
//
// Pages are server-rendered html/template documents in an iframe of the
// HipChat client. They load HipChat's all.js from the installation's
// HipChat server and the package's own embedded script and style; no
// inline script, no CDN. Every page and the glance take the JWT HipChat
// signs as signed_request; the pages' calls back to /api/ must carry it in
// "Authorization: JWT", which a cross-site form or link cannot send, and
// writes must be JSON. Settings and search history live in bbolt through
// the KV interface.
package ui

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/descriptor"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// KV is the key/value store the UI keeps its settings and history in; a
// *store.KV (namespace "ui") has it. Get and Delete of an absent key return
// an error for which addon.IsNotFound holds. It must be safe for
// concurrent use.
//
// Update stores what fn makes of the value at key (old is nil and found
// false when there is none) as one atomic step: no other write to key
// comes between. fn may run more than once, on the value then stored, so
// it must be a pure function of old, quick, must not retain or modify old,
// and must not call the KV; an error from fn stores nothing and is
// returned, as it is or wrapped. Concurrent Updates may share one commit.
type KV interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, val []byte) error
	Update(ctx context.Context, key string, fn func(old []byte, found bool) ([]byte, error)) error
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, prefix string) ([]string, error)
}

// Deps are what the UI needs. Store, KV, Verifier and Commands are
// required; the rest may be zero.
type Deps struct {
	// Store finds installations (the verifier's lookups, origins).
	Store addon.Store
	// KV keeps settings and search history.
	KV KV
	// Verifier checks the JWTs of every page, glance and API request.
	Verifier *hipchat.Verifier
	// Commands runs the dialog's searches and renders their replies.
	Commands *command.Runner
	// CommandNames are the configured commands, in the order the
	// configuration page lists them. Names the Runner does not have are
	// ignored.
	CommandNames []string
	// Post sends a notification to a room (the daemon wires tokens and
	// the HipChat client, or enqueues). Nil: "Post to room" answers 503.
	Post func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error
	// PushGlance sends a glance update to a room. Nil: no update is sent.
	PushGlance func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error
	// GlanceKey is the glance's key in the descriptor
	// (descriptor.GlanceKey); "" sends no glance update.
	GlanceKey string
	// Logger gets one line per refused request and per failed update; nil
	// discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// UI serves the pages, the glance and their API. It is safe for
// concurrent use.
type UI struct {
	d        Deps
	commands []string // Deps.CommandNames the Runner has
	mux      *http.ServeMux
	static   http.Handler
	version  string // hash of the static assets, for cache busting
}

// New returns the UI for d.
func New(d Deps) *UI {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	u := &UI{d: d, mux: http.NewServeMux(), version: assetsVersion()}
	seen := map[string]bool{}
	for _, n := range d.CommandNames {
		if _, ok := d.Commands.Spec(n); ok && !seen[n] {
			seen[n] = true
			u.commands = append(u.commands, n)
		}
	}
	sub, _ := fs.Sub(assets, "static") // a literal, present directory
	u.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	u.routes()
	return u
}

// route is one pattern of Handler.
type route struct {
	pattern string
	h       http.HandlerFunc
}

func (u *UI) table() []route {
	return []route{
		{"GET " + descriptor.PathGlance, u.glance},
		{"OPTIONS " + descriptor.PathGlance, u.glancePreflight},
		{"GET " + descriptor.PathSidebar, u.page(u.sidebar)},
		{"GET " + descriptor.PathDialog, u.page(u.dialog)},
		{"GET " + descriptor.PathConfigure, u.page(u.configure)},
		{"GET " + descriptor.PathStatic, u.serveStatic},
		{"GET /api/settings", u.api(u.getSettings)},
		{"PUT /api/settings", u.api(u.putSettings)},
		{"POST /api/search", u.api(u.search)},
		{"POST /api/post", u.api(u.post)},
		{"GET /api/history", u.api(u.history)},
	}
}

func (u *UI) routes() {
	for _, r := range u.table() {
		u.mux.HandleFunc(r.pattern, r.h)
	}
}

// Paths returns the route patterns Handler serves, for the public mux to
// mount Handler on.
func Paths() []string {
	var u UI
	var out []string
	for _, r := range u.table() {
		out = append(out, r.pattern)
	}
	return out
}

// Handler serves the routes of Paths. It sets its own
// Content-Security-Policy on pages (replacing a default one) and CORS
// headers on the glance; the Host check and body cap of the public
// middleware are expected around it, though JSON bodies are capped here
// too.
func (u *UI) Handler() http.Handler { return u.mux }

// assetsVersion is a short hash of the embedded static files: page links
// carry it, so a new build's files are fetched despite caching.
func assetsVersion() string {
	h := sha256.New()
	_ = fs.WalkDir(assets, "static", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		f, err := assets.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, _ = io.WriteString(h, p)
		_, err = io.Copy(h, f)
		return err
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// serveStatic serves the embedded assets; they need no JWT (HipChat
// fetches the icons without one) and may be cached for an hour.
func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/") { // no directory listings
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	u.static.ServeHTTP(w, r)
}
