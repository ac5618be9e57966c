package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	"github.com/hipconnect/hipconnect/internal/slash"
)

// endpoint is one authenticated UI route with a request it accepts.
type endpoint struct {
	method, path, body string
}

func authEndpoints() []endpoint {
	return []endpoint{
		{"GET", "/glance", ""},
		{"OPTIONS", "/glance", ""},
		{"GET", "/sidebar", ""},
		{"GET", "/dialog", ""},
		{"GET", "/configure", ""},
		{"GET", "/api/settings", ""},
		{"PUT", "/api/settings", `{"disabled":{},"maxResults":3}`},
		{"POST", "/api/search", `{"command":"hascode","term":"java"}`},
		{"POST", "/api/post", `{"command":"hascode","term":"java"}`},
		{"GET", "/api/history", ""},
	}
}

// TestRefusesBadJWT: every UI endpoint answers 401 and a small page (or
// JSON, for a client asking for it) to a missing, malformed, forged,
// expired or unknown JWT.
func TestRefusesBadJWT(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	now := f.clock()
	unknown, err := hipchat.SignJWT("11111111-2222-3333-4444-555555555555", testSecret,
		hipchat.Claims{RoomID: testRoom, IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	tokens := []struct {
		name, tok string
	}{
		{"missing", ""},
		{"malformed", "not.a.jwt"},
		{"forged", f.sign("the-wrong-secret-the-wrong-secret", testRoom, now, 5*time.Minute)},
		{"expired", f.sign(testSecret, testRoom, now.Add(-time.Hour), 10*time.Minute)},
		{"unknown issuer", unknown},
	}
	for _, e := range authEndpoints() {
		for _, tk := range tokens {
			for _, asJSON := range []bool{false, true} {
				name := e.method + " " + e.path + "/" + tk.name
				if asJSON {
					name += "/json"
				}
				t.Run(name, func(t *testing.T) {
					q := req{method: e.method, path: e.path, body: e.body}
					if strings.HasPrefix(e.path, "/api/") {
						q.auth = tk.tok
					} else {
						q.query = tk.tok
					}
					if asJSON {
						q.accept = "application/json"
					}
					res := f.do(q)
					if res.code != http.StatusUnauthorized {
						t.Fatalf("status = %d, want 401; body %s", res.code, res.body)
					}
					if got := res.h.Get("WWW-Authenticate"); got == "" {
						t.Error("no WWW-Authenticate header")
					}
					if res.h.Get("Access-Control-Allow-Origin") != "" {
						t.Error("a refused request got a CORS header")
					}
					csp := res.h.Get("Content-Security-Policy")
					if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors") {
						t.Errorf("CSP = %q", csp)
					}
					if asJSON {
						var body struct{ Error string }
						if err := json.Unmarshal([]byte(res.body), &body); err != nil || body.Error == "" {
							t.Errorf("JSON body = %s (%v)", res.body, err)
						}
						return
					}
					if ct := res.h.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
						t.Errorf("Content-Type = %q, want text/html", ct)
					}
					if !strings.Contains(res.body, "invalid or has expired") || !strings.Contains(res.body, `<html lang="en">`) {
						t.Errorf("page does not say the session is invalid:\n%s", res.body)
					}
					if strings.Contains(res.body, "<script") {
						t.Error("the 401 page has a script")
					}
					if tk.tok != "" && strings.Contains(res.body, tk.tok) {
						t.Error("the 401 page echoes the token")
					}
				})
			}
		}
	}
}

// TestErrorPageFraming: a 401 page may be framed by the HipChat origin of
// the installation the token names, and by nobody when none is known.
func TestErrorPageFraming(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	expired := f.sign(testSecret, testRoom, f.clock().Add(-time.Hour), 10*time.Minute)
	res := f.do(req{method: "GET", path: "/sidebar", query: expired})
	if got := res.h.Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors "+testOrigin+";") {
		t.Errorf("CSP of a 401 for a known issuer = %q, want frame-ancestors %s", got, testOrigin)
	}
	res = f.do(req{method: "GET", path: "/sidebar"})
	if got := res.h.Get("Content-Security-Policy"); !strings.Contains(got, "frame-ancestors 'none'") {
		t.Errorf("CSP of a 401 without token = %q, want frame-ancestors 'none'", got)
	}
}

