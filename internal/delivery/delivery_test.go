package delivery

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/store"
)

func openStore(t *testing.T, ids ...string) *store.DB {
	t.Helper()
	db, err := store.Open(filepath.Join(t.TempDir(), "hipconnect.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Errorf("store check: %v", err)
		}
		_ = db.Close()
	})
	for _, id := range ids {
		if err := db.PutInstallation(context.Background(), addon.Installation{OAuthID: id, OAuthSecret: "s", GroupID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	return db
}

// recorder is a fake HipChat: Send records what reached each room, after
// an optional per-call decision.
type recorder struct {
	mu    sync.Mutex
	got   map[int64][]string
	calls int
	fail  func(call int, n addon.Notification) error
	done  chan struct{}
	want  int
}

func newRecorder(want int) *recorder {
	return &recorder{got: map[int64][]string{}, done: make(chan struct{}), want: want}
}

func (r *recorder) send(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		if err := r.fail(r.calls, n); err != nil {
			return err
		}
	}
	r.got[roomID] = append(r.got[roomID], n.Message)
	total := 0
	for _, v := range r.got {
		total += len(v)
	}
	if total == r.want {
		close(r.done)
	}
	return nil
}

func echo(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
	return addon.Notification{Message: j.Args}, nil
}

func enqueue(t *testing.T, db *store.DB, id string, room int64, msgs ...string) {
	t.Helper()
	for _, m := range msgs {
		if _, _, err := db.Enqueue(context.Background(), addon.Job{OAuthID: id, RoomID: room, MessageID: m, Command: "echo", Args: m}); err != nil {
			t.Fatal(err)
		}
	}
}

func start(t *testing.T, o Options) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := New(o)
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	d.Wake()
	return func() { cancel(); <-done }
}

func waitFor(t *testing.T, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("deliveries did not complete")
	}
}

func TestOrderPerRoomAndRetries(t *testing.T) {
	db := openStore(t, "a")
	enqueue(t, db, "a", 1, "1-1", "1-2", "1-3", "1-4")
	enqueue(t, db, "a", 2, "2-1", "2-2", "2-3")
	rec := newRecorder(7)
	// The first two attempts at "1-2" fail as if HipChat were down.
	failed := 0
	rec.fail = func(call int, n addon.Notification) error {
		if n.Message == "1-2" && failed < 2 {
			failed++
			return addon.Errorf(addon.Unavailable, "hipchat down")
		}
		return nil
	}
	var retries atomic.Int64
	stop := start(t, Options{Store: db, Run: echo, Send: rec.send, Workers: 4,
		RetryAfter: func(err error, attempt int) (time.Duration, bool) { return time.Millisecond, true },
		Observe: func(j addon.Job, outcome string, err error) {
			if outcome == Retry {
				retries.Add(1)
			}
		}})
	waitFor(t, rec.done)
	stop()
	want := map[int64][]string{1: {"1-1", "1-2", "1-3", "1-4"}, 2: {"2-1", "2-2", "2-3"}}
	for room, msgs := range want {
		if got := rec.got[room]; len(got) != len(msgs) {
			t.Errorf("room %d got %v, want %v", room, got, msgs)
		} else {
			for i := range msgs {
				if got[i] != msgs[i] {
					t.Errorf("room %d got %v, want %v (in order)", room, got, msgs)
					break
				}
			}
		}
	}
	if got := retries.Load(); got != 2 {
		t.Errorf("retries observed = %d, want 2", got)
	}
	if left, _ := db.Pending(context.Background(), 0); len(left) != 0 {
		t.Errorf("%d jobs left in the outbox", len(left))
	}
}

func TestPermanentFailureDoesNotBlockTheRoom(t *testing.T) {
	db := openStore(t, "a")
	enqueue(t, db, "a", 1, "bad", "good")
	rec := newRecorder(1)
	rec.fail = func(call int, n addon.Notification) error {
		if n.Message == "bad" {
			return addon.Errorf(addon.Invalid, "hipchat: 400 message too long")
		}
		return nil
	}
	var dropped []string
	var mu sync.Mutex
	stop := start(t, Options{Store: db, Run: echo, Send: rec.send, Observe: func(j addon.Job, outcome string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if outcome == Dead {
			dropped = append(dropped, j.Args)
		}
	}})
	waitFor(t, rec.done)
	stop()
	if len(dropped) != 1 || dropped[0] != "bad" || rec.got[1][0] != "good" {
		t.Errorf("dropped %v, delivered %v", dropped, rec.got[1])
	}
}

