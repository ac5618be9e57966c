package delivery

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestPacerWindow(t *testing.T) {
	p := newPacer()
	l := Limit{N: 3, Per: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		at := t0.Add(time.Duration(i) * time.Second)
		if w := p.wait("r", l, at); w != 0 {
			t.Fatalf("event %d: wait %v, want 0", i, w)
		}
		p.take("r", l, at)
	}
	if got, want := p.wait("r", l, t0.Add(3*time.Second)), 57*time.Second; got != want {
		t.Errorf("4th event waits %v, want %v (until the 1st leaves the window)", got, want)
	}
	if got := p.wait("other", l, t0); got != 0 {
		t.Errorf("another key waits %v, want 0", got)
	}
	if got := p.wait("r", l, t0.Add(time.Minute)); got != 0 {
		t.Errorf("after the window: wait %v, want 0", got)
	}
	p.take("r", l, t0.Add(time.Minute))
	if got, want := p.wait("r", l, t0.Add(time.Minute)), time.Second; got != want {
		t.Errorf("next wait %v, want %v (the 2nd event's turn)", got, want)
	}
	p.forget(t0.Add(3*time.Minute), time.Minute)
	if len(p.w) != 0 {
		t.Errorf("forget kept %d windows", len(p.w))
	}
}

func TestPacerSettle(t *testing.T) {
	p := newPacer()
	l := Limit{N: 2, Per: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a := p.take("r", l, t0)
	b := p.take("r", l, t0.Add(time.Second))
	// The first event's request went out 5 s after it was taken (a slow
	// command): it counts from then.
	p.settle("r", a, t0, t0.Add(5*time.Second))
	if got, want := p.wait("r", l, t0.Add(2*time.Second)), 59*time.Second; got != want {
		t.Errorf("wait %v, want %v (the 2nd event is now the oldest)", got, want)
	}
	c := p.take("r", l, t0.Add(time.Minute+time.Second)) // replaces the oldest: b
	if c != b {
		t.Errorf("take used slot %d, want %d (the oldest event's)", c, b)
	}
	if got, want := p.wait("r", l, t0.Add(time.Minute+time.Second)), 4*time.Second; got != want {
		t.Errorf("wait %v, want %v (until the settled event leaves)", got, want)
	}
	// A stale settle (the slot holds another event now) changes nothing.
	p.settle("r", b, t0.Add(time.Second), t0.Add(time.Hour))
	if got, want := p.wait("r", l, t0.Add(time.Minute+time.Second)), 4*time.Second; got != want {
		t.Errorf("after a stale settle: wait %v, want %v", got, want)
	}
	if got := p.take("r", Limit{}, t0); got != -1 {
		t.Errorf("take without a limit = %d, want -1", got)
	}
}

// TestPacingCountsFromTheRequest: the first command takes 5 s to run, so
// its notification reaches HipChat 5 s after its delivery started. HipChat
// counts it from then: the 31st notification must not go before a minute
// after that.
func TestPacingCountsFromTheRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newMemStore("a")
		for i := range 31 {
			db.add(addon.Job{OAuthID: "a", RoomID: 1, MessageID: fmt.Sprint(i), Args: fmt.Sprint(i)})
		}
		var rec sendTimes
		send := func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
			if n.Message == "0" {
				time.Sleep(5 * time.Second)
			}
			return rec.send(ctx, inst, roomID, n)
		}
		ctx, cancel := context.WithCancel(context.Background())
		d := New(Options{Store: db, Run: echo, Send: send})
		start := time.Now()
		go func() { _ = d.Run(ctx) }()
		time.Sleep(2 * time.Minute)
		cancel()
		synctest.Wait()
		sent := rec.at
		if len(sent) != 31 {
			t.Fatalf("sent %d, want 31", len(sent))
		}
		if got, want := sent[30].Sub(start), time.Minute+5*time.Second; got != want {
			t.Errorf("31st send after %v, want %v (a minute after HipChat got the 1st)", got, want)
		}
	})
}

// sendTimes records when each notification reached HipChat: its send is
// an Options.Send.
type sendTimes struct {
	mu sync.Mutex
	at []time.Time
}

func (s *sendTimes) send(context.Context, addon.Installation, int64, addon.Notification) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at = append(s.at, time.Now())
	return nil
}

