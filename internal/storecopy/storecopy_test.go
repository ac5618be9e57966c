package storecopy

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/pgstore"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
	"github.com/hipconnect/hipconnect/internal/seal"
	"github.com/hipconnect/hipconnect/internal/store"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// namespaces are the key/value namespaces the tests copy (the daemon's).
var namespaces = []string{"ui", install.PendingNamespace}

// newKey returns a random secrets key.
func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, store.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// target is a store under test with a way to look at its secrets as
// stored: raw returns what the backend keeps at rest (the file's bytes,
// the secret columns' text).
type target struct {
	Store
	raw func(t *testing.T) []byte
}

// newBolt opens a new bbolt store with its own key, closed at t's cleanup.
func newBolt(t *testing.T, maxPending int) target {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	db, err := store.Open(path, store.Options{Key: newKey(t), MaxPendingPerInstallation: maxPending})
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return target{Store: db, raw: func(t *testing.T) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}}
}

// newPG opens a store in a new PostgreSQL database with its own key,
// closed at t's cleanup. pgtest skips t without PostgreSQL.
func newPG(t *testing.T, maxPending int) target {
	t.Helper()
	dsn := pgtest.Start(t)
	db, err := pgstore.Open(t.Context(), pgstore.Options{DSN: dsn, Key: newKey(t), MaxPendingPerInstallation: maxPending})
	if err != nil {
		t.Fatalf("pgstore.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return target{Store: db, raw: func(t *testing.T) []byte {
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.WithoutCancel(t.Context()))
		var out []byte
		for _, q := range []string{
			"SELECT oauth_secret FROM installations",
			"SELECT access_token FROM tokens",
			"SELECT convert_from(value, 'UTF8') FROM kv WHERE namespace = 'certmagic'",
		} {
			rows, err := conn.Query(t.Context(), q)
			if err != nil {
				t.Fatal(err)
			}
			texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range texts {
				out = append(append(out, s...), '\n')
			}
		}
		return out
	}}
}

// opener opens a new store with the given bound on pending jobs.
type opener func(t *testing.T, maxPending int) target

// backends are the targets the tests copy into from a bbolt store.
var backends = []struct {
	name string
	open opener
}{
	{"bolt", newBolt},
	{"postgres", newPG},
}

// eachBackend runs f as a subtest of t for each of backends.
func eachBackend(t *testing.T, f func(t *testing.T, open opener)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) { f(t, be.open) })
	}
}

// newSourceA opens a new bbolt store holding the installation "a" only.
func newSourceA(t *testing.T, maxPending int) target {
	t.Helper()
	src := newBolt(t, maxPending)
	if err := src.PutInstallation(t.Context(), addon.Installation{OAuthID: "a"}); err != nil {
		t.Fatal(err)
	}
	return src
}

// enqueueA enqueues into s a job of room 1 of "a" for the message m.
func enqueueA(t *testing.T, s Store, m string) addon.Job {
	t.Helper()
	j, _, err := s.Enqueue(t.Context(), addon.Job{OAuthID: "a", RoomID: 1, MessageID: m, Command: "c"})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// enqueueNew enqueues j into s, failing t unless j is new there.
func enqueueNew(t *testing.T, s Store, j addon.Job) addon.Job {
	t.Helper()
	nj, isNew, err := s.Enqueue(t.Context(), j)
	if err != nil || !isNew {
		t.Fatalf("Enqueue(%s/%s): new=%v, %v", j.OAuthID, j.MessageID, isNew, err)
	}
	return nj
}

// The fixture's secrets: none may be found at rest in either store.
const (
	secretA   = "oauth-secret-of-a-7f3c9e"
	secretB   = "oauth-secret-of-b-19d2aa"
	secretInt = "webhook-secret-of-integration-5b71"
	tokenA    = "access-token-of-a-e04b1f"
	tokenB    = "access-token-of-b-c8a344"
	certKey   = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIPrivateKeyBytesOfTheFixture0000\n-----END EC PRIVATE KEY-----\n"
)

func secrets() []string { return []string{secretA, secretB, secretInt, tokenA, tokenB, certKey} }

// base is the fixture's clock: times to the microsecond, which both stores
// keep.
var base = time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.UTC)

