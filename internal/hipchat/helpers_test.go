package hipchat_test

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// memStore is an in-memory addon.Store: installations and tokens in maps.
// The embedded nil Store stands for the methods this package never calls
// (jobs): calling one panics, and the fake keeps up with the interface.
type memStore struct {
	addon.Store
	mu     sync.Mutex
	insts  map[string]addon.Installation
	tokens map[string]addon.Token
}

var _ addon.Store = (*memStore)(nil)

func newMemStore(insts ...addon.Installation) *memStore {
	s := &memStore{insts: map[string]addon.Installation{}, tokens: map[string]addon.Token{}}
	for _, i := range insts {
		s.insts[i.OAuthID] = i
	}
	return s
}

func (s *memStore) PutInstallation(_ context.Context, inst addon.Installation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.insts[inst.OAuthID] = inst
	return nil
}

func (s *memStore) Installation(_ context.Context, oauthID string) (addon.Installation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.insts[oauthID]
	if !ok {
		return addon.Installation{}, addon.Errorf(addon.NotFound, "no installation %q", oauthID)
	}
	return i, nil
}

func (s *memStore) Installations(context.Context) ([]addon.Installation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []addon.Installation
	for _, i := range s.insts {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].OAuthID < out[b].OAuthID })
	return out, nil
}

func (s *memStore) DeleteInstallation(_ context.Context, oauthID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.insts[oauthID]; !ok {
		return addon.Errorf(addon.NotFound, "no installation %q", oauthID)
	}
	delete(s.insts, oauthID)
	delete(s.tokens, oauthID)
	return nil
}

func (s *memStore) PutToken(_ context.Context, oauthID string, t addon.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[oauthID] = t
	return nil
}

func (s *memStore) Token(_ context.Context, oauthID string) (addon.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[oauthID]
	if !ok {
		return addon.Token{}, addon.Errorf(addon.NotFound, "no token for %q", oauthID)
	}
	return t, nil
}

func (s *memStore) DeleteToken(_ context.Context, oauthID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.tokens[oauthID]; !ok {
		return addon.Errorf(addon.NotFound, "no token for %q", oauthID)
	}
	delete(s.tokens, oauthID)
	return nil
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

// allow returns an allowlist of exactly hosts.
func allow(hosts ...string) func(string) bool {
	return func(h string) bool {
		for _, a := range hosts {
			if h == a {
				return true
			}
		}
		return false
	}
}

// env is a fake HipChat on 127.0.0.2, a client allowed to reach only that
// address, and one installation registered with the fake.
type env struct {
	hc    *hipchattest.Server
	c     *hipchat.Client
	clock *clock
	inst  addon.Installation
}

func newEnv(t *testing.T) *env {
	t.Helper()
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	clk := &clock{t: t0}
	id, secret := hc.NewClient()
	return &env{
		hc:    hc,
		c:     &hipchat.Client{HTTP: hc.Client(), Allowed: allow("127.0.0.2"), UserAgent: "hipconnect-test", Now: clk.Now},
		clock: clk,
		inst: addon.Installation{
			OAuthID:         id,
			OAuthSecret:     secret,
			CapabilitiesURL: hc.CapabilitiesURL(),
			GroupID:         1,
			RoomID:          100,
			APIURL:          hc.URL() + "/v2/",
			TokenURL:        hc.URL() + "/v2/oauth/token",
		},
	}
}

// token gets a real token for e.inst from the fake.
func (e *env) token(t *testing.T) string {
	t.Helper()
	tok, err := e.c.RequestToken(context.Background(), e.inst, []string{"send_notification", "view_room"})
	if err != nil {
		t.Fatalf("RequestToken: %v", err)
	}
	return tok.AccessToken
}

// wantKind fails unless err is of kind want and, if msg is not empty, its
// client message contains msg.
func wantKind(t *testing.T, err error, want, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil, want kind %s", want)
	}
	if got := addon.KindOf(err); got != want {
		t.Fatalf("kind = %s, want %s (err: %v)", got, want, err)
	}
	if msg != "" && !strings.Contains(addon.MessageOf(err), msg) {
		t.Fatalf("message = %q, want it to contain %q", addon.MessageOf(err), msg)
	}
	if !strings.HasPrefix(err.Error(), "hipchat: ") {
		t.Errorf("error %q lacks the hipchat: prefix", err)
	}
}

// mustNotLeak fails if err's text contains any of secrets.
func mustNotLeak(t *testing.T, err error, secrets ...string) {
	t.Helper()
	if err == nil {
		return
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains a secret or token", err)
		}
	}
}

// countPath counts requests to path in the fake's log.
func countPath(hc *hipchattest.Server, method, path string) int {
	n := 0
	for _, r := range hc.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}
