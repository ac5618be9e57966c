package httpapi

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/hipconnect/hipconnect/internal/jwtauth"
)

// fakePages records which handler served a request, and the session it
// was given.
type fakePages struct {
	mu      sync.Mutex
	called  []string
	session []bool
}

func (p *fakePages) serve(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, ok := jwtauth.From(r.Context())
		p.mu.Lock()
		p.called, p.session = append(p.called, name), append(p.session, ok)
		p.mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	}
}

func (p *fakePages) last() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.called) == 0 {
		return "", false
	}
	return p.called[len(p.called)-1], p.session[len(p.session)-1]
}

func (p *fakePages) Glance(w http.ResponseWriter, r *http.Request) { p.serve("Glance")(w, r) }
func (p *fakePages) GlancePreflight(w http.ResponseWriter, r *http.Request) {
	p.serve("GlancePreflight")(w, r)
}
func (p *fakePages) Sidebar(w http.ResponseWriter, r *http.Request)     { p.serve("Sidebar")(w, r) }
func (p *fakePages) Dialog(w http.ResponseWriter, r *http.Request)      { p.serve("Dialog")(w, r) }
func (p *fakePages) Configure(w http.ResponseWriter, r *http.Request)   { p.serve("Configure")(w, r) }
func (p *fakePages) Static(w http.ResponseWriter, r *http.Request)      { p.serve("Static")(w, r) }
func (p *fakePages) GetSettings(w http.ResponseWriter, r *http.Request) { p.serve("GetSettings")(w, r) }
func (p *fakePages) PutSettings(w http.ResponseWriter, r *http.Request) { p.serve("PutSettings")(w, r) }
func (p *fakePages) Search(w http.ResponseWriter, r *http.Request)      { p.serve("Search")(w, r) }
func (p *fakePages) Post(w http.ResponseWriter, r *http.Request)        { p.serve("Post")(w, r) }
func (p *fakePages) History(w http.ResponseWriter, r *http.Request)     { p.serve("History")(w, r) }
func (p *fakePages) ErrorPage(w http.ResponseWriter, _ *http.Request, code int, msg string) {
	p.mu.Lock()
	p.called, p.session = append(p.called, "ErrorPage"), append(p.session, false)
	p.mu.Unlock()
	w.WriteHeader(code)
}

// TestPageRoutes: every UI route reaches its handler behind the JWT
// middleware (signed_request for pages and the glance, the Authorization
// header only for the API), a refused JWT is rendered by ErrorPage, and
// the static files need none.
func TestPageRoutes(t *testing.T) {
	pages := &fakePages{}
	e := newTestEnv(t, envOptions{pages: pages})
	for _, tt := range []struct {
		method, path, handler string
		header                bool // JWT in the Authorization header, else signed_request
	}{
		{"GET", "/glance", "Glance", false},
		{"OPTIONS", "/glance", "GlancePreflight", false},
		{"GET", "/sidebar", "Sidebar", false},
		{"GET", "/dialog", "Dialog", false},
		{"GET", "/configure", "Configure", false},
		{"GET", "/api/settings", "GetSettings", true},
		{"PUT", "/api/settings", "PutSettings", true},
		{"POST", "/api/search", "Search", true},
		{"POST", "/api/post", "Post", true},
		{"GET", "/api/history", "History", true},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			good := httptest.NewRequest(tt.method, "https://addon.example"+tt.path, nil)
			bad := httptest.NewRequest(tt.method, "https://addon.example"+tt.path, nil)
			if tt.header {
				good.Header.Set("Authorization", "JWT "+e.tok)
				bad.URL.RawQuery = "signed_request=" + e.tok // the API refuses it there
			} else {
				good.URL.RawQuery = "signed_request=" + e.tok
				bad.URL.RawQuery = "signed_request=" + e.tok + "x"
			}
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, good)
			if name, withSession := pages.last(); w.Code != http.StatusTeapot || name != tt.handler || !withSession {
				t.Errorf("valid JWT: %d from %s (session %v), want %s with a session", w.Code, name, withSession, tt.handler)
			}
			w = httptest.NewRecorder()
			e.h.ServeHTTP(w, bad)
			if name, _ := pages.last(); w.Code != http.StatusUnauthorized || name != "ErrorPage" {
				t.Errorf("refused JWT: %d from %s, want 401 from ErrorPage", w.Code, name)
			}
		})
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, httptest.NewRequest("GET", "https://addon.example/static/app.js", nil))
	if name, _ := pages.last(); w.Code != http.StatusTeapot || name != "Static" {
		t.Errorf("static: %d from %s, want Static without a JWT", w.Code, name)
	}
}