// fixtureCerts are certmagic's keys in the fixture.
var fixtureCerts = map[string][]byte{
	"certificates/acme-v02.api.letsencrypt.org-directory/hip.example.com/hip.example.com.crt": []byte(
		"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUFixtureCertificate==\n-----END CERTIFICATE-----\n"),
	"certificates/acme-v02.api.letsencrypt.org-directory/hip.example.com/hip.example.com.key":  []byte(certKey),
	"certificates/acme-v02.api.letsencrypt.org-directory/hip.example.com/hip.example.com.json": []byte(`{"sans":["hip.example.com"]}`),
	"acme/acme-v02.api.letsencrypt.org-directory/users/ops@example.com/ops.json":               []byte(`{"status":"valid"}`),
}

// kvEntries are the fixture's key/value entries: namespace -> key -> value.
var kvEntries = map[string]map[string][]byte{
	"ui": {
		"settings":                             []byte(`{"theme":"dark"}`),
		addon.KeyPrefix("inst-a") + "room/1":   []byte(`{"commands":["hascode"]}`),
		addon.KeyPrefix("inst-b") + "settings": {0, 1, 2, 0xff}, // not text
	},
	install.PendingNamespace: {
		addon.KeyPrefix("inst-b") + "requested": []byte(base.Format(time.RFC3339Nano)),
	},
}

// want is what the fixture's copy reports.
var want = Report{Installations: 3, Tokens: 2, Jobs: 6, DeadLetters: 2, KV: 4, PaceWindows: 3, CertFiles: 4}

