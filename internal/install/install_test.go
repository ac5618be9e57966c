package install

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/store"
)

// fakeHipChat answers as HipChat would for the server at origin: its
// capabilities document, a token while the credentials are accepted,
// installable_url lookups.
type fakeHipChat struct {
	origin   string
	tokenErr error             // what RequestToken fails with; nil: a token
	capsErr  error             // what Capabilities fails with
	owners   map[string]string // installable_url -> oauthId
	tokens   int               // RequestToken calls
}

func (f *fakeHipChat) Capabilities(_ context.Context, u string) (hipchat.Capabilities, error) {
	if f.capsErr != nil {
		return hipchat.Capabilities{}, f.capsErr
	}
	return hipchat.Capabilities{APIURL: f.origin + "/v2/", TokenURL: f.origin + "/v2/oauth/token", Self: u, Origin: f.origin}, nil
}

func (f *fakeHipChat) RequestToken(_ context.Context, inst addon.Installation, _ []string) (addon.Token, error) {
	f.tokens++
	if f.tokenErr != nil {
		return addon.Token{}, f.tokenErr
	}
	return addon.Token{AccessToken: "tok-" + inst.OAuthID, ExpiresAt: time.Now().Add(time.Hour)}, nil
}

func (f *fakeHipChat) InstallableInfo(_ context.Context, u string) (string, error) {
	id, ok := f.owners[u]
	if !ok {
		return "", addon.Errorf(addon.Unavailable, "no such installable")
	}
	return id, nil
}

func newService(t *testing.T) (*Service, *fakeHipChat, *store.DB, *[]string) {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "hipconnect.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	hc := &fakeHipChat{origin: "https://hipchat.example", owners: map[string]string{}}
	var removed []string
	s := &Service{Store: db, HipChat: hc, Scopes: []string{"send_notification"}, AddonName: "Blog Search",
		Removed: func(id string) { removed = append(removed, id) }}
	return s, hc, db, &removed
}

var caps = "https://hipchat.example/v2/capabilities"

func TestInstall(t *testing.T) {
	ctx := context.Background()
	s, _, db, _ := newService(t)
	inst, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1, RoomID: 7})
	if err != nil {
		t.Fatal(err)
	}
	if inst.APIURL != "https://hipchat.example/v2/" || inst.HipChatOrigin != "https://hipchat.example" {
		t.Errorf("installation = %+v", inst)
	}
	if tok, err := db.Token(ctx, "i1"); err != nil || tok.AccessToken != "tok-i1" {
		t.Errorf("token cached = %+v %v", tok, err)
	}
	jobs, _ := db.Pending(ctx, 0)
	if len(jobs) != 1 || jobs[0].Reply == nil || jobs[0].RoomID != 7 ||
		jobs[0].Reply.Message != "The Blog Search add-on has been installed in this room" {
		t.Errorf("greeting = %+v", jobs)
	}
}

func TestInstallRefused(t *testing.T) {
	ctx := context.Background()
	denied := addon.Errorf(addon.Forbidden, "host not allowed")
	for _, tt := range []struct {
		name string
		req  Request
		hc   func(*fakeHipChat)
		kind string
	}{
		{"no secret", Request{OAuthID: "i1", CapabilitiesURL: caps}, nil, addon.Invalid},
		{"negative room", Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, RoomID: -1}, nil, addon.Invalid},
		{"capabilities refused", Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps},
			func(f *fakeHipChat) { f.capsErr = denied }, addon.Forbidden},
		{"credentials refused", Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps},
			func(f *fakeHipChat) { f.tokenErr = addon.Wrap(addon.Unauthorized, hipchat.ErrInvalidClient, "refused") }, addon.Unauthorized},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, hc, db, _ := newService(t)
			if tt.hc != nil {
				tt.hc(hc)
			}
			_, err := s.Install(ctx, tt.req)
			if addon.KindOf(err) != tt.kind {
				t.Errorf("err = %v (kind %s), want kind %s", err, addon.KindOf(err), tt.kind)
			}
			if all, _ := db.Installations(ctx); len(all) != 0 {
				t.Errorf("stored after a refusal: %+v", all)
			}
			if jobs, _ := db.Pending(ctx, 0); len(jobs) != 0 {
				t.Errorf("greeting queued after a refusal: %+v", jobs)
			}
		})
	}
}

