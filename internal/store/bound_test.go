package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

func TestOutboxBound(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"),
		Options{Now: newClock().Now, MaxPendingPerInstallation: 3})
	for _, id := range []string{"a", "b"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
	}
	jobs := enqueueN(t, d, "a", "m", 3)

	steps := []struct {
		name      string
		job       addon.Job
		wantKind  string // "" for success
		wantNew   bool
		wantCount int // PendingFor(a) afterwards
	}{
		{"fourth new job refused", addon.Job{OAuthID: "a", MessageID: "m3"}, addon.Unavailable, false, 3},
		{"job without message id refused", addon.Job{OAuthID: "a"}, addon.Unavailable, false, 3},
		{"duplicate while full answers not new", addon.Job{OAuthID: "a", MessageID: "m1"}, "", false, 3},
		{"another installation unaffected", addon.Job{OAuthID: "b", MessageID: "m0"}, "", true, 3},
	}
	for _, tt := range steps {
		t.Run(tt.name, func(t *testing.T) {
			got, isNew, err := d.Enqueue(ctx, tt.job)
			switch {
			case tt.wantKind != "":
				if addon.KindOf(err) != tt.wantKind {
					t.Fatalf("err = %v (kind %s), want kind %s", err, addon.KindOf(err), tt.wantKind)
				}
				if want := "store: outbox of installation a is full (3 pending)"; err.Error() != want {
					t.Errorf("err = %q, want %q", err, want)
				}
			case err != nil:
				t.Fatalf("err = %v, want nil", err)
			}
			if isNew != tt.wantNew {
				t.Errorf("new = %v, want %v", isNew, tt.wantNew)
			}
			if tt.job.MessageID == "m1" && tt.job.OAuthID == "a" && got.ID != jobs[1].ID {
				t.Errorf("duplicate answered ID %d, want %d", got.ID, jobs[1].ID)
			}
			if n := pendingFor(t, d, "a"); n != tt.wantCount {
				t.Errorf("PendingFor(a) = %d, want %d", n, tt.wantCount)
			}
		})
	}
	// Nothing of the refused jobs was stored: no job, no seen id.
	s, err := d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.PendingJobs != 4 || s.SeenMessages != 4 {
		t.Errorf("Stats = %d jobs, %d seen; want 4, 4 (3 of a, 1 of b)", s.PendingJobs, s.SeenMessages)
	}

	// Complete frees a slot; the refused message is new then.
	if err := d.Complete(ctx, jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	m3, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m3"})
	if err != nil || !isNew {
		t.Fatalf("Enqueue after Complete: new=%v err=%v, want a new job", isNew, err)
	}
	// Bury frees one too, and RetryDead needs one.
	if err := d.Bury(ctx, jobs[1].ID, "gone"); err != nil {
		t.Fatal(err)
	}
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("PendingFor after Bury = %d, want 2", got)
	}
	enqueueN(t, d, "a", "x", 1)
	if _, err := d.RetryDead(ctx, jobs[1].ID); addon.KindOf(err) != addon.Unavailable {
		t.Errorf("RetryDead into a full outbox: err = %v, want Unavailable", err)
	}
	if dead, _ := d.DeadLetters(ctx); len(dead) != 1 {
		t.Errorf("refused RetryDead lost the dead letter: %+v", dead)
	}
	if err := d.Complete(ctx, m3.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.RetryDead(ctx, jobs[1].ID); err != nil {
		t.Errorf("RetryDead with a free slot: %v", err)
	}
	if got := pendingFor(t, d, "a"); got != 3 {
		t.Errorf("PendingFor at the end = %d, want 3", got)
	}
	if got := pendingFor(t, d, "nobody"); got != 0 {
		t.Errorf("PendingFor(unknown) = %d, want 0", got)
	}
}

func TestOutboxBoundNegativeRefused(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "h.db"), Options{MaxPendingPerInstallation: -1})
	if err == nil {
		d.Close()
		t.Fatal("Open with a negative bound succeeded")
	}
}

