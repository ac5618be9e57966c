package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
	"github.com/hipconnect/hipconnect/internal/slash"
)

//go:embed static templates
var assets embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
}).ParseFS(assets, "templates/*.html"))

// pageCSP is the policy of every page: scripts only from the add-on and
// the HipChat server (all.js), none inline; XHR only to the add-on; framed
// only by the installation's HipChat client.
func pageCSP(origin string) string {
	return fmt.Sprintf("default-src 'none'; script-src 'self' %s; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; frame-ancestors %s; form-action 'self'; base-uri 'none'", origin, origin)
}

// errorCSP is the policy of an error page, which has no script.
func errorCSP(origin string) string {
	if origin == "" {
		origin = "'none'"
	}
	return "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors " + origin +
		"; form-action 'none'; base-uri 'none'"
}

// relRoot is the relative path from the page at path to the handler's
// root, so that links work wherever the handler is mounted.
func relRoot(path string) string {
	return strings.Repeat("../", strings.Count(strings.TrimPrefix(path, "/"), "/"))
}

// pageData is what every page template gets.
type pageData struct {
	Title   string
	Root    string // relative path to the handler's root
	Version string // of the static assets
	AllJS   string // HipChat's all.js on the installation's server
	Token   string // the signed_request, the script's fallback
	Page    string // "sidebar", "dialog" or "configure"
	Body    any    // the page's own data
}

// renderer makes a page for a session: the template name, its title and
// its data.
type renderer func(r *http.Request, s jwtauth.Session) (name string, title string, body any, err error)

// Sidebar renders the sidebar web panel: the room's recent searches.
func (u *UI) Sidebar(w http.ResponseWriter, r *http.Request) { u.page(w, r, u.sidebar) }

// Dialog renders the search dialog.
func (u *UI) Dialog(w http.ResponseWriter, r *http.Request) { u.page(w, r, u.dialog) }

// Configure renders the configuration page.
func (u *UI) Configure(w http.ResponseWriter, r *http.Request) { u.page(w, r, u.configure) }

// page renders what render returns for r's session with the page's CSP.
func (u *UI) page(w http.ResponseWriter, r *http.Request, render renderer) {
	s, err := session(r)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	origin, err := hipchatOrigin(s.Inst)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	name, title, body, err := render(r, s)
	if err != nil {
		u.fail(w, r, err)
		return
	}
	var buf bytes.Buffer
	err = pages.ExecuteTemplate(&buf, name+".html", pageData{
		Title: title, Root: relRoot(r.URL.Path), Version: u.version,
		AllJS: origin + "/atlassian-connect/all.js", Token: s.Token, Page: name, Body: body,
	})
	if err != nil {
		u.fail(w, r, fmt.Errorf("ui: render %s: %w", name, err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP(origin))
	_, _ = w.Write(buf.Bytes())
}

// ErrorPage writes a small page saying what went wrong (an httperr.Page),
// framed only by the HipChat origin of the session, or of the installation
// a refused token names.
func (u *UI) ErrorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	origin := u.frameOrigin(r.Context(), r)
	title := "Something went wrong"
	switch code {
	case http.StatusUnauthorized:
		title = "Session invalid or expired"
		msg = "Your HipChat session for this add-on is invalid or has expired. Close this view and open it again from HipChat."
	case http.StatusForbidden:
		title = "Not allowed"
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", errorCSP(origin))
	w.WriteHeader(code)
	_ = pages.ExecuteTemplate(w, "error.html", pageData{Title: title, Root: relRoot(r.URL.Path), Version: u.version,
		Body: map[string]any{"Code": code, "Message": msg}})
}

// location is the user's time zone from the JWT, else UTC.
func location(tz string) *time.Location {
	if tz != "" {
		if loc, err := time.LoadLocation(tz); err == nil {
			return loc
		}
	}
	return time.UTC
}

// sidebarSearch is a Search with its time in the user's zone.
type sidebarSearch struct {
	slash.Search
	Local time.Time
}

func (u *UI) sidebar(r *http.Request, s jwtauth.Session) (string, string, any, error) {
	if err := s.NeedRoom(); err != nil {
		return "", "", nil, err
	}
	rec, err := u.d.Slash.Room(r.Context(), s.Inst.OAuthID, s.Room)
	if err != nil {
		return "", "", nil, err
	}
	loc := location(s.Claims.UserTZ)
	var list []sidebarSearch
	for _, x := range rec.Searches {
		list = append(list, sidebarSearch{Search: x, Local: x.At.In(loc)})
	}
	st, err := u.d.Slash.Settings(r.Context(), s.Inst.OAuthID)
	if err != nil {
		return "", "", nil, err
	}
	example := ""
	if cmds := u.d.Slash.SearchCommands(st); len(cmds) > 0 {
		example = "/" + cmds[0] + " java"
	}
	count, _ := rec.ThisWeek(u.d.Now())
	return "sidebar", "Recent searches", map[string]any{
		"Searches": list, "WeekCount": count, "Example": example,
	}, nil
}

func (u *UI) dialog(r *http.Request, s jwtauth.Session) (string, string, any, error) {
	if err := s.NeedRoom(); err != nil {
		return "", "", nil, err
	}
	st, err := u.d.Slash.Settings(r.Context(), s.Inst.OAuthID)
	if err != nil {
		return "", "", nil, err
	}
	return "dialog", "Search", map[string]any{"Commands": u.d.Slash.SearchCommands(st)}, nil
}

// configCommand is one command on the configuration page.
type configCommand struct {
	Name       string
	Kind       command.Kind
	Enabled    bool
	MaxResults int // the configured default, 0 for echo
}

func (u *UI) configure(r *http.Request, s jwtauth.Session) (string, string, any, error) {
	st, err := u.d.Slash.Settings(r.Context(), s.Inst.OAuthID)
	if err != nil {
		return "", "", nil, err
	}
	var cmds []configCommand
	var defaults []string
	for _, spec := range u.d.Slash.Commands() {
		n := spec.Name
		c := configCommand{Name: n, Kind: spec.Kind, Enabled: st.Enabled(n)}
		if spec.Kind != command.KindEcho {
			if c.Kind == "" {
				c.Kind = command.KindSearch
			}
			c.MaxResults = spec.MaxResults
			defaults = append(defaults, fmt.Sprintf("/%s: %d", n, spec.MaxResults))
		}
		cmds = append(cmds, c)
	}
	return "configure", "Settings", map[string]any{
		"Commands": cmds, "MaxResults": st.MaxResults, "Limit": slash.MaxResultsLimit,
		"Defaults": strings.Join(defaults, ", "),
	}, nil
}