func TestPacerWaitN(t *testing.T) {
	p := newPacer()
	l := Limit{N: 4, Per: time.Minute}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		p.take("k", l, t0.Add(time.Duration(i)*time.Second))
	}
	now := t0.Add(10 * time.Second)
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{
		{1, 0},                // one slot left
		{2, 50 * time.Second}, // the 1st event must leave
		{3, 51 * time.Second}, // the 1st and 2nd
		{9, 52 * time.Second}, // capped at N: all three
	} {
		if got := p.waitN("k", l, now, tt.n); got != tt.want {
			t.Errorf("waitN(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
}

// TestPacingCountsEveryRequest: each job's attempt makes two requests
// under the token (a search's reply and glance update); 300 jobs over 20
// rooms must not make more than 500 requests in 5 minutes.
func TestPacingCountsEveryRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newMemStore("a")
		for i := range 300 {
			db.add(addon.Job{OAuthID: "a", RoomID: int64(i%20 + 1), MessageID: fmt.Sprint(i), Args: fmt.Sprint(i)})
		}
		var rec sendTimes
		send := rec.send
		ctx, cancel := context.WithCancel(context.Background())
		d := New(Options{Store: db, Run: echo, Send: send, Requests: func(addon.Job) int { return 2 }})
		start := time.Now()
		go func() { _ = d.Run(ctx) }()
		time.Sleep(6 * time.Minute)
		cancel()
		synctest.Wait()
		sent := rec.at
		if len(sent) != 300 {
			t.Fatalf("sent %d, want 300", len(sent))
		}
		if got, want := sent[250].Sub(start), 5*time.Minute; got != want {
			t.Errorf("the 251st job went after %v, want %v (250 jobs are 500 requests)", got, want)
		}
		if got := sent[249].Sub(start); got != 0 {
			t.Errorf("the 250th job went after %v, want at once", got)
		}
	})
}

// TestPacingUnderHipChatLimits runs the dispatcher on a fake clock
// (testing/synctest): 75 commands for one room go out at no more than 30
// per minute, and the token's 500 per 5 minutes holds across rooms.
func TestPacingUnderHipChatLimits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newMemStore("a")
		for i := range 75 {
			db.add(addon.Job{OAuthID: "a", RoomID: 1, MessageID: fmt.Sprint(i), Args: fmt.Sprint(i)})
		}
		var rec sendTimes
		send := rec.send
		ctx, cancel := context.WithCancel(context.Background())
		d := New(Options{Store: db, Run: echo, Send: send})
		go func() { _ = d.Run(ctx) }()
		time.Sleep(3 * time.Minute) // fake time: the bubble advances it when all goroutines wait
		synctest.Wait()
		cancel()
		synctest.Wait()
		sent := rec.at

		if len(sent) != 75 {
			t.Fatalf("sent %d, want 75 within 3 minutes", len(sent))
		}
		start := sent[0]
		for i := range sent {
			if i >= 30 && sent[i].Sub(sent[i-30]) < time.Minute {
				t.Fatalf("sends %d and %d are %v apart: over 30 per minute", i-30, i, sent[i].Sub(sent[i-30]))
			}
		}
		if got := sent[30].Sub(start); got != time.Minute {
			t.Errorf("31st send after %v, want exactly 1m (no slower than needed)", got)
		}
	})
}

func TestRateLimitRetryHoldsTheRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newMemStore("a")
		db.add(addon.Job{OAuthID: "a", RoomID: 1, MessageID: "1", Args: "first"})
		db.add(addon.Job{OAuthID: "a", RoomID: 1, MessageID: "2", Args: "second"})
		db.add(addon.Job{OAuthID: "a", RoomID: 2, MessageID: "3", Args: "other room"})
		var mu sync.Mutex
		var log []string
		failures := 0
		send := func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
			mu.Lock()
			defer mu.Unlock()
			if n.Message == "first" && failures < 2 {
				failures++
				return addon.Errorf(addon.Unavailable, "429")
			}
			log = append(log, fmt.Sprintf("%s@%v", n.Message, time.Since(epoch).Round(time.Second)))
			return nil
		}
		ctx, cancel := context.WithCancel(context.Background())
		d := New(Options{Store: db, Run: echo, Send: send,
			RetryAfter: func(err error, attempt int) (time.Duration, bool) { return 30 * time.Second, true }})
		epoch = time.Now()
		go func() { _ = d.Run(ctx) }()
		time.Sleep(2 * time.Minute)
		cancel()
		synctest.Wait()
		want := []string{"other room@0s", "first@1m0s", "second@1m0s"}
		if fmt.Sprint(log) != fmt.Sprint(want) {
			t.Errorf("deliveries %v, want %v", log, want)
		}
		if db.recorded != 2 {
			t.Errorf("recorded attempts = %d, want 2", db.recorded)
		}
	})
}

var epoch time.Time

