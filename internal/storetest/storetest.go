// Package storetest is the contract test suite of a storage backend: it
// checks, through addon.Store and certmagic.Storage only, what the
// interfaces' docs promise, so that every backend (the bbolt file, a
// PostgreSQL database) runs the same cases:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Backend { ... })
//	}
//
// The suite assumes nothing the contract leaves open: the order of
// certmagic List results, what Enqueue returns for a duplicate, error
// kinds other than NotFound. It needs no clock of the backend's: where an
// age matters it uses times the backend reports (DeadLetter.At) or dates
// far from now.
package storetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hipconnect/hipconnect/internal/addon"
)

// Backend is one backend under test: its store and its certmagic storage.
type Backend struct {
	Store addon.Store
	Certs certmagic.Storage
}

// testCase is one subtest: it gets a fresh backend.
type testCase struct {
	name string
	run  func(t *testing.T, b Backend)
}

// group is a named list of cases.
type group struct {
	name  string
	cases []testCase
}

// Run runs the suite. open must return a fresh, empty backend on each call
// and register its cleanup with t.Cleanup; every case opens its own. The
// names of the subtests (group/case) are stable, so a backend may skip one
// with -skip and the names in a report keep their meaning.
func Run(t *testing.T, open func(t *testing.T) Backend) {
	t.Helper()
	for _, g := range groups() {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, open(t)) })
			}
		})
	}
}

// groups lists the suite's cases in the order they run.
func groups() []group {
	return []group{
		{"Installations", installationCases()},
		{"Tokens", tokenCases()},
		{"OutboxOrder", outboxOrderCases()},
		{"OutboxDedupe", outboxDedupeCases()},
		{"DeadLetters", deadLetterCases()},
		{"KV", kvCases()},
		{"CertStorage", certCases()},
		{"Pacing", pacingCases()},
		{"RemovalCascade", removalCases()},
	}
}

// waitLimit bounds every wait of the suite for something that should
// happen at once (a lock being granted, goroutines finishing).
const waitLimit = 10 * time.Second

// blockFor is how long a call that must block is given before the suite
// concludes that it does (it fails the case if the call returns sooner).
const blockFor = 100 * time.Millisecond