// TestReinstall: a re-install may renew the secret but not move the
// installation to another server, group or room.
func TestReinstall(t *testing.T) {
	ctx := context.Background()
	s, _, db, _ := newService(t)
	first, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "old", CapabilitiesURL: caps, GroupID: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []Request{
		{OAuthID: "i1", OAuthSecret: "evil", CapabilitiesURL: caps, GroupID: 2},
		{OAuthID: "i1", OAuthSecret: "evil", CapabilitiesURL: caps, GroupID: 1, RoomID: 5},
		{OAuthID: "i1", OAuthSecret: "evil", CapabilitiesURL: "https://other.example/v2/capabilities", GroupID: 1},
	} {
		if _, err := s.Install(ctx, req); addon.KindOf(err) != addon.Conflict {
			t.Errorf("re-install %+v: %v, want Conflict", req, err)
		}
	}
	time.Sleep(time.Millisecond) // UpdatedAt must move
	again, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "new", CapabilitiesURL: caps, GroupID: 1})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := db.Installation(ctx, "i1")
	if got.OAuthSecret != "new" || !got.InstalledAt.Equal(first.InstalledAt) || !again.UpdatedAt.After(first.UpdatedAt) {
		t.Errorf("after re-install: %+v (first %+v)", got, first)
	}
}

func TestUpdate(t *testing.T) {
	ctx := context.Background()
	s, hc, db, _ := newService(t)
	defer func() {
		if hc.tokens != 2 { // the install's proof and the update's
			t.Errorf("%d token requests, want 2: an update proves the stored credentials", hc.tokens)
		}
	}()
	if _, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "i1", "https://other.example/v2/capabilities"); addon.KindOf(err) != addon.Forbidden {
		t.Errorf("update from another server: %v, want Forbidden", err)
	}
	if _, err := s.Update(ctx, "nobody", caps); !addon.IsNotFound(err) {
		t.Errorf("update of an unknown installation: %v, want NotFound", err)
	}
	inst, err := s.Update(ctx, "i1", caps+"?v=2")
	if err != nil || inst.CapabilitiesURL != caps+"?v=2" {
		t.Fatalf("update = %+v %v", inst, err)
	}
	if got, _ := db.Installation(ctx, "i1"); got.CapabilitiesURL != caps+"?v=2" {
		t.Errorf("stored after update: %+v", got)
	}
}

// TestUninstall: only HipChat's refusal of the credentials removes an
// installation; credentials that still work or an error asking record the
// request for re-checking, and a second request keeps the first's record.
func TestUninstall(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		err  error
		want Outcome
	}{
		{"credentials still work", nil, Requested},
		{"hipchat down", addon.Errorf(addon.Unavailable, "502"), Requested},
		{"credentials refused", fmt.Errorf("token: %w", hipchat.ErrInvalidClient), Removed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, hc, db, removed := newService(t)
			inst, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1})
			if err != nil {
				t.Fatal(err)
			}
			hc.tokenErr = tt.err
			if out, err := s.Uninstall(ctx, inst); out != tt.want || err != nil {
				t.Fatalf("Uninstall = %q, %v; want %q", out, err, tt.want)
			}
			_, lookErr := db.Installation(ctx, "i1")
			if gone := addon.IsNotFound(lookErr); gone != (tt.want == Removed) {
				t.Errorf("removed = %v, want %v", gone, tt.want == Removed)
			}
			if (len(*removed) == 1) != (tt.want == Removed) {
				t.Errorf("Removed told %v", *removed)
			}
			pending := mustPending(t, s)
			if tt.want == Removed {
				if len(pending) != 0 {
					t.Errorf("pending after removal: %+v", pending)
				}
				if out, err := s.Uninstall(ctx, inst); out != Absent || err != nil {
					t.Errorf("second uninstall = %q, %v; want absent", out, err)
				}
				return
			}
			if len(pending) != 1 || pending[0].OAuthID != "i1" || pending[0].Checks != 0 || pending[0].LastError == "" {
				t.Fatalf("pending = %+v", pending)
			}
			if _, err := s.Uninstall(ctx, inst); err != nil {
				t.Fatal(err)
			}
			if again := mustPending(t, s); len(again) != 1 || !again[0].RequestedAt.Equal(pending[0].RequestedAt) {
				t.Errorf("a second request moved the record: %+v, was %+v", again, pending)
			}
		})
	}
}

