// Package delivery works off the outbox: every job the webhook handler
// committed to the store is run and its reply sent to the room, in order per
// room, retried with backoff until it is delivered or fails for good.
package delivery

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Outcome of one delivery attempt, as passed to Options.Observe.
const (
	Delivered = "delivered" // the reply reached HipChat; the job is gone
	Retry     = "retry"     // a passing failure; the job stays and is retried later
	Dead      = "dead"      // a permanent failure; the job moved to the dead letters
	Dropped   = "dropped"   // the installation is gone, and with it the job
)

// Options configure a Dispatcher. Store, Run and Send are required.
type Options struct {
	Store addon.Store
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
	// Requests, when set, returns how many API requests under the
	// installation's token an attempt at j may make: its notification,
	// plus what its command sends on the way (a search updates the room's
	// glance). TokenLimit counts that many (at most its N); nil counts 1.
	Requests func(j addon.Job) int
	Workers  int           // concurrent deliveries; default 8
	Grace    time.Duration // how long Run lets in-flight deliveries finish after its context ends; default 10s
	Logger   *slog.Logger
	Now      func() time.Time
}

// Dispatcher delivers stored jobs. Jobs of one room (one installation and
// room id) are delivered one at a time in the order they were stored; rooms
// proceed independently, up to Workers at once.
type Dispatcher struct {
	o    Options
	wake chan struct{}
}