func TestReplyAndRemovedInstallation(t *testing.T) {
	db := openStore(t, "a", "gone")
	greeting := addon.Notification{Message: "installed"}
	if _, _, err := db.Enqueue(context.Background(), addon.Job{OAuthID: "a", RoomID: 1, Reply: &greeting}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, "gone", 2, "never")
	if err := db.DeleteInstallation(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, "a", 1, "after")
	rec := newRecorder(2)
	stop := start(t, Options{Store: db, Send: rec.send,
		Run: func(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
			if j.Reply != nil {
				t.Error("Run called for a job with a prepared reply")
			}
			return echo(ctx, inst, j)
		}})
	waitFor(t, rec.done)
	stop()
	if got := rec.got[1]; len(got) != 2 || got[0] != "installed" || got[1] != "after" {
		t.Errorf("room 1 got %v", got)
	}
	if len(rec.got[2]) != 0 {
		t.Errorf("a removed installation's job was delivered")
	}
}

func TestShutdownLeavesUndeliveredJobs(t *testing.T) {
	db := openStore(t, "a")
	enqueue(t, db, "a", 1, "slow", "next")
	started := make(chan struct{})
	send := func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
		close(started)
		<-ctx.Done() // HipChat never answers
		return addon.Wrap(addon.Unavailable, ctx.Err(), "hipchat: no answer")
	}
	stop := start(t, Options{Store: db, Run: echo, Send: send, Grace: 50 * time.Millisecond})
	waitFor(t, started)
	stop()
	left, err := db.Pending(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 2 {
		t.Errorf("%d jobs left after shutdown, want both", len(left))
	}
}

func TestDefaultRetryAfter(t *testing.T) {
	for _, tt := range []struct {
		err   error
		retry bool
	}{
		{addon.Errorf(addon.Unavailable, "down"), true},
		{errors.New("connection refused"), true},
		{addon.Errorf(addon.Invalid, "400"), false},
		{addon.Errorf(addon.Unauthorized, "credentials refused"), false},
		{addon.Errorf(addon.NotFound, "no installation"), false},
	} {
		if _, retry := DefaultRetryAfter(tt.err, 1); retry != tt.retry {
			t.Errorf("DefaultRetryAfter(%v) retry = %v, want %v", tt.err, retry, tt.retry)
		}
	}
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 20: 5 * time.Minute} {
		got := Backoff(attempt, time.Second, 5*time.Minute)
		if got > want || got < want*4/5 {
			t.Errorf("Backoff(%d) = %v, want within 20%% below %v", attempt, got, want)
		}
	}
}

// TestOneFullOutboxDoesNotStallOthers: an installation whose HipChat is
// down, with a long queue, must not keep another installation's reply
// waiting.
func TestOneFullOutboxDoesNotStallOthers(t *testing.T) {
	db := openStore(t, "noisy", "quiet")
	for i := range 1500 {
		enqueue(t, db, "noisy", 1, fmt.Sprint("n", i))
	}
	enqueue(t, db, "quiet", 2, "hello")
	rec := newRecorder(1)
	rec.fail = func(call int, n addon.Notification) error {
		if n.Message != "hello" {
			return addon.Errorf(addon.Unavailable, "noisy's hipchat is down")
		}
		return nil
	}
	stop := start(t, Options{Store: db, Run: echo, Send: rec.send,
		RetryAfter: func(err error, attempt int) (time.Duration, bool) { return time.Minute, true }})
	waitFor(t, rec.done)
	stop()
	if got := rec.got[2]; len(got) != 1 || got[0] != "hello" {
		t.Errorf("quiet got %v", got)
	}
}

// countingStore counts the dispatcher's reads of the whole outbox.
type countingStore struct {
	*store.DB
	reads atomic.Int64
}

func (c *countingStore) Pending(ctx context.Context, limit int) ([]addon.Job, error) {
	c.reads.Add(1)
	return c.DB.Pending(ctx, limit)
}

// TestAddedJobsNeedNoRead: jobs told with Added are delivered in order
// without the outbox being read again, each once, even when the read at
// start saw them already, and their removal is committed by the time Run
// returns.
func TestAddedJobsNeedNoRead(t *testing.T) {
	db := &countingStore{DB: openStore(t, "a")}
	ctx := context.Background()
	early, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 1, MessageID: "early", Args: "early"})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(21)
	d := New(Options{Store: db, Run: echo, Send: rec.send, Workers: 4})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = d.Run(runCtx); close(done) }()
	d.Added(early) // told late: the read at start has it already
	for i := range 20 {
		j, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: int64(i%2 + 1), MessageID: fmt.Sprint(i), Args: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		d.Added(j)
		d.Added(j) // told twice: still delivered once
	}
	waitFor(t, rec.done)
	time.Sleep(50 * time.Millisecond) // room for a duplicate to show
	cancel()
	<-done
	if got := db.reads.Load(); got != 1 {
		t.Errorf("outbox read %d times, want once (at start)", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.calls != 21 {
		t.Errorf("%d sends for 21 jobs", rec.calls)
	}
	want := []string{"early"}
	for i := 0; i < 20; i += 2 {
		want = append(want, fmt.Sprint(i))
	}
	if !slices.Equal(rec.got[1], want) {
		t.Errorf("room 1 got %v, want %v", rec.got[1], want)
	}
	if left, _ := db.Pending(ctx, 0); len(left) != 0 {
		t.Errorf("%d delivered jobs still stored after Run returned", len(left))
	}
}

// failingRemoval fails the first removal of delivered jobs.
type failingRemoval struct {
	*store.DB
	failed atomic.Bool
}

func (f *failingRemoval) CompleteAll(ctx context.Context, jobs []addon.Job) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("disk full")
	}
	return f.DB.CompleteAll(ctx, jobs)
}