func TestRoomNotCovered(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	res := f.do(req{method: "GET", path: "/sidebar", query: f.jwt(999)})
	if res.code != http.StatusForbidden {
		t.Errorf("sidebar for another room = %d, want 403", res.code)
	}
}

// TestAPIRefusesSignedRequest: /api/ takes the JWT from the Authorization
// header only, so that a cross-site link or form cannot act.
func TestAPIRefusesSignedRequest(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	tok := f.jwt(testRoom)
	tests := []struct {
		name        string
		q           req
		wantCode    int
		wantStoring bool
	}{
		{"GET query only", req{method: "GET", path: "/api/settings", query: tok}, http.StatusUnauthorized, false},
		{"PUT query only", req{method: "PUT", path: "/api/settings", query: tok, body: `{"maxResults":7}`}, http.StatusUnauthorized, false},
		{"PUT query and header", req{method: "PUT", path: "/api/settings", query: tok, auth: tok, body: `{"maxResults":7}`}, http.StatusUnauthorized, false},
		{"POST post query only", req{method: "POST", path: "/api/post", query: tok, body: `{"command":"hascode","term":"java"}`}, http.StatusUnauthorized, false},
		{"PUT form body", req{method: "PUT", path: "/api/settings", auth: tok, ctype: "application/x-www-form-urlencoded", body: "maxResults=7"}, http.StatusUnsupportedMediaType, false},
		{"PUT text body", req{method: "PUT", path: "/api/settings", auth: tok, ctype: "text/plain", body: `{"maxResults":7}`}, http.StatusUnsupportedMediaType, false},
		{"PUT header JSON", req{method: "PUT", path: "/api/settings", auth: tok, body: `{"maxResults":7}`}, http.StatusOK, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(tt.q)
			if res.code != tt.wantCode {
				t.Fatalf("status = %d %s, want %d", res.code, res.body, tt.wantCode)
			}
			st, err := f.slash.Settings(context.Background(), testOAuthID)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.MaxResults == 7; got != tt.wantStoring {
				t.Errorf("stored = %v, want %v", got, tt.wantStoring)
			}
		})
	}
	if n := len(f.Posts()); n != 0 {
		t.Errorf("posts = %d, want 0", n)
	}
}

var (
	scriptRe  = regexp.MustCompile(`<script\b[^>]*>`)
	inputRe   = regexp.MustCompile(`<(input|select)\b[^>]*\bid="([^"]+)"`)
	handlerRe = regexp.MustCompile(`\son[a-z]+=`)
)

