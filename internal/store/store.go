// Package store is hipconnect's bbolt adapter: it keeps installations,
// access tokens, pending jobs, the message ids already seen, a generic
// key/value area (certmagic's certificates among them) and a schema version,
// all in one bbolt file.
//
// Layout of the file (top-level buckets), schema version 4:
//
//	meta           "schema_version" -> 8-byte big-endian version
//	               "secrets"        -> key check (present iff secrets are encrypted)
//	               "compact"        -> present while a compaction is owed
//	installations  oauthId -> JSON addon.Installation
//	tokens         oauthId -> JSON addon.Token
//	jobs           8-byte big-endian job id -> JSON addon.Job (the outbox)
//	dead           8-byte big-endian job id -> JSON addon.DeadLetter
//	seen           8-byte big-endian message date (Unix µs, 0 if unknown) ||
//	               oauthId "\x00" messageId -> 8-byte job id || 8-byte received (Unix ns)
//	kv/<namespace> key -> 8-byte big-endian modified time (Unix ns) || value
//	               (the keys of an installation under addon.KeyPrefix)
//
// Schema 1 had no "dead". Schema 2 also had "pending_counts" (the jobs of
// each installation, now counted at Open and kept in memory) and
// "room_queue" (an index of the jobs by room), both written with every job,
// and keyed "seen" by oauthId "\x00" messageId with JSON values. Schema 3
// kept the installations' keys of kv/ui as "settings/" and "room/" followed
// by the escaped oauthId (see migrate3to4). Open migrates them all.
//
// With Options.Key, secrets are stored encrypted (see secrets.go): the
// oauthSecret of an installation, the accessToken of a token and the values
// of certmagic keys ending in ".key". Everything else is plaintext.
//
// A *DB is safe for concurrent use. A nil error from a write means the
// transaction was committed and fsynced. The file is locked (flock) while
// open, so only one process uses it at a time.
package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the version of the file layout this code reads and writes.
// Open refuses a file with a newer version and migrates an older one.
const SchemaVersion = 4

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// Bucket and key names.
const (
	bucketMeta          = "meta"
	bucketInstallations = "installations"
	bucketTokens        = "tokens"
	bucketJobs          = "jobs"
	bucketDead          = "dead"
	bucketSeen          = "seen"

	keySchemaVersion = "schema_version"
	keySecrets       = "secrets" // key check; its presence means "encrypted"
	keyCompact       = "compact" // a compaction is owed (after encrypting in place)
)

// kvBucketPrefix starts the name of every KV namespace bucket.
const kvBucketPrefix = "kv/"

// dataBuckets are created by Open (meta is handled with the version).
func dataBuckets() []string {
	return []string{bucketInstallations, bucketTokens, bucketJobs, bucketDead, bucketSeen}
}

// bucket returns the named top-level bucket; Open created all of them.
func bucket(tx *bolt.Tx, name string) *bolt.Bucket { return tx.Bucket([]byte(name)) }

// Options tune Open.
type Options struct {
	// Timeout is how long Open waits for the file lock held by another
	// process; zero means DefaultTimeout. bbolt itself would wait forever.
	Timeout time.Duration
	// Now is the clock for seen-message times, dead-letter times and KV
	// modified times; nil means time.Now.
	Now func() time.Time
	// Key, when set, is the KeySize-byte AES-256-GCM key the secrets are
	// encrypted with (see LoadOrCreateKey). Open with a key encrypts the
	// secrets of a file written without one, in place; Open without a key
	// refuses a file whose secrets are encrypted (ErrKeyRequired), and Open
	// with another key than theirs fails with ErrWrongKey.
	Key []byte
	// MaxPendingPerInstallation bounds the outbox: Enqueue (and RetryDead)
	// of a new job for an installation that already has this many pending
	// jobs fails with an Unavailable error. Zero means unlimited.
	MaxPendingPerInstallation int
	// BatchDelay is how long a batched write (Enqueue, Complete,
	// RecordAttempt, Bury, KV updates) that finds the store idle waits for
	// others to share its commit and fsync (see groupCommit): the latency a
	// lone write pays for the throughput of many. Writes that arrive while
	// a commit is on its way do not wait: they go into the next commit.
	// Zero means DefaultBatchDelay; negative means none.
	BatchDelay time.Duration
}

// DefaultBatchDelay is Options.BatchDelay's default, chosen with
// cmd/hipconnect-load (docs/performance.md): bolt's own 10ms made a lone
// command wait 10ms twice (its enqueue, then its completion) and capped
// the dispatcher's eight workers at 8 deliveries per 10ms.
const DefaultBatchDelay = time.Millisecond

