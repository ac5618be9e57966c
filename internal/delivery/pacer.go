package delivery

import "time"

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

// window is a sliding-window counter: the times of the last N events.
type window struct {
	times []time.Time // ring buffer, oldest at next once full
	next  int
}

// pacer keeps hipconnect under HipChat's limits by itself, so that 429s
// are not the way it learns about them. It is used by one goroutine.
type pacer struct {
	w map[string]*window
}

func newPacer() *pacer { return &pacer{w: map[string]*window{}} }

// wait returns zero if an event under key may happen at now under l, or
// how long until it may.
func (p *pacer) wait(key string, l Limit, now time.Time) time.Duration {
	if l.N <= 0 {
		return 0
	}
	w := p.w[key]
	if w == nil || len(w.times) < l.N {
		return 0
	}
	oldest := w.times[w.next]
	if d := oldest.Add(l.Per).Sub(now); d > 0 {
		return d
	}
	return 0
}

// take records an event under key at now.
func (p *pacer) take(key string, l Limit, now time.Time) {
	if l.N <= 0 {
		return
	}
	w := p.w[key]
	if w == nil {
		w = &window{}
		p.w[key] = w
	}
	if len(w.times) < l.N {
		w.times = append(w.times, now)
		return
	}
	w.times[w.next] = now
	w.next = (w.next + 1) % l.N
}

// forget drops windows whose newest event is older than per: they no
// longer limit anything.
func (p *pacer) forget(now time.Time, per time.Duration) {
	for k, w := range p.w {
		newest := w.times[(w.next+len(w.times)-1)%len(w.times)]
		if now.Sub(newest) > per {
			delete(p.w, k)
		}
	}
}
