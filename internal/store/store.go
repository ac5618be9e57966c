// Package store is hipconnect's bbolt adapter: it keeps installations,
// access tokens, pending jobs, the message ids already seen, a generic
// key/value area (certmagic's certificates among them) and a schema version,
// all in one bbolt file.
//
// Layout of the file (top-level buckets):
//
//	meta           "schema_version" -> 8-byte big-endian version
//	installations  oauthId -> JSON addon.Installation
//	tokens         oauthId -> JSON addon.Token
//	jobs           8-byte big-endian job id -> JSON addon.Job
//	seen           oauthId "\x00" messageId -> JSON {"job":id,"at":time}
//	kv/<namespace> key -> 8-byte big-endian modified time (Unix ns) || value
//
// A *DB is safe for concurrent use. A nil error from a write means the
// transaction was committed and fsynced. The file is locked (flock) while
// open, so only one process uses it at a time.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the version of the file layout this code reads and writes.
// Open refuses a file with a newer version and migrates an older one.
const SchemaVersion = 1

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Bucket and key names.
const (
	bucketMeta          = "meta"
	bucketInstallations = "installations"
	bucketTokens        = "tokens"
	bucketJobs          = "jobs"
	bucketSeen          = "seen"

	keySchemaVersion = "schema_version"
)

// kvBucketPrefix starts the name of every KV namespace bucket.
const kvBucketPrefix = "kv/"

// dataBuckets are created by Open (meta is handled with the version).
func dataBuckets() []string {
	return []string{bucketInstallations, bucketTokens, bucketJobs, bucketSeen}
}

// bucket returns the named top-level bucket; Open created all of them.
func bucket(tx *bolt.Tx, name string) *bolt.Bucket { return tx.Bucket([]byte(name)) }

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for the file lock held by another
	// process; zero means DefaultTimeout. bbolt itself would wait forever.
	Timeout time.Duration
	// Now is the clock for seen-message times and KV modified times;
	// nil means time.Now.
	Now func() time.Time
}

// DB is an open hipconnect store. Every method is safe for concurrent use.
type DB struct {
	db       *bolt.DB
	path     string
	now      func() time.Time
	warnings []string
	certs    *certStorage
}

var _ addon.Store = (*DB)(nil)

// Open opens (creating if missing) the store at path. It creates the parent
// directory (mode 0700) if needed, creates the file with mode 0600 and
// tightens an existing file that group or others could read (reported by
// Warnings). It waits at most o.Timeout for a lock held by another process
// and then fails with an error saying the file is in use. It refuses a file
// written by a newer schema version, and a bbolt file that is not a
// hipconnect store.
func Open(path string, o Options) (*DB, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &DB{path: path, now: o.Now}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil:
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("store: open: %s is not a regular file", path)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			if err := os.Chmod(path, 0o600); err != nil {
				return nil, fmt.Errorf("store: open: tighten mode %04o of %s: %w", perm, path, err)
			}
			d.warnings = append(d.warnings,
				fmt.Sprintf("%s had mode %04o (readable by others); changed to 0600", path, perm))
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return nil, fmt.Errorf("store: open: %w", err)
	}

	bdb, err := openBolt(path, &bolt.Options{Timeout: o.Timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("store: open: %s is in use by another process (lock not acquired within %s): %w",
				path, o.Timeout, err)
		}
		return nil, fmt.Errorf("store: open: %s: %w", path, err)
	}
	d.db = bdb
	d.certs = newCertStorage(d.KV(CertMagicNamespace))

	if err := bdb.Update(func(tx *bolt.Tx) (err error) {
		defer recoverDamage(&err)
		return initSchema(tx)
	}); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("store: open: %s: %w", path, err)
	}
	return d, nil
}

// initSchema checks the schema version, runs migrations from older versions,
// creates all buckets and records SchemaVersion, in one transaction.
func initSchema(tx *bolt.Tx) error {
	v, err := schemaVersion(tx)
	if err != nil {
		return err
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version %d is newer than this hipconnect understands (%d): upgrade hipconnect or restore an older backup",
			v, SchemaVersion)
	}
	if v == 0 {
		// No version: only an empty file may become a store.
		var foreign []string
		_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			foreign = append(foreign, string(name))
			return nil
		})
		if len(foreign) > 0 {
			return fmt.Errorf("not a hipconnect store (buckets %q but no schema version)", foreign)
		}
	}
	for from := v; from != 0 && from < SchemaVersion; from++ {
		if err := migrate(tx, from); err != nil {
			return fmt.Errorf("migrate schema %d to %d: %w", from, from+1, err)
		}
	}
	meta, err := tx.CreateBucketIfNotExists([]byte(bucketMeta))
	if err != nil {
		return err
	}
	for _, name := range dataBuckets() {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if v != SchemaVersion {
		return meta.Put([]byte(keySchemaVersion), u64(SchemaVersion))
	}
	return nil
}