// memStore is an in-memory addon.Store for timing tests inside a synctest
// bubble (real file I/O is fine there too, but this keeps them fast).
type memStore struct {
	mu       sync.Mutex
	insts    map[string]addon.Installation
	jobs     []addon.Job
	dead     []addon.Job
	next     uint64
	recorded int // RecordAttempt calls
}

var _ Store = (*memStore)(nil)

func newMemStore(ids ...string) *memStore {
	m := &memStore{insts: map[string]addon.Installation{}}
	for _, id := range ids {
		m.insts[id] = addon.Installation{OAuthID: id}
	}
	return m
}

func (m *memStore) add(j addon.Job) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	j.ID = m.next
	m.jobs = append(m.jobs, j)
}

func (m *memStore) Installation(ctx context.Context, id string) (addon.Installation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i, ok := m.insts[id]; ok {
		return i, nil
	}
	return addon.Installation{}, addon.Errorf(addon.NotFound, "no installation")
}

func (m *memStore) Pending(ctx context.Context, limit int) ([]addon.Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]addon.Job(nil), m.jobs...), nil
}

func (m *memStore) remove(id uint64) (addon.Job, error) {
	for i, j := range m.jobs {
		if j.ID == id {
			m.jobs = append(m.jobs[:i], m.jobs[i+1:]...)
			return j, nil
		}
	}
	return addon.Job{}, addon.Errorf(addon.NotFound, "no job")
}

func (m *memStore) CompleteAll(ctx context.Context, jobs []addon.Job) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, j := range jobs {
		_, _ = m.remove(j.ID)
	}
	return nil
}

func (m *memStore) Bury(ctx context.Context, id uint64, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	j, err := m.remove(id)
	if err == nil {
		m.dead = append(m.dead, j)
	}
	return err
}

func (m *memStore) RecordAttempt(ctx context.Context, id uint64, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recorded++
	for i := range m.jobs {
		if m.jobs[i].ID == id {
			m.jobs[i].Attempts++
			m.jobs[i].LastError = reason
			return nil
		}
	}
	return addon.Errorf(addon.NotFound, "no job")
}

// memPacing is an in-memory addon.Pacing (the bbolt one is tested by the
// store contract suite).
type memPacing struct {
	mu sync.Mutex
	w  map[string]addon.PaceWindow
}

func (m *memPacing) SavePacing(_ context.Context, ws []addon.PaceWindow) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range ws {
		key := fmt.Sprint(w.OAuthID, "/", w.Room)
		if len(w.Times) == 0 {
			delete(m.w, key)
			continue
		}
		m.w[key] = w
	}
	return nil
}

func (m *memPacing) LoadPacing(context.Context) ([]addon.PaceWindow, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Collect(maps.Values(m.w)), nil
}

// TestPacingSurvivesRestart: a dispatcher stopped in the middle of a paced
// burst and started again keeps the room under 30 per minute across the
// restart when its windows are saved; without them it would not (the
// control run shows the test can tell).
func TestPacingSurvivesRestart(t *testing.T) {
	for _, persisted := range []bool{true, false} {
		t.Run(fmt.Sprint("persisted=", persisted), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := newMemStore("a")
				for i := range 45 {
					db.add(addon.Job{OAuthID: "a", RoomID: 1, MessageID: fmt.Sprint(i), Args: fmt.Sprint(i)})
				}
				var rec sendTimes
				var pacing addon.Pacing
				if persisted {
					pacing = &memPacing{w: map[string]addon.PaceWindow{}}
				}
				run := func(d time.Duration) {
					ctx, cancel := context.WithCancel(context.Background())
					disp := New(Options{Store: db, Run: echo, Send: rec.send, Pacing: pacing})
					go func() { _ = disp.Run(ctx) }()
					time.Sleep(d)
					synctest.Wait()
					cancel()
					synctest.Wait()
				}
				run(20 * time.Second) // 30 sent, 15 wait for the window
				if len(rec.at) != 30 {
					t.Fatalf("sent %d before the restart, want 30", len(rec.at))
				}
				run(2 * time.Minute)
				sent := rec.at
				if len(sent) != 45 {
					t.Fatalf("sent %d in all, want 45", len(sent))
				}
				over := 0
				for i := 30; i < len(sent); i++ {
					if sent[i].Sub(sent[i-30]) < time.Minute {
						over++
					}
				}
				if persisted && over != 0 {
					t.Errorf("%d sends over 30 per minute across the restart", over)
				}
				if !persisted && over == 0 {
					t.Errorf("without saved windows the restart kept the pace: the test cannot tell")
				}
			})
		})
	}
}
