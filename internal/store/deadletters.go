package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// MaxReasonBytes caps the failure reason RecordAttempt and Bury store (as
// LastError or DeadLetter.Reason); a longer one is cut at a character
// boundary, so a huge error body cannot bloat every rewrite of a job.
const MaxReasonBytes = 2048

// RecordAttempt stores a failed attempt at job id: Attempts is incremented
// and LastError set to reason (cut to MaxReasonBytes). It returns NotFound if
// no pending job has that ID. Durable when it returns nil; batched like
// Enqueue, since it is on the delivery path.
func (d *DB) RecordAttempt(ctx context.Context, id uint64, reason string) error {
	reason = cutReason(reason)
	// A batched write may run more than once, each time in a fresh transaction:
	// the increment is never applied twice.
	return d.batchJob(ctx, "record attempt", id, func(tx *bolt.Tx, k, v []byte) error {
		var j addon.Job
		if err := decode(v, &j); err != nil {
			return fmt.Errorf("job %d: %w", id, err)
		}
		j.Attempts++
		j.LastError = reason
		data, err := json.Marshal(j)
		if err != nil {
			return err
		}
		return bucket(tx, bucketJobs).Put(k, data)
	})
}

// Bury moves job id out of the outbox into the dead letters, keeping its ID,
// as an addon.DeadLetter with reason (cut to MaxReasonBytes) and the store's
// current time, in one transaction; its installation's outbox slot is freed.
// It returns NotFound if no pending job has that ID. Durable when it returns
// nil; batched like Enqueue.
func (d *DB) Bury(ctx context.Context, id uint64, reason string) error {
	reason = cutReason(reason)
	at := d.now()
	var owner string
	err := d.batchJob(ctx, "bury", id, func(tx *bolt.Tx, k, v []byte) error {
		var j addon.Job
		if err := decode(v, &j); err != nil {
			return fmt.Errorf("job %d: %w", id, err)
		}
		data, err := json.Marshal(addon.DeadLetter{Job: j, Reason: reason, At: at})
		if err != nil {
			return err
		}
		if err := bucket(tx, bucketDead).Put(k, data); err != nil {
			return err
		}
		owner, err = removeJob(tx, id, k, v)
		return err
	})
	if err == nil {
		d.counts.removed(map[string]int{owner: 1})
	}
	return err
}

// DeadLetters returns every dead letter, in job ID order.
func (d *DB) DeadLetters(ctx context.Context) ([]addon.DeadLetter, error) {
	var out []addon.DeadLetter
	err := d.view(ctx, "dead letters", func(tx *bolt.Tx) error {
		return bucket(tx, bucketDead).ForEach(func(k, v []byte) error {
			var dl addon.DeadLetter
			if err := decode(v, &dl); err != nil {
				return fmt.Errorf("dead letter %x: %w", k, err)
			}
			out = append(out, dl)
			return ctx.Err()
		})
	})
	return out, err
}

