package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// SeenRetention is how long the daemon should remember a (OAuthID,
// MessageID) pair to drop duplicate deliveries: pass now minus SeenRetention
// to PruneSeen. HipChat retries within minutes, so a day is ample.
const SeenRetention = 24 * time.Hour

// seenKey is the key of a delivered message in the seen bucket: its date
// (8 bytes big-endian Unix microseconds; 0 when unknown), oauthID, "\x00",
// messageID. Messages come in about in date order, so recording one writes
// at the end of the bucket rather than on a page anywhere in it, and
// PruneSeen reads the oldest keys only. oauthID never holds a NUL byte.
func seenKey(date time.Time, oauthID, messageID string) []byte {
	var micros uint64
	if !date.IsZero() && date.UnixMicro() > 0 {
		micros = uint64(date.UnixMicro())
	}
	k := make([]byte, 8, 8+len(oauthID)+1+len(messageID))
	binary.BigEndian.PutUint64(k, micros)
	k = append(k, oauthID...)
	k = append(k, 0)
	return append(k, messageID...)
}

// seenValue is the value of a seen key: the job's ID and when the message
// was received (Unix nanoseconds), 8 bytes big-endian each.
func seenValue(job uint64, received time.Time) []byte {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, job)
	binary.BigEndian.PutUint64(v[8:], uint64(received.UnixNano()))
	return v
}

// parseSeen reads a seen value.
func parseSeen(k, v []byte) (job uint64, received time.Time, err error) {
	if len(v) != 16 {
		return 0, time.Time{}, fmt.Errorf("seen entry %q: malformed (%d bytes)", k, len(v))
	}
	return binary.BigEndian.Uint64(v), time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))), nil
}

// lookupSeen finds the seen entry of key sk, or of the same message without
// a date (recorded before dates were, or sent without one); it returns the
// key found, or nil.
func lookupSeen(seen *bolt.Bucket, sk []byte) (key, value []byte) {
	if v := seen.Get(sk); v != nil {
		return sk, v
	}
	undated := bytes.Clone(sk)
	clear(undated[:8])
	if !bytes.Equal(undated, sk) {
		if v := seen.Get(undated); v != nil {
			return undated, v
		}
	}
	return nil, nil
}