func TestPages(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	wantCSP := "default-src 'none'; script-src 'self' " + testOrigin + "; style-src 'self'; img-src 'self' data:; " +
		"connect-src 'self'; frame-ancestors " + testOrigin + "; form-action 'self'; base-uri 'none'"
	for _, path := range []string{"/sidebar", "/dialog", "/configure"} {
		t.Run(path, func(t *testing.T) {
			tok := f.jwt(testRoom)
			res := f.do(req{method: "GET", path: path, query: tok})
			if res.code != http.StatusOK {
				t.Fatalf("status = %d: %s", res.code, res.body)
			}
			if got := res.h.Get("Content-Security-Policy"); got != wantCSP {
				t.Errorf("CSP = %q\nwant %q", got, wantCSP)
			}
			if got := res.h.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q", got)
			}
			b := res.body
			if !strings.Contains(b, `<html lang="en">`) {
				t.Error("no lang")
			}
			if !strings.Contains(b, `<script src="`+testOrigin+`/atlassian-connect/all.js" defer></script>`) {
				t.Error("all.js is not loaded from the installation's HipChat server")
			}
			if !strings.Contains(b, `<script src="static/app.js?v=`+f.ui.version+`" defer></script>`) {
				t.Error("app.js is not loaded")
			}
			for _, s := range scriptRe.FindAllString(b, -1) {
				if !strings.Contains(s, " src=") {
					t.Errorf("inline script: %s", s)
				}
			}
			if strings.Contains(b, " style=") || strings.Contains(b, "<style") || handlerRe.MatchString(b) {
				t.Error("inline style or event handler")
			}
			if !strings.Contains(b, `data-signed-request="`+tok+`"`) {
				t.Error("the page does not carry its signed_request for the script")
			}
			for _, m := range inputRe.FindAllStringSubmatch(b, -1) {
				if !strings.Contains(b, `<label for="`+m[2]+`"`) {
					t.Errorf("input #%s has no label", m[2])
				}
			}
		})
	}

	t.Run("dialog lists enabled search commands only", func(t *testing.T) {
		res := f.do(req{method: "GET", path: "/dialog", query: f.jwt(testRoom)})
		if !strings.Contains(res.body, `<option value="hascode">/hascode</option>`) || strings.Contains(res.body, `value="echo"`) {
			t.Errorf("dialog commands wrong:\n%s", res.body)
		}
		if _, err := f.slash.SaveSettings(context.Background(), testOAuthID, slash.Settings{Disabled: map[string]bool{"hascode": true}}); err != nil {
			t.Fatal(err)
		}
		res = f.do(req{method: "GET", path: "/dialog", query: f.jwt(testRoom)})
		if strings.Contains(res.body, `<option`) || !strings.Contains(res.body, "No search command is turned on") {
			t.Errorf("dialog with hascode off:\n%s", res.body)
		}
	})

	t.Run("global install needs a room for the sidebar", func(t *testing.T) {
		g := newFixture(t, fixtureOpts{inst: func(i *addon.Installation) { i.RoomID = 0 }})
		if res := g.do(req{method: "GET", path: "/sidebar", query: g.jwt(0)}); res.code != http.StatusBadRequest {
			t.Errorf("sidebar without room = %d, want 400", res.code)
		}
		if res := g.do(req{method: "GET", path: "/configure", query: g.jwt(0)}); res.code != http.StatusOK {
			t.Errorf("configure without room = %d, want 200", res.code)
		}
		if res := g.do(req{method: "GET", path: "/sidebar", query: g.jwt(555)}); res.code != http.StatusOK {
			t.Errorf("sidebar of room 555 = %d, want 200", res.code)
		}
	})
}

func TestSidebarListsHistory(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := context.Background()
	hits := []command.Hit{{Title: "Java <script>alert(1)</script>", URL: "https://blog.example/j1"}, {Title: "J2", URL: "https://blog.example/j2"}}
	if err := f.slash.AfterSearch(ctx, f.inst, testRoom, "hascode", "java", hits); err != nil {
		t.Fatal(err)
	}
	f.advance(time.Minute)
	if err := f.slash.AfterSearch(ctx, f.inst, testRoom, "hascode", "go", nil); err != nil {
		t.Fatal(err)
	}
	res := f.do(req{method: "GET", path: "/sidebar", query: f.jwt(testRoom)})
	b := res.body
	ig, ij := strings.Index(b, `<strong class="term">go</strong>`), strings.Index(b, `<strong class="term">java</strong>`)
	if ig < 0 || ij < 0 || ig > ij {
		t.Errorf("sidebar does not list go then java:\n%s", b)
	}
	if strings.Contains(b, "<script>alert") || !strings.Contains(b, "Java &lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("hit title not escaped")
	}
	if !strings.Contains(b, `<a href="https://blog.example/j1" target="_blank" rel="noopener noreferrer">`) {
		t.Error("hit link missing")
	}
	if !strings.Contains(b, "<strong>2</strong> searches this week") {
		t.Error("week count missing")
	}
	// The user's zone from the JWT: 10:00 UTC is 11:00 in Berlin.
	if !strings.Contains(b, "25 Nov 11:00 CET") {
		t.Error("time not in the user's zone")
	}

	var got struct {
		Searches  []slash.Search
		WeekCount int
	}
	f.apiJSON("GET", "/api/history", "", http.StatusOK, &got)
	if len(got.Searches) != 2 || got.Searches[0].Term != "go" || got.WeekCount != 2 || len(got.Searches[1].Hits) != 2 {
		t.Errorf("/api/history = %+v", got)
	}
}

