package httpapi

import (
	"crypto/sha256"
	"sync"
	"time"
)

// maxReplayEntries bounds the replay cache: at about 100 bytes an entry,
// a few MiB at most.
const maxReplayEntries = 1 << 16

// replayCache remembers, for each JWT id seen on a webhook, a digest of the
// body it came with, until the JWT expires. HipChat's JWTs are not bound to
// a body (PROTOCOL.md section 5), so a token caught once could carry any
// command; the cache refuses it with a body it did not come with. The same
// JWT with the same body again is a redelivery and is admitted (the outbox
// dedupes it by message id). When full, the oldest entry goes first. It is
// safe for concurrent use.
type replayCache struct {
	mu    sync.Mutex
	max   int
	seq   uint64
	seen  map[string]replayEntry
	order []orderKey // insertion order, for expiry and eviction
}

type replayEntry struct {
	body [sha256.Size]byte
	exp  time.Time
	seq  uint64
}

type orderKey struct {
	key string
	seq uint64
}

func newReplayCache(max int) *replayCache {
	return &replayCache{max: max, seen: map[string]replayEntry{}}
}

// admit reports whether the JWT key (its issuer and jti) may carry body:
// true the first time and for the same body again while it lives, false
// for another body before exp.
func (c *replayCache) admit(key string, body []byte, exp, now time.Time) bool {
	sum := sha256.Sum256(body)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.expire(now)
	if e, ok := c.seen[key]; ok && now.Before(e.exp) {
		return e.body == sum
	}
	c.seq++
	c.seen[key] = replayEntry{body: sum, exp: exp, seq: c.seq}
	c.order = append(c.order, orderKey{key, c.seq})
	return true
}

// expire drops, oldest first, the entries that expired and those over the
// bound. An order entry whose key was stored again later is skipped.
func (c *replayCache) expire(now time.Time) {
	for len(c.order) > 0 {
		k := c.order[0]
		e, ok := c.seen[k.key]
		current := ok && e.seq == k.seq
		if current && now.Before(e.exp) && len(c.seen) < c.max {
			return
		}
		if current {
			delete(c.seen, k.key)
		}
		c.order = c.order[1:]
	}
}