// New returns a Dispatcher; call Run to start it.
func New(o Options) *Dispatcher {
	if o.Workers <= 0 {
		o.Workers = 8
	}
	if o.Grace <= 0 {
		o.Grace = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.RetryAfter == nil {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.RoomLimit.N == 0 {
		o.RoomLimit = RoomLimit
	}
	if o.TokenLimit.N == 0 {
		o.TokenLimit = TokenLimit
	}
	return &Dispatcher{o: o, wake: make(chan struct{}, 1)}
}

// Wake tells the dispatcher that a job was stored. It never blocks.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// DefaultRetryAfter retries passing failures with exponential backoff
// (1 s doubling to 5 min, with jitter) and gives up on permanent ones.
func DefaultRetryAfter(err error, attempt int) (time.Duration, bool) {
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

type result struct {
	job     addon.Job
	room    string
	outcome string
	wait    time.Duration
	// Pacing: when the delivery started, its slots in the room's and the
	// token's windows, and when its attempt was over (zero: nothing was
	// sent).
	started  time.Time
	roomSlot int
	tokSlots []int
	sent     time.Time
}

// Run delivers jobs until ctx ends, then waits up to Grace for deliveries in
// flight; jobs not delivered stay stored for the next start. It returns
// ctx's error.
func (d *Dispatcher) Run(ctx context.Context) error {
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	done := make(chan result)
	busy := map[string]bool{}           // rooms with a delivery in flight
	notBefore := map[uint64]time.Time{} // jobs waiting for a retry
	pace := newPacer()
	window := max(d.o.RoomLimit.Per, d.o.TokenLimit.Per) // the longest a pacer window matters
	forget := time.NewTicker(window)
	defer forget.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	inflight := 0

	for {
		next := d.schedule(work, done, busy, notBefore, pace, &inflight)
		if !next.IsZero() {
			timer.Reset(max(next.Sub(d.o.Now()), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			d.drain(done, inflight, cancelWork)
			return ctx.Err()
		case <-d.wake:
		case <-timer.C:
		case <-forget.C:
			pace.forget(d.o.Now(), window)
		case r := <-done:
			inflight--
			delete(busy, r.room)
			if !r.sent.IsZero() {
				pace.settle(r.room, r.roomSlot, r.started, r.sent)
				for _, slot := range r.tokSlots {
					pace.settle(r.job.OAuthID, slot, r.started, r.sent)
				}
			}
			if r.outcome == Retry {
				notBefore[r.job.ID] = d.o.Now().Add(r.wait)
			} else {
				delete(notBefore, r.job.ID)
			}
		}
	}
}

// drain waits for in-flight deliveries, cancelling them after Grace.
func (d *Dispatcher) drain(done chan result, inflight int, cancel context.CancelFunc) {
	grace := time.NewTimer(d.o.Grace)
	defer grace.Stop()
	for inflight > 0 {
		select {
		case <-done:
			inflight--
		case <-grace.C:
			d.o.Logger.Warn("delivery: grace period over, cancelling deliveries in flight", slog.Int("in_flight", inflight))
			cancel()
			grace.Reset(time.Hour)
		}
	}
}

// maxRooms bounds how many rooms one scheduling pass looks at; rooms past
// it (in order of their oldest job) wait for the next pass.
const maxRooms = 10000

// schedule starts deliveries for the first stored job of every idle room
// whose retry time has come and whose room and token are under HipChat's
// limits, and returns the earliest time a waiting job may go.
func (d *Dispatcher) schedule(ctx context.Context, done chan<- result, busy map[string]bool,
	notBefore map[uint64]time.Time, pace *pacer, inflight *int) time.Time {
	if *inflight >= d.o.Workers {
		return time.Time{}
	}
	// The oldest job of each room: a room's jobs go one at a time, in
	// order, and a room with a long queue cannot hide the others'.
	jobs, err := d.o.Store.Heads(ctx, maxRooms)
	if err != nil {
		d.o.Logger.Error("delivery: read outbox", slog.Any("err", err))
		return d.o.Now().Add(time.Second)
	}
	// Retry times of jobs no longer at the head of a room (delivered,
	// removed with their installation, dropped by an operator) are stale.
	heads := make(map[uint64]bool, len(jobs))
	for _, j := range jobs {
		heads[j.ID] = true
	}
	for id := range notBefore {
		if !heads[id] {
			delete(notBefore, id)
		}
	}
	var next time.Time
	now := d.o.Now()
	for _, j := range jobs {
		room := j.OAuthID + "\x00" + strconv.FormatInt(j.RoomID, 10)
		if busy[room] {
			continue
		}
		requests := 1
		if d.o.Requests != nil {
			requests = max(d.o.Requests(j), 1)
		}
		at, ok := notBefore[j.ID]
		if !ok || !now.Before(at) {
			at = now.Add(max(pace.wait(room, d.o.RoomLimit, now), pace.waitN(j.OAuthID, d.o.TokenLimit, now, requests)))
		}
		if now.Before(at) {
			if next.IsZero() || at.Before(next) {
				next = at
			}
			continue
		}
		roomSlot := pace.take(room, d.o.RoomLimit, now)
		var tokSlots []int
		for range min(requests, max(d.o.TokenLimit.N, 1)) {
			tokSlots = append(tokSlots, pace.take(j.OAuthID, d.o.TokenLimit, now))
		}
		busy[room] = true
		*inflight++
		go func() {
			r := d.deliver(ctx, j, room)
			r.started, r.roomSlot, r.tokSlots = now, roomSlot, tokSlots
			done <- r
		}()
		if *inflight >= d.o.Workers {
			break
		}
	}
	return next
}

// deliver makes one attempt at job j and records its outcome in the store.
func (d *Dispatcher) deliver(ctx context.Context, j addon.Job, room string) result {
	log := d.o.Logger.With(slog.Uint64("job", j.ID), slog.String("oauth_id", j.OAuthID), slog.Int64("room", j.RoomID))
	r := result{job: j, room: room, outcome: Delivered}
	inst, err := d.o.Store.Installation(ctx, j.OAuthID)
	if addon.IsNotFound(err) {
		r.outcome = Dropped
	} else if err == nil {
		err = d.attempt(ctx, inst, j, log)
		r.sent = d.o.Now() // HipChat got the request, if at all, by now
	}
	store := context.WithoutCancel(ctx) // record the outcome even while shutting down
	var serr error
	switch {
	case r.outcome == Dropped:
		log.Info("delivery: installation gone, job dropped")
		if serr = d.o.Store.Complete(store, j.ID); addon.IsNotFound(serr) {
			serr = nil
		}
	case err == nil:
		serr = d.o.Store.Complete(store, j.ID)
	default:
		wait, retry := d.o.RetryAfter(err, j.Attempts+1)
		if retry || ctx.Err() != nil {
			r.outcome, r.wait = Retry, wait
			if ctx.Err() == nil {
				log.Warn("delivery: will retry", slog.Int("attempt", j.Attempts+1), slog.Duration("in", wait), slog.Any("err", err))
			}
			serr = d.o.Store.RecordAttempt(store, j.ID, err.Error())
		} else {
			r.outcome = Dead
			log.Error("delivery: undeliverable, moved to dead letters", slog.Int("attempt", j.Attempts+1), slog.Any("err", err))
			serr = d.o.Store.Bury(store, j.ID, err.Error())
		}
	}
	if serr != nil && !addon.IsNotFound(serr) { // NotFound: uninstalled meanwhile
		log.Error("delivery: record outcome", slog.String("outcome", r.outcome), slog.Any("err", serr))
		if r.outcome != Retry {
			// The job is still stored: it will be tried again, which may
			// send its reply twice (at-least-once), but never loses it.
			r.outcome, r.wait = Retry, time.Second
		}
	}
	if d.o.Observe != nil {
		d.o.Observe(j, r.outcome, err)
	}
	return r
}

// attempt runs j's command (or takes its prepared reply) and sends it.
func (d *Dispatcher) attempt(ctx context.Context, inst addon.Installation, j addon.Job, log *slog.Logger) error {
	var n addon.Notification
	if j.Reply != nil {
		n = *j.Reply
	} else {
		var err error
		n, err = d.o.Run(ctx, inst, j)
		if err != nil {
			log.Warn("delivery: command failed", slog.String("command", j.Command), slog.Any("err", err))
			if n.Message == "" {
				return err
			}
		}
	}
	return d.o.Send(ctx, inst, j.RoomID, n)
}