// DB is an open hipconnect store. Every method is safe for concurrent use.
type DB struct {
	db         *bolt.DB
	path       string
	now        func() time.Time
	sealer     *sealer // nil without Options.Key
	maxPending int
	warnings   []string
	certs      *certStorage
	writes     *groupCommit                    // shared write transactions (batch)
	added      atomic.Pointer[func(addon.Job)] // see OnAdded
	counts     outboxCounts                    // pending jobs by installation
	lookups    lookupCache                     // installations and tokens decoded, until written
}

var _ addon.Store = (*DB)(nil)

// Open opens (creating if missing) the store at path. It creates the parent
// directory (mode 0700) if needed and the file with mode 0600, and refuses an
// existing file that group or others may access (see CheckPrivate). It waits
// at most o.Timeout for a lock held by another process and then fails with an
// error saying the file is in use. It refuses a file written by a newer
// schema version, and a bbolt file that is not a hipconnect store; it
// migrates an older schema.
//
// With o.Key it encrypts, in the same transaction, any secret still stored in
// plaintext, then rewrites the file (compaction) so the plaintext does not
// linger in its free pages; Warnings reports what it did. Without o.Key it
// refuses a file whose secrets are encrypted.
func Open(path string, o Options) (*DB, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxPendingPerInstallation < 0 {
		return nil, fmt.Errorf("store: open: negative MaxPendingPerInstallation %d", o.MaxPendingPerInstallation)
	}
	d := &DB{path: path, now: o.Now, maxPending: o.MaxPendingPerInstallation}
	if o.Key != nil {
		s, err := newSealer(o.Key)
		if err != nil {
			return nil, fmt.Errorf("store: open: %w", err)
		}
		d.sealer = s
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open: %w", err)
	}
	switch _, err := os.Stat(path); {
	case err == nil:
		if err := CheckPrivate(path); err != nil {
			return nil, err
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
	d.certs = newCertStorage(d.kvNamespace(CertMagicNamespace))

	var compact bool
	if err := bdb.Update(func(tx *bolt.Tx) (err error) {
		defer recoverDamage(&err)
		notes, err := initSchema(tx, d.sealer)
		if err != nil {
			return err
		}
		d.warnings = append(d.warnings, notes...)
		compact = bucket(tx, bucketMeta).Get([]byte(keyCompact)) != nil
		return nil
	}); err != nil {
		_ = bdb.Close()
		switch {
		case errors.Is(err, ErrKeyRequired):
			return nil, fmt.Errorf("store: %w: %s holds encrypted secrets", ErrKeyRequired, path)
		case errors.Is(err, ErrWrongKey):
			return nil, fmt.Errorf("store: open: %s: the key is not the one its secrets were encrypted with: %w", path, err)
		}
		return nil, fmt.Errorf("store: open: %s: %w", path, err)
	}
	if compact {
		if err := d.compactInPlace(o.Timeout); err != nil {
			_ = d.db.Close()
			return nil, fmt.Errorf("store: open: %s: compact after encrypting secrets: %w", path, err)
		}
		d.warnings = append(d.warnings, fmt.Sprintf(
			"%s was rewritten (compacted) so no plaintext secret stays in its free pages; "+
				"backups made before hold the secrets in plaintext: replace them", path))
	}
	if err := d.db.View(func(tx *bolt.Tx) error {
		counts, err := countJobs(tx)
		d.counts.set(counts)
		return err
	}); err != nil {
		_ = d.db.Close()
		return nil, fmt.Errorf("store: open: %s: count pending jobs: %w", path, err)
	}
	d.startWrites(o.BatchDelay)
	return d, nil
}

// initSchema checks the schema version, runs migrations from older versions,
// creates all buckets, records
// SchemaVersion and settles the secrets (see settleSecrets), in one
// transaction. It returns notes for Warnings.
func initSchema(tx *bolt.Tx, s *sealer) ([]string, error) {
	v, err := schemaVersion(tx)
	if err != nil {
		return nil, err
	}
	if v > SchemaVersion {
		return nil, fmt.Errorf("schema version %d is newer than this hipconnect understands (%d): upgrade hipconnect or restore an older backup",
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
			return nil, fmt.Errorf("not a hipconnect store (buckets %q but no schema version)", foreign)
		}
	}
	var notes []string
	for from := v; from != 0 && from < SchemaVersion; from++ {
		note, err := migrate(tx, from)
		if err != nil {
			return nil, fmt.Errorf("migrate schema %d to %d: %w", from, from+1, err)
		}
		if note != "" {
			notes = append(notes, note)
		}
	}
	meta, err := tx.CreateBucketIfNotExists([]byte(bucketMeta))
	if err != nil {
		return nil, err
	}
	for _, name := range dataBuckets() {
		if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
			return nil, fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if v != SchemaVersion {
		if err := meta.Put([]byte(keySchemaVersion), u64(SchemaVersion)); err != nil {
			return nil, err
		}
	}
	note, err := settleSecrets(tx, s)
	if err != nil {
		return nil, err
	}
	if note != "" {
		notes = append(notes, note)
	}
	return notes, nil
}

// migrate upgrades the file from schema version from to from+1 and returns
// a note for Warnings. Each layout change adds a case here; a case must be
// safe to run on a file that is exactly at version from. Encrypting secrets
// is not a schema step: it depends on the key, not on the version, and
// initSchema does it in the same transaction after the migrations.
func migrate(tx *bolt.Tx, from uint64) (string, error) {
	switch from {
	case 1:
		return migrate1to2(tx)
	case 2:
		return migrate2to3(tx)
	case 3:
		return migrate3to4(tx)
	default:
		return "", fmt.Errorf("no migration from schema version %d", from)
	}
}

// migrate1to2 adds the dead letters (schema 2's counters and room index
// are not made: migrate2to3 would drop them).
func migrate1to2(tx *bolt.Tx) (string, error) {
	if _, err := tx.CreateBucketIfNotExists([]byte(bucketDead)); err != nil {
		return "", err
	}
	return "migrated schema 1 to 2: added dead letters", nil
}

// migrate2to3 drops the pending counters and the room index, and rekeys
// the seen message ids by date: the ones recorded so far get date 0 (their
// dates were not kept), under which Enqueue still finds them.
func migrate2to3(tx *bolt.Tx) (string, error) {
	for _, name := range []string{"pending_counts", "room_queue"} {
		if tx.Bucket([]byte(name)) != nil {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return "", err
			}
		}
	}
	old := bucket(tx, bucketSeen)
	if old == nil {
		return "migrated schema 2 to 3", nil
	}
	type entry struct{ k, v []byte }
	var entries []entry
	err := old.ForEach(func(k, v []byte) error {
		var e struct {
			Job uint64    `json:"job"`
			At  time.Time `json:"at"`
		}
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("seen entry %q: %w", k, err)
		}
		entries = append(entries, entry{append(make([]byte, 8, 8+len(k)), k...), seenValue(e.Job, e.At)})
		return nil
	})
	if err != nil {
		return "", err
	}
	if err := tx.DeleteBucket([]byte(bucketSeen)); err != nil {
		return "", err
	}
	seen, err := tx.CreateBucket([]byte(bucketSeen))
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if err := seen.Put(e.k, e.v); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("migrated schema 2 to 3: the pending jobs are counted at start, %d seen message ids rekeyed by date", len(entries)), nil
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

// OnAdded makes the store call fn with every job it adds to the outbox
// (Enqueue, RetryDead) once the job is committed, before the call that
// added it returns, and in commit order: the order of the job IDs. fn must
// be quick and must not call the store. Jobs added before OnAdded are not
// told: read them with Pending.
func (d *DB) OnAdded(fn func(addon.Job)) { d.added.Store(&fn) }

// tellAdded registers, on tx, the call of the OnAdded function with j.
func (d *DB) tellAdded(tx *bolt.Tx, j addon.Job) {
	if fn := d.added.Load(); fn != nil {
		tx.OnCommit(func() { (*fn)(j) })
	}
}

// Path returns the file the store was opened from.
func (d *DB) Path() string { return d.path }

// Warnings returns what Open did on its way (a schema migration, secrets
// encrypted in place, the file compacted), for the caller to log.
func (d *DB) Warnings() []string {
	return append([]string(nil), d.warnings...)
}

// Close waits for running transactions to finish, then closes the file and
// releases its lock. Calling it again returns nil. Every other method fails
// after Close. Close drops the installations and tokens cached in memory.
func (d *DB) Close() error {
	d.lookups.reset()
	if d.writes != nil {
		d.writes.close()
	}
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

// Stats are the store's counts (seen messages are (oauthId, messageId)
// pairs, see PruneSeen; dead letters, see Bury), and what only a file has.
type Stats struct {
	addon.StoreStats
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
		s.DeadLetters = bucket(tx, bucketDead).Stats().KeyN
		s.SecretsEncrypted = bucket(tx, bucketMeta).Get([]byte(keySecrets)) != nil
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

// startWrites starts the shared writes (see groupCommit) with the delay of
// Options.BatchDelay; Open calls it last, on the file it ends up with
// (compaction replaces it).
func (d *DB) startWrites(delay time.Duration) {
	switch {
	case delay == 0:
		delay = DefaultBatchDelay
	case delay < 0:
		delay = 0
	}
	d.writes = newGroupCommit(d.db, delay)
}

// batch runs fn in a write transaction shared with concurrent callers (see
// groupCommit): one commit and one fsync for all. fn may run more than once
// and must be idempotent: it must set its results afresh on each run, and
// return an error only for a real failure (an error makes the others run
// again without it), so "not found" and the like travel in variables, not
// as errors.
func (d *DB) batch(ctx context.Context, op string, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	return wrapErr(op, d.writes.run(fn))
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