// 50 goroutines enqueue and complete at once: at no time does the outbox of
// an installation hold more than the bound, and the counter ends right.
func TestOutboxBoundConcurrent(t *testing.T) {
	ctx := context.Background()
	const bound = 10
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{MaxPendingPerInstallation: bound})
	for _, id := range []string{"a", "b"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var maxSeen atomic.Int64
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			pend, err := d.Pending(ctx, 0) // one read transaction
			if err != nil {
				t.Error(err)
				return
			}
			n := map[string]int64{}
			for _, j := range pend {
				n[j.OAuthID]++
			}
			for _, c := range n {
				if c > maxSeen.Load() {
					maxSeen.Store(c)
				}
			}
		}
	}()

	const goroutines, perG = 50, 10
	var ok, full atomic.Int64
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oauth := []string{"a", "b"}[g%2]
			for k := range perG {
				j, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: oauth, MessageID: fmt.Sprintf("g%d-%d", g, k)})
				switch {
				case addon.KindOf(err) == addon.Unavailable:
					full.Add(1)
					continue
				case err != nil || !isNew:
					t.Errorf("Enqueue: new=%v err=%v", isNew, err)
					return
				}
				ok.Add(1)
				if k%2 == 1 { // deliver every other accepted job
					if err := d.Complete(ctx, j.ID); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-monitorDone

	if got := maxSeen.Load(); got > bound {
		t.Errorf("an outbox held %d jobs, bound %d", got, bound)
	}
	if ok.Load()+full.Load() != goroutines*perG || full.Load() == 0 {
		t.Errorf("accepted %d, refused %d; want %d in all and some refused", ok.Load(), full.Load(), goroutines*perG)
	}
	pend, err := d.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, j := range pend {
		n[j.OAuthID]++
	}
	for _, id := range []string{"a", "b"} {
		if n[id] > bound || pendingFor(t, d, id) != n[id] {
			t.Errorf("%s: %d jobs, PendingFor %d, bound %d", id, n[id], pendingFor(t, d, id), bound)
		}
	}
	if err := d.Check(); err != nil {
		t.Error(err)
	}
}

func TestPendingCountsSurviveReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{MaxPendingPerInstallation: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	enqueueN(t, d, "a", "m", 2)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openPath(t, path, Options{MaxPendingPerInstallation: 2})
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("PendingFor after reopen = %d, want 2", got)
	}
	if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m9"}); addon.KindOf(err) != addon.Unavailable {
		t.Errorf("Enqueue into a full outbox after reopen: err = %v, want Unavailable", err)
	}
	if w := d.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q, want none (no migration)", w)
	}
}

// writeSchema1 makes path look as schema 1 wrote it: installations a and b
// with plaintext secrets and tokens, 3 jobs of a and 1 of b, no dead-letter
// bucket, no counters, version 1.
func writeSchema1(t *testing.T, path string) {
	t.Helper()
	ctx := context.Background()
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
		if err := d.PutToken(ctx, id, addon.Token{AccessToken: "token-of-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	enqueueN(t, d, "a", "m", 3)
	enqueueN(t, d, "b", "m", 1)
	err = d.db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte(bucketDead)); err != nil {
			return err
		}
		if err := legacySeen(tx); err != nil {
			return err
		}
		return bucket(tx, bucketMeta).Put([]byte(keySchemaVersion), u64(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateSchema1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	writeSchema1(t, path)

	d := openPath(t, path, Options{MaxPendingPerInstallation: 3})
	var v uint64
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		v, err = schemaVersion(tx)
		if bucket(tx, bucketDead) == nil {
			t.Error("no dead bucket after migration")
		}
		return err
	})
	if err != nil || v != SchemaVersion {
		t.Errorf("schema version after migration = %d, %v; want %d", v, err, SchemaVersion)
	}
	w := d.Warnings()
	if len(w) != 2 || !strings.Contains(w[0], "migrated schema 1 to 2") || !strings.Contains(w[1], "4 seen message ids rekeyed") {
		t.Errorf("Warnings = %q, want the two migrations, rekeying 4 seen ids", w)
	}
	// A message seen before the migration is still a duplicate.
	if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "b", MessageID: "m0", MessageDate: time.Now()}); err != nil || isNew {
		t.Errorf("a message seen before the migration: new = %v, err = %v; want a duplicate", isNew, err)
	}
	for id, want := range map[string]int{"a": 3, "b": 1} {
		if got := pendingFor(t, d, id); got != want {
			t.Errorf("PendingFor(%s) = %d, want %d", id, got, want)
		}
	}
	if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "new"}); addon.KindOf(err) != addon.Unavailable {
		t.Errorf("the rebuilt counter does not bound: err = %v", err)
	}
	if err := d.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// A schema-1 file with plaintext secrets, opened with a key: migrated and
