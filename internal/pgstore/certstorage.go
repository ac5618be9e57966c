package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
)

// Lock timing (see certStorage).
const (
	lockTTL     = 20 * time.Second       // a lock not refreshed for this long is stale
	lockPollMin = 20 * time.Millisecond  // first wait of a Lock between attempts
	lockPollMax = 500 * time.Millisecond // longest wait between attempts
)

// CertStorage returns certmagic's storage (certificates, keys, ACME
// account, OCSP staples), kept in the key/value namespace "certmagic" of
// the database and so shared by every node. Every call returns the same
// value.
//
// Keys use "/" to separate path components; a leading or trailing "/" is
// ignored. Directories exist only implicitly, as prefixes of stored keys.
// Load, List and Stat of an absent key return an error satisfying
// errors.Is(err, fs.ErrNotExist) (and addon.IsNotFound); Delete of an
// absent key is not an error, and Delete of a directory removes everything
// under it in one statement. Store and Delete are committed when they
// return nil.
//
// Lock, TryLock and Unlock work across processes and nodes: a lock is a row
// of certmagic_locks naming its holder (a random token of this DB and the
// acquisition) and an expiry by the database's clock, 20 s ahead, which
// the holder pushes on every 5 s while it holds the lock. Lock takes a
// lock whose row is absent or expired, in one INSERT ... ON CONFLICT DO
// UPDATE ... WHERE expired; otherwise it polls (20 ms, doubling, to 500 ms;
// at once when a lock of this DB is released) until it gets it or ctx is
// done. A node that dies holding a lock (killed, cut off) stops
// refreshing it, and its lock is taken over at most 20 s later. Rows survive
// a database failover and work through connection poolers, which session
// advisory locks would not; no connection is held while a lock is.
// Unlock of a lock this DB does not hold is an error and changes nothing.
// Close releases the locks still held.
func (d *DB) CertStorage() certmagic.Storage { return d.certs }

var (
	_ certmagic.Storage   = (*certStorage)(nil)
	_ certmagic.TryLocker = (*certStorage)(nil)
)

// certStorage implements certmagic.Storage on the namespace "certmagic" and
// the table certmagic_locks.
type certStorage struct {
	d     *DB
	kv    *kv
	owner string // random, this DB's: the prefix of its lock tokens
	ttl   time.Duration
	seq   atomic.Uint64

	mu       sync.Mutex
	held     map[string]*heldLock
	released chan struct{} // closed (and replaced) when this DB releases a lock
	closed   bool
}

// heldLock is a lock this DB holds.
type heldLock struct {
	token string
	stop  context.CancelFunc
	done  chan struct{} // closed when its refresher has stopped
}

func newCertStorage(d *DB) *certStorage {
	return &certStorage{
		d: d, kv: &kv{d: d, namespace: addon.CertMagicNamespace},
		owner: rand.Text(), ttl: lockTTL,
		held: make(map[string]*heldLock), released: make(chan struct{}),
	}
}

func cleanKey(key string) string { return strings.Trim(key, "/") }

// notExist is the error for an absent key: fs.ErrNotExist for certmagic,
// NotFound for the rest of hipconnect.
func notExist(op, key string) error {
	return addon.Wrap(addon.NotFound, fs.ErrNotExist, fmt.Sprintf("certmagic %s %q", op, key))
}

// Store puts value at key, replacing what was there.
func (s *certStorage) Store(ctx context.Context, key string, value []byte) error {
	key = cleanKey(key)
	if key == "" {
		return fmt.Errorf("pgstore: certmagic store: %w", addon.Errorf(addon.Invalid, "empty key"))
	}
	return s.kv.Put(ctx, key, value)
}

// Load returns the value at key, or an error satisfying fs.ErrNotExist.
func (s *certStorage) Load(ctx context.Context, key string) ([]byte, error) {
	key = cleanKey(key)
	v, err := s.kv.Get(ctx, key)
	if addon.IsNotFound(err) {
		return nil, notExist("load", key)
	}
	return v, err
}

// under returns the range of the keys below the directory dir ("" is the
// root) and its own key, for a query's $3 and $4.
func under(dir string) (lo string, hi *string) {
	if dir == "" {
		return prefixRange("")
	}
	return prefixRange(dir + "/")
}

// Delete removes key and, if it is a directory, everything under it. An
// absent key is not an error. An empty key (the whole storage) is refused.
func (s *certStorage) Delete(ctx context.Context, key string) error {
	key = cleanKey(key)
	if key == "" {
		return fmt.Errorf("pgstore: certmagic delete: %w", addon.Errorf(addon.Invalid, "refusing to delete the whole storage"))
	}
	if checkText("key", key) != nil {
		return nil
	}
	lo, hi := under(key)
	_, err := s.d.exec(ctx, "certmagic delete", `DELETE FROM kv WHERE namespace = $1
		AND (key = $2 OR (key >= $3 AND ($4::text IS NULL OR key < $4)))`, addon.CertMagicNamespace, key, lo, hi)
	return err
}

