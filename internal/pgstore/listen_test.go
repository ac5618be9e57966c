package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
)

// listener runs db.Listen until the test ends (or stop is called) and
// collects what it tells.
type listener struct {
	mu   sync.Mutex
	jobs []addon.Job
	more chan struct{} // a job was told
	stop context.CancelFunc
	done chan error // Listen's result
}

// listen starts db.Listen and returns once ready was called. block, if
// not nil, is called with each job before it is collected.
func listen(t *testing.T, db *DB, block func(addon.Job)) *listener {
	t.Helper()
	return listenWant(t, db, block, nil)
}

// listenWant is listen with Listen's want.
func listenWant(t *testing.T, db *DB, block func(addon.Job), want func(string) bool) *listener {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	l := &listener{more: make(chan struct{}, 1), stop: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	go func() {
		l.done <- db.Listen(ctx, func() { close(ready) }, want, func(j addon.Job) {
			if block != nil {
				block(j)
			}
			l.mu.Lock()
			l.jobs = append(l.jobs, j)
			l.mu.Unlock()
			select {
			case l.more <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-l.done
	})
	select {
	case <-ready:
	case err := <-l.done:
		t.Fatalf("Listen returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("ready not called within 10s")
	}
	return l
}

// wait returns the jobs told once there are n, failing after 10s.
func (l *listener) wait(t *testing.T, n int) []addon.Job {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		jobs := slices.Clone(l.jobs)
		l.mu.Unlock()
		if len(jobs) >= n {
			return jobs
		}
		select {
		case <-l.more:
		case <-timeout:
			t.Fatalf("%d jobs told within 10s, want %d", len(jobs), n)
		}
	}
}

// result returns Listen's result once it has returned, failing t if it
// has not within d of what; the result is put back for the cleanup.
func (l *listener) result(t *testing.T, d time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-l.done:
		l.done <- err // for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("Listen did not return within %v of %s", d, what)
		return nil
	}
}

// TestListen: the jobs two nodes enqueue (new ones only) and RetryDead
// adds are told to a listener each once, of one installation in ID order,
// as stored; a cancelled ctx ends Listen with ctx's error.
func TestListen(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := t.Context()
	a, b := open(t, dsn, Options{}), open(t, dsn, Options{})
	putInst(t, a, "i1")
	putInst(t, a, "i 2") // a space in an OAuthID
	before, _, err := a.Enqueue(ctx, addon.Job{OAuthID: "i1", Command: "echo", Args: "before"})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, a, nil)

	const perWriter = 10
	var wg sync.WaitGroup
	for n, db := range []*DB{a, b} {
		for g := range 2 {
			wg.Go(func() {
				for i := range perWriter {
					for _, id := range []string{"i1", "i 2"} {
						j := addon.Job{OAuthID: id, MessageID: fmt.Sprint(n, "-", g, "-", i), Command: "echo"}
						if _, _, err := db.Enqueue(ctx, j); err != nil {
							t.Errorf("Enqueue: %v", err)
							return
						}
						if _, isNew, err := db.Enqueue(ctx, j); err != nil || isNew { // a duplicate: not told
							t.Errorf("duplicate Enqueue: new=%v, %v", isNew, err)
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	const want = 2 * 2 * perWriter * 2
	told := l.wait(t, want)
	pending, err := b.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[uint64]addon.Job{}
	for _, j := range pending {
		stored[j.ID] = j
	}
	last := map[string]uint64{}
	seen := map[uint64]bool{}
	for _, j := range told {
		if seen[j.ID] {
			t.Errorf("job %d told twice", j.ID)
		}
		seen[j.ID] = true
		if j.ID <= last[j.OAuthID] {
			t.Errorf("job %d of %q told after job %d", j.ID, j.OAuthID, last[j.OAuthID])
		}
		last[j.OAuthID] = j.ID
		if s, ok := stored[j.ID]; !ok || s.MessageID != j.MessageID || s.OAuthID != j.OAuthID || !s.Received.Equal(j.Received) {
			t.Errorf("told %+v; stored %+v", j, s)
		}
	}
	if seen[before.ID] {
		t.Errorf("job %d, committed before ready, was told", before.ID)
	}

	// RetryDead adds a job: told.
	if err := b.Bury(ctx, told[0].ID, "gave up"); err != nil {
		t.Fatal(err)
	}
	again, err := b.RetryDead(ctx, told[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.wait(t, want+1); got[want].ID != again.ID || got[want].MessageID != told[0].MessageID {
		t.Errorf("after RetryDead told %+v; want job %d", got[want], again.ID)
	}
	time.Sleep(50 * time.Millisecond) // nothing more comes
	if got := l.wait(t, 0); len(got) != want+1 {
		t.Errorf("%d jobs told, want %d", len(got), want+1)
	}

	l.stop()
	if err := l.result(t, 5*time.Second, "its ctx's cancel"); !errors.Is(err, context.Canceled) {
		t.Errorf("Listen after cancel = %v; want context.Canceled", err)
	}
}

// TestListenSkipsGone: a job completed before the listener reads it is
// not told; the ones after it are.
func TestListenSkipsGone(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Start(t), Options{})
	putInst(t, db, "i1")
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	l := listen(t, db, func(addon.Job) {
		once.Do(func() { close(entered); <-release })
	})
	enqueue := func(args string) addon.Job {
		j, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "i1", Command: "echo", Args: args})
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	first := enqueue("first")
	<-entered // the listener is busy with first: what follows is read after
	gone := enqueue("gone")
	if err := db.Complete(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	last := enqueue("last")
	close(release)
	got := l.wait(t, 2)
	time.Sleep(50 * time.Millisecond)
	ids := []uint64{}
	for _, j := range l.wait(t, 0) {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, []uint64{first.ID, last.ID}) || got[1].Args != "last" {
		t.Errorf("told %v; want %d and %d, not %d (completed before it was read)", ids, first.ID, last.ID, gone.ID)
	}
}

// TestListenWant: the jobs of installations want refuses are not told.
func TestListenWant(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := t.Context()
	db := open(t, dsn, Options{})
	putInst(t, db, "mine")
	putInst(t, db, "theirs")
	l := listenWant(t, db, nil, func(id string) bool { return id == "mine" })
	for i, id := range []string{"theirs", "mine", "theirs", "mine"} { // told in commit order
		if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: id, MessageID: fmt.Sprint(i), Command: "echo"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, j := range l.wait(t, 2) {
		if j.OAuthID != "mine" {
			t.Errorf("told %+v, of an installation want refused", j)
		}
	}
}

// TestListenEnds: Listen returns an error when its connection is cut and
// when the DB is closed.
func TestListenEnds(t *testing.T) {
	dsn := pgtest.Start(t)
	db := open(t, dsn, Options{})
	l := listen(t, db, nil)
	var n int
	query(t, dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = 'LISTEN "+jobsChannel+"'", &n)
	if n != 1 {
		t.Fatalf("terminated %d listening backends, want 1", n)
	}
	if err := l.result(t, 10*time.Second, "its connection's end"); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Listen on a cut connection = %v; want a connection error", err)
	}

	l = listen(t, db, nil)
	_ = db.Close()
	if err := l.result(t, 5*time.Second, "Close"); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Listen after Close = %v; want an error", err)
	}
}

// TestStats: Stats counts what is stored; PoolStats reports the pool.
func TestStats(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Start(t), Options{Key: newKey(), MaxConns: 3})
	if s, err := db.Stats(ctx); err != nil || s != (addon.StoreStats{SecretsEncrypted: true}) {
		t.Errorf("Stats of an empty database = %+v, %v; want zeros, secrets encrypted", s, err)
	}
	putInst(t, db, "i1")
	putInst(t, db, "i2")
	if err := db.PutToken(ctx, "i1", addon.Token{AccessToken: "t", ExpiresAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	received := time.Date(2024, 5, 6, 7, 8, 9, 123456000, time.UTC)
	var jobs []addon.Job
	for i := range 3 {
		j, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "i2", MessageID: fmt.Sprint("m", i), Command: "echo",
			Received: received.Add(time.Duration(i) * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	if err := db.Bury(ctx, jobs[0].ID, "gave up"); err != nil {
		t.Fatal(err)
	}
	want := addon.StoreStats{Installations: 2, Tokens: 1, PendingJobs: 2, DeadLetters: 1, SeenMessages: 3,
		OldestPending: received.Add(time.Hour), SecretsEncrypted: true}
	if s, err := db.Stats(ctx); err != nil || s != want {
		t.Errorf("Stats = %+v, %v; want %+v", s, err, want)
	}

	acquired, idle, total, max := db.PoolStats()
	if acquired != 0 || idle < 1 || total != acquired+idle || max != 3 {
		t.Errorf("PoolStats = %d acquired, %d idle, %d total, %d max; want 0, at least 1, their sum, 3", acquired, idle, total, max)
	}
}