// encrypted in one Open.
func TestMigrateSchema1WithKey(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	writeSchema1(t, path)

	d := openPath(t, path, Options{Key: testKey(1)})
	if w := d.Warnings(); len(w) != 4 {
		t.Errorf("Warnings = %q, want two migrations, encryption, compaction", w)
	}
	if got := pendingFor(t, d, "a"); got != 3 {
		t.Errorf("PendingFor(a) = %d, want 3", got)
	}
	if tok, err := d.Token(ctx, "b"); err != nil || tok.AccessToken != "token-of-b" {
		t.Errorf("Token(b) = %+v, %v", tok, err)
	}
	assertFileLacks(t, path, "token-of-a", "secret-a")
}

func TestCheckReportsCounterDrift(t *testing.T) {
	d, _ := openWithJobs(t, 2)
	d.counts.set(map[string]int{"a": 5})
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), `installation "a" is 5, but it has 2 jobs`) {
		t.Errorf("Check with a wrong count = %v", err)
	}
	d.counts.set(map[string]int{})
	if err := d.Check(); err == nil || !strings.Contains(err.Error(), "a pending count of 0") {
		t.Errorf("Check with a missing count = %v", err)
	}
	d.counts.set(map[string]int{"a": 2})
	if err := d.Check(); err != nil {
		t.Errorf("Check after repair: %v", err)
	}
}

// legacySeen rewrites the seen bucket as schema 2 kept it: keyed oauthId
// "\x00" messageId, with JSON values.
func legacySeen(tx *bolt.Tx) error {
	type entry struct{ k, v []byte }
	var entries []entry
	err := bucket(tx, bucketSeen).ForEach(func(k, v []byte) error {
		job, at, err := parseSeen(k, v)
		if err != nil {
			return err
		}
		jv, err := json.Marshal(map[string]any{"job": job, "at": at})
		entries = append(entries, entry{bytes.Clone(k[8:]), jv})
		return err
	})
	if err != nil {
		return err
	}
	if err := tx.DeleteBucket([]byte(bucketSeen)); err != nil {
		return err
	}
	seen, err := tx.CreateBucket([]byte(bucketSeen))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := seen.Put(e.k, e.v); err != nil {
			return err
		}
	}
	return nil
}

// TestMigrateSchema2: the counters and the room index of schema 2 are
// dropped, the jobs counted, and the seen message ids still recognised.
func TestMigrateSchema2(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	enqueueN(t, d, "a", "m", 2)
	err = d.db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"pending_counts", "room_queue"} {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("a"), u64(2)); err != nil {
				return err
			}
		}
		if err := legacySeen(tx); err != nil {
			return err
		}
		return bucket(tx, bucketMeta).Put([]byte(keySchemaVersion), u64(2))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openPath(t, path, Options{MaxPendingPerInstallation: 3})
	if w := d.Warnings(); len(w) != 1 || !strings.Contains(w[0], "2 seen message ids rekeyed") {
		t.Errorf("Warnings = %q", w)
	}
	_ = d.db.View(func(tx *bolt.Tx) error {
		for _, name := range []string{"pending_counts", "room_queue"} {
			if tx.Bucket([]byte(name)) != nil {
				t.Errorf("bucket %s left after the migration", name)
			}
		}
		return nil
	})
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("pending count of a = %d, want 2", got)
	}
	if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m1", MessageDate: time.Now()}); err != nil || isNew {
		t.Errorf("a message seen before the migration: new = %v, err = %v", isNew, err)
	}
}