// migrate upgrades the file from schema version from to from+1. Each future
// layout change adds a case here; a case must be safe to run on a file that
// is exactly at version from.
func migrate(tx *bolt.Tx, from uint64) error {
	switch from {
	// case 1: return migrate1to2(tx)
	default:
		return fmt.Errorf("no migration from schema version %d", from)
	}
}

// schemaVersion reads the recorded version; 0 means none is recorded.
func schemaVersion(tx *bolt.Tx) (uint64, error) {
	meta := bucket(tx, bucketMeta)
	if meta == nil {
		return 0, nil
	}
	raw := meta.Get([]byte(keySchemaVersion))
	if raw == nil {
		return 0, nil
	}
	if len(raw) != 8 {
		return 0, fmt.Errorf("malformed schema version (%d bytes)", len(raw))
	}
	return binary.BigEndian.Uint64(raw), nil
}

// Path returns the file the store was opened from.
func (d *DB) Path() string { return d.path }

// Warnings returns what Open fixed on its way (such as a file mode that let
// others read the file), for the caller to log.
func (d *DB) Warnings() []string {
	return append([]string(nil), d.warnings...)
}

// Close waits for running transactions to finish, then closes the file and
// releases its lock. Calling it again returns nil. Every other method fails
// after Close.
func (d *DB) Close() error {
	if err := d.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// Ping runs a cheap read transaction to prove the file answers. It returns
// when ctx is done even if the transaction has not (the transaction then
// finishes in the background), so a watchdog never hangs on it.
func (d *DB) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- d.db.View(func(tx *bolt.Tx) error {
			v, err := schemaVersion(tx)
			if err != nil {
				return err
			}
			if v != SchemaVersion {
				return fmt.Errorf("schema version %d, want %d", v, SchemaVersion)
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("store: ping: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("store: ping: %w", ctx.Err())
	}
}

// Stats are counts for /readyz, metrics and the "installations" command.
type Stats struct {
	Installations int
	Tokens        int
	PendingJobs   int
	// OldestPending is the Received time of the lowest-ID pending job, zero
	// if none is pending.
	OldestPending time.Time
	// SeenMessages counts remembered (oauthId, messageId) pairs; see PruneSeen.
	SeenMessages int
	// SizeBytes is the size of the data file as this transaction sees it.
	SizeBytes int64
}

// Stats counts what the store holds, in one read transaction.
func (d *DB) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := d.view(ctx, "stats", func(tx *bolt.Tx) error {
		s.Installations = bucket(tx, bucketInstallations).Stats().KeyN
		s.Tokens = bucket(tx, bucketTokens).Stats().KeyN
		s.SeenMessages = bucket(tx, bucketSeen).Stats().KeyN
		jobs := bucket(tx, bucketJobs)
		s.PendingJobs = jobs.Stats().KeyN
		if _, v := jobs.Cursor().First(); v != nil {
			var j addon.Job
			if err := decode(v, &j); err != nil {
				return err
			}
			s.OldestPending = j.Received
		}
		s.SizeBytes = tx.Size()
		return nil
	})
	return s, err
}

// view runs fn in a read transaction, after checking ctx.
func (d *DB) view(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return wrapErr(op, d.db.View(fn))
}

// update runs fn in a write transaction, after checking ctx. A domain error
// (*addon.Error) from fn rolls back and is returned as it is.
func (d *DB) update(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return wrapErr(op, d.db.Update(fn))
}

// batch runs fn through bolt's Batch, which coalesces concurrent callers
// into one transaction and one fsync. fn may run more than once and must be
// idempotent: it must set its results afresh on each run, and return an
// error only for a real failure (an error makes bolt re-run the whole batch),
// so "not found" and the like travel in variables, not as errors.
func (d *DB) batch(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return wrapErr(op, d.db.Batch(fn))
}

func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *addon.Error
	if errors.As(err, &ae) {
		return err
	}
	return fmt.Errorf("store: %s: %w", op, err)
}

// u64 encodes v as 8 bytes big-endian, so keys sort numerically.
func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
