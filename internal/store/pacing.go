package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// PacingNamespace is the key/value namespace of the pacer's windows: each
// under its installation's addon.KeyPrefix ("pacing/token" or
// "pacing/room/<id>"), so DeleteInstallation removes them with it. A value
// is the send times, 8 bytes each (Unix nanoseconds, big-endian).
const PacingNamespace = "pacing"

var _ addon.Pacing = (*DB)(nil)

func paceKey(w addon.PaceWindow) string {
	if w.Room == 0 {
		return addon.KeyPrefix(w.OAuthID) + "pacing/token"
	}
	return addon.KeyPrefix(w.OAuthID) + "pacing/room/" + strconv.FormatInt(w.Room, 10)
}

// parsePaceKey is paceKey's inverse.
func parsePaceKey(key string) (oauthID string, room int64, err error) {
	rest, ok := strings.CutPrefix(key, "installation/")
	esc, name, ok2 := strings.Cut(rest, "/pacing/")
	if !ok || !ok2 {
		return "", 0, fmt.Errorf("pacing key %q: not a pacing key", key)
	}
	if oauthID, err = url.PathUnescape(esc); err != nil {
		return "", 0, fmt.Errorf("pacing key %q: %w", key, err)
	}
	if name == "token" {
		return oauthID, 0, nil
	}
	n, ok := strings.CutPrefix(name, "room/")
	if room, err = strconv.ParseInt(n, 10, 64); !ok || err != nil || room <= 0 {
		return "", 0, fmt.Errorf("pacing key %q: bad room", key)
	}
	return oauthID, room, nil
}

// SavePacing implements addon.Pacing in one batched write.
func (d *DB) SavePacing(ctx context.Context, windows []addon.PaceWindow) error {
	kv := d.kvNamespace(PacingNamespace)
	now := d.now()
	return d.batch(ctx, "save pacing", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(kv.bucketName())
		if err != nil {
			return err
		}
		insts := bucket(tx, bucketInstallations)
		for _, w := range windows {
			key := []byte(paceKey(w))
			switch {
			case insts.Get([]byte(w.OAuthID)) == nil:
			case len(w.Times) == 0:
				err = b.Delete(key)
			default:
				val := make([]byte, 0, 8*len(w.Times))
				for _, t := range w.Times {
					val = binary.BigEndian.AppendUint64(val, uint64(t.UnixNano()))
				}
				err = b.Put(key, kvRecord(now, val))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// LoadPacing implements addon.Pacing.
func (d *DB) LoadPacing(ctx context.Context) ([]addon.PaceWindow, error) {
	kv := d.kvNamespace(PacingNamespace)
	var out []addon.PaceWindow
	err := d.view(ctx, "load pacing", func(tx *bolt.Tx) error {
		out = nil // a retried view starts afresh
		b := kv.bucket(tx)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			id, room, err := parsePaceKey(string(k))
			if err != nil {
				return err
			}
			val, _, _ := kvGet(b, string(k))
			if len(val)%8 != 0 {
				return fmt.Errorf("pacing key %q: %d bytes, not a list of times", k, len(val))
			}
			w := addon.PaceWindow{OAuthID: id, Room: room, Times: make([]time.Time, 0, len(val)/8)}
			for i := 0; i < len(val); i += 8 {
				w.Times = append(w.Times, time.Unix(0, int64(binary.BigEndian.Uint64(val[i:]))))
			}
			out = append(out, w)
			return nil
		})
	})
	return out, err
}