// fill puts the fixture into s: installations (one an integration, with
// no token), tokens, pending jobs over two rooms with attempts recorded
// and a greeting without a message id, dead letters, key/value entries in
// two namespaces (and one not copied), pacing windows and certmagic files.
func fill(t *testing.T, s Store) {
	t.Helper()
	ctx := t.Context()
	insts := []addon.Installation{
		{OAuthID: "inst-a", OAuthSecret: secretA, CapabilitiesURL: "https://hipchat.example.com/v2/capabilities",
			GroupID: 7, APIURL: "https://hipchat.example.com/v2/", TokenURL: "https://hipchat.example.com/v2/oauth/token",
			HipChatOrigin: "https://hipchat.example.com", InstalledAt: base, UpdatedAt: base.Add(time.Hour)},
		{OAuthID: "inst-b", OAuthSecret: secretB, CapabilitiesURL: "https://hipchat.example.com/v2/capabilities",
			GroupID: 7, RoomID: 20, APIURL: "https://hipchat.example.com/v2/", TokenURL: "https://hipchat.example.com/v2/oauth/token",
			HipChatOrigin: "https://hipchat.example.com", InstalledAt: base.Add(time.Minute), UpdatedAt: base.Add(time.Minute)},
		{OAuthID: "integ", OAuthSecret: secretInt, GroupID: 7, RoomID: 30, Integration: "deploys",
			InstalledAt: base, UpdatedAt: base},
	}
	for _, inst := range insts {
		if err := s.PutInstallation(ctx, inst); err != nil {
			t.Fatal(err)
		}
	}
	for id, tok := range map[string]addon.Token{
		"inst-a": {AccessToken: tokenA, Scope: "send_notification", ExpiresAt: base.Add(time.Hour)},
		"inst-b": {AccessToken: tokenB, Scope: "send_notification view_room", ExpiresAt: base.Add(2 * time.Hour)},
	} {
		if err := s.PutToken(ctx, id, tok); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	job := func(oauthID string, room int64, messageID string) addon.Job {
		n++
		j := addon.Job{OAuthID: oauthID, RoomID: room, MessageID: messageID, Command: "hascode",
			Args: "arg " + messageID, From: "Ada", Received: base.Add(time.Duration(n) * time.Second)}
		if messageID != "" {
			j.MessageDate = base.Add(time.Duration(n)*time.Second - time.Millisecond)
		}
		return j
	}
	// Two rooms of inst-a, interleaved, with dead letters among them.
	enqueueNew(t, s, job("inst-a", 1, "m1"))
	a2 := enqueueNew(t, s, job("inst-a", 2, "m2"))
	d1 := enqueueNew(t, s, job("inst-a", 1, "dead-1"))
	enqueueNew(t, s, job("inst-a", 1, "m3"))
	greeting := job("inst-a", 2, "")
	greeting.Reply = &addon.Notification{Message: "hipconnect is installed in this room", MessageFormat: "text", Color: "green"}
	enqueueNew(t, s, greeting)
	enqueueNew(t, s, job("inst-a", 2, "m4"))
	d2 := enqueueNew(t, s, job("inst-b", 20, "dead-2"))
	b1 := job("inst-b", 20, "b1")
	b1.ResponseOnly = true
	enqueueNew(t, s, b1)
	for _, a := range []struct {
		id     uint64
		reason string
	}{{a2.ID, "HipChat: 502"}, {a2.ID, "HipChat: 503"}, {d1.ID, "HipChat: 404 room not found"}} {
		if err := s.RecordAttempt(ctx, a.id, a.reason); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Bury(ctx, d1.ID, "room 1 is gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.Bury(ctx, d2.ID, "the token was refused"); err != nil {
		t.Fatal(err)
	}
	for ns, entries := range kvEntries {
		for k, v := range entries {
			if err := s.KV(ns).Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.KV("not-copied").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePacing(ctx, []addon.PaceWindow{
		{OAuthID: "inst-a", Room: 0, Times: []time.Time{base, base.Add(time.Second)}},
		{OAuthID: "inst-a", Room: 1, Times: []time.Time{base.Add(2 * time.Second)}},
		{OAuthID: "inst-b", Room: 20, Times: []time.Time{base, base.Add(3 * time.Second), base.Add(4 * time.Second)}},
	}); err != nil {
		t.Fatal(err)
	}
	for k, v := range fixtureCerts {
		if err := s.CertStorage().Store(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
}

// norm makes a time comparable across the stores (same instant, UTC, no
// monotonic reading).
func norm(tm time.Time) time.Time {
	if tm.IsZero() {
		return time.Time{}
	}
	return time.Unix(0, tm.UnixNano()).UTC()
}

func normInst(i addon.Installation) addon.Installation {
	i.InstalledAt, i.UpdatedAt = norm(i.InstalledAt), norm(i.UpdatedAt)
	return i
}

// normJob is j without its ID (the target gives its own), times normalized.
func normJob(j addon.Job) addon.Job {
	j.ID = 0
	j.MessageDate, j.Received = norm(j.MessageDate), norm(j.Received)
	return j
}

// must returns v, failing t if err is set: must(s.Pending(ctx, 0))(t).
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// check verifies that dst holds a copy of what src (filled by fill) holds,
// copied by one Copy that reported rep and ran between start and end.
func check(t *testing.T, src Store, dst target, rep Report, start, end time.Time) {
	t.Helper()
	ctx := t.Context()
	if rep != want {
		t.Errorf("Report = %+v; want %+v", rep, want)
	}

	// Installations, their secrets in plaintext through the contract.
	srcInsts := must(src.Installations(ctx))(t)
	dstInsts := must(dst.Installations(ctx))(t)
	if len(dstInsts) != len(srcInsts) {
		t.Fatalf("target has %d installations; want %d", len(dstInsts), len(srcInsts))
	}
	for i := range srcInsts {
		if a, b := normInst(srcInsts[i]), normInst(dstInsts[i]); !reflect.DeepEqual(a, b) {
			t.Errorf("installation %d:\n got %+v\nwant %+v", i, b, a)
		}
	}
	// Tokens, and none for the integration.
	for _, id := range []string{"inst-a", "inst-b"} {
		a, b := must(src.Token(ctx, id))(t), must(dst.Token(ctx, id))(t)
		a.ExpiresAt, b.ExpiresAt = norm(a.ExpiresAt), norm(b.ExpiresAt)
		if a != b {
			t.Errorf("token of %s = %+v; want %+v", id, b, a)
		}
	}
	if _, err := dst.Token(ctx, "integ"); !addon.IsNotFound(err) {
		t.Errorf("token of the integration: %v; want NotFound", err)
	}

	// Pending jobs: the same jobs in the same order (so each room's order
	// is kept), attempts and message ids included, under new IDs.
	srcJobs := must(src.Pending(ctx, 0))(t)
	dstJobs := must(dst.Pending(ctx, 0))(t)
	if len(dstJobs) != len(srcJobs) {
		t.Fatalf("target has %d pending jobs; want %d", len(dstJobs), len(srcJobs))
	}
	for i := range srcJobs {
		if a, b := normJob(srcJobs[i]), normJob(dstJobs[i]); !reflect.DeepEqual(a, b) {
			t.Errorf("pending job %d:\n got %+v\nwant %+v", i, b, a)
		}
		if i > 0 && dstJobs[i].ID <= dstJobs[i-1].ID {
			t.Errorf("pending job IDs not increasing: %d after %d", dstJobs[i].ID, dstJobs[i-1].ID)
		}
	}
	for _, r := range []int64{1, 2} {
		var s, d []string
		for i := range srcJobs {
			if srcJobs[i].OAuthID == "inst-a" && srcJobs[i].RoomID == r {
				s = append(s, srcJobs[i].Args)
			}
			if dstJobs[i].OAuthID == "inst-a" && dstJobs[i].RoomID == r {
				d = append(d, dstJobs[i].Args)
			}
		}
		if len(s) < 2 || !slices.Equal(s, d) {
			t.Errorf("room %d of inst-a: target's jobs %q; want %q (in this order)", r, d, s)
		}
	}
	if j := dstJobs[1]; j.Attempts != 2 || j.LastError != "HipChat: 503" {
		t.Errorf("job with attempts: attempts %d, last error %q; want 2, %q", j.Attempts, j.LastError, "HipChat: 503")
	}

	// Dead letters: job and reason kept, buried at the time of the copy.
	srcDead := must(src.DeadLetters(ctx))(t)
	dstDead := must(dst.DeadLetters(ctx))(t)
	if len(dstDead) != len(srcDead) {
		t.Fatalf("target has %d dead letters; want %d", len(dstDead), len(srcDead))
	}
	for i := range srcDead {
		a, b := srcDead[i], dstDead[i]
		if !reflect.DeepEqual(normJob(a.Job), normJob(b.Job)) || a.Reason != b.Reason {
			t.Errorf("dead letter %d:\n got %+v %q\nwant %+v %q", i, b.Job, b.Reason, a.Job, a.Reason)
		}
		if b.At.Before(start.Add(-time.Second)) || b.At.After(end.Add(time.Second)) {
			t.Errorf("dead letter %d buried at %v; want the time of the copy (%v to %v)", i, b.At, start, end)
		}
	}
	if dstDead[0].Job.Attempts != 1 || dstDead[0].Job.LastError != "HipChat: 404 room not found" {
		t.Errorf("dead letter's job: attempts %d, last error %q", dstDead[0].Job.Attempts, dstDead[0].Job.LastError)
	}

	// The target's duplicate detection knows every message copied: a
	// redelivery is not new and answers with the copy.
	for i, j := range srcJobs {
		if j.MessageID != "" {
			redeliver(t, dst, "", j, dstJobs[i].ID)
		}
	}
	for i, dl := range srcDead {
		redeliver(t, dst, "dead ", dl.Job, dstDead[i].Job.ID)
	}
	if n := len(must(dst.Pending(ctx, 0))(t)); n != len(srcJobs) {
		t.Errorf("after the redeliveries the target has %d pending jobs; want %d", n, len(srcJobs))
	}

	// Key/value entries of the namespaces given, and only those.
	for ns, entries := range kvEntries {
		keys := must(dst.KV(ns).List(ctx, ""))(t)
		if len(keys) != len(entries) {
			t.Errorf("namespace %s: target's keys %q; want %d", ns, keys, len(entries))
		}
		for k, v := range entries {
			got, err := dst.KV(ns).Get(ctx, k)
			if err != nil || !bytes.Equal(got, v) {
				t.Errorf("namespace %s key %s = %q, %v; want %q", ns, k, got, err, v)
			}
		}
	}
	if keys := must(dst.KV("not-copied").List(ctx, ""))(t); len(keys) != 0 {
		t.Errorf("namespace not-copied: target has %q; want nothing", keys)
	}

	// Pacing windows.
	sortWindows := func(ws []addon.PaceWindow) []addon.PaceWindow {
		for i := range ws {
			for k := range ws[i].Times {
				ws[i].Times[k] = norm(ws[i].Times[k])
			}
		}
		slices.SortFunc(ws, func(a, b addon.PaceWindow) int {
			return cmp.Or(strings.Compare(a.OAuthID, b.OAuthID), cmp.Compare(a.Room, b.Room))
		})
		return ws
	}
	if a, b := sortWindows(must(src.LoadPacing(ctx))(t)), sortWindows(must(dst.LoadPacing(ctx))(t)); !reflect.DeepEqual(a, b) {
		t.Errorf("pacing windows:\n got %+v\nwant %+v", b, a)
	}

	// certmagic's files (and so its directories).
	srcKeys := must(src.CertStorage().List(ctx, "", true))(t)
	dstKeys := must(dst.CertStorage().List(ctx, "", true))(t)
	slices.Sort(srcKeys)
	slices.Sort(dstKeys)
	if !slices.Equal(srcKeys, dstKeys) {
		t.Errorf("certmagic keys:\n got %q\nwant %q", dstKeys, srcKeys)
	}
	for k, v := range fixtureCerts {
		got, err := dst.CertStorage().Load(ctx, k)
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("certmagic %s = %q, %v; want %q", k, got, err, v)
		}
		info, err := dst.CertStorage().Stat(ctx, k)
		if err != nil || !info.IsTerminal || info.Size != int64(len(v)) {
			t.Errorf("certmagic Stat(%s) = %+v, %v; want a file of %d bytes", k, info, err, len(v))
		}
	}

	// The secrets are encrypted at rest, by the target with its own key.
	raw := dst.raw(t)
	if !bytes.Contains(raw, []byte(seal.Prefix)) {
		t.Errorf("no sealed value (%q) found at rest in the target", seal.Prefix)
	}
	for _, s := range secrets() {
		if bytes.Contains(raw, []byte(s)) {
			t.Errorf("the target keeps %q in plaintext", s)
		}
	}
}

// redeliver enqueues the source's job j (a dead letter's if what is
// "dead ") into dst again, failing t unless dst takes it for the copy
// wantID.
func redeliver(t *testing.T, dst Store, what string, j addon.Job, wantID uint64) {
	t.Helper()
	j.ID = 0
	got, isNew, err := dst.Enqueue(t.Context(), j)
	if err != nil || isNew || got.ID != wantID {
		t.Errorf("redelivery of %s%s/%s: job %d, new=%v, %v; want job %d, not new", what, j.OAuthID, j.MessageID, got.ID, isNew, err, wantID)
	}
}

// copyFixture fills a new bbolt store, copies it into dst and checks the
// copy.
func copyFixture(t *testing.T, dst target) {
	src := newBolt(t, 0)
	fill(t, src)
	for _, s := range secrets() {
		if bytes.Contains(src.raw(t), []byte(s)) {
			t.Fatalf("the source keeps %q in plaintext", s)
		}
	}
	start := time.Now()
	rep, err := Copy(t.Context(), src, dst, Options{Namespaces: append(namespaces, "ui")})
	end := time.Now()
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	check(t, src, dst, rep, start, end)
}

// TestCopyBoltToBolt: everything the fixture holds reaches a second bbolt
// file with a key of its own.
func TestCopyBoltToBolt(t *testing.T) { copyFixture(t, newBolt(t, 0)) }

// TestCopyBoltToPostgres: everything the fixture holds reaches a
// PostgreSQL database with a key of its own; the same checks as bbolt's.
func TestCopyBoltToPostgres(t *testing.T) { copyFixture(t, newPG(t, 0)) }

// TestNotEmptyTarget: a target holding an installation, a pending job, a
// dead letter, a key in a namespace copied or a certmagic file is refused
// with ErrTargetNotEmpty naming it, and nothing is written; a key in a
// namespace not copied does not count.
func TestNotEmptyTarget(t *testing.T) {
	inst := func(ctx context.Context, s Store) error {
		return s.PutInstallation(ctx, addon.Installation{OAuthID: "other", OAuthSecret: "x"})
	}
	job := func(ctx context.Context, s Store) (addon.Job, error) {
		if err := inst(ctx, s); err != nil {
			return addon.Job{}, err
		}
		j, _, err := s.Enqueue(ctx, addon.Job{OAuthID: "other", RoomID: 1, MessageID: "x", Command: "c"})
		return j, err
	}
	cases := []struct {
		name  string
		put   func(context.Context, Store) error
		holds string // in the error; "" for an empty target
	}{
		{"installation", inst, "1 installation"},
		{"job", func(ctx context.Context, s Store) error { _, err := job(ctx, s); return err }, "1 pending job"},
		{"dead letter", func(ctx context.Context, s Store) error {
			j, err := job(ctx, s)
			if err != nil {
				return err
			}
			return s.Bury(ctx, j.ID, "r")
		}, "1 dead letter"},
		{"kv", func(ctx context.Context, s Store) error {
			return s.KV(install.PendingNamespace).Put(ctx, "a", []byte("1"))
		}, `1 key in namespace "uninstall"`},
		{"certmagic", func(ctx context.Context, s Store) error {
			return s.CertStorage().Store(ctx, "certificates/x/x.crt", []byte("c"))
		}, "1 certmagic file"},
		{"other namespace", func(ctx context.Context, s Store) error {
			return s.KV("elsewhere").Put(ctx, "a", []byte("1"))
		}, ""},
	}
	eachBackend(t, func(t *testing.T, open opener) {
		src := newBolt(t, 0)
		fill(t, src)
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				ctx := t.Context()
				dst := open(t, 0)
				if err := c.put(ctx, dst); err != nil {
					t.Fatal(err)
				}
				before := must(dst.Installations(ctx))(t)
				rep, err := Copy(ctx, src, dst, Options{Namespaces: namespaces})
				if c.holds == "" {
					if err != nil || rep != want {
						t.Fatalf("Copy = %+v, %v; want %+v", rep, err, want)
					}
					return
				}
				if !errors.Is(err, ErrTargetNotEmpty) || !strings.Contains(err.Error(), c.holds) {
					t.Fatalf("Copy: %v; want ErrTargetNotEmpty saying it holds %s", err, c.holds)
				}
				t.Logf("refused: %v", err)
				if rep != (Report{}) {
					t.Errorf("Report of a refused copy = %+v; want nothing", rep)
				}
				if after := must(dst.Installations(ctx))(t); len(after) != len(before) {
					t.Errorf("a refused copy wrote %d installations", len(after)-len(before))
				}
			})
		}
	})
}

// TestForce: with Force, a target that holds data takes the copy and keeps
// what it held; its installation with a source's OAuthID is replaced by
// the source's. A second forced copy (as after a failure) takes the jobs
// and dead letters with a message id for duplicates and copies the
// greeting, which has none, again.
func TestForce(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		src := newBolt(t, 0)
		fill(t, src)
		dst := open(t, 0)
		for _, inst := range []addon.Installation{
			{OAuthID: "inst-a", OAuthSecret: "the target's own secret", GroupID: 99},
			{OAuthID: "keep", OAuthSecret: "kept secret", GroupID: 5},
		} {
			if err := dst.PutInstallation(ctx, inst); err != nil {
				t.Fatal(err)
			}
		}
		if err := dst.PutToken(ctx, "keep", addon.Token{AccessToken: "kept token", ExpiresAt: base}); err != nil {
			t.Fatal(err)
		}
		kept, _, err := dst.Enqueue(ctx, addon.Job{OAuthID: "keep", RoomID: 5, MessageID: "k1", Command: "c"})
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.KV("ui").Put(ctx, "kept", []byte("k")); err != nil {
			t.Fatal(err)
		}
		if err := dst.CertStorage().Store(ctx, "certificates/kept/kept.crt", []byte("kept cert")); err != nil {
			t.Fatal(err)
		}

		if _, err := Copy(ctx, src, dst, Options{Namespaces: namespaces}); !errors.Is(err, ErrTargetNotEmpty) {
			t.Fatalf("Copy without Force: %v; want ErrTargetNotEmpty", err)
		}
		rep, err := Copy(ctx, src, dst, Options{Namespaces: namespaces, Force: true})
		if err != nil || rep != want {
			t.Fatalf("Copy with Force = %+v, %v; want %+v", rep, err, want)
		}

		a := must(dst.Installation(ctx, "inst-a"))(t)
		if a.OAuthSecret != secretA || a.GroupID != 7 {
			t.Errorf("inst-a on the target: secret %q, group %d; want the source's", a.OAuthSecret, a.GroupID)
		}
		if k := must(dst.Installation(ctx, "keep"))(t); k.OAuthSecret != "kept secret" {
			t.Errorf("kept installation's secret = %q", k.OAuthSecret)
		}
		if tok := must(dst.Token(ctx, "keep"))(t); tok.AccessToken != "kept token" {
			t.Errorf("kept token = %q", tok.AccessToken)
		}
		jobs := must(dst.Pending(ctx, 0))(t)
		if len(jobs) != want.Jobs+1 || jobs[0].ID != kept.ID {
			t.Errorf("target's pending jobs: %d, first %d; want %d, the kept job %d first", len(jobs), jobs[0].ID, want.Jobs+1, kept.ID)
		}
		if v, err := dst.KV("ui").Get(ctx, "kept"); err != nil || string(v) != "k" {
			t.Errorf("kept key = %q, %v", v, err)
		}
		if v, err := dst.CertStorage().Load(ctx, "certificates/kept/kept.crt"); err != nil || string(v) != "kept cert" {
			t.Errorf("kept certmagic file = %q, %v", v, err)
		}
		if n := len(must(dst.Installations(ctx))(t)); n != 4 {
			t.Errorf("target has %d installations; want 4", n)
		}

		again, err := Copy(ctx, src, dst, Options{Namespaces: namespaces, Force: true})
		wantAgain := want
		wantAgain.Jobs, wantAgain.DeadLetters, wantAgain.Duplicates = 1, 0, want.Jobs-1+want.DeadLetters
		if err != nil || again != wantAgain {
			t.Errorf("second forced Copy = %+v, %v; want %+v", again, err, wantAgain)
		}
		if n := len(must(dst.Pending(ctx, 0))(t)); n != want.Jobs+2 {
			t.Errorf("after the second copy the target has %d pending jobs; want %d (the greeting twice)", n, want.Jobs+2)
		}
	})
}