func TestGlanceQuery(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := context.Background()
	query := func(t *testing.T) map[string]any {
		t.Helper()
		res := f.do(req{method: "GET", path: "/glance", query: f.jwt(testRoom), origin: testOrigin})
		if res.code != http.StatusOK {
			t.Fatalf("status = %d: %s", res.code, res.body)
		}
		if ct := res.h.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(res.body), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	label := func(n string) map[string]any { return map[string]any{"type": "html", "value": n} }
	lozenge := map[string]any{"type": "lozenge", "value": map[string]any{"label": "NEW", "type": "success"}}

	steps := []struct {
		name  string
		hits  int // -1: no search before the query
		after time.Duration
		want  map[string]any
	}{
		{"nothing yet", -1, 0, map[string]any{"label": label("<b>0</b> searches this week")}},
		{"one search with results", 3, 0, map[string]any{"label": label("<b>1</b> search this week"), "status": lozenge}},
		{"a search without results", 0, 0, map[string]any{"label": label("<b>2</b> searches this week")}},
		{"results again", 1, 0, map[string]any{"label": label("<b>3</b> searches this week"), "status": lozenge}},
		{"next week", -1, 7 * 24 * time.Hour, map[string]any{"label": label("<b>0</b> searches this week")}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			f.advance(s.after)
			if s.hits >= 0 {
				hits := make([]command.Hit, s.hits)
				for i := range hits {
					hits[i] = command.Hit{Title: "t", URL: "https://blog.example/x"}
				}
				if err := f.slash.AfterSearch(ctx, f.inst, testRoom, "hascode", "java", hits); err != nil {
					t.Fatal(err)
				}
			}
			got := query(t)
			if !jsonEqual(got, s.want) {
				t.Errorf("glance = %v\nwant %v", got, s.want)
			}
		})
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestGlanceCORS(t *testing.T) {
	f := newFixture(t, fixtureOpts{inst: func(i *addon.Installation) { i.HipChatOrigin = "https://HipChat.intranet.example:443" }})
	tests := []struct {
		name, method, origin string
		token                bool
		wantCode             int
		wantACAO             string
	}{
		{"GET from the HipChat origin", "GET", testOrigin, true, 200, testOrigin},
		{"GET from another origin", "GET", "https://evil.example", true, 200, ""},
		{"GET from a lookalike origin", "GET", testOrigin + ".evil.example", true, 200, ""},
		{"GET from http on the same host", "GET", "http://hipchat.intranet.example", true, 200, ""},
		{"GET without Origin", "GET", "", true, 200, ""},
		{"preflight from the HipChat origin", "OPTIONS", testOrigin, true, 204, testOrigin},
		{"preflight from another origin", "OPTIONS", "https://evil.example", true, 204, ""},
		{"preflight without token", "OPTIONS", testOrigin, false, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := req{method: tt.method, path: "/glance", origin: tt.origin}
			if tt.token {
				q.query = f.jwt(testRoom)
			}
			res := f.do(q)
			if res.code != tt.wantCode {
				t.Fatalf("status = %d, want %d: %s", res.code, tt.wantCode, res.body)
			}
			if got := res.h.Get("Access-Control-Allow-Origin"); got != tt.wantACAO {
				t.Errorf("Access-Control-Allow-Origin = %q, want %q", got, tt.wantACAO)
			}
			if tt.wantACAO != "" && !strings.Contains(strings.Join(res.h.Values("Vary"), ","), "Origin") {
				t.Errorf("Vary = %q, want Origin", res.h.Values("Vary"))
			}
			if tt.method == "OPTIONS" && tt.wantACAO != "" && res.h.Get("Access-Control-Allow-Methods") != "GET" {
				t.Errorf("Access-Control-Allow-Methods = %q", res.h.Get("Access-Control-Allow-Methods"))
			}
			if res.h.Get("Access-Control-Allow-Credentials") != "" {
				t.Error("credentials allowed")
			}
		})
	}
}

func TestSettings(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := context.Background()

	st, err := f.slash.Settings(ctx, testOAuthID)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Disabled) != 0 || st.MaxResults != 0 || !st.Enabled("echo") {
		t.Errorf("default settings = %+v", st)
	}

	tests := []struct {
		name, body string
		wantCode   int
	}{
		{"unknown command", `{"disabled":{"rm":true},"maxResults":3}`, 400},
		{"too many results", `{"disabled":{},"maxResults":51}`, 400},
		{"negative results", `{"disabled":{},"maxResults":-1}`, 400},
		{"fractional results", `{"maxResults":2.5}`, 400},
		{"unknown field", `{"maxResults":3,"admin":true}`, 400},
		{"malformed", `{"maxResults":`, 400},
		{"trailing data", `{"maxResults":3}{}`, 400},
		{"not an object", `[]`, 400},
		{"echo off, 3 results", `{"disabled":{"echo":true,"hascode":false},"maxResults":3}`, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := f.do(req{method: "PUT", path: "/api/settings", auth: f.jwt(testRoom), accept: "application/json", body: tt.body})
			if res.code != tt.wantCode {
				t.Fatalf("status = %d %s, want %d", res.code, res.body, tt.wantCode)
			}
			if tt.wantCode == 400 {
				var e struct{ Error string }
				if json.Unmarshal([]byte(res.body), &e) != nil || e.Error == "" {
					t.Errorf("400 body = %s, want a JSON error", res.body)
				}
			}
		})
	}

	// Persisted in bbolt, normalised, and read by a fresh service on the same store.
	fresh := slash.New(slash.Deps{Commands: command.New(http.DefaultClient, "x", nil), KV: f.db.KV("ui")})
	st, err = fresh.Settings(ctx, testOAuthID)
	if err != nil {
		t.Fatal(err)
	}
	if st.MaxResults != 3 || !st.Disabled["echo"] || len(st.Disabled) != 1 || st.Enabled("echo") || !st.Enabled("hascode") {
		t.Errorf("stored settings = %+v", st)
	}
	var got slash.Settings
	f.apiJSON("GET", "/api/settings", "", http.StatusOK, &got)
	if got.MaxResults != 3 || !got.Disabled["echo"] {
		t.Errorf("GET /api/settings = %+v", got)
	}
	res := f.do(req{method: "GET", path: "/configure", query: f.jwt(testRoom)})
	if !strings.Contains(res.body, `<input type="checkbox" id="cmd-echo" name="enabled" value="echo">`) ||
		!strings.Contains(res.body, `<input type="checkbox" id="cmd-hascode" name="enabled" value="hascode" checked>`) ||
		!strings.Contains(res.body, `value="3"`) {
		t.Errorf("configure page does not show the settings:\n%s", res.body)
	}
}