// Enqueue stores j unless a job with the same (OAuthID, MessageDate,
// MessageID) was enqueued before (and its seen message id not yet pruned,
// see PruneSeen); it reports whether j was new. The check and the mark
// happen in the same transaction as the store, so a duplicate delivery
// never makes a second job, however many race. A job with an empty
// MessageID is always new. Beyond the contract, a job is also a duplicate
// of an earlier one with its MessageID and no MessageDate (recorded before
// schema 3 kept dates, or sent without one).
//
// A new job gets the next ID, greater than every ID before it (IDs are
// never reused), and, if j.Received is zero, the store's current time. For
// a duplicate, Enqueue returns the stored job if it is still pending, or
// else j with the first job's ID.
//
// The installation must exist (NotFound otherwise), so a job cannot outlive
// a concurrent DeleteInstallation. With Options.MaxPendingPerInstallation, a
// new job for an installation that already has that many pending jobs is
// refused with an Unavailable error and nothing is stored; a duplicate is
// still answered (not new, no error). Enqueue is durable when it returns nil:
// concurrent calls share one transaction and one fsync (see groupCommit), which
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
		sk = seenKey(j.MessageDate, j.OAuthID, j.MessageID)
	}
	slot, pending := d.counts.reserve(j.OAuthID, d.maxPending)
	var (
		out       addon.Job
		isNew     bool
		noInstall bool
		full      bool
		err       error
	)
	if slot {
		defer func() { d.counts.release(j.OAuthID, err == nil && isNew) }()
	}
	err = d.batch(ctx, "enqueue", func(tx *bolt.Tx) error {
		// A batched write may run more than once: start from scratch each time.
		out, isNew, noInstall, full = addon.Job{}, false, false, false

		if bucket(tx, bucketInstallations).Get([]byte(j.OAuthID)) == nil {
			noInstall = true
			return nil
		}
		seen := bucket(tx, bucketSeen)
		if sk != nil {
			if k, v := lookupSeen(seen, sk); k != nil {
				id, _, err := parseSeen(k, v)
				if err != nil {
					return err
				}
				out = j
				out.ID = id
				if jv := bucket(tx, bucketJobs).Get(u64(id)); jv != nil {
					var stored addon.Job
					if err := decode(jv, &stored); err != nil {
						return fmt.Errorf("job %d: %w", id, err)
					}
					out = stored
				}
				return nil
			}
		}
		if !slot {
			full = true
			return nil
		}
		nj, err := addJob(tx, j)
		if err != nil {
			return err
		}
		d.tellAdded(tx, nj)
		if sk != nil {
			if err := seen.Put(sk, seenValue(nj.ID, now)); err != nil {
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
	case full:
		return addon.Job{}, false, errFull(j.OAuthID, pending)
	}
	return out, isNew, nil
}

// addJob stores j under the next job ID and returns it with that ID.
func addJob(tx *bolt.Tx, j addon.Job) (addon.Job, error) {
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
	return j, nil
}

// errFull is the error for an installation whose outbox is at its bound.
func errFull(oauthID string, pending int) error {
	return addon.Errorf(addon.Unavailable, "store: outbox of installation %s is full (%d pending)", oauthID, pending)
}

// Pending returns up to limit stored jobs in ID order; limit <= 0 means all.
func (d *DB) Pending(ctx context.Context, limit int) ([]addon.Job, error) {
	var out []addon.Job
	err := d.view(ctx, "pending", func(tx *bolt.Tx) error {
		c := bucket(tx, bucketJobs).Cursor()
		for k, v := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			var j addon.Job
			if err := decode(v, &j); err != nil {
				return fmt.Errorf("job %x: %w", k, err)
			}
			out = append(out, j)
		}
		return nil
	})
	return out, err
}

// Complete removes a delivered (or given-up) job and frees its slot in its
// installation's outbox. It returns NotFound if no job has that ID (already
// completed or buried, or its installation was deleted); callers may ignore
// that. The job's seen message id stays, so a late duplicate delivery is
// still dropped. Durable when it returns nil; batched like Enqueue.
func (d *DB) Complete(ctx context.Context, id uint64) error {
	var owner string
	err := d.batchJob(ctx, "complete", id, func(tx *bolt.Tx, k, v []byte) (err error) {
		owner, err = removeJob(tx, id, k, v)
		return err
	})
	if err == nil {
		d.counts.removed(map[string]int{owner: 1})
	}
	return err
}

// CompleteAll removes the delivered jobs that are still pending, in one
// batched write like Complete's; jobs no longer stored (buried, removed
// with their installation, completed before) are skipped. Each job must be
// as the store returned it (its ID and installation). Durable when it
// returns nil.
func (d *DB) CompleteAll(ctx context.Context, jobs []addon.Job) error {
	var removed map[string]int
	err := d.batch(ctx, "complete", func(tx *bolt.Tx) error {
		removed = map[string]int{}
		b := bucket(tx, bucketJobs)
		for _, j := range jobs {
			if k := u64(j.ID); b.Get(k) != nil {
				if err := b.Delete(k); err != nil {
					return err
				}
				removed[j.OAuthID]++
			}
		}
		return nil
	})
	if err == nil {
		d.counts.removed(removed)
	}
	return err
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

// removeJob deletes the pending job id (key k, value v) and returns its
// installation, whose count the caller lowers once committed.
func removeJob(tx *bolt.Tx, id uint64, k, v []byte) (string, error) {
	owner, err := jobOwner(v)
	if err != nil {
		return "", fmt.Errorf("job %d: %w", id, err)
	}
	return owner, bucket(tx, bucketJobs).Delete(k)
}

// jobOwner reads the installation of a stored job.
func jobOwner(v []byte) (string, error) {
	var j struct {
		OAuthID string `json:"oauthId"`
	}
	err := json.Unmarshal(v, &j)
	return j.OAuthID, err
}

// removeInstallationJobs deletes every pending job of an installation and
// returns how many there were.
func removeInstallationJobs(tx *bolt.Tx, oauthID string) (int, error) {
	jobs := bucket(tx, bucketJobs)
	var keys [][]byte
	err := jobs.ForEach(func(k, v []byte) error {
		owner, err := jobOwner(v)
		if err != nil {
			return fmt.Errorf("job %x: %w", k, err)
		}
		if owner == oauthID {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := jobs.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// countJobs counts the jobs of each installation by scanning the jobs
// bucket (which must exist).
func countJobs(tx *bolt.Tx) (map[string]int, error) {
	counts := make(map[string]int)
	err := bucket(tx, bucketJobs).ForEach(func(k, v []byte) error {
		owner, err := jobOwner(v)
		if err != nil {
			return fmt.Errorf("job %x: %w", k, err)
		}
		counts[owner]++
		return nil
	})
	return counts, err
}

// PruneSeen forgets the seen message ids dated before olderThan, and
// returns how many it forgot; a message enqueued again after that is new.
// It reads the keys dated before olderThan only (the oldest), and of those
// forgets the ones also received (by the store's clock) before olderThan:
// a message HipChat dated earlier than it reached us, from a clock behind
// ours, is kept until its receipt is as old. The daemon calls it
// periodically with now.Add(-SeenRetention). It runs in one write
// transaction.
func (d *DB) PruneSeen(ctx context.Context, olderThan time.Time) (int, error) {
	var n int
	err := d.update(ctx, "prune seen", func(tx *bolt.Tx) error {
		n = 0
		seen := bucket(tx, bucketSeen)
		end := seenKey(olderThan, "", "")[:8]
		var old [][]byte
		c := seen.Cursor()
		for k, v := c.First(); k != nil && bytes.Compare(k[:min(len(k), 8)], end) < 0; k, v = c.Next() {
			_, at, err := parseSeen(k, v)
			if err != nil {
				return err
			}
			if at.Before(olderThan) {
				old = append(old, bytes.Clone(k))
			}
			if err := ctx.Err(); err != nil {
				return err
			}
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
