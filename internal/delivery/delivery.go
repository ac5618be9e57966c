// Package delivery works off the outbox: every job committed to the store
// is run and its reply sent to the room, in order per room, retried with
// backoff until it is delivered or fails for good.
//
// The dispatcher keeps the outbox's jobs in memory, queued by room, so that
// picking the next delivery costs no store access: it reads the store once
// at start, is told of every job committed afterwards (Added), and reads it
// again when it is told the outbox changed otherwise (Wake). The store stays
// the record: a delivered job is removed from it in a write shared with
// other deliveries, and a job whose removal was not committed when the
// process died is delivered again at the next start (at least once).
package delivery

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Outcome of one delivery attempt, as passed to Options.Observe.
const (
	Delivered = "delivered" // the reply reached HipChat; the job is removed
	Retry     = "retry"     // a passing failure; the job stays and is retried later
	Dead      = "dead"      // a permanent failure; the job moved to the dead letters
	Dropped   = "dropped"   // the installation is gone, and with it the job
)

// Store is what the dispatcher needs of the outbox.
type Store interface {
	Installation(ctx context.Context, oauthID string) (addon.Installation, error)
	Pending(ctx context.Context, limit int) ([]addon.Job, error)
	CompleteAll(ctx context.Context, jobs []addon.Job) error
	RecordAttempt(ctx context.Context, id uint64, reason string) error
	Bury(ctx context.Context, id uint64, reason string) error
}

// Options configure a Dispatcher. Store, Run and Send are required.
type Options struct {
	Store Store
	// Run answers the command of job j for the room of installation inst. A
	// non-nil error with a non-empty notification (a failed search) still
	// sends that notification.
	Run func(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error)
	// Send posts n to the room of the installation.
	Send func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error
	// RetryAfter returns how long to wait before retrying after err, and
	// whether err is worth retrying at all. nil: every error except the
	// kinds Invalid, Forbidden, NotFound and Unauthorized is retried with
	// exponential backoff.
	RetryAfter func(err error, attempt int) (time.Duration, bool)
	// Observe, when set, is told the outcome of every attempt.
	Observe func(j addon.Job, outcome string, err error)
	// RoomLimit and TokenLimit pace deliveries under HipChat's limits;
	// zero values mean RoomLimit and TokenLimit, N < 0 no pacing.
	RoomLimit  Limit
	TokenLimit Limit
	// TokenLimits, by OAuthID, replace TokenLimit for the installations
	// whose token has another budget (a user-generated room token of a
	// "Build your own" integration).
	TokenLimits map[string]Limit
	// Requests, when set, returns how many API requests under the
	// installation's token an attempt at j may make: its notification,
	// plus what its command sends on the way (a search updates the room's
	// glance), 0 for none (a reply in the webhook's response). TokenLimit
	// counts that many (at most its N); nil counts 1.
	Requests func(j addon.Job) int
	// Pacing, when set, keeps the pacer's windows across restarts: they
	// are loaded when Run starts, saved every PaceSave while they change,
	// and when Run ends, so that a restart under load spends no budget
	// twice.
	Pacing   addon.Pacing
	PaceSave time.Duration // default 1s
	// Owns, when set, tells whether this dispatcher delivers the jobs of
	// installation oauthID: several nodes sharing one store each deliver
	// the installations they hold (nil: every installation). A job of an
	// installation it does not own is left in the store, and one owned no
	// more is forgotten before its next attempt; when it comes to own
	// more, call Claimed.
	Owns    func(oauthID string) bool
	Workers int           // concurrent deliveries; default 8
	Grace   time.Duration // how long Run lets in-flight deliveries finish after its context ends; default 10s
	Logger  *slog.Logger
	Now     func() time.Time
}

// Dispatcher delivers stored jobs. Jobs of one room (one installation and
// room id) are delivered one at a time in the order they were stored (the
// jobs answered only in a webhook's response, Job.ResponseOnly, in an order
// of their own); rooms proceed independently, up to Workers at once.
type Dispatcher struct {
	o     Options
	wake  chan struct{}
	await awaiters // webhook requests waiting to answer with their reply

	mu      sync.Mutex
	added   []addon.Job     // committed jobs the run loop has not taken yet
	reread  bool            // the outbox changed otherwise: read it again
	claimed map[string]bool // installations newly owned: load their pacing
}