func TestDialogSearchAndPost(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	f.apiJSON("PUT", "/api/settings", `{"disabled":{"echo":true},"maxResults":3}`, http.StatusOK, nil)

	var found struct {
		Command, Term string
		Total         int
		Hits          []slash.Hit
	}
	f.apiJSON("POST", "/api/search", `{"command":"hascode","term":"  java "}`, http.StatusOK, &found)
	if found.Total != 25 || len(found.Hits) != 3 || found.Term != "java" || found.Hits[0].URL != "https://blog.example/java/1" {
		t.Errorf("search = %+v", found)
	}
	if len(f.Posts()) != 0 || len(f.Glances()) != 0 {
		t.Error("a search alone posted or pushed")
	}

	for _, bad := range []string{
		`{"command":"echo","term":"java"}`,   // not a search command
		`{"command":"nope","term":"java"}`,   // unknown
		`{"command":"hascode","term":"   "}`, // empty
		`{"command":"hascode","html":"<b>"}`, // unknown field
		`{"command":"hascode","term":"` + strings.Repeat("x", 101) + `"}`,
	} {
		res := f.do(req{method: "POST", path: "/api/search", auth: f.jwt(testRoom), accept: "application/json", body: bad})
		if res.code != http.StatusBadRequest {
			t.Errorf("search %s = %d, want 400", bad, res.code)
		}
	}

	f.apiJSON("POST", "/api/post", `{"command":"hascode","term":"java"}`, http.StatusOK, nil)
	posts := f.Posts()
	if len(posts) != 1 {
		t.Fatalf("posts = %d, want 1", len(posts))
	}
	p := posts[0]
	if p.RoomID != testRoom || p.OAuthID != testOAuthID || p.N.MessageFormat != "html" {
		t.Errorf("post = %+v", p)
	}
	if n := strings.Count(p.N.Message, "<a href="); n != 3 {
		t.Errorf("posted message has %d links, want 3: %s", n, p.N.Message)
	}
	if strings.Contains(p.N.Message, "<b>\"") || strings.Contains(p.N.Message, "article 1 <b>") {
		t.Errorf("posted message not escaped: %s", p.N.Message)
	}
	gl := f.Glances()
	if len(gl) != 1 || gl[0].G.Key != glanceKey || gl[0].RoomID != testRoom || gl[0].G.Content.Status == nil {
		t.Errorf("glance pushes = %+v", gl)
	}
	h, err := f.slash.History(context.Background(), testOAuthID, testRoom)
	if err != nil || len(h) != 1 || h[0].Term != "java" || h[0].Total != 25 || len(h[0].Hits) != 3 {
		t.Errorf("history = %+v, %v", h, err)
	}

	t.Run("backend down", func(t *testing.T) {
		f.blog.Close()
		res := f.do(req{method: "POST", path: "/api/post", auth: f.jwt(testRoom), accept: "application/json", body: `{"command":"hascode","term":"go"}`})
		if res.code != http.StatusBadGateway {
			t.Errorf("post with the backend down = %d, want 502", res.code)
		}
		if len(f.Posts()) != 1 {
			t.Error("posted although the search failed")
		}
	})
}

