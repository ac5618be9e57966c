package delivery

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Limit is a rate: at most N events in any window of length Per.
type Limit struct {
	N   int
	Per time.Duration
}

// HipChat's documented limits (PROTOCOL.md section 9).
var (
	// RoomLimit is HipChat's flood control: notifications per room.
	RoomLimit = Limit{N: 30, Per: time.Minute}
	// TokenLimit is HipChat's API rate limit per access token; one token
	// serves one installation.
	TokenLimit = Limit{N: 500, Per: 5 * time.Minute}
)

// window is a sliding-window counter: the times of the last N events, in
// no particular order (settle moves a time later).
type window struct {
	times []time.Time
}

// oldest returns the index of the earliest time of w.
func (w *window) oldest() int {
	i := 0
	for j, t := range w.times {
		if t.Before(w.times[i]) {
			i = j
		}
	}
	return i
}

// pacer keeps hipconnect under HipChat's limits by itself, so that 429s
// are not the way it learns about them. It is used by one goroutine.
//
// An event is taken when a delivery starts, so that deliveries in flight
// hold their place, and settled when the attempt is over: its request
// reached HipChat somewhere in between, after the command ran (a search
// may take seconds), and HipChat counts it from then. Counting it from
// the end of the attempt, never earlier, keeps every window at least as
// wide as HipChat's.
//
// Its keys are an installation's OAuthID (its token's budget) or roomKey's
// (a room's flood control). The windows changed since the last dirty call
// are the ones a restart would otherwise forget.
type pacer struct {
	w       map[string]*window
	changed map[string]bool
}

func newPacer() *pacer { return &pacer{w: map[string]*window{}, changed: map[string]bool{}} }

// roomKey is the pacer key of a room's flood control.
func roomKey(oauthID string, room int64) string {
	return oauthID + "\x00" + strconv.FormatInt(room, 10)
}

// windowOf is the stored form of the window at key (nil: none).
func windowOf(key string, w *window) addon.PaceWindow {
	pw := addon.PaceWindow{OAuthID: key}
	if id, room, ok := strings.Cut(key, "\x00"); ok {
		pw.OAuthID = id
		pw.Room, _ = strconv.ParseInt(room, 10, 64)
	}
	if w != nil {
		pw.Times = slices.Clone(w.times)
	}
	return pw
}

// dirty returns the windows changed since the last call (a forgotten one
// without times) and starts afresh.
func (p *pacer) dirty() []addon.PaceWindow {
	out := make([]addon.PaceWindow, 0, len(p.changed))
	for key := range p.changed {
		out = append(out, windowOf(key, p.w[key]))
	}
	clear(p.changed)
	return out
}

// restore takes back windows saved before a restart: the times still
// inside their limit's window at now, at most N of them.
func (p *pacer) restore(ws []addon.PaceWindow, room Limit, token func(oauthID string) Limit, now time.Time) {
	for _, pw := range ws {
		l, key := token(pw.OAuthID), pw.OAuthID
		if pw.Room != 0 {
			l, key = room, roomKey(pw.OAuthID, pw.Room)
		}
		times := slices.DeleteFunc(slices.Clone(pw.Times), func(t time.Time) bool { return now.Sub(t) >= l.Per })
		slices.SortFunc(times, time.Time.Compare)
		if l.N > 0 && len(times) > l.N {
			times = times[len(times)-l.N:]
		}
		if len(times) == 0 || l.N <= 0 {
			p.changed[key] = true // stale: deleted at the next save
			continue
		}
		p.w[key] = &window{times: times}
	}
}

// wait returns zero if an event under key may happen at now under l, or
// how long until it may.
func (p *pacer) wait(key string, l Limit, now time.Time) time.Duration {
	return p.waitN(key, l, now, 1)
}

// waitN is wait for n events at once (n is capped at l.N).
func (p *pacer) waitN(key string, l Limit, now time.Time, n int) time.Duration {
	if l.N <= 0 {
		return 0
	}
	w := p.w[key]
	n = min(n, l.N)
	if w == nil || len(w.times)+n <= l.N {
		return 0
	}
	// The events that must leave the window first: the oldest ones.
	var until time.Time
	if leave := len(w.times) + n - l.N; leave == 1 {
		until = w.times[w.oldest()]
	} else {
		until = slices.SortedFunc(slices.Values(w.times), time.Time.Compare)[leave-1]
	}
	if d := until.Add(l.Per).Sub(now); d > 0 {
		return d
	}
	return 0
}

// take records an event under key at now, in place of the oldest once N
// are recorded, and returns its slot for settle (-1 when l paces nothing).
func (p *pacer) take(key string, l Limit, now time.Time) int {
	if l.N <= 0 {
		return -1
	}
	w := p.w[key]
	if w == nil {
		w = &window{}
		p.w[key] = w
	}
	p.changed[key] = true
	if len(w.times) < l.N {
		w.times = append(w.times, now)
		return len(w.times) - 1
	}
	i := w.oldest()
	w.times[i] = now
	return i
}

// settle moves the event taken in slot at time at to end, when it is later.
// An event no longer there (forgotten, or replaced: only after l.Per, far
// longer than an attempt lasts) is left alone.
func (p *pacer) settle(key string, slot int, at, end time.Time) {
	w := p.w[key]
	if w == nil || slot < 0 || slot >= len(w.times) || !w.times[slot].Equal(at) || !end.After(at) {
		return
	}
	w.times[slot] = end
	p.changed[key] = true
}

// forget drops windows whose newest event is older than per: they no
// longer limit anything.
func (p *pacer) forget(now time.Time, per time.Duration) {
	for k, w := range p.w {
		newest := w.times[0]
		for _, t := range w.times {
			if t.After(newest) {
				newest = t
			}
		}
		if now.Sub(newest) > per {
			delete(p.w, k)
			p.changed[k] = true
		}
	}
}
