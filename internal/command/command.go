// Package command runs hipconnect's slash commands: it turns "/name args"
// into the notification that answers it in the room. Search commands query
// a configured JSON backend; echo commands repeat the text.
package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/outbound"
)

// Kind is what a command does. Its values are the values of commands[].kind
// in the configuration; Valid tells whether a Kind is one of them.
type Kind string

// The kinds of command.
const (
	KindSearch Kind = "search" // query SearchURL and list the hits
	KindEcho   Kind = "echo"   // answer with the arguments
)

// Kinds returns every valid Kind, in the order documentation and error
// messages list them. Each call returns a new slice the caller may modify.
func Kinds() []Kind {
	return []Kind{KindSearch, KindEcho}
}

// Valid reports whether k is one of the kinds Kinds returns. The zero Kind
// is not valid (the configuration turns an empty kind into KindSearch before
// checking it).
func (k Kind) Valid() bool {
	switch k {
	case KindSearch, KindEcho:
		return true
	}
	return false
}

// maxMessage is HipChat's limit on a notification's message, in characters.
const maxMessage = 10000

// maxTitle caps one search hit's title, in characters.
const maxTitle = 200

// Spec configures one command.
type Spec struct {
	Name        string
	Kind        Kind   // KindSearch or KindEcho; any other value (such as "") runs as a search
	SearchURL   string // {term} is replaced by the escaped term
	ResultsPath string // dotted path to the hit list; "" = the top-level array
	TitleField  string // dotted path inside a hit
	URLField    string // dotted path inside a hit
	MaxResults  int
	ShowAllURL  string // {term} as in SearchURL; "" = no "show all" link
	Timeout     time.Duration
	Reply       Reply         // how the reply reaches the room; "" = ReplyAuto
	ReplyBudget time.Duration // ReplyAuto, ReplyResponse: how long the webhook's response waits for the reply
}

// Reply is how a command's reply reaches the room: the values of
// commands[].reply and integrations[].reply in the configuration.
type Reply string

// The reply modes.
const (
	// ReplyAuto answers in the webhook's response when the reply is ready
	// within the command's ReplyBudget, else through the REST API.
	ReplyAuto Reply = "auto"
	// ReplyAPI acknowledges the webhook at once and posts the reply
	// through the REST API.
	ReplyAPI Reply = "api"
	// ReplyResponse answers in the webhook's response only: no token and
	// no connection to HipChat needed.
	ReplyResponse Reply = "response"
)

// Replies returns every Reply, in the order documentation lists them.
func Replies() []Reply { return []Reply{ReplyAuto, ReplyAPI, ReplyResponse} }

// Runner answers commands. It is safe for concurrent use.
type Runner struct {
	client *http.Client
	from   string
	specs  atomic.Pointer[map[string]Spec]
}

// New returns a Runner for specs. client makes every search request (the
// daemon passes its allowlisting client); from is the sender name shown in
// the room.
func New(client *http.Client, from string, specs []Spec) *Runner {
	r := &Runner{client: client, from: from}
	r.SetSpecs(specs)
	return r
}

// SetSpecs replaces the configured commands (on a configuration reload);
// commands already running finish with the old ones.
func (r *Runner) SetSpecs(specs []Spec) {
	m := make(map[string]Spec, len(specs))
	for _, s := range specs {
		m[s.Name] = s
	}
	r.specs.Store(&m)
}

// Spec returns the configuration of command name.
func (r *Runner) Spec(name string) (Spec, bool) {
	s, ok := (*r.specs.Load())[name]
	return s, ok
}

// Parse splits a room message "/name args" into the command name and its
// arguments. ok is false when the message is not a command, or names no
// configured command.
func (r *Runner) Parse(message string) (name, args string, ok bool) {
	message = strings.TrimSpace(message)
	if !strings.HasPrefix(message, "/") {
		return "", "", false
	}
	name, args, _ = strings.Cut(message[1:], " ")
	if i := strings.IndexAny(name, "\t\n"); i >= 0 {
		name, args = name[:i], name[i+1:]+" "+args
	}
	if _, ok := r.Spec(name); !ok {
		return "", "", false
	}
	return name, strings.TrimSpace(args), true
}

// Run answers one command. A search backend that fails still yields a
// notification (a short error reply for the room) together with a non-nil
// error for the log and metrics; err alone (with a zero Notification) means
// the command is not configured.
func (r *Runner) Run(ctx context.Context, name, args string) (addon.Notification, error) {
	spec, ok := r.Spec(name)
	if !ok {
		return addon.Notification{}, addon.Errorf(addon.NotFound, "command: no command %q", name)
	}
	switch spec.Kind {
	case KindEcho:
		return r.echo(args), nil
	default:
		return r.search(ctx, spec, args)
	}
}

func (r *Runner) note(format, msg, color string) addon.Notification {
	return addon.Notification{Message: msg, MessageFormat: format, Color: color, From: r.from}
}

func (r *Runner) echo(args string) addon.Notification {
	if args == "" {
		return r.note("text", "Usage: /echo <text>", "gray")
	}
	return r.note("text", Truncate(args, maxMessage), "gray")
}