func mustPending(t *testing.T, s *Service) []PendingUninstall {
	t.Helper()
	p, err := s.PendingUninstalls(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRecheck walks a requested uninstall through its schedule on a fake
// clock: nothing is asked before a check is due, nothing removed while the
// credentials work, a HipChat that does not answer uses no step, and the
// installation goes at the first check after HipChat refuses them.
func TestRecheck(t *testing.T) {
	ctx := context.Background()
	s, hc, db, _ := newService(t)
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	s.Rechecks = []time.Duration{10 * time.Second, time.Minute, time.Hour}
	inst, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Uninstall(ctx, inst); err != nil {
		t.Fatal(err)
	}
	// step moves the clock on by d and re-checks; Checks is -1 when no
	// request is pending any more.
	step := func(d time.Duration, wantRemoved int) PendingUninstall {
		t.Helper()
		now = now.Add(d)
		if n, err := s.Recheck(ctx); err != nil || n != wantRemoved {
			t.Fatalf("Recheck at +%v = %d, %v; want %d removed", d, n, err, wantRemoved)
		}
		if p := mustPending(t, s); len(p) == 1 {
			return p[0]
		}
		return PendingUninstall{Checks: -1}
	}
	if p := step(9*time.Second, 0); p.Checks != 0 || hc.tokens != 2 {
		t.Fatalf("before due: %+v, %d token requests", p, hc.tokens)
	}
	if p := step(time.Second, 0); p.Checks != 1 || !p.Next.Equal(now.Add(50*time.Second)) {
		t.Fatalf("first re-check: %+v", p)
	}
	hc.tokenErr = addon.Errorf(addon.Unavailable, "502")
	if p := step(50*time.Second, 0); p.Checks != 1 || !p.Next.Equal(now.Add(time.Minute)) {
		t.Fatalf("unanswered re-check: %+v", p)
	}
	hc.tokenErr = hipchat.ErrInvalidClient
	step(59*time.Second, 0)
	if p := step(time.Second, 1); p.Checks != -1 {
		t.Fatalf("after revoke: %+v", p)
	}
	if _, err := db.Installation(ctx, "i1"); !addon.IsNotFound(err) {
		t.Errorf("installation after confirmed uninstall: %v", err)
	}
}

// TestRecheckGivesUp: credentials that work at every step keep the
// installation, and the request is dropped after the last step.
func TestRecheckGivesUp(t *testing.T) {
	ctx := context.Background()
	s, _, db, _ := newService(t)
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { return now }
	s.Rechecks = []time.Duration{time.Second, 2 * time.Second}
	inst, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Uninstall(ctx, inst); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		now = now.Add(time.Second)
		if n, err := s.Recheck(ctx); n != 0 || err != nil {
			t.Fatalf("Recheck %d = %d, %v", i, n, err)
		}
	}
	if p := mustPending(t, s); len(p) != 0 {
		t.Errorf("pending after the last step: %+v", p)
	}
	if _, err := db.Installation(ctx, "i1"); err != nil {
		t.Errorf("installation kept: %v", err)
	}
}

func TestUninstallFrom(t *testing.T) {
	ctx := context.Background()
	s, hc, db, _ := newService(t)
	if _, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1}); err != nil {
		t.Fatal(err)
	}
	hc.tokenErr = hipchat.ErrInvalidClient
	hc.owners["https://other.example/installable/1"] = "i1"
	hc.owners["https://hipchat.example/installable/2"] = "nobody"
	hc.owners["https://hipchat.example/installable/1"] = "i1"
	if _, err := s.UninstallFrom(ctx, "https://other.example/installable/1"); addon.KindOf(err) != addon.Forbidden {
		t.Errorf("installable_url on another server: %v, want Forbidden", err)
	}
	if out, err := s.UninstallFrom(ctx, "https://hipchat.example/installable/2"); out != Absent || err != nil {
		t.Errorf("unknown installation: %q, %v; want absent", out, err)
	}
	if out, err := s.UninstallFrom(ctx, "https://hipchat.example/installable/1"); out != Removed || err != nil {
		t.Fatalf("UninstallFrom = %q, %v", out, err)
	}
	if _, err := db.Installation(ctx, "i1"); !addon.IsNotFound(err) {
		t.Errorf("after UninstallFrom: %v", err)
	}
}

// TestRemove: the operator's removal needs no HipChat, removes the
// installation's key/value data with it, and is NotFound the second time.
func TestRemove(t *testing.T) {
	ctx := context.Background()
	s, hc, db, removed := newService(t)
	if _, err := s.Install(ctx, Request{OAuthID: "i1", OAuthSecret: "s", CapabilitiesURL: caps, GroupID: 1}); err != nil {
		t.Fatal(err)
	}
	if err := db.KV("ui").Put(ctx, addon.KeyPrefix("i1")+"settings", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	calls := hc.tokens
	offline := &Service{Store: db} // as the CLI builds it
	if err := offline.Remove(ctx, "i1"); err != nil {
		t.Fatal(err)
	}
	if hc.tokens != calls || len(*removed) != 0 {
		t.Errorf("Remove asked HipChat (%d calls) or told another service (%v)", hc.tokens-calls, *removed)
	}
	if _, err := db.KV("ui").Get(ctx, addon.KeyPrefix("i1")+"settings"); !addon.IsNotFound(err) {
		t.Errorf("settings after Remove: %v", err)
	}
	if err := offline.Remove(ctx, "i1"); !addon.IsNotFound(err) {
		t.Errorf("second Remove = %v, want NotFound", err)
	}
}
