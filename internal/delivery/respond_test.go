package delivery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/store"
)

// respondRig is a dispatcher running on a real store, with jobs told to it
// the way the daemon does (OnAdded).
type respondRig struct {
	db   *store.DB
	d    *Dispatcher
	rec  *recorder
	stop func()
}

func newRespondRig(t *testing.T, run func(context.Context, addon.Installation, addon.Job) (addon.Notification, error), want int) *respondRig {
	t.Helper()
	db := openStore(t, "a")
	rec := newRecorder(want)
	d := New(Options{Store: db, Run: run, Send: rec.send, RetryAfter: func(error, int) (time.Duration, bool) { return 0, false }})
	db.OnAdded(d.Added)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	r := &respondRig{db: db, d: d, rec: rec, stop: func() { cancel(); <-done }}
	t.Cleanup(r.stop)
	return r
}

func (r *respondRig) enqueue(t *testing.T, msg string, responseOnly bool) {
	t.Helper()
	if _, _, err := r.db.Enqueue(context.Background(), addon.Job{OAuthID: "a", RoomID: 1, MessageID: msg, Command: "echo", Args: msg, ResponseOnly: responseOnly}); err != nil {
		t.Fatal(err)
	}
}

// waitOutbox waits until the outbox holds no job.
func (r *respondRig) waitOutbox(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		jobs, err := r.db.Pending(context.Background(), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(jobs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d jobs still pending", len(jobs))
		}
	}
}

func TestReplyInResponse(t *testing.T) {
	r := newRespondRig(t, echo, 1)
	aw := r.d.Await("a", "m1")
	if aw == nil {
		t.Fatal("Await = nil for a message nobody awaits")
	}
	if again := r.d.Await("a", "m1"); again != nil {
		t.Fatal("a second Await of the same message did not get nil")
	}
	r.enqueue(t, "m1", false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, written, ok := aw.Wait(ctx)
	if !ok || n.Message != "m1" {
		t.Fatalf("Wait = %+v, %v; want the reply m1", n, ok)
	}
	written(nil)
	r.waitOutbox(t)

	// The reply written, it is not posted as well; the next job of the
	// room, awaited by nobody, is.
	r.enqueue(t, "m2", false)
	waitFor(t, r.rec.done)
	if got := r.rec.got[1]; len(got) != 1 || got[0] != "m2" {
		t.Errorf("posted through the API: %q, want only m2", got)
	}
	if next := r.d.Await("a", "m1"); next == nil {
		t.Error("the message is still awaited after Wait returned")
	} else {
		next.Cancel()
	}
}

func TestReplyNotWrittenIsPosted(t *testing.T) {
	r := newRespondRig(t, echo, 1)
	aw := r.d.Await("a", "m1")
	r.enqueue(t, "m1", false)
	_, written, ok := aw.Wait(context.Background())
	if !ok {
		t.Fatal("no reply offered")
	}
	written(errors.New("connection reset"))
	waitFor(t, r.rec.done)
	r.waitOutbox(t)
}

func TestReplyTooLateIsPosted(t *testing.T) {
	release := make(chan struct{})
	slow := func(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
		<-release
		return echo(ctx, inst, j)
	}
	r := newRespondRig(t, slow, 1)
	aw := r.d.Await("a", "m1")
	r.enqueue(t, "m1", false)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, _, ok := aw.Wait(ctx); ok {
		t.Fatal("a reply was offered before the command finished")
	}
	close(release)
	waitFor(t, r.rec.done)
	r.waitOutbox(t)
}

func TestResponseOnlyWithoutRequestIsBuried(t *testing.T) {
	r := newRespondRig(t, echo, 1)
	r.enqueue(t, "m1", true) // nobody awaits it: as after a restart
	r.waitOutbox(t)
	dead, err := r.db.DeadLetters(context.Background())
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead letters = %v, %v; want the job", dead, err)
	}
	if r.rec.calls != 0 {
		t.Errorf("a reply: response job was posted through the API")
	}
}

func TestCancelAfterOffer(t *testing.T) {
	r := newRespondRig(t, echo, 1)
	aw := r.d.Await("a", "m1")
	r.enqueue(t, "m1", false)
	// Wait until the dispatcher has offered the reply, then cancel: the
	// reply is posted instead.
	for deadline := time.Now().Add(5 * time.Second); aw.state.Load() != awaitOffered; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the reply was never offered")
		}
	}
	aw.Cancel()
	waitFor(t, r.rec.done)
	r.waitOutbox(t)
}

func TestResponseOnlyPassesAStuckRoom(t *testing.T) {
	db := openStore(t, "a")
	rec := newRecorder(1)
	rec.fail = func(int, addon.Notification) error { return addon.Errorf(addon.Unavailable, "hipchat unreachable") }
	d := New(Options{Store: db, Run: echo, Send: rec.send,
		RetryAfter: func(error, int) (time.Duration, bool) { return time.Hour, true }})
	db.OnAdded(d.Added)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// The room's head waits an hour for HipChat; a reply that needs no
	// API still goes out now.
	if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 1, MessageID: "greeting", Reply: &addon.Notification{Message: "hi"}}); err != nil {
		t.Fatal(err)
	}
	aw := d.Await("a", "m1")
	if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 1, MessageID: "m1", Command: "echo", Args: "m1", ResponseOnly: true}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	n, written, ok := aw.Wait(wctx)
	if !ok || n.Message != "m1" {
		t.Fatalf("Wait = %+v, %v: the reply waited behind the stuck one", n, ok)
	}
	written(nil)
}

func TestReplyInResponseSpendsTheFloodBudget(t *testing.T) {
	db := openStore(t, "a")
	rec := newRecorder(1)
	d := New(Options{Store: db, Run: echo, Send: rec.send, RoomLimit: Limit{N: 1, Per: time.Hour}})
	db.OnAdded(d.Added)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	ask := func(msg string) bool {
		aw := d.Await("a", msg)
		if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 1, MessageID: msg, Command: "echo", Args: msg}); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer wcancel()
		_, written, ok := aw.Wait(wctx)
		if ok {
			written(nil)
		}
		return ok
	}
	if !ask("m1") {
		t.Fatal("the first reply was not offered")
	}
	if ask("m2") {
		t.Error("a second reply in the response within the room's budget of 1 per hour")
	}
	if rec.calls != 0 {
		t.Errorf("%d posts through the API while the room's budget is spent", rec.calls)
	}
}

func TestTokenLimitsPerInstallation(t *testing.T) {
	db := openStore(t, "a", "b")
	rec := newRecorder(3)
	// a's token (a room token, say) allows 1 request an hour; b has the
	// default budget.
	enqueue(t, db, "a", 1, "a1")
	enqueue(t, db, "a", 2, "a2")
	enqueue(t, db, "b", 1, "b1", "b2", "b3")
	stop := start(t, Options{Store: db, Run: echo, Send: rec.send, TokenLimits: map[string]Limit{"a": {N: 1, Per: time.Hour}}})
	defer stop()
	waitFor(t, rec.done)
	time.Sleep(200 * time.Millisecond) // a2 would go now if a had b's budget
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var fromA int
	for _, msgs := range rec.got {
		for _, m := range msgs {
			if m[0] == 'a' {
				fromA++
			}
		}
	}
	if fromA != 1 {
		t.Errorf("%d replies of a sent, want 1 (its token's budget)", fromA)
	}
}
