// Package pgstore is hipconnect's PostgreSQL adapter: the store contract
// (addon.Store) and certmagic's storage in a PostgreSQL database that
// several hipconnect nodes share. It passes the same contract suite
// (internal/storetest) as the embedded bbolt store.
//
// Schema. The tables (migrations/*.sql, applied with goose at Open and
// recorded in the table hipconnect_schema) live in the connection's
// current schema, the first of its search_path: give hipconnect a database
// of its own, or a schema of its own through the DSN's search_path.
//
//	meta             "secrets" -> the key check (present iff secrets are encrypted)
//	installations    one row per installation (oauth_secret maybe encrypted)
//	tokens           one row per installation with a token (access_token maybe encrypted)
//	jobs             the outbox; id from the sequence job_ids
//	dead_letters     the jobs buried, under their job's id
//	seen             (oauth_id, message_date, message_id) -> job_id: the dedupe
//	kv               (namespace, key) -> value, modified; certmagic's is "certmagic"
//	pacing           (oauth_id, room) -> send times
//	certmagic_locks  name -> owner, expires
//	nodes            name -> seen: the nodes' heartbeats (schema version 2)
//	leases           oauth_id -> node, expires: who delivers an installation (version 2)
//
// Every row of an installation references it with ON DELETE CASCADE, so
// that removing it removes them; its key/value entries (under
// addon.KeyPrefix) are removed in the same transaction.
//
// Cluster. Several hipconnect nodes may share one database, every node
// equal. Each runs lease rounds (Lease) every few seconds: a round records
// its heartbeat, renews its leases and claims, up to its fair share of the
// installations, those whose lease is missing or expired; an installation's
// jobs are delivered by the one node holding its lease. Lease times are
// the database's clock. A node that stops (ReleaseLeases) or dies leaves
// its installations to the others' next rounds, at once or once its leases
// expire. Every transaction that adds a job to the outbox notifies it on
// the channel hipconnect_jobs (pg_notify, payload "<id> <oauth_id>"), and
// Listen tells each node of the jobs of every node, in commit order.
// Notifying transactions commit one at a time: PostgreSQL serializes the
// commits of transactions that NOTIFY (a lock for the whole server, held
// through the commit's WAL flush), which bounds the rate of new jobs
// across all nodes by the commit latency.
//
// Secrets. With Options.Key, the oauth secrets, access tokens and the
// values of certmagic keys ending in ".key" are stored encrypted
// (AES-256-GCM, see secrets.go); everything else is plaintext.
//
// Text. PostgreSQL text holds neither NUL bytes nor invalid UTF-8: an
// OAuthID or key/value key with either is Invalid; in the other text a job
// or installation carries (arguments, reasons, ...) each such byte is
// stored as U+FFFD.
//
// A *DB is safe for concurrent use, and so are several nodes sharing one
// database. A nil error from a write means its transaction committed
// (durable as far as the server's synchronous_commit and replication
// settings make a commit durable).
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/seal"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configure Open.
type Options struct {
	// DSN names the database: a libpq URL (postgres://user@host/db?sslmode=verify-full)
	// or keyword/value string (host=... dbname=...), TLS included
	// (sslmode, sslrootcert, ...). Required.
	DSN string
	// Password, when set, is the password to connect with, in place of
	// any in the DSN (so that none need sit in the configuration).
	Password string
	// MaxConns bounds the connection pool; zero means pgxpool's default
	// (the greater of 4 and the number of CPUs). Open and each held
	// certmagic lock use no connection of the pool; each Listen uses one
	// connection of its own.
	MaxConns int32
	// Key, when set, is the 32-byte AES-256-GCM key the secrets are
	// encrypted with. Open with a key encrypts the secrets of a database
	// written without one, in place; Open without a key refuses a database
	// whose secrets are encrypted (ErrKeyRequired), and Open with another
	// key than theirs fails with ErrWrongKey.
	Key []byte
	// Now is the clock for seen-message times, dead-letter times and
	// key/value modified times; nil means time.Now. (certmagic's lock
	// expiry uses the database's clock, which all nodes share.)
	Now func() time.Time
	// MaxPendingPerInstallation bounds the outbox: Enqueue (and RetryDead)
	// of a new job for an installation that already has this many pending
	// jobs fails with an Unavailable error. Zero means unlimited. The
	// bound holds across nodes: an installation's additions are serialized.
	MaxPendingPerInstallation int
}