func TestAfterSearchKeepsNewest(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := context.Background()
	for i := range 25 {
		var hits []command.Hit
		for j := range 4 {
			hits = append(hits, command.Hit{Title: fmt.Sprint("hit ", j), URL: fmt.Sprint("https://blog.example/", j)})
		}
		if i == 24 {
			hits = nil
		}
		if err := f.slash.AfterSearch(ctx, f.inst, testRoom, "hascode", "term"+string(rune('A'+i)), hits); err != nil {
			t.Fatal(err)
		}
		f.advance(time.Second)
	}
	h, err := f.slash.History(ctx, testOAuthID, testRoom)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != slash.HistoryLimit {
		t.Fatalf("history = %d searches, want %d", len(h), slash.HistoryLimit)
	}
	if h[0].Term != "termY" || h[19].Term != "termF" {
		t.Errorf("history runs %s..%s, want termY..termF", h[0].Term, h[19].Term)
	}
	for _, s := range h[1:] {
		if len(s.Hits) != slash.HitsPerSearch || s.Total != 4 {
			t.Errorf("search %s keeps %d hits of %d, want %d of 4", s.Term, len(s.Hits), s.Total, slash.HitsPerSearch)
		}
	}
	gl := f.Glances()
	if len(gl) != 25 {
		t.Fatalf("glance pushes = %d, want 25", len(gl))
	}
	last := gl[24]
	if last.G.Key != glanceKey || last.RoomID != testRoom || last.G.Content.Label.Value != "<b>25</b> searches this week" || last.G.Content.Status != nil {
		t.Errorf("last push = %+v", last)
	}
	if s := gl[23].G.Content.Status; s == nil || s.Value.Label != "NEW" || s.Value.Type != "success" {
		t.Errorf("push after a search with results has status %+v, want a NEW lozenge", s)
	}

	if err := f.slash.AfterSearch(ctx, f.inst, 999, "hascode", "x", nil); addon.KindOf(err) != addon.Invalid {
		t.Errorf("AfterSearch for a room not covered = %v, want invalid", err)
	}
}

func TestAfterSearchPushFailure(t *testing.T) {
	boom := addon.Errorf(addon.Unavailable, "hipchat answered 503")
	f := newFixture(t, fixtureOpts{push: func(context.Context, addon.Installation, int64, hipchat.Glance) error { return boom }})
	err := f.slash.AfterSearch(context.Background(), f.inst, testRoom, "hascode", "java", nil)
	if addon.KindOf(err) != addon.Unavailable {
		t.Errorf("err = %v, want the push's error", err)
	}
	if h, _ := f.slash.History(context.Background(), testOAuthID, testRoom); len(h) != 1 {
		t.Error("history not kept when the push failed")
	}
}

