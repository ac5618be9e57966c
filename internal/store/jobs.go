package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// SeenRetention is how long the daemon should remember a (OAuthID,
// MessageID) pair to drop duplicate deliveries: pass now minus SeenRetention
// to PruneSeen. HipChat retries within minutes, so a day is ample.
const SeenRetention = 24 * time.Hour

// seenEntry is the value of a seen key.
type seenEntry struct {
	Job uint64    `json:"job"`
	At  time.Time `json:"at"`
}

// seenKey is oauthID "\x00" messageID; oauthID never holds a NUL byte.
func seenKey(oauthID, messageID string) []byte {
	k := make([]byte, 0, len(oauthID)+1+len(messageID))
	k = append(k, oauthID...)
	k = append(k, 0)
	return append(k, messageID...)
}

// Enqueue stores j unless a job with the same (OAuthID, MessageID) was
// enqueued before (and not yet pruned, see PruneSeen); it reports whether j
// was new. The check and the mark happen in the same transaction as the
// store, so a duplicate delivery never makes a second job, however many race.
// A job with an empty MessageID is always new.
//
// A new job gets the next ID (increasing) and, if j.Received is zero, the
// store's current time. For a duplicate, Enqueue returns the stored job if it
// is still pending, or else j with the first job's ID.
//
// The installation must exist (NotFound otherwise), so a job cannot outlive
// a concurrent DeleteInstallation. With Options.MaxPendingPerInstallation, a
// new job for an installation that already has that many pending jobs is
// refused with an Unavailable error and nothing is stored; a duplicate is
// still answered (not new, no error). Enqueue is durable when it returns nil:
// concurrent calls share one transaction and one fsync (bolt's Batch), which
// costs a single caller up to Options.BatchDelay of latency.
func (d *DB) Enqueue(ctx context.Context, j addon.Job) (addon.Job, bool, error) {
	if err := checkOAuthID(j.OAuthID); err != nil {
		return addon.Job{}, false, err
	}
	now := d.now()
	if j.Received.IsZero() {
		j.Received = now
	}
	var sk []byte
	if j.MessageID != "" {
		sk = seenKey(j.OAuthID, j.MessageID)
	}

	var (
		out       addon.Job
		isNew     bool
		noInstall bool
		full      uint64 // pending count when refused for a full outbox
	)
	err := d.batch(ctx, "enqueue", func(tx *bolt.Tx) error {
		// Batch may run this more than once: start from scratch each time.
		out, isNew, noInstall, full = addon.Job{}, false, false, 0

		if bucket(tx, bucketInstallations).Get([]byte(j.OAuthID)) == nil {
			noInstall = true
			return nil
		}
		jobs := bucket(tx, bucketJobs)
		seen := bucket(tx, bucketSeen)
		if sk != nil {
			if v := seen.Get(sk); v != nil {
				var e seenEntry
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("seen entry %q: %w", sk, err)
				}
				out = j
				out.ID = e.Job
				if jv := jobs.Get(u64(e.Job)); jv != nil {
					var stored addon.Job
					if err := json.Unmarshal(jv, &stored); err != nil {
						return fmt.Errorf("job %d: %w", e.Job, err)
					}
					out = stored
				}
				return nil
			}
		}

		// Batched callers share this transaction, so the count includes
		// the jobs they added before: the bound holds however many race.
		n, err := pendingCount(tx, j.OAuthID)
		if err != nil {
			return err
		}
		if d.maxPending > 0 && n >= uint64(d.maxPending) {
			full = n
			return nil
		}
		nj, err := addJob(tx, j, n)
		if err != nil {
			return err
		}
		if sk != nil {
			seenVal, err := json.Marshal(seenEntry{Job: nj.ID, At: now})
			if err != nil {
				return err
			}
			if err := seen.Put(sk, seenVal); err != nil {
				return err
			}
		}
		out, isNew = nj, true
		return nil
	})
	switch {
	case err != nil:
		return addon.Job{}, false, err
	case noInstall:
		return addon.Job{}, false, addon.Errorf(addon.NotFound, "installation %q not found", j.OAuthID)
	case full > 0:
		return addon.Job{}, false, errFull(j.OAuthID, full)
	}
	return out, isNew, nil
}

