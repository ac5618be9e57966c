package slash

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/store"
)

const (
	testOAuthID = "cba74fbc-1b26-407e-811d-b9e377e4c440"
	testRoom    = int64(100)
	glanceKey   = "blogsearch-glance"
)

// pushed is one Deps.PushGlance call.
type pushed struct {
	OAuthID string
	RoomID  int64
	G       hipchat.Glance
}

// fixture is a Service on a real bbolt store with one room installation,
// a fake blog answering 25 hits on loopback, a fixed clock, and a record
// of the glance pushes.
type fixture struct {
	t    testing.TB
	kv   addon.KV
	sv   *Service
	inst addon.Installation
	blog *httptest.Server

	mu      sync.Mutex
	now     time.Time
	glances []pushed
}

type fixtureOpts struct {
	push func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error
}

func newFixture(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{t: t, now: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	db, err := store.Open(filepath.Join(t.TempDir(), "db"), store.Options{Now: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.blog = httptest.NewUnstartedServer(http.HandlerFunc(serveBlog))
	_ = f.blog.Listener.Close()
	f.blog.Listener = ln
	f.blog.Start()
	t.Cleanup(f.blog.Close)
	runner := command.New(&http.Client{Timeout: 5 * time.Second}, "Blog Search", []command.Spec{
		{Name: "hascode", Kind: command.KindSearch, SearchURL: f.blog.URL + "/search?q={term}", ResultsPath: "results",
			TitleField: "title", URLField: "url", MaxResults: 5, Timeout: 5 * time.Second},
		{Name: "echo", Kind: command.KindEcho},
	})
	f.inst = addon.Installation{OAuthID: testOAuthID, GroupID: 1, RoomID: testRoom, HipChatOrigin: "https://hipchat.example"}
	if err := db.PutInstallation(context.Background(), f.inst); err != nil {
		t.Fatal(err)
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
	f.sv = New(Deps{Commands: runner, KV: f.kv, CommandNames: []string{"hascode", "echo"},
		PushGlance: push, GlanceKey: glanceKey, Now: f.clock})
	return f
}

// serveBlog answers /search?q=term with 25 results.
func serveBlog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query().Get("q")
	type hit struct {
		Title string `json:"title"`
		URL   string `json:"url"`
	}
	res := []hit{}
	for i := 1; i <= 25; i++ {
		res = append(res, hit{Title: fmt.Sprintf("%s article %d <b>", q, i), URL: fmt.Sprintf("https://blog.example/%s/%d", q, i)})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"results": res})
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

func (f *fixture) Glances() []pushed {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]pushed(nil), f.glances...)
}
