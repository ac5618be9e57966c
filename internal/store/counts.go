package store

import (
	"sync"
)

// outboxCounts counts the pending jobs of each installation, for the bound
// Options.MaxPendingPerInstallation. The counts are kept in memory only:
// Open counts the jobs bucket, and every write that adds or removes jobs
// updates them once it has committed. A write that may add a job reserves
// its slot first, so concurrent writes never take more slots than the bound
// allows, however their transactions are batched.
type outboxCounts struct {
	mu        sync.Mutex
	committed map[string]int // stored jobs, by installation
	reserved  map[string]int // slots held by writes in flight
}

// set replaces the committed counts (at Open).
func (c *outboxCounts) set(counts map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.committed, c.reserved = counts, map[string]int{}
}

// reserve takes a slot for a job of oauthID if fewer than max (0: no bound)
// are pending or reserved, and reports whether it did; otherwise it returns
// the pending count. A taken slot must be given back with release.
func (c *outboxCounts) reserve(oauthID string, max int) (bool, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.committed[oauthID] + c.reserved[oauthID]
	if max > 0 && n >= max {
		return false, n
	}
	c.reserved[oauthID]++
	return true, n
}

// release gives a reserved slot back; added says whether its job was
// committed (it then counts as pending).
func (c *outboxCounts) release(oauthID string, added bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	decr(c.reserved, oauthID, 1)
	if added {
		c.committed[oauthID]++
	}
}

// removed records committed removals of jobs, by installation.
func (c *outboxCounts) removed(n map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, k := range n {
		decr(c.committed, id, k)
	}
}

// none reports whether oauthID has no job, stored or on its way. Called in
// a write transaction, it is exact: a job committed before is counted (its
// slot stays reserved until it counts as pending), and a write that reserves
// a slot after it can only commit after that transaction.
func (c *outboxCounts) none(oauthID string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.committed[oauthID] == 0 && c.reserved[oauthID] == 0
}

// pending returns the committed counts.
func (c *outboxCounts) pending() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.committed))
	for id, n := range c.committed {
		out[id] = n
	}
	return out
}

// decr subtracts k from m[id], forgetting it at zero.
func decr(m map[string]int, id string, k int) {
	if m[id] <= k {
		delete(m, id)
		return
	}
	m[id] -= k
}
