// Package ui renders hipconnect's HipChat UI surfaces (PROTOCOL.md sections
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
// writes must be JSON. The handlers are mounted by httpapi (routes.go),
// behind jwtauth, which verifies the JWT and hands them the session;
// refusals are written by httperr with ErrorPage. Settings, search
// history and glance counts belong to the slash-command service (package
// slash): ui only renders them.
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
	"github.com/hipconnect/hipconnect/internal/slash"
)

// Slash is what the pages ask of the slash-command service; a
// *slash.Service has it.
type Slash interface {
	Settings(ctx context.Context, oauthID string) (slash.Settings, error)
	SaveSettings(ctx context.Context, oauthID string, s slash.Settings) (slash.Settings, error)
	SearchCommands(s slash.Settings) []string
	Commands() []command.Spec
	Room(ctx context.Context, oauthID string, roomID int64) (slash.Record, error)
	PrepareSearch(ctx context.Context, oauthID, name, term string) (command.Spec, string, error)
	Search(ctx context.Context, spec command.Spec, term string) ([]command.Hit, error)
	Reply(spec command.Spec, term string, hits []command.Hit) addon.Notification
	AfterSearch(ctx context.Context, inst addon.Installation, roomID int64, name, term string, hits []command.Hit) error
}

// Deps are what the UI needs. Installations and Slash are required; the
// rest may be zero.
type Deps struct {
	// Installations finds the installation an unverified token names,
	// for the framing of its error page.
	Installations interface {
		Installation(ctx context.Context, oauthID string) (addon.Installation, error)
	}
	// Slash keeps settings and history and runs the dialog's searches.
	Slash Slash
	// Post sends a notification to a room (the daemon enqueues it in the
	// outbox). Nil: "Post to room" answers 503.
	Post func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error
	// Logger gets one line per refused request and per failed update; nil
	// discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// UI renders the pages, the glance and their API answers. It is safe for
// concurrent use.
type UI struct {
	d       Deps
	static  http.Handler
	version string // hash of the static assets, for cache busting
}

// New returns the UI for d.
func New(d Deps) *UI {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	u := &UI{d: d, version: assetsVersion()}
	sub, _ := fs.Sub(assets, "static") // a literal, present directory
	u.static = http.StripPrefix("/static/", http.FileServerFS(sub))
	return u
}

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

// Static serves the embedded assets; they need no JWT (HipChat fetches
// the icons without one) and may be cached for an hour.
func (u *UI) Static(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/") { // no directory listings
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	u.static.ServeHTTP(w, r)
}