// TestOutboxFull: a target whose bound on pending jobs is below the
// source's backlog refuses the job over it; Copy fails with the target's
// Unavailable error and says why, reporting what it copied before, and no
// job is left out silently.
func TestOutboxFull(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		src := newSourceA(t, 0)
		for _, m := range []string{"m1", "m2", "m3"} {
			enqueueA(t, src, m)
		}
		dst := open(t, 2)
		rep, err := Copy(ctx, src, dst, Options{Namespaces: namespaces})
		if addon.KindOf(err) != addon.Unavailable || !strings.Contains(err.Error(), "storage.max_pending") {
			t.Fatalf("Copy: %v; want Unavailable naming storage.max_pending", err)
		}
		t.Logf("failed: %v", err)
		if (rep != Report{Installations: 1, Jobs: 2}) {
			t.Errorf("Report = %+v; want 1 installation, 2 jobs", rep)
		}
		if n := len(must(dst.Pending(ctx, 0))(t)); n != 2 {
			t.Errorf("target has %d pending jobs; want 2", n)
		}
	})
}

// TestDeadLettersAtBound: an installation with as many pending jobs as the
// bound and dead letters besides (as an outage leaves it) is copied into a
// target with the same bound: the dead letters pass through its outbox
// before the pending jobs fill it.
func TestDeadLettersAtBound(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		src := newSourceA(t, 2)
		for _, m := range []string{"m1", "m2", "m3", "m4"} {
			j := enqueueA(t, src, m)
			if m == "m1" || m == "m3" {
				if err := src.Bury(ctx, j.ID, "gave up on "+m); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, _, err := src.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 1, MessageID: "m5", Command: "c"}); addon.KindOf(err) != addon.Unavailable {
			t.Fatalf("source not at its bound: %v", err)
		}
		dst := open(t, 2)
		rep, err := Copy(ctx, src, dst, Options{Namespaces: namespaces})
		if err != nil || (rep != Report{Installations: 1, Jobs: 2, DeadLetters: 2}) {
			t.Fatalf("Copy = %+v, %v; want 1 installation, 2 jobs, 2 dead letters", rep, err)
		}
		var got []string
		for _, dl := range must(dst.DeadLetters(ctx))(t) {
			got = append(got, dl.Job.MessageID+": "+dl.Reason)
		}
		if want := []string{"m1: gave up on m1", "m3: gave up on m3"}; !slices.Equal(got, want) {
			t.Errorf("target's dead letters %q; want %q", got, want)
		}
	})
}

