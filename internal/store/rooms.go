package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// bucketRoomQueue indexes the pending jobs by room: key oauthId, 0x00, the
// room id (8 bytes) and the job id (8 bytes), no value. It lets Heads find
// the oldest job of every room without reading the jobs of busy rooms, so
// one installation with a full outbox cannot hide the others' jobs. It is
// written in the same transactions as the jobs bucket.
const bucketRoomQueue = "room_queue"

func roomPrefix(oauthID string, roomID int64) []byte {
	k := make([]byte, 0, len(oauthID)+1+16)
	k = append(k, oauthID...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, uint64(roomID))
}

func roomKey(oauthID string, roomID int64, id uint64) []byte {
	return binary.BigEndian.AppendUint64(roomPrefix(oauthID, roomID), id)
}

// jobRoom reads the installation and room of a stored job.
func jobRoom(v []byte) (string, int64, error) {
	var j struct {
		OAuthID string `json:"oauthId"`
		RoomID  int64  `json:"roomId"`
	}
	if err := json.Unmarshal(v, &j); err != nil {
		return "", 0, err
	}
	return j.OAuthID, j.RoomID, nil
}

// indexJob adds the stored job v (ID id) to the room index.
func indexJob(tx *bolt.Tx, id uint64, v []byte) error {
	oauthID, roomID, err := jobRoom(v)
	if err != nil {
		return fmt.Errorf("job %d: %w", id, err)
	}
	return bucket(tx, bucketRoomQueue).Put(roomKey(oauthID, roomID, id), nil)
}

// removeInstallationJobs deletes every pending job of an installation with
// its index entry: the index finds them without reading the other
// installations' jobs.
func removeInstallationJobs(tx *bolt.Tx, oauthID string) error {
	jobs := bucket(tx, bucketJobs)
	prefix := append([]byte(oauthID), 0)
	c := bucket(tx, bucketRoomQueue).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if len(k) < 17 {
			return fmt.Errorf("room index key %x is malformed", k)
		}
		if err := jobs.Delete(k[len(k)-8:]); err != nil {
			return err
		}
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// ensureRoomIndex creates the room index from the jobs bucket when the file
// has none yet (written before it existed) and says so.
func ensureRoomIndex(tx *bolt.Tx) (string, error) {
	if bucket(tx, bucketRoomQueue) != nil {
		return "", nil
	}
	if _, err := tx.CreateBucket([]byte(bucketRoomQueue)); err != nil {
		return "", err
	}
	n := 0
	err := bucket(tx, bucketJobs).ForEach(func(k, v []byte) error {
		n++
		return indexJob(tx, binary.BigEndian.Uint64(k), v)
	})
	if err != nil || n == 0 {
		return "", err
	}
	return fmt.Sprintf("indexed %d pending jobs by room", n), nil
}

// checkRoomIndex reports index entries without a job and jobs without one.
func checkRoomIndex(tx *bolt.Tx) []error {
	var errs []error
	jobs, index := bucket(tx, bucketJobs), bucket(tx, bucketRoomQueue)
	n := 0
	_ = index.ForEach(func(k, _ []byte) error {
		n++
		if len(k) < 17 || jobs.Get(k[len(k)-8:]) == nil {
			errs = append(errs, fmt.Errorf("room index entry %x names no pending job", k))
		}
		return nil
	})
	if jn := jobs.Stats().KeyN; jn != n && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("room index has %d entries for %d pending jobs", n, jn))
	}
	return errs
}

// Heads returns the oldest pending job of each room (installation and room
// id), in job ID order, for at most limit rooms (limit <= 0: all). Delivery
// takes a room's jobs one at a time in order, so these are all the jobs
// that may go next. Its cost grows with the number of rooms, not jobs.
func (d *DB) Heads(ctx context.Context, limit int) ([]addon.Job, error) {
	var out []addon.Job
	err := d.view(ctx, "heads", func(tx *bolt.Tx) error {
		jobs := bucket(tx, bucketJobs)
		pc := &d.pending
		pc.mu.Lock()
		defer pc.mu.Unlock()
		pc.gen++
		// The heads are found in room order, then put in ID order by
		// sorting small (id, position) records, not the jobs themselves
		// (some 150 bytes each), and only then decoded: a third less time
		// (BenchmarkHeads, docs/performance.md).
		type head struct {
			id   uint64
			k, v []byte // valid while tx is
		}
		heads := make([]head, 0, len(pc.jobs)+16)
		var next []byte // seek key past a room's jobs, reused
		c := bucket(tx, bucketRoomQueue).Cursor()
		for k, _ := c.First(); k != nil && (limit <= 0 || len(heads) < limit); {
			if len(k) < 17 {
				return fmt.Errorf("room index key %x is malformed", k)
			}
			id := k[len(k)-8:]
			v := jobs.Get(id)
			if v == nil {
				return fmt.Errorf("room index names job %x, which is not pending", id)
			}
			heads = append(heads, head{id: binary.BigEndian.Uint64(id), k: id, v: v})
			// Skip the rest of this room: its later jobs wait for this one.
			next = append(append(next[:0], k[:len(k)-8]...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
			k, _ = c.Seek(next)
		}
		type rank struct {
			id uint64
			i  int // in heads
		}
		order := make([]rank, len(heads))
		for i, h := range heads {
			order[i] = rank{h.id, i}
		}
		slices.SortFunc(order, func(a, b rank) int { return cmp.Compare(a.id, b.id) })
		out = make([]addon.Job, 0, len(heads))
		for _, o := range order {
			h := heads[o.i]
			j, err := pc.decode(h.k, h.v)
			if err != nil {
				return fmt.Errorf("job %x: %w", h.k, err)
			}
			out = append(out, j)
		}
		pc.sweep()
		return nil
	})
	return out, err
}