// TestFailedRemovalIsRetried: a delivered job whose removal could not be
// stored is not sent again; its removal is tried again.
func TestFailedRemovalIsRetried(t *testing.T) {
	db := &failingRemoval{DB: openStore(t, "a")}
	enqueue(t, db.DB, "a", 1, "once", "twice")
	rec := newRecorder(2)
	stop := start(t, Options{Store: db, Run: echo, Send: rec.send})
	waitFor(t, rec.done)
	time.Sleep(50 * time.Millisecond) // room for a duplicate to show
	stop()
	if got := rec.got[1]; !slices.Equal(got, []string{"once", "twice"}) {
		t.Errorf("room got %v, want each reply once, in order", got)
	}
	if !db.failed.Load() {
		t.Error("no removal failed")
	}
	if left, _ := db.Pending(context.Background(), 0); len(left) != 0 {
		t.Errorf("%d jobs left after the removal was tried again", len(left))
	}
}

// TestConcurrentJobsOfARoomInOrder: jobs of one room stored at the same
// time (one commit) and told through store.OnAdded go out in ID order.
func TestConcurrentJobsOfARoomInOrder(t *testing.T) {
	db := openStore(t, "a")
	const rooms = 100
	rec := newRecorder(2 * rooms)
	d := New(Options{Store: db, Run: echo, Send: rec.send, Workers: 16})
	db.OnAdded(d.Added)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	ids := make(map[string]uint64)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for room := range rooms {
		for k := range 2 {
			wg.Go(func() {
				msg := fmt.Sprint(room, "-", k)
				j, _, err := db.Enqueue(context.Background(), addon.Job{OAuthID: "a", RoomID: int64(room + 1), MessageID: msg, Args: msg})
				if err != nil {
					t.Error(err)
				}
				mu.Lock()
				ids[msg] = j.ID
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	waitFor(t, rec.done)
	cancel()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for room, got := range rec.got {
		if len(got) != 2 || ids[got[0]] > ids[got[1]] {
			t.Errorf("room %d got %v (ids %d, %d), want ID order", room, got, ids[got[0]], ids[got[1]])
		}
	}
}

// throttled is a Throttled error asking for wait.
type throttled time.Duration

func (t throttled) Error() string                { return "throttled" }
func (t throttled) Wait(time.Time) time.Duration { return time.Duration(t) }

func TestDefaultRetryAfterThrottled(t *testing.T) {
	for _, tt := range []struct {
		ask      time.Duration
		min, max time.Duration
	}{
		{30 * time.Second, 30 * time.Second, 30 * time.Second},
		{time.Millisecond, MinThrottleWait, MinThrottleWait},     // clamped up
		{24 * time.Hour, MaxThrottleWait, MaxThrottleWait},       // clamped down
		{0, MinThrottleWait * 4 / 5, MinThrottleWait},            // unsaid: backoff from the minimum
		{-time.Minute, MinThrottleWait * 4 / 5, MinThrottleWait}, // reset in the past
	} {
		got, retry := DefaultRetryAfter(fmt.Errorf("send: %w", throttled(tt.ask)), 1)
		if !retry || got < max(tt.min, MinThrottleWait) || got > tt.max {
			t.Errorf("ask %v: wait %v retry %v, want %v..%v", tt.ask, got, retry, tt.min, tt.max)
		}
	}
}

// TestOwns: a dispatcher delivers only the installations it owns; one it
// comes to own (Claimed) is delivered with the pacing saved by the node
// that delivered it before; one it owns no more is left alone.
func TestOwns(t *testing.T) {
	db := openStore(t, "mine", "theirs")
	ctx := context.Background()
	// The node that held "theirs" spent the room's whole budget a moment ago.
	now := time.Now()
	if err := db.SavePacing(ctx, []addon.PaceWindow{{OAuthID: "theirs", Room: 1, Times: []time.Time{now, now}}}); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		owned = map[string]bool{"mine": true}
	)
	owns := func(id string) bool { mu.Lock(); defer mu.Unlock(); return owned[id] }
	enqueue(t, db, "mine", 1, "m1", "m2")
	enqueue(t, db, "theirs", 1, "t1")
	rec := newRecorder(3)
	d := New(Options{Store: db, Run: echo, Send: rec.send, Owns: owns, Pacing: db,
		RoomLimit: Limit{N: 2, Per: 1500 * time.Millisecond}})
	if d.Await("theirs", "t9") != nil {
		t.Fatal("Await of an installation another node delivers: want nil")
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = d.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	d.Wake()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		n := len(rec.got[1])
		rec.mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // "theirs" would have gone by now
	rec.mu.Lock()
	if got := rec.got[1]; !slices.Equal(got, []string{"m1", "m2"}) {
		t.Fatalf("delivered %q, want only the owned installation's m1, m2", got)
	}
	rec.mu.Unlock()

	mu.Lock()
	owned["theirs"], owned["mine"] = true, false
	mu.Unlock()
	claimedAt := time.Now()
	d.Claimed("theirs")
	enqueue(t, db, "mine", 2, "m3") // told to nobody: not owned any more
	waitFor(t, rec.done)
	if waited := time.Since(claimedAt); waited < time.Second {
		t.Errorf("t1 delivered %v after the claim: the saved pacing (room budget spent) was not loaded", waited)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got := rec.got[1]; !slices.Equal(got, []string{"m1", "m2", "t1"}) || len(rec.got[2]) != 0 {
		t.Fatalf("delivered %v, want m1, m2, t1 and nothing of the installation owned no more", rec.got)
	}
}

// hidingStore is a store whose first read of the outbox misses one job,
// as a PostgreSQL read misses a job of one installation whose transaction
// commits after the read, while a job of another installation with a
// greater ID committed before it.
type hidingStore struct {
	*store.DB
	hide uint64
	once sync.Once
}

func (h *hidingStore) Pending(ctx context.Context, limit int) ([]addon.Job, error) {
	jobs, err := h.DB.Pending(ctx, limit)
	h.once.Do(func() {
		jobs = slices.DeleteFunc(jobs, func(j addon.Job) bool { return j.ID == h.hide })
	})
	return jobs, err
}

// A job told after a read that saw a greater job ID of another
// installation is delivered: the read did not see it.
func TestAddedBelowAnotherInstallationsRead(t *testing.T) {
	db := openStore(t, "a", "b")
	enqueue(t, db, "a", 1, "late")  // ID 1: "commits" after the read
	enqueue(t, db, "b", 2, "early") // ID 2: seen by the read
	late, err := db.Pending(context.Background(), 0)
	if err != nil || len(late) != 2 || late[0].Args != "late" {
		t.Fatalf("pending = %v, %v", late, err)
	}
	rec := newRecorder(2)
	d := New(Options{Store: &hidingStore{DB: db, hide: late[0].ID}, Run: echo, Send: rec.send})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rec.mu.Lock()
		n := len(rec.got[2])
		rec.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job the read saw was not delivered")
		}
	}
	d.Added(late[0]) // its commit is told now
	waitFor(t, rec.done)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.got[1], []string{"late"}) {
		t.Errorf("room 1 got %q, want the late job", rec.got[1])
	}
}

// Another node's saved pacing windows are neither loaded nor saved, not
// even deleted as stale: they are that node's to keep.
func TestOthersPacingLeftAlone(t *testing.T) {
	db := openStore(t, "mine", "theirs")
	ctx := context.Background()
	old := time.Now().Add(-10 * time.Second) // stale under a 1 s window
	if err := db.SavePacing(ctx, []addon.PaceWindow{{OAuthID: "theirs", Room: 1, Times: []time.Time{old}}}); err != nil {
		t.Fatal(err)
	}
	enqueue(t, db, "mine", 1, "m1")
	rec := newRecorder(1)
	stop := start(t, Options{Store: db, Run: echo, Send: rec.send, Pacing: db, PaceSave: 10 * time.Millisecond,
		Owns: func(id string) bool { return id == "mine" }, RoomLimit: Limit{N: 30, Per: time.Second}})
	waitFor(t, rec.done)
	time.Sleep(100 * time.Millisecond) // several saves
	stop()
	ws, err := db.LoadPacing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range ws {
		found = found || (w.OAuthID == "theirs" && len(w.Times) == 1 && w.Times[0].Equal(old))
	}
	if !found {
		t.Errorf("saved windows %+v: the other node's window was touched", ws)
	}
}