// TestDuplicateMessages: a source holding one HipChat message twice (its
// first job's seen id pruned before the second came) as a dead letter and
// a pending job, and as two pending jobs: the target's duplicate detection
// takes each second one for a duplicate, counted; the pending job, not the
// dead letter, is what it keeps.
func TestDuplicateMessages(t *testing.T) {
	eachBackend(t, func(t *testing.T, open opener) {
		ctx := t.Context()
		src := newSourceA(t, 0)
		date := time.Now().Add(-time.Minute).UTC().Truncate(time.Microsecond)
		enqueue := func(m string) addon.Job {
			return enqueueNew(t, src, addon.Job{OAuthID: "a", RoomID: 1, MessageID: m, MessageDate: date, Command: "c", Args: m})
		}
		if err := src.Bury(ctx, enqueue("m1").ID, "gave up"); err != nil {
			t.Fatal(err)
		}
		enqueue("m2")
		if _, err := src.PruneSeen(ctx, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		enqueue("m1")
		enqueue("m2")

		dst := open(t, 0)
		rep, err := Copy(ctx, src, dst, Options{Namespaces: namespaces})
		if err != nil || (rep != Report{Installations: 1, Jobs: 2, Duplicates: 2}) {
			t.Fatalf("Copy = %+v, %v; want 1 installation, 2 jobs, 2 duplicates", rep, err)
		}
		var got []string
		for _, j := range must(dst.Pending(ctx, 0))(t) {
			got = append(got, j.MessageID)
		}
		if !slices.Equal(got, []string{"m2", "m1"}) {
			t.Errorf("target's pending jobs %q; want m2, m1", got)
		}
		if dead := must(dst.DeadLetters(ctx))(t); len(dead) != 0 {
			t.Errorf("target's dead letters %+v; want none (the message is pending)", dead)
		}
	})
}

// TestCertMagicNamespaceRefused: certmagic's namespace is copied through
// CertStorage, not as a key/value namespace.
func TestCertMagicNamespaceRefused(t *testing.T) {
	src, dst := newBolt(t, 0), newBolt(t, 0)
	if _, err := Copy(t.Context(), src, dst, Options{Namespaces: []string{"ui", addon.CertMagicNamespace}}); addon.KindOf(err) != addon.Invalid {
		t.Fatalf("Copy with namespace certmagic: %v; want Invalid", err)
	}
}
