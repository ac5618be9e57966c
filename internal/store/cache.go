package store

import (
	"sync"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// lookupCache holds decoded (and, with Options.Key, decrypted)
// installations and tokens by OAuthID, so Installation and Token answer
// from memory, in time independent of how many installations are stored,
// without a read transaction, JSON decoding or AES-GCM.
//
// Contract:
//
//   - Coherence. The *DB is the only writer of its file (the file is locked
//     against other processes, and Restore runs with the daemon stopped), so
//     the cache stays coherent if every method that writes the installations
//     or tokens bucket calls forget for the OAuthIDs it touched once its
//     transaction has finished. forget runs after the transaction
//     returns, committed or not (dropping an entry is always safe), so a
//     read that overlaps a write may still see the old value, but a read
//     that starts after the write returned sees the new one. Writes that
//     bypass the *DB methods (tests poking d.db) are not seen.
//   - No stale fill. A miss reads the file and then fills the cache with
//     what it read, but only if no forget (or reset) ran in between: fill
//     compares the epoch it is given, taken under the lock before the read
//     transaction began, with the current one, which every forget
//     increments. A reader that read the old value before a write committed
//     therefore cannot put it back after that write's forget. (Any forget
//     discards every overlapping fill, not only its own id's; writes of
//     installations and tokens are rare, so that only costs a miss now and
//     then.)
//   - Copies. Entries are held and returned by value; addon.Installation
//     and addon.Token hold only strings, numbers and time.Time, so a caller
//     cannot reach the cached copy through its result
//     (TestLookupCacheTypesAreFlat guards this if fields are added).
//   - Memory. Only values found in the file are cached (NotFound and
//     decryption errors are not), and DeleteInstallation drops both entries
//     of an id, so the cache holds at most one installation and one token
//     per stored installation: a few hundred bytes each, a few MB for tens
//     of thousands. It holds OAuth secrets and access tokens in plaintext in
//     process memory for as long as the *DB is open; they are in memory
//     anyway whenever they are used (JWT verification, delivery), the cache
//     only keeps them there between uses. Close drops them.
type lookupCache struct {
	mu     sync.RWMutex
	epoch  uint64 // incremented by every forget and reset
	closed bool   // after reset: neither answer nor fill
	insts  map[string]addon.Installation
	tokens map[string]addon.Token

	// beforeFill, if set (tests only), runs between a miss's read
	// transaction and its fill, without any lock held.
	beforeFill func()
}

// installation returns the cached installation of oauthID, if any, and the
// epoch to pass to fillInstallation after reading the file on a miss.
func (c *lookupCache) installation(oauthID string) (addon.Installation, bool, uint64) {
	return lookupIn(c, &c.insts, oauthID)
}

// token is installation's counterpart for tokens.
func (c *lookupCache) token(oauthID string) (addon.Token, bool, uint64) {
	return lookupIn(c, &c.tokens, oauthID)
}

// fillInstallation caches inst, read from the file in a transaction begun
// after installation returned epoch, unless a forget or reset ran since.
func (c *lookupCache) fillInstallation(epoch uint64, oauthID string, inst addon.Installation) {
	fillIn(c, epoch, &c.insts, oauthID, inst)
}

// fillToken is fillInstallation's counterpart for tokens.
func (c *lookupCache) fillToken(epoch uint64, oauthID string, t addon.Token) {
	fillIn(c, epoch, &c.tokens, oauthID, t)
}

// lookupIn and fillIn are the lookup and the fill of one of c's maps, *m,
// which they read under c's lock.
func lookupIn[T any](c *lookupCache, m *map[string]T, oauthID string) (T, bool, uint64) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := (*m)[oauthID]
	return v, ok && !c.closed, c.epoch
}

func fillIn[T any](c *lookupCache, epoch uint64, m *map[string]T, oauthID string, v T) {
	if c.beforeFill != nil {
		c.beforeFill()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.epoch != epoch {
		return
	}
	if *m == nil {
		*m = map[string]T{}
	}
	(*m)[oauthID] = v
}

// forget drops the cached installation and token of oauthID and discards
// every fill in flight. Call it after a write transaction that may have
// changed either has returned.
func (c *lookupCache) forget(oauthID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	delete(c.insts, oauthID)
	delete(c.tokens, oauthID)
}

// reset drops everything and turns the cache off for good (Close).
func (c *lookupCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	c.closed = true
	c.insts, c.tokens = nil, nil
}
