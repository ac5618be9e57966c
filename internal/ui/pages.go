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

// page wraps a page handler: it authenticates the signed_request, and
// renders what the handler returns with the page's CSP.
func (u *UI) page(render func(r *http.Request, s session) (name string, title string, body any, err error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := u.authenticate(r, fromAnywhere)
		if err != nil {
			u.fail(w, r, err, nil)
			return
		}
		origin, err := hipchatOrigin(s.inst)
		if err != nil {
			u.fail(w, r, err, &s)
			return
		}
		name, title, body, err := render(r, s)
		if err != nil {
			u.fail(w, r, err, &s)
			return
		}
		var buf bytes.Buffer
		err = pages.ExecuteTemplate(&buf, name+".html", pageData{
			Title: title, Root: relRoot(r.URL.Path), Version: u.version,
			AllJS: origin + "/atlassian-connect/all.js", Token: s.token, Page: name, Body: body,
		})
		if err != nil {
			u.fail(w, r, fmt.Errorf("ui: render %s: %w", name, err), &s)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", pageCSP(origin))
		h.Set("Cache-Control", "no-store")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		_, _ = w.Write(buf.Bytes())
	}
}

// errorPage writes a small page saying what went wrong.
func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, code int, msg, origin string) {
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
	h.Set("X-Content-Type-Options", "nosniff")
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
	Search
	Local time.Time
}

func (u *UI) sidebar(r *http.Request, s session) (string, string, any, error) {
	if err := s.needRoom(); err != nil {
		return "", "", nil, err
	}
	rec, err := u.room(r.Context(), s.inst.OAuthID, s.room)
	if err != nil {
		return "", "", nil, err
	}
	loc := location(s.claims.UserTZ)
	var list []sidebarSearch
	for _, x := range rec.Searches {
		list = append(list, sidebarSearch{Search: x, Local: x.At.In(loc)})
	}
	st, err := u.Settings(r.Context(), s.inst.OAuthID)
	if err != nil {
		return "", "", nil, err
	}
	example := ""
	if cmds := u.searchCommands(st); len(cmds) > 0 {
		example = "/" + cmds[0] + " java"
	}
	count, _ := rec.thisWeek(u.d.Now())
	return "sidebar", "Recent searches", map[string]any{
		"Searches": list, "WeekCount": count, "Example": example,
	}, nil
}

func (u *UI) dialog(r *http.Request, s session) (string, string, any, error) {
	if err := s.needRoom(); err != nil {
		return "", "", nil, err
	}
	st, err := u.Settings(r.Context(), s.inst.OAuthID)
	if err != nil {
		return "", "", nil, err
	}
	return "dialog", "Search", map[string]any{"Commands": u.searchCommands(st)}, nil
}

// configCommand is one command on the configuration page.
type configCommand struct {
	Name, Kind string
	Enabled    bool
	MaxResults int // the configured default, 0 for echo
}

func (u *UI) configure(r *http.Request, s session) (string, string, any, error) {
	st, err := u.Settings(r.Context(), s.inst.OAuthID)
	if err != nil {
		return "", "", nil, err
	}
	var cmds []configCommand
	var defaults []string
	for _, n := range u.commands {
		spec, _ := u.d.Commands.Spec(n)
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
		"Commands": cmds, "MaxResults": st.MaxResults, "Limit": MaxResultsLimit,
		"Defaults": strings.Join(defaults, ", "),
	}, nil
}