// addJob stores j under the next job ID, with its room index entry, and
// sets its installation's pending counter, which was n, to n+1. It returns
// j with its new ID.
func addJob(tx *bolt.Tx, j addon.Job, n uint64) (addon.Job, error) {
	jobs := bucket(tx, bucketJobs)
	id, err := jobs.NextSequence()
	if err != nil {
		return addon.Job{}, err
	}
	j.ID = id
	data, err := json.Marshal(j)
	if err != nil {
		return addon.Job{}, err
	}
	if err := jobs.Put(u64(id), data); err != nil {
		return addon.Job{}, err
	}
	// The room index entry of indexJob, from j rather than from data
	// decoded again.
	if err := bucket(tx, bucketRoomQueue).Put(roomKey(j.OAuthID, j.RoomID, id), nil); err != nil {
		return addon.Job{}, err
	}
	if err := setPendingCount(tx, j.OAuthID, n+1); err != nil {
		return addon.Job{}, err
	}
	return j, nil
}

// errFull is the error for an installation whose outbox is at its bound.
func errFull(oauthID string, pending uint64) error {
	return addon.Errorf(addon.Unavailable, "store: outbox of installation %s is full (%d pending)", oauthID, pending)
}

// Pending returns up to limit stored jobs in ID order; limit <= 0 means all.
//
// It shares Heads' cache of decoded jobs (see pendingCache): a job whose
// stored bytes are unchanged since the last call is not decoded again.
func (d *DB) Pending(ctx context.Context, limit int) ([]addon.Job, error) {
	var out []addon.Job
	err := d.view(ctx, "pending", func(tx *bolt.Tx) error {
		pc := &d.pending
		pc.mu.Lock()
		defer pc.mu.Unlock()
		pc.gen++
		// Sized by the last call: the outbox changes little between two.
		out = make([]addon.Job, 0, len(pc.jobs)+16)
		c := bucket(tx, bucketJobs).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			j, err := pc.decode(k, v)
			if err != nil {
				return fmt.Errorf("job %x: %w", k, err)
			}
			out = append(out, j)
		}
		pc.sweep()
		return nil
	})
	return out, err
}

// pendingCache holds the decoded form of the jobs the last Pending or Heads
// call returned, by ID, with the bytes they were decoded from. An entry is used
// only while the stored value is byte for byte the same (a rewritten job,
// e.g. by RecordAttempt, is decoded afresh), so it needs no invalidation;
// entries a call did not see are dropped, so it holds at most one call's
// jobs.
type pendingCache struct {
	mu   sync.Mutex
	gen  uint64
	jobs map[uint64]*cachedJob
}

type cachedJob struct {
	raw []byte
	job addon.Job
	gen uint64
}

// decode returns the job stored as v under key k.
func (pc *pendingCache) decode(k, v []byte) (addon.Job, error) {
	if len(k) != 8 {
		var j addon.Job
		err := decode(v, &j)
		return j, err
	}
	id := binary.BigEndian.Uint64(k)
	cj := pc.jobs[id]
	if cj == nil || !bytes.Equal(cj.raw, v) {
		var j addon.Job
		if err := decode(v, &j); err != nil {
			return addon.Job{}, err
		}
		if pc.jobs == nil {
			pc.jobs = map[uint64]*cachedJob{}
		}
		cj = &cachedJob{raw: bytes.Clone(v), job: j}
		pc.jobs[id] = cj
	}
	cj.gen = pc.gen
	j := cj.job
	if j.Reply != nil { // the caller gets its own copy
		r := *j.Reply
		j.Reply = &r
	}
	return j, nil
}

// sweep drops the entries the current call did not see.
func (pc *pendingCache) sweep() {
	for id, cj := range pc.jobs {
		if cj.gen != pc.gen {
			delete(pc.jobs, id)
		}
	}
}

// Complete removes a delivered (or given-up) job and frees its slot in its
// installation's outbox. It returns NotFound if no job has that ID (already
// completed or buried, or its installation was deleted); callers may ignore
// that. The job's seen message id stays, so a late duplicate delivery is
// still dropped. Durable when it returns nil; batched like Enqueue.
func (d *DB) Complete(ctx context.Context, id uint64) error {
	return d.batchJob(ctx, "complete", id, func(tx *bolt.Tx, k, v []byte) error {
		return removeJob(tx, id, k, v)
	})
}