var (
	// ErrKeyRequired is returned by Open without a key for a database
	// whose secrets are encrypted.
	ErrKeyRequired = errors.New("the database's secrets are encrypted: a key is required")
	// ErrWrongKey is returned when a secret does not decrypt: the key is
	// not the one it was encrypted with, or the data was damaged or moved.
	ErrWrongKey = seal.ErrWrongKey
)

// DB is an open hipconnect store in PostgreSQL. Every method is safe for
// concurrent use.
type DB struct {
	pool       *pgxpool.Pool
	connConfig *pgx.ConnConfig // the pool's, for Listen's connections
	now        func() time.Time
	sealer     *seal.Sealer // nil without Options.Key
	maxPending int
	warnings   []string
	certs      *certStorage
	added      atomic.Pointer[func(addon.Job)] // see OnAdded
	adding     keyedMutex                      // by OAuthID: additions to the outbox, in order

	life      context.Context // ends at Close: Listen returns, the lock refreshers stop
	stop      context.CancelFunc
	closeOnce sync.Once
}

var _ addon.Store = (*DB)(nil)

// Open connects to the database o.DSN names, migrates its schema and
// settles its secrets, and returns the store.
//
// Migrations run under a PostgreSQL advisory lock (see migrate.go), on a
// connection of their own, so that nodes opening the same database at once
// migrate it once and the others wait for that. A database whose schema is
// newer than this hipconnect knows is refused: its tables may no longer be
// what this code reads and writes.
//
// With o.Key it encrypts, in one transaction, any secret stored in
// plaintext; Warnings reports it. Without o.Key it refuses a database
// whose secrets are encrypted. ctx bounds Open, the wait for the lock
// included.
func Open(ctx context.Context, o Options) (*DB, error) {
	if o.DSN == "" {
		return nil, errors.New("pgstore: open: no DSN")
	}
	if o.MaxPendingPerInstallation < 0 {
		return nil, fmt.Errorf("pgstore: open: negative MaxPendingPerInstallation %d", o.MaxPendingPerInstallation)
	}
	if o.MaxConns < 0 {
		return nil, fmt.Errorf("pgstore: open: negative MaxConns %d", o.MaxConns)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	d := &DB{now: o.Now, maxPending: o.MaxPendingPerInstallation}
	if o.Key != nil {
		s, err := seal.New(o.Key)
		if err != nil {
			return nil, fmt.Errorf("pgstore: open: %w", err)
		}
		d.sealer = s
	}
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, dsnError(err)
	}
	if o.Password != "" {
		cfg.ConnConfig.Password = o.Password
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
		cfg.MinConns = min(cfg.MinConns, cfg.MaxConns)
	}

	notes, err := prepare(ctx, cfg.ConnConfig, d.sealer)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	d.warnings = notes

	d.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: open: %w", err)
	}
	d.connConfig = cfg.ConnConfig
	d.life, d.stop = context.WithCancel(context.Background())
	d.certs = newCertStorage(d)
	return d, nil
}

// Warnings returns what Open did on its way (schema migrations, secrets
// encrypted in place), for the caller to log.
func (d *DB) Warnings() []string { return append([]string(nil), d.warnings...) }

// Close releases the certmagic locks this DB holds and closes its
// connections, waiting for the queries running on them, and ends every
// Listen (without waiting for them to return). Calling it again returns
// nil. Every other method fails after Close.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		d.stop()
		d.certs.close()
		d.pool.Close()
	})
	return nil
}

// Ping proves that the database answers and takes writes: it fails while
// the server is unreachable and while it is a read-only standby (during a
// failover, before the DSN leads to the new primary). It returns when ctx
// is done.
func (d *DB) Ping(ctx context.Context) error {
	var standby bool
	if err := d.pool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return wrapErr("ping", err)
	}
	if standby {
		return addon.Wrap(addon.Busy, errors.New("pgstore: ping: the server is a read-only standby"), "the database is read-only")
	}
	return nil
}