// Exists reports whether key is a stored key or a directory of stored keys.
// An error checking counts as false.
func (s *certStorage) Exists(ctx context.Context, key string) bool {
	key = cleanKey(key)
	if checkText("key", key) != nil {
		return false
	}
	lo, hi := under(key)
	var ok bool
	err := s.d.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM kv WHERE namespace = $1
		AND (key = $2 OR (key >= $3 AND ($4::text IS NULL OR key < $4))))`, addon.CertMagicNamespace, key, lo, hi).Scan(&ok)
	return err == nil && ok
}

// List returns the keys under the directory path: its immediate children
// (files and directories) or, if recursive, every file and directory below
// it, each directory before its contents. A path that is a file has no
// children; a path that does not exist is an fs.ErrNotExist error.
func (s *certStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	path = cleanKey(path)
	if checkText("key", path) != nil {
		return nil, notExist("list", path)
	}
	lo, hi := under(path)
	rows, err := s.d.pool.Query(ctx, `SELECT key FROM kv WHERE namespace = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)
		ORDER BY key`, addon.CertMagicNamespace, lo, hi)
	if err != nil {
		return nil, wrapErr("certmagic list", err)
	}
	stored, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, wrapErr("certmagic list", err)
	}
	prefix := lo
	var keys []string
	seen := make(map[string]bool)
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	for _, k := range stored {
		rest := k[len(prefix):]
		if !recursive {
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				rest = rest[:i]
			}
			add(prefix + rest)
			continue
		}
		for i := 0; i < len(rest); i++ {
			if rest[i] == '/' {
				add(prefix + rest[:i])
			}
		}
		add(prefix + rest)
	}
	if len(keys) == 0 && path != "" {
		if _, _, err := s.kv.stat(ctx, path); err != nil {
			if addon.IsNotFound(err) {
				return nil, notExist("list", path)
			}
			return nil, err
		}
	}
	return keys, nil
}

// Stat describes key: a stored key (IsTerminal, with the size of its value
// as stored by Store and its modified time) or a directory; otherwise an
// fs.ErrNotExist error.
func (s *certStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = cleanKey(key)
	size, mod, err := s.kv.stat(ctx, key)
	switch {
	case err == nil:
		return certmagic.KeyInfo{Key: key, Modified: mod, Size: size, IsTerminal: true}, nil
	case !addon.IsNotFound(err):
		return certmagic.KeyInfo{}, err
	}
	if s.Exists(ctx, key) {
		return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
	}
	return certmagic.KeyInfo{}, notExist("stat", key)
}

// Lock takes the lock called name, waiting until it is free (or stale) or
// ctx is done; see CertStorage.
func (s *certStorage) Lock(ctx context.Context, name string) error {
	wait := lockPollMin
	for {
		s.mu.Lock()
		released := s.released
		s.mu.Unlock()
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-released:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pgstore: certmagic lock %q: %w", name, ctx.Err())
		}
		t.Stop()
		wait = min(2*wait, lockPollMax)
	}
}

// TryLock takes the lock called name if it is free (or stale), without
// waiting.
func (s *certStorage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := checkText("lock name", name); err != nil {
		return false, fmt.Errorf("pgstore: certmagic lock: %w", err)
	}
	token := s.owner + "/" + strconv.FormatUint(s.seq.Add(1), 10)
	var ok bool
	err := s.d.pool.QueryRow(ctx, `
		INSERT INTO certmagic_locks (name, owner, expires) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
		ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, expires = EXCLUDED.expires
		WHERE certmagic_locks.expires < now()
		RETURNING true`, name, token, s.ttl.Milliseconds()).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, wrapErr(fmt.Sprintf("certmagic lock %q", name), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.held[name]; old != nil {
		old.stop() // it had lapsed (its refresher found another token)
	}
	if s.closed {
		// Close came between: give the lock back rather than hold it with
		// no refresher.
		_, _ = s.d.pool.Exec(context.WithoutCancel(ctx), "DELETE FROM certmagic_locks WHERE name = $1 AND owner = $2", name, token)
		return false, fmt.Errorf("pgstore: certmagic lock %q: the store is closed", name)
	}
	rctx, stop := context.WithCancel(s.d.life) // the refreshers stop at Close
	h := &heldLock{token: token, stop: stop, done: make(chan struct{})}
	s.held[name] = h
	go s.refresh(rctx, name, h)
	return true, nil
}

// refresh pushes the expiry of the held lock on until ctx ends or the lock
// turns out to be another's (it lapsed while the database was out of
// reach, and was taken).
func (s *certStorage) refresh(ctx context.Context, name string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.ttl / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		tag, err := s.d.pool.Exec(ctx, `UPDATE certmagic_locks SET expires = now() + $3 * interval '1 millisecond'
			WHERE name = $1 AND owner = $2`, name, h.token, s.ttl.Milliseconds())
		if err == nil && tag.RowsAffected() == 0 {
			return
		}
	}
}

// Unlock releases the lock called name, which this DB must hold. If the
// release fails (the database is out of reach), the lock is no longer
// refreshed and lapses within the lock's lifetime.
func (s *certStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("pgstore: certmagic unlock %q: not locked", name)
	}
	h.stop()
	<-h.done
	_, err := s.d.exec(context.WithoutCancel(ctx), fmt.Sprintf("certmagic unlock %q", name),
		"DELETE FROM certmagic_locks WHERE name = $1 AND owner = $2", name, h.token)
	s.mu.Lock()
	close(s.released)
	s.released = make(chan struct{})
	s.mu.Unlock()
	return err
}

// close stops the refreshers and releases the locks still held, giving
// the database a few seconds to answer.
func (s *certStorage) close() {
	s.mu.Lock()
	s.closed = true
	held := s.held
	s.held = map[string]*heldLock{}
	s.mu.Unlock()
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	names := make([]string, 0, len(held))
	tokens := make([]string, 0, len(held))
	for name, h := range held {
		<-h.done
		names, tokens = append(names, name), append(tokens, h.token)
	}
	_, _ = s.d.pool.Exec(ctx, `DELETE FROM certmagic_locks l USING unnest($1::text[], $2::text[]) AS r(name, owner)
		WHERE l.name = r.name AND l.owner = r.owner`, names, tokens)
}