// TestAfterSearchReachesHipChat pushes through the real HipChat client,
// with a token from the token cache, to the fake HipChat Server.
func TestAfterSearchReachesHipChat(t *testing.T) {
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	id, secret := hc.NewClient()
	client := &hipchat.Client{HTTP: hc.Client(), Allowed: func(host string) bool { return host == "127.0.0.2" }}
	var tokens *hipchat.Tokens
	f := newFixture(t, fixtureOpts{
		origin: hc.URL(),
		inst: func(i *addon.Installation) {
			i.OAuthID, i.OAuthSecret = id, secret
			i.APIURL, i.TokenURL = hc.URL()+"/v2/", hc.URL()+"/v2/oauth/token"
		},
		push: func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error {
			return tokens.Do(ctx, inst, func(tok string) error {
				return client.UpdateGlance(ctx, inst, tok, roomID, []hipchat.Glance{g})
			})
		},
	})
	tokens = hipchat.NewTokens(client, f.db, []string{"send_notification", "view_room"}, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hits := []command.Hit{{Title: "Java 1", URL: "https://blog.example/1"}}
	if err := f.slash.AfterSearch(ctx, f.inst, testRoom, "hascode", "java", hits); err != nil {
		t.Fatal(err)
	}
	got, err := hc.WaitGlanceUpdates(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	u := got[0]
	if u.RoomID != testRoom || u.OAuthID != id || len(u.Glances) != 1 {
		t.Fatalf("glance update = %+v", u)
	}
	g := u.Glances[0]
	if g.Key != glanceKey || g.Content.Label.Value != "<b>1</b> search this week" || g.Content.Status == nil || g.Content.Status.Value.Label != "NEW" {
		t.Errorf("glance = %+v", g)
	}
	var raw map[string]any
	_ = json.Unmarshal(u.Raw, &raw)
	want := map[string]any{"glance": []any{map[string]any{"key": glanceKey, "content": map[string]any{
		"label":  map[string]any{"type": "html", "value": "<b>1</b> search this week"},
		"status": map[string]any{"type": "lozenge", "value": map[string]any{"label": "NEW", "type": "success"}},
	}}}}
	if !jsonEqual(raw, want) {
		t.Errorf("body = %s\nwant %v", u.Raw, want)
	}
}

func TestStatic(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, tt := range []struct {
		path string
		size int
	}{{"/static/icon.png", 16}, {"/static/icon@2x.png", 32}} {
		res := f.do(req{method: "GET", path: tt.path})
		if res.code != http.StatusOK || res.h.Get("Content-Type") != "image/png" {
			t.Fatalf("%s = %d %s", tt.path, res.code, res.h.Get("Content-Type"))
		}
		cfg, err := png.DecodeConfig(strings.NewReader(res.body))
		if err != nil || cfg.Width != tt.size || cfg.Height != tt.size {
			t.Errorf("%s: %dx%d, %v; want a %dpx PNG", tt.path, cfg.Width, cfg.Height, err, tt.size)
		}
	}
	res := f.do(req{method: "GET", path: "/static/app.js"})
	if res.code != http.StatusOK || !strings.Contains(res.h.Get("Content-Type"), "javascript") || !strings.Contains(res.body, "withToken") {
		t.Errorf("app.js = %d %s", res.code, res.h.Get("Content-Type"))
	}
	if strings.Contains(res.body, "innerHTML") {
		t.Error("app.js uses innerHTML")
	}
	if res := f.do(req{method: "GET", path: "/static/nope.js"}); res.code != http.StatusNotFound {
		t.Errorf("missing asset = %d, want 404", res.code)
	}
	if res := f.do(req{method: "GET", path: "/static/"}); res.code == http.StatusOK && strings.Contains(res.body, "app.js") {
		t.Error("/static/ lists its files")
	}
}