// installation returns a sample installation with the given OAuthID. Its
// times are whole seconds in UTC, which every backend keeps exactly.
func installation(oauthID string) addon.Installation {
	return addon.Installation{
		OAuthID:         oauthID,
		OAuthSecret:     "secret-of-" + oauthID,
		CapabilitiesURL: "https://hipchat.example/v2/capabilities",
		GroupID:         42,
		APIURL:          "https://hipchat.example/v2/",
		TokenURL:        "https://hipchat.example/v2/oauth/token",
		HipChatOrigin:   "https://hipchat.example",
		InstalledAt:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		UpdatedAt:       time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

// putInstallation stores installation(oauthID) and returns it.
func putInstallation(t *testing.T, s addon.Store, oauthID string) addon.Installation {
	t.Helper()
	inst := installation(oauthID)
	if err := s.PutInstallation(t.Context(), inst); err != nil {
		t.Fatalf("PutInstallation(%q): %v", oauthID, err)
	}
	return inst
}

// sameInstallation reports whether a and b are equal, times compared as
// instants.
func sameInstallation(a, b addon.Installation) bool {
	return a.OAuthID == b.OAuthID && a.OAuthSecret == b.OAuthSecret &&
		a.CapabilitiesURL == b.CapabilitiesURL && a.GroupID == b.GroupID &&
		a.RoomID == b.RoomID && a.APIURL == b.APIURL && a.TokenURL == b.TokenURL &&
		a.HipChatOrigin == b.HipChatOrigin &&
		a.InstalledAt.Equal(b.InstalledAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}

// sameToken reports whether a and b are equal, times compared as instants.
func sameToken(a, b addon.Token) bool {
	return a.AccessToken == b.AccessToken && a.Scope == b.Scope && a.ExpiresAt.Equal(b.ExpiresAt)
}

// sameJob reports whether a and b are equal, times compared as instants
// and replies by content.
func sameJob(a, b addon.Job) bool {
	return a.ID == b.ID && a.OAuthID == b.OAuthID && a.RoomID == b.RoomID &&
		a.MessageID == b.MessageID && a.MessageDate.Equal(b.MessageDate) &&
		a.Command == b.Command && a.Args == b.Args && a.From == b.From &&
		a.Received.Equal(b.Received) && sameReply(a.Reply, b.Reply) &&
		a.Attempts == b.Attempts && a.LastError == b.LastError
}

func sameReply(a, b *addon.Notification) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// job returns a sample job of oauthID for message messageID, dated date.
func job(oauthID, messageID string, date time.Time) addon.Job {
	return addon.Job{
		OAuthID:     oauthID,
		RoomID:      7,
		MessageID:   messageID,
		MessageDate: date,
		Command:     "hascode",
		Args:        "args of " + messageID,
		From:        "Ann",
		Received:    time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC),
	}
}

// msgDate is the date of the suite's messages: recent enough for no
// backend to prune it on its own, whole seconds.
func msgDate() time.Time { return time.Now().UTC().Truncate(time.Second).Add(-time.Minute) }

// enqueue enqueues j, which must be new, and returns it as stored.
func enqueue(t *testing.T, s addon.Store, j addon.Job) addon.Job {
	t.Helper()
	got, isNew, err := s.Enqueue(t.Context(), j)
	if err != nil || !isNew {
		t.Fatalf("Enqueue(%s/%q): new=%v, err=%v; want a new job", j.OAuthID, j.MessageID, isNew, err)
	}
	return got
}

// isNew enqueues j and reports whether the store took it as new.
func isNew(t *testing.T, s addon.Store, j addon.Job) bool {
	t.Helper()
	_, isNew, err := s.Enqueue(t.Context(), j)
	if err != nil {
		t.Fatalf("Enqueue(%s/%q): %v", j.OAuthID, j.MessageID, err)
	}
	return isNew
}

// pending returns every pending job.
func pending(t *testing.T, s addon.Store) []addon.Job {
	t.Helper()
	jobs, err := s.Pending(t.Context(), 0)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return jobs
}

// ids returns the IDs of jobs.
func ids(jobs []addon.Job) []uint64 {
	out := make([]uint64, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// deadIDs returns the job IDs of the stored dead letters, in their order.
func deadIDs(t *testing.T, s addon.Store) []uint64 {
	t.Helper()
	dead, err := s.DeadLetters(t.Context())
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	out := make([]uint64, 0, len(dead))
	for _, dl := range dead {
		out = append(out, dl.Job.ID)
	}
	return out
}

// deadLetter returns the dead letter of job id.
func deadLetter(t *testing.T, s addon.Store, id uint64) addon.DeadLetter {
	t.Helper()
	dead, err := s.DeadLetters(t.Context())
	if err != nil {
		t.Fatalf("DeadLetters: %v", err)
	}
	for _, dl := range dead {
		if dl.Job.ID == id {
			return dl
		}
	}
	t.Fatalf("no dead letter of job %d among %d", id, len(dead))
	return addon.DeadLetter{}
}

// wantNotFound fails t unless err is of kind NotFound.
func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !addon.IsNotFound(err) {
		t.Errorf("%s: err = %v, want NotFound", what, err)
	}
}

// keys lists the keys of kv under prefix.
func keys(t *testing.T, kv addon.KV, prefix string) []string {
	t.Helper()
	got, err := kv.List(t.Context(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return got
}

// put stores val at key in kv.
func put(t *testing.T, kv addon.KV, key, val string) {
	t.Helper()
	if err := kv.Put(t.Context(), key, []byte(val)); err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
}

// wantValue fails t unless kv holds want at key.
func wantValue(t *testing.T, kv addon.KV, key, want string) {
	t.Helper()
	got, err := kv.Get(t.Context(), key)
	if err != nil || string(got) != want {
		t.Errorf("Get(%q) = %q, %v; want %q", key, got, err, want)
	}
}

// sortedCopy returns a sorted copy of s.
func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}

// ctxWithin returns a context done after d, canceled at cleanup.
func ctxWithin(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