// OnAdded makes the store call fn with every job this DB adds to the
// outbox (Enqueue, RetryDead) once its transaction has committed, before
// the call that added it returns. The calls for one installation (so for
// one room) are made one at a time in the order of the job IDs, and that
// is also their commit order, across every node: a job's ID is taken while
// its installation's row is locked, so of one installation's jobs a
// greater ID never commits before a smaller one. Calls for different
// installations may come in any order and at once. Jobs other nodes add are
// not told here (a reader sees them with Pending, or Listen). fn must be quick and
// must not call the store. Jobs added before OnAdded are not told.
func (d *DB) OnAdded(fn func(addon.Job)) { d.added.Store(&fn) }

// tellAdded calls the OnAdded function with j, if there is one.
func (d *DB) tellAdded(j addon.Job) {
	if fn := d.added.Load(); fn != nil {
		(*fn)(j)
	}
}

// dsnError is the error of a DSN pgx cannot use, without the DSN: pgx's
// message quotes it with a best-effort redaction that misses some
// spellings of a password (password = 'x'), and a URL's parse error
// quotes the URL whole. Not wrapped, for the same reason.
func dsnError(err error) error {
	var pce *pgconn.ParseConfigError
	if !errors.As(err, &pce) {
		return fmt.Errorf("pgstore: open: storage.postgres.dsn: %w", err)
	}
	var ue *url.Error
	if errors.As(pce, &ue) {
		return fmt.Errorf("pgstore: open: storage.postgres.dsn is not a valid URL: %v", ue.Err)
	}
	c := *pce
	c.ConnString = "storage.postgres.dsn"
	return fmt.Errorf("pgstore: open: %s", c.Error())
}

// inTx runs fn in a transaction (read committed) and commits it unless fn
// fails. A domain error (*addon.Error) from fn rolls back and is returned as
// it is; others are wrapped with op (see wrapErr).
func (d *DB) inTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	return wrapErr(op, pgx.BeginFunc(ctx, d.pool, fn))
}

// exec runs one statement and returns how many rows it touched.
func (d *DB) exec(ctx context.Context, op, sql string, args ...any) (int64, error) {
	tag, err := d.pool.Exec(ctx, sql, args...)
	if err != nil {
		return 0, wrapErr(op, err)
	}
	return tag.RowsAffected(), nil
}

// wrapErr gives err the "pgstore: op:" prefix. A domain error is returned
// as it is; an error that says the database cannot be reached or cannot
// take the statement now (connection failures, a standby, serialization
// failures, too many connections) becomes an *addon.Error of kind Busy, so
// that callers answer "retry later" rather than "internal error".
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *addon.Error
	if errors.As(err, &ae) {
		return err
	}
	err = fmt.Errorf("pgstore: %s: %w", op, err)
	if unavailable(err) {
		return addon.Wrap(addon.Busy, err, "the database is not available")
	}
	return err
}

// unavailable reports whether err says the database is out of reach or
// cannot take the statement for now, rather than that it refused it.
func unavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"),  // insufficient resources
			strings.HasPrefix(pe.Code, "57P"), // shutting down, cannot connect now
			pe.Code == "25006",                // read-only transaction: a standby
			pe.Code == "40001",                // serialization failure
			pe.Code == "40P01":                // deadlock detected
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) || errors.Is(err, net.ErrClosed)
}

// pgCode returns the SQLSTATE of err, "" if it is not a server error.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// SQLSTATEs the store acts on.
const (
	codeForeignKey = "23503" // foreign_key_violation: the installation is gone
)

// checkOAuthID rejects ids that cannot be keys: empty, holding a NUL byte,
// or not UTF-8.
func checkOAuthID(id string) error {
	if id == "" {
		return addon.Errorf(addon.Invalid, "empty oauth id")
	}
	return checkText("oauth id", id)
}

// checkText rejects a key PostgreSQL text cannot hold.
func checkText(what, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return addon.Errorf(addon.Invalid, "%s contains a NUL byte", what)
	}
	if !utf8.ValidString(s) {
		return addon.Errorf(addon.Invalid, "%s is not valid UTF-8", what)
	}
	return nil
}

// clean makes s storable as PostgreSQL text: invalid UTF-8 and NUL bytes
// become U+FFFD.
func clean(s string) string {
	if strings.IndexByte(s, 0) < 0 && utf8.ValidString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// utc returns t in UTC: pgx reads timestamptz in the local zone.
func utc(t time.Time) time.Time { return t.UTC() }

// keyedMutex is a mutex per key, for keys that come and go: an entry lives
// while someone holds or waits for it.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

// lock locks key and returns the function that unlocks it.
func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyedEntry)
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{}
		k.m[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