// New returns a Dispatcher; call Run to start it.
func New(o Options) *Dispatcher {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.PaceSave <= 0 {
		o.PaceSave = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RetryAfter == nil {
		now := o.Now
		o.RetryAfter = func(err error, attempt int) (time.Duration, bool) { return retryAfter(err, attempt, now()) }
	}
	if o.RoomLimit.N == 0 {
		o.RoomLimit = RoomLimit
	}
	if o.TokenLimit.N == 0 {
		o.TokenLimit = TokenLimit
	}
	return &Dispatcher{o: o, wake: make(chan struct{}, 1), reread: true}
}

// Added tells the dispatcher that job j (with its ID) was committed to the
// store. Jobs of one room must be told in the order of their IDs (commit
// order), or they may be delivered out of order. It never blocks. Whoever
// stores a job must call Added or Wake, or the job waits for the next start.
func (d *Dispatcher) Added(j addon.Job) {
	d.mu.Lock()
	d.added = append(d.added, j)
	d.mu.Unlock()
	d.signal()
}

// Wake tells the dispatcher that the outbox changed in a way it was not
// told of by Added (jobs removed with their installation): it reads the
// store again. It never blocks.
func (d *Dispatcher) Wake() {
	d.mu.Lock()
	d.reread = true
	d.mu.Unlock()
	d.signal()
}

// Claimed tells the dispatcher that it owns the installations oauthIDs
// now (see Options.Owns): it loads their pacing windows, saved by the
// node that delivered them before, and reads the store again. It never
// blocks.
func (d *Dispatcher) Claimed(oauthIDs ...string) {
	d.mu.Lock()
	if d.claimed == nil {
		d.claimed = map[string]bool{}
	}
	for _, id := range oauthIDs {
		d.claimed[id] = true
	}
	d.reread = true
	d.mu.Unlock()
	d.signal()
}

// owns reports whether the dispatcher delivers installation oauthID's jobs.
func (d *Dispatcher) owns(oauthID string) bool { return d.o.Owns == nil || d.o.Owns(oauthID) }

// tokenLimit is the budget of installation oauthID's token.
func (d *Dispatcher) tokenLimit(oauthID string) Limit {
	if l, ok := d.o.TokenLimits[oauthID]; ok {
		return l
	}
	return d.o.TokenLimit
}

func (d *Dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Throttled is an error of a peer that asked to wait before the next
// request (HipChat's 429: a *hipchat.RateLimitError). Wait returns how long
// from now; 0 or less when the peer did not say.
type Throttled interface {
	error
	Wait(now time.Time) time.Duration
}

// Bounds of the wait a Throttled error can impose on a room: at least a
// second, and at most MaxThrottleWait whatever the peer says, so that a
// bogus header cannot park a room for a day.
const (
	MinThrottleWait = time.Second
	MaxThrottleWait = 15 * time.Minute
)

// DefaultRetryAfter is the retry policy Options.RetryAfter defaults to, at
// the time now: a Throttled error waits as long as the peer asked, clamped
// to MinThrottleWait..MaxThrottleWait (backing off within those when it did
// not say); other passing failures back off exponentially (1 s doubling to
// 5 min, with jitter); permanent ones (kinds Invalid, Forbidden, NotFound,
// Unauthorized) are not retried.
func DefaultRetryAfter(err error, attempt int) (time.Duration, bool) {
	return retryAfter(err, attempt, time.Now())
}

func retryAfter(err error, attempt int, now time.Time) (time.Duration, bool) {
	var th Throttled
	if errors.As(err, &th) {
		wait := th.Wait(now)
		if wait <= 0 {
			wait = Backoff(attempt, MinThrottleWait, MaxThrottleWait)
		}
		return min(max(wait, MinThrottleWait), MaxThrottleWait), true
	}
	switch addon.KindOf(err) {
	case addon.Invalid, addon.Forbidden, addon.NotFound, addon.Unauthorized:
		return 0, false
	}
	return Backoff(attempt, time.Second, 5*time.Minute), true
}

// Backoff returns base*2^(attempt-1) capped at max, with up to 20% jitter
// taken off so that retries of many rooms spread out.
func Backoff(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// room is the queue of one room's stored jobs.
type room struct {
	key     string      // its key in loop.rooms
	pace    string      // the room's flood budget in the pacer
	jobs    []addon.Job // not yet delivered, in ID order; jobs[0] is next
	busy    bool        // a delivery of jobs[0] is in flight
	queued  bool        // in the ready queue or the waiting heap
	at      time.Time   // while in the waiting heap: when it may go
	retryID uint64      // the job that failed last, and
	retryAt time.Time   // when it may be tried again
}

// task is one delivery for a worker.
type task struct {
	job      addon.Job
	room     *room
	started  time.Time
	roomSlot int
	tokSlots []int
}

type result struct {
	task
	outcome string
	wait    time.Duration
	sent    time.Time // when the attempt was over (zero: nothing was sent)
}

// committed reports a removal of delivered jobs from the store.
type committed struct {
	jobs []addon.Job
	err  error
}

// loop is the state of Run, owned by its goroutine.
type loop struct {
	d          *Dispatcher
	rooms      map[string]*room
	ready      []*room         // rooms that may go now, oldest first
	waiting    waitHeap        // rooms that must wait (retry, pacing), soonest first
	completing []addon.Job     // delivered, removal not yet handed to the store
	retryAt    time.Time       // after a failed removal: when to try again
	removing   map[uint64]bool // delivered, removal not yet committed
	// floors holds, per installation, the highest job ID any read of the
	// store saw. Per installation: one installation's jobs commit in ID
	// order, but two installations' need not (PostgreSQL), so a job told
	// after a read that saw a greater ID of another installation is new.
	floors   map[string]uint64
	pace     *pacer
	inflight int
	tasks    chan task
}

// Run delivers jobs until ctx ends, then waits up to Grace for deliveries in
// flight and records their outcomes; jobs not delivered stay stored for the
// next start. It returns ctx's error.
func (d *Dispatcher) Run(ctx context.Context) error {
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	store := context.WithoutCancel(ctx) // outcomes are recorded even while shutting down
	l := &loop{d: d, rooms: map[string]*room{}, removing: map[uint64]bool{}, floors: map[string]uint64{}, pace: newPacer(),
		tasks: make(chan task)}
	l.loadPacing(store, nil)
	done := make(chan result)
	var workers sync.WaitGroup
	for range d.o.Workers {
		workers.Go(func() {
			for t := range l.tasks {
				done <- d.deliver(work, store, t)
			}
		})
	}
	defer workers.Wait()
	defer close(l.tasks)

	// Removals of delivered jobs go to the store in the background, as many
	// at a time as were delivered while the previous write was on its way.
	toRemove := make(chan []addon.Job)
	removed := make(chan committed)
	go func() {
		for jobs := range toRemove {
			removed <- committed{jobs: jobs, err: d.o.Store.CompleteAll(store, jobs)}
		}
		close(removed)
	}()
	writing := false
	flush := func() {
		if !writing && len(l.completing) > 0 && !d.o.Now().Before(l.retryAt) {
			toRemove <- l.completing
			l.completing, writing = nil, true
		}
	}

	window := max(d.o.RoomLimit.Per, d.o.TokenLimit.Per, time.Minute) // the longest a pacer window matters
	for _, tl := range d.o.TokenLimits {
		window = max(window, tl.Per)
	}
	forget := time.NewTicker(window)
	defer forget.Stop()
	save := time.NewTicker(d.o.PaceSave)
	defer save.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := l.step(work)
		if len(l.completing) > 0 && !l.retryAt.IsZero() && (next.IsZero() || l.retryAt.Before(next)) {
			next = l.retryAt
		}
		if !next.IsZero() {
			timer.Reset(max(next.Sub(d.o.Now()), time.Millisecond))
		}
		flush()
		select {
		case <-ctx.Done():
			l.drain(done, cancelWork)
			l.retryAt = time.Time{}
			for writing || len(l.completing) > 0 {
				flush()
				c := <-removed
				writing = false
				if !l.removed(c) {
					break // still stored: sent again at the next start
				}
			}
			close(toRemove)
			l.savePacing(store)
			return ctx.Err()
		case <-d.wake:
		case <-timer.C:
		case <-forget.C:
			l.pace.forget(d.o.Now(), window)
		case <-save.C:
			l.savePacing(store)
		case r := <-done:
			l.finish(r)
		case c := <-removed:
			writing = false
			l.removed(c)
		}
	}
}

// loadPacing restores the pacer's windows saved by the last run, of the
// installations in only (nil: of every one) that the dispatcher owns: the
// others' are another node's to keep.
func (l *loop) loadPacing(ctx context.Context, only map[string]bool) {
	o := l.d.o
	if o.Pacing == nil {
		return
	}
	ws, err := o.Pacing.LoadPacing(ctx)
	if err != nil {
		o.Logger.Warn("delivery: pacing of the last run not loaded; HipChat may answer 429 for a while", slog.Any("err", err))
		return
	}
	ws = slices.DeleteFunc(ws, func(w addon.PaceWindow) bool {
		return (only != nil && !only[w.OAuthID]) || !l.d.owns(w.OAuthID)
	})
	l.pace.restore(ws, o.RoomLimit, l.d.tokenLimit, o.Now())
}

// savePacing saves the windows changed since the last save; after a
// failure they are saved at the next. Windows of installations the
// dispatcher no longer owns are dropped, not saved: the node that owns
// them now keeps them.
func (l *loop) savePacing(ctx context.Context) {
	ws := slices.DeleteFunc(l.pace.dirty(), func(w addon.PaceWindow) bool { return !l.d.owns(w.OAuthID) })
	if l.d.o.Pacing == nil || len(ws) == 0 {
		return
	}
	if err := l.d.o.Pacing.SavePacing(ctx, ws); err != nil {
		l.d.o.Logger.Warn("delivery: save pacing", slog.Int("windows", len(ws)), slog.Any("err", err))
		for _, w := range ws {
			key := w.OAuthID
			if w.Room != 0 {
				key = roomKey(w.OAuthID, w.Room)
			}
			l.pace.changed[key] = true
		}
	}
}

// step takes what the dispatcher was told, starts the deliveries that may
// go, and returns the earliest time a waiting room may go (or the outbox
// should be read again, after a failed read).
func (l *loop) step(ctx context.Context) time.Time {
	d := l.d
	d.mu.Lock()
	added, reread, claimed := d.added, d.reread, d.claimed
	d.added, d.reread, d.claimed = nil, false, nil
	d.mu.Unlock()
	if claimed != nil {
		l.loadPacing(ctx, claimed)
	}
	var again time.Time
	if reread {
		if err := l.read(ctx); err != nil {
			d.o.Logger.Error("delivery: read outbox", slog.Any("err", err))
			d.mu.Lock()
			d.reread = true
			d.mu.Unlock()
			again = d.o.Now().Add(time.Second)
		}
	}
	for _, j := range added {
		// A job the last read could see is queued already, or was
		// removed: either way, not again; nor one delivered since it
		// was told (told twice, and the removal not yet committed).
		if j.ID > l.floors[j.OAuthID] && !l.removing[j.ID] && d.owns(j.OAuthID) {
			l.add(j)
		}
	}
	next := l.schedule(d.o.Now())
	if !again.IsZero() && (next.IsZero() || again.Before(next)) {
		next = again
	}
	return next
}

// read replaces the queues with the store's outbox.
func (l *loop) read(ctx context.Context) error {
	jobs, err := l.d.o.Store.Pending(ctx, 0)
	if err != nil {
		return err
	}
	for _, r := range l.rooms {
		r.jobs = r.jobs[:0]
	}
	for _, j := range jobs {
		l.floors[j.OAuthID] = max(l.floors[j.OAuthID], j.ID)
		if l.removing[j.ID] || !l.d.owns(j.OAuthID) {
			continue // delivered (its removal is on its way), or another node's
		}
		r := l.room(j)
		r.jobs = append(r.jobs, j)
	}
	// Rooms whose oldest job is oldest go first.
	rooms := slices.Collect(maps.Values(l.rooms))
	slices.SortFunc(rooms, func(a, b *room) int {
		if len(a.jobs) == 0 || len(b.jobs) == 0 {
			return cmp.Compare(len(b.jobs), len(a.jobs))
		}
		return cmp.Compare(a.jobs[0].ID, b.jobs[0].ID)
	})
	for _, r := range rooms {
		l.makeReady(r)
	}
	return nil
}

// add queues a job the store committed.
func (l *loop) add(j addon.Job) {
	r := l.room(j)
	// Jobs committed together may be told in any order.
	i, found := slices.BinarySearchFunc(r.jobs, j.ID, func(q addon.Job, id uint64) int {
		switch {
		case q.ID < id:
			return -1
		case q.ID > id:
			return 1
		}
		return 0
	})
	if !found {
		r.jobs = slices.Insert(r.jobs, i, j)
	}
	l.makeReady(r)
}

// room returns the queue of j's room, made if need be. The jobs answered
// only in a webhook's response have a queue of their own, sharing the
// room's flood budget: they need nothing of the REST API, so a reply
// stuck there (HipChat out of reach) must not hold them up.
func (l *loop) room(j addon.Job) *room {
	pace := roomKey(j.OAuthID, j.RoomID)
	key := pace
	if j.ResponseOnly {
		key += "\x00response"
	}
	r := l.rooms[key]
	if r == nil {
		r = &room{key: key, pace: pace}
		l.rooms[key] = r
	}
	return r
}

// makeReady puts r in the ready queue if it has a job to deliver and is
// neither busy nor queued already; a room with nothing left is forgotten.
func (l *loop) makeReady(r *room) {
	switch {
	case r.busy || r.queued:
	case len(r.jobs) == 0:
		if l.rooms[r.key] == r {
			delete(l.rooms, r.key)
		}
	default:
		r.queued = true
		l.ready = append(l.ready, r)
	}
}

// schedule starts deliveries for the ready rooms whose retry time has come
// and whose room and token are under HipChat's limits, up to Workers at
// once, and returns the earliest time a waiting room may go.
func (l *loop) schedule(now time.Time) time.Time {
	d := l.d
	for len(l.waiting) > 0 && !now.Before(l.waiting[0].at) {
		r := heap.Pop(&l.waiting).(*room)
		r.queued = false
		l.makeReady(r)
	}
	n := 0 // rooms taken off the ready queue
	for ; n < len(l.ready) && l.inflight < d.o.Workers; n++ {
		r := l.ready[n]
		l.ready[n] = nil
		r.queued = false
		if r.busy || len(r.jobs) == 0 {
			l.makeReady(r) // forgets it if empty
			continue
		}
		j := r.jobs[0]
		if !d.owns(j.OAuthID) {
			r.jobs = nil // another node delivers them now
			l.makeReady(r)
			continue
		}
		requests := 1
		if d.o.Requests != nil {
			requests = max(d.o.Requests(j), 0)
		}
		tl := d.tokenLimit(j.OAuthID)
		at := r.retryAt
		if r.retryID != j.ID || !now.Before(at) {
			at = now.Add(max(l.pace.wait(r.pace, d.o.RoomLimit, now), l.pace.waitN(j.OAuthID, tl, now, requests)))
		}
		if now.Before(at) {
			r.at, r.queued = at, true
			heap.Push(&l.waiting, r)
			continue
		}
		t := task{job: j, room: r, started: now, roomSlot: l.pace.take(r.pace, d.o.RoomLimit, now)}
		for range min(requests, max(tl.N, 1)) {
			t.tokSlots = append(t.tokSlots, l.pace.take(j.OAuthID, tl, now))
		}
		r.busy = true
		l.inflight++
		l.tasks <- t
	}
	l.ready = l.ready[n:]
	if len(l.ready) == 0 {
		l.ready = nil // let the backing array go
	}
	if len(l.waiting) > 0 {
		return l.waiting[0].at
	}
	return time.Time{}
}

// finish takes the outcome of a delivery.
func (l *loop) finish(res result) {
	l.inflight--
	r, j := res.room, res.job
	r.busy = false
	if !res.sent.IsZero() {
		l.pace.settle(r.pace, res.roomSlot, res.started, res.sent)
		for _, slot := range res.tokSlots {
			l.pace.settle(j.OAuthID, slot, res.started, res.sent)
		}
	}
	switch res.outcome {
	case Retry:
		r.retryID, r.retryAt = j.ID, l.d.o.Now().Add(res.wait)
		for i := range r.jobs {
			if r.jobs[i].ID == j.ID { // the next attempt counts this one
				r.jobs[i].Attempts = j.Attempts + 1
			}
		}
	default:
		if res.outcome == Delivered || res.outcome == Dropped {
			l.completing = append(l.completing, j)
			l.removing[j.ID] = true
		}
		r.jobs = slices.DeleteFunc(r.jobs, func(q addon.Job) bool { return q.ID == j.ID })
	}
	l.makeReady(r)
}

// removed takes the end of a removal from the store and reports whether
// it succeeded. The jobs of a failed one are delivered but still stored:
// they are not queued again, their removal is tried again a second later
// (they are sent again only if the process stops before it succeeds).
func (l *loop) removed(c committed) bool {
	if c.err != nil {
		l.d.o.Logger.Error("delivery: remove delivered jobs; trying again", slog.Int("jobs", len(c.jobs)), slog.Any("err", c.err))
		l.completing = append(c.jobs, l.completing...)
		l.retryAt = l.d.o.Now().Add(time.Second)
		return false
	}
	for _, j := range c.jobs {
		delete(l.removing, j.ID)
	}
	return true
}

// drain waits for in-flight deliveries, cancelling them after Grace.
func (l *loop) drain(done chan result, cancel context.CancelFunc) {
	grace := time.NewTimer(l.d.o.Grace)
	defer grace.Stop()
	for l.inflight > 0 {
		select {
		case r := <-done:
			l.finish(r)
		case <-grace.C:
			l.d.o.Logger.Warn("delivery: grace period over, cancelling deliveries in flight", slog.Int("in_flight", l.inflight))
			cancel()
			grace.Reset(time.Hour)
		}
	}
}

// deliver makes one attempt at the task's job and records a failure in the
// store; a delivered job is removed by the run loop.
func (d *Dispatcher) deliver(ctx, store context.Context, t task) result {
	j := t.job
	r := result{task: t, outcome: Delivered}
	inst, err := d.o.Store.Installation(ctx, j.OAuthID)
	switch {
	case addon.IsNotFound(err):
		r.outcome = Dropped
		d.log(j).Info("delivery: installation gone, job dropped")
	case err == nil:
		err = d.attempt(ctx, inst, j)
		r.sent = d.o.Now() // HipChat got the request, if at all, by now
	}
	if err != nil && r.outcome != Dropped {
		r.outcome = d.failed(ctx, store, j, err, &r.wait)
	}
	if d.o.Observe != nil {
		d.o.Observe(j, r.outcome, err)
	}
	return r
}

// failed records a failed attempt at j: to be retried after *wait, or moved
// to the dead letters. It returns the outcome.
func (d *Dispatcher) failed(ctx, store context.Context, j addon.Job, err error, wait *time.Duration) string {
	log := d.log(j)
	outcome := Retry
	var serr error
	if w, retry := d.o.RetryAfter(err, j.Attempts+1); retry || ctx.Err() != nil {
		*wait = w
		if ctx.Err() == nil {
			log.Warn("delivery: will retry", slog.Int("attempt", j.Attempts+1), slog.Duration("in", w), slog.Any("err", err))
		}
		serr = d.o.Store.RecordAttempt(store, j.ID, err.Error())
	} else {
		outcome = Dead
		log.Error("delivery: undeliverable, moved to dead letters", slog.Int("attempt", j.Attempts+1), slog.Any("err", err))
		serr = d.o.Store.Bury(store, j.ID, err.Error())
	}
	if serr != nil && !addon.IsNotFound(serr) { // NotFound: uninstalled meanwhile
		log.Error("delivery: record outcome", slog.String("outcome", outcome), slog.Any("err", serr))
		// The job is still stored: it is tried again, which may send its
		// reply twice (at least once), but never loses it.
		outcome, *wait = Retry, time.Second
	}
	return outcome
}

func (d *Dispatcher) log(j addon.Job) *slog.Logger {
	return d.o.Logger.With(slog.Uint64("job", j.ID), slog.String("oauth_id", j.OAuthID), slog.Int64("room", j.RoomID))
}

// attempt runs j's command (or takes its prepared reply) and sends it: in
// the response of the webhook request awaiting it, if one does (see
// Await), else through Send.
func (d *Dispatcher) attempt(ctx context.Context, inst addon.Installation, j addon.Job) error {
	var n addon.Notification
	if j.Reply != nil {
		n = *j.Reply
	} else {
		var err error
		n, err = d.o.Run(ctx, inst, j)
		if err != nil {
			d.log(j).Warn("delivery: command failed", slog.String("command", j.Command), slog.Any("err", err))
			if n.Message == "" {
				return err
			}
		}
	}
	written, err := d.offer(j, n)
	switch {
	case written:
		return nil
	case err != nil:
		d.log(j).Warn("delivery: reply not written in the webhook's response", slog.Any("err", err))
	}
	if j.ResponseOnly {
		return addon.Errorf(addon.Invalid, "no webhook request waits for the reply, and the command answers only in the response (reply: response)")
	}
	return d.o.Send(ctx, inst, j.RoomID, n)
}

// waitHeap orders waiting rooms by the time they may go.
type waitHeap []*room

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h waitHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *waitHeap) Push(x any)        { *h = append(*h, x.(*room)) }
func (h *waitHeap) Pop() any {
	old := *h
	r := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return r
}