// RetryDead moves dead letter id back into the outbox as a new job at the
// end of the queue: a new ID (greater than every ID before it), Attempts
// reset to zero, LastError kept (as the history), Received unchanged. A
// later duplicate delivery of its message answers with the new job. It returns the new job; NotFound if there is no
// such dead letter or its installation no longer exists; Unavailable if the
// installation's outbox is full (see Options.MaxPendingPerInstallation).
func (d *DB) RetryDead(ctx context.Context, id uint64) (addon.Job, error) {
	// The installation is known only once the dead letter is read: read it
	// first, to reserve its slot before the write that adds the job.
	var owner string
	err := d.view(ctx, "retry dead letter", func(tx *bolt.Tx) error {
		v := bucket(tx, bucketDead).Get(u64(id))
		if v == nil {
			return addon.Errorf(addon.NotFound, "dead letter %d not found", id)
		}
		var dl addon.DeadLetter
		if err := decode(v, &dl); err != nil {
			return fmt.Errorf("dead letter %d: %w", id, err)
		}
		owner = dl.Job.OAuthID
		return nil
	})
	if err != nil {
		return addon.Job{}, err
	}
	slot, pending := d.counts.reserve(owner, d.maxPending)
	if slot {
		defer func() { d.counts.release(owner, err == nil) }()
	}
	var out addon.Job
	// Batched, so that the new job is told (OnAdded) in commit order with
	// the others.
	err = d.batch(ctx, "retry dead letter", func(tx *bolt.Tx) error {
		out = addon.Job{}
		dead := bucket(tx, bucketDead)
		k := u64(id)
		v := dead.Get(k)
		if v == nil {
			return addon.Errorf(addon.NotFound, "dead letter %d not found", id)
		}
		var dl addon.DeadLetter
		if err := decode(v, &dl); err != nil {
			return fmt.Errorf("dead letter %d: %w", id, err)
		}
		j := dl.Job
		if bucket(tx, bucketInstallations).Get([]byte(j.OAuthID)) == nil {
			return addon.Errorf(addon.NotFound, "installation %q of dead letter %d not found", j.OAuthID, id)
		}
		if !slot {
			return errFull(j.OAuthID, pending)
		}
		j.Attempts = 0
		j, err := addJob(tx, j)
		if err != nil {
			return err
		}
		if err := dead.Delete(k); err != nil {
			return err
		}
		d.tellAdded(tx, j)
		if j.MessageID != "" {
			if err := repointSeen(tx, seenKey(j.MessageDate, j.OAuthID, j.MessageID), id, j.ID); err != nil {
				return err
			}
		}
		out = j
		return nil
	})
	if err != nil {
		return addon.Job{}, err
	}
	return out, nil
}

// repointSeen makes the seen entry of key sk name job to instead of from,
// if it names from (it may have been pruned, or never existed).
func repointSeen(tx *bolt.Tx, sk []byte, from, to uint64) error {
	seen := bucket(tx, bucketSeen)
	k, v := lookupSeen(seen, sk)
	if k == nil {
		return nil
	}
	job, at, err := parseSeen(k, v)
	if err != nil || job != from {
		return err
	}
	return seen.Put(k, seenValue(to, at))
}

// DropDead deletes dead letter id for good; NotFound if there is none.
func (d *DB) DropDead(ctx context.Context, id uint64) error {
	return d.update(ctx, "drop dead letter", func(tx *bolt.Tx) error {
		dead := bucket(tx, bucketDead)
		k := u64(id)
		if dead.Get(k) == nil {
			return addon.Errorf(addon.NotFound, "dead letter %d not found", id)
		}
		return dead.Delete(k)
	})
}

// DeadRetention is how long dead letters are kept for an operator to look
// at, retry or drop before PruneDead forgets them.
const DeadRetention = 30 * 24 * time.Hour

// PruneDead deletes the dead letters buried before olderThan and returns
// how many it deleted. The daemon calls it periodically with
// now.Add(-DeadRetention), so that undeliverable replies cannot grow the
// file without bound.
func (d *DB) PruneDead(ctx context.Context, olderThan time.Time) (int, error) {
	n := 0
	err := d.update(ctx, "prune dead letters", func(tx *bolt.Tx) error {
		n = 0
		c := bucket(tx, bucketDead).Cursor()
		for k, v := c.First(); k != nil; {
			var dl struct {
				At time.Time `json:"at"`
			}
			if err := json.Unmarshal(v, &dl); err != nil {
				return fmt.Errorf("dead letter %x: %w", k, err)
			}
			if !dl.At.Before(olderThan) {
				k, v = c.Next()
				continue
			}
			key := bytes.Clone(k)
			if err := c.Delete(); err != nil {
				return err
			}
			n++
			k, v = c.Seek(key) // Delete moves the cursor: look again from here
		}
		return nil
	})
	return n, err
}

// cutReason cuts s to at most MaxReasonBytes without splitting a character.
func cutReason(s string) string {
	if len(s) <= MaxReasonBytes {
		return s
	}
	i := MaxReasonBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