// batchJob runs fn in a batched write transaction on the pending job id,
// stored under key k as v, and returns NotFound if no such job is pending
// (fn is not called then). Like every Batch function, fn may run more than
// once and must be idempotent.
func (d *DB) batchJob(ctx context.Context, op string, id uint64, fn func(tx *bolt.Tx, k, v []byte) error) error {
	var missing bool
	err := d.batch(ctx, op, func(tx *bolt.Tx) error {
		k := u64(id)
		v := bucket(tx, bucketJobs).Get(k)
		missing = v == nil
		if missing {
			return nil
		}
		return fn(tx, k, v)
	})
	if err != nil {
		return err
	}
	if missing {
		return addon.Errorf(addon.NotFound, "job %d not found", id)
	}
	return nil
}

// removeJob deletes the pending job id (key k, value v) with its room index
// entry, and frees its slot in its installation's outbox.
func removeJob(tx *bolt.Tx, id uint64, k, v []byte) error {
	owner, roomID, err := jobRoom(v) // what the index and the counter need, decoded once
	if err != nil {
		return fmt.Errorf("job %d: %w", id, err)
	}
	if err := bucket(tx, bucketRoomQueue).Delete(roomKey(owner, roomID, id)); err != nil {
		return err
	}
	if err := bucket(tx, bucketJobs).Delete(k); err != nil {
		return err
	}
	return addPending(tx, owner, -1)
}

// pendingCount reads the pending-job counter of an installation; an absent
// counter is zero.
func pendingCount(tx *bolt.Tx, oauthID string) (uint64, error) {
	v := bucket(tx, bucketPendingCounts).Get([]byte(oauthID))
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("pending counter of installation %q: malformed (%d bytes)", oauthID, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// setPendingCount stores a counter; zero removes it, so the bucket holds
// only installations with pending jobs.
func setPendingCount(tx *bolt.Tx, oauthID string, n uint64) error {
	b := bucket(tx, bucketPendingCounts)
	if n == 0 {
		return b.Delete([]byte(oauthID))
	}
	return b.Put([]byte(oauthID), u64(n))
}

// addPending adds delta (+1 or -1) to a counter. It stops at zero rather
// than fail a delivery: a counter below its jobs only loosens the bound, and
// Check reports any drift.
func addPending(tx *bolt.Tx, oauthID string, delta int) error {
	n, err := pendingCount(tx, oauthID)
	if err != nil {
		return err
	}
	if delta < 0 && n < uint64(-delta) {
		return setPendingCount(tx, oauthID, 0)
	}
	return setPendingCount(tx, oauthID, uint64(int64(n)+int64(delta)))
}

// rebuildPendingCounts (re)creates the counter bucket from the jobs bucket
// and returns the number of installations with pending jobs.
func rebuildPendingCounts(tx *bolt.Tx) (int, error) {
	counts, err := countJobs(tx)
	if err != nil {
		return 0, err
	}
	if bucket(tx, bucketPendingCounts) != nil {
		if err := tx.DeleteBucket([]byte(bucketPendingCounts)); err != nil {
			return 0, err
		}
	}
	b, err := tx.CreateBucket([]byte(bucketPendingCounts))
	if err != nil {
		return 0, err
	}
	for id, n := range counts {
		if err := b.Put([]byte(id), u64(n)); err != nil {
			return 0, err
		}
	}
	return len(counts), nil
}

// countJobs counts the jobs of each installation by scanning the jobs
// bucket (which must exist).
func countJobs(tx *bolt.Tx) (map[string]uint64, error) {
	counts := make(map[string]uint64)
	jobs := bucket(tx, bucketJobs)
	if jobs == nil {
		return counts, nil
	}
	err := jobs.ForEach(func(k, v []byte) error {
		owner, _, err := jobRoom(v)
		if err != nil {
			return fmt.Errorf("job %x: %w", k, err)
		}
		counts[owner]++
		return nil
	})
	return counts, err
}

// PruneSeen forgets the seen message ids recorded before olderThan, and
// returns how many it forgot. The daemon calls it periodically with
// now.Add(-SeenRetention). It runs in one write transaction.
func (d *DB) PruneSeen(ctx context.Context, olderThan time.Time) (int, error) {
	var n int
	err := d.update(ctx, "prune seen", func(tx *bolt.Tx) error {
		n = 0
		seen := bucket(tx, bucketSeen)
		var old [][]byte
		err := seen.ForEach(func(k, v []byte) error {
			var e seenEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("seen entry %q: %w", k, err)
			}
			if e.At.Before(olderThan) {
				old = append(old, bytes.Clone(k))
			}
			return ctx.Err()
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := seen.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