// Search queries the backend of the search command name for term and
// returns every hit (the caller decides how many to show).
func (r *Runner) Search(ctx context.Context, name, term string) ([]Hit, error) {
	spec, ok := r.Spec(name)
	if !ok || spec.Kind == KindEcho {
		return nil, addon.Errorf(addon.NotFound, "command: no search command %q", name)
	}
	return r.fetch(ctx, spec, term)
}

// Reply renders hits for term as the notification a search command sends.
func (r *Runner) Reply(spec Spec, term string, hits []Hit) addon.Notification {
	return r.note("html", Format(spec, term, hits), "green")
}

func (r *Runner) search(ctx context.Context, spec Spec, term string) (addon.Notification, error) {
	if term == "" {
		return r.note("html", "Usage: <code>/"+html.EscapeString(spec.Name)+" &lt;tag&gt;</code>", "gray"), nil
	}
	hits, err := r.fetch(ctx, spec, term)
	if err != nil {
		msg := fmt.Sprintf("Sorry, the search for <b>%s</b> failed: the search service did not answer. Please try again later.",
			html.EscapeString(Truncate(term, 100)))
		return r.note("html", msg, "red"), fmt.Errorf("command: %s: %w", spec.Name, err)
	}
	return r.Reply(spec, term, hits), nil
}

// Hit is one search result.
type Hit struct {
	Title string
	URL   string
}

// Format renders hits for term as the HTML reply: at most spec.MaxResults
// links, the total count, and a "Show all" link when there are more.
// Everything from the user or the backend is escaped; links other than
// http(s) are dropped.
func Format(spec Spec, term string, hits []Hit) string {
	qt := html.EscapeString(Truncate(term, 100))
	if len(hits) == 0 {
		return fmt.Sprintf("No articles for <b>%s</b>.", qt)
	}
	var b strings.Builder
	noun := "articles"
	if len(hits) == 1 {
		noun = "article"
	}
	fmt.Fprintf(&b, "<b>%d %s for %s:</b><ul>", len(hits), noun, qt)
	shown := 0
	for _, h := range hits[:min(len(hits), spec.MaxResults)] {
		item := fmt.Sprintf(`<li><a href="%s">%s</a></li>`, html.EscapeString(h.URL), html.EscapeString(Truncate(h.Title, maxTitle)))
		if utf8.RuneCountInString(item)+b.Len() > maxMessage-500 { // keep room for the footer
			break
		}
		b.WriteString(item)
		shown++
	}
	b.WriteString("</ul>")
	if len(hits) > shown && spec.ShowAllURL != "" {
		footer := fmt.Sprintf(`<a href="%s">Show all %d results for %s</a>`, html.EscapeString(expand(spec.ShowAllURL, term)), len(hits), qt)
		// A long term can make the link longer than the room left for it:
		// HipChat refuses a message over maxMessage, so it is left out.
		if utf8.RuneCountInString(b.String())+utf8.RuneCountInString(footer) <= maxMessage {
			b.WriteString(footer)
		}
	}
	return b.String()
}

func (r *Runner) fetch(ctx context.Context, spec Spec, term string) ([]Hit, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, expand(spec.SearchURL, term), nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("search backend: %w", outbound.Redact(err)) // no search term or key in logs
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("search backend: status %d", resp.StatusCode)
	}
	var doc any
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("search backend: decode: %w", err)
	}
	return extract(doc, spec)
}

// extract walks doc to the hit list and reads each hit's title and URL.
// Hits without a usable http(s) URL are skipped.
func extract(doc any, spec Spec) ([]Hit, error) {
	list, ok := lookup(doc, spec.ResultsPath).([]any)
	if !ok {
		if lookup(doc, spec.ResultsPath) == nil {
			return nil, nil // "no results" is often null or absent
		}
		return nil, errors.New("search backend: results are not a list")
	}
	hits := make([]Hit, 0, len(list))
	for _, item := range list {
		link, _ := lookup(item, spec.URLField).(string)
		if len(link) > 2000 || !httpURL(link) {
			continue
		}
		title := fmt.Sprint(lookup(item, spec.TitleField))
		if lookup(item, spec.TitleField) == nil || strings.TrimSpace(title) == "" {
			title = link
		}
		hits = append(hits, Hit{Title: strings.TrimSpace(title), URL: link})
	}
	return hits, nil
}

// lookup follows a dotted path of object keys; "" is v itself.
func lookup(v any, path string) any {
	if path == "" {
		return v
	}
	for _, key := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[key]
	}
	return v
}

func httpURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// expand replaces {term} in a URL template by term, escaped so that it is
// safe both in a path segment and in a query value.
func expand(tmpl, term string) string {
	esc := strings.ReplaceAll(url.QueryEscape(term), "+", "%20")
	return strings.ReplaceAll(tmpl, "{term}", esc)
}

// Truncate shortens s to at most n characters, marking the cut with "…".
// For n < 1 it returns "".
func Truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n < 1 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
