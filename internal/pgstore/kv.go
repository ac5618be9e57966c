package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/seal"
	"github.com/jackc/pgx/v5"
)

// kv is one namespace of the table kv, implementing addon.KV. Each value
// is stored with its modified time (the store's clock). Its not-found
// errors are of kind NotFound and also satisfy errors.Is(err,
// fs.ErrNotExist). Keys are text: an empty key, or one with a NUL byte or
// invalid UTF-8, is Invalid to write and absent to read.
//
// With a key, the values of keys ending in ".key" in certmagic's namespace
// (private keys) are stored encrypted; Get decrypts them.
type kv struct {
	d         *DB
	namespace string
}

var _ addon.KV = (*kv)(nil)

// KV returns the key/value namespace with the given name (see addon.KV).
// Namespaces need no registration. Keys under addon.KeyPrefix(oauthID)
// belong to that installation: DeleteInstallation removes them, in every
// namespace but certmagic's.
func (d *DB) KV(namespace string) addon.KV { return &kv{d: d, namespace: namespace} }

func (k *kv) notFound(key string) error {
	return addon.Wrap(addon.NotFound, fs.ErrNotExist, fmt.Sprintf("key %q not found in %s", key, k.namespace))
}

// secret reports whether the value at key is stored encrypted.
func (k *kv) secret(key string) bool { return k.d.sealer != nil && isSecretKV(k.namespace, key) }

// checkKey rejects a key that cannot be written.
func checkKey(key string) error {
	if key == "" {
		return addon.Errorf(addon.Invalid, "empty key")
	}
	return checkText("key", key)
}

// seal returns val as stored at key.
func (k *kv) seal(key string, val []byte) []byte {
	if k.secret(key) {
		val = []byte(k.d.sealer.Seal(certKeyAAD(key), val))
	}
	if val == nil {
		val = []byte{} // NOT NULL: an empty value is a value
	}
	return val
}

// open returns the value stored at key as it was put.
func (k *kv) open(key string, stored []byte) ([]byte, error) {
	if !k.secret(key) {
		if stored == nil {
			stored = []byte{}
		}
		return stored, nil
	}
	plain, err := k.d.sealer.Open(certKeyAAD(key), string(stored))
	if err != nil {
		return nil, fmt.Errorf("pgstore: decrypt %s %q: %w", k.namespace, key, err)
	}
	return plain, nil
}

// Get returns the value at key (empty, not nil, for an empty value), or
// NotFound. A secret value that does not decrypt is an ErrWrongKey error.
func (k *kv) Get(ctx context.Context, key string) ([]byte, error) {
	if checkKey(key) != nil {
		return nil, k.notFound(key)
	}
	var v []byte
	err := k.d.pool.QueryRow(ctx, "SELECT value FROM kv WHERE namespace = $1 AND key = $2", k.namespace, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, k.notFound(key)
	}
	if err != nil {
		return nil, wrapErr("kv get", err)
	}
	return k.open(key, v)
}

// stat returns the size (of the value as put) and modified time at key.
func (k *kv) stat(ctx context.Context, key string) (int64, time.Time, error) {
	if checkKey(key) != nil {
		return 0, time.Time{}, k.notFound(key)
	}
	var (
		v   []byte
		mod time.Time
	)
	err := k.d.pool.QueryRow(ctx, "SELECT value, modified FROM kv WHERE namespace = $1 AND key = $2", k.namespace, key).
		Scan(&v, &mod)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, time.Time{}, k.notFound(key)
	}
	if err != nil {
		return 0, time.Time{}, wrapErr("kv stat", err)
	}
	size := int64(len(v))
	if k.secret(key) && seal.IsSealed(string(v)) {
		size = int64(k.d.sealer.SealedLen(v))
	}
	return size, utc(mod), nil
}

// Put stores val at key with the store's current time as modified time,
// replacing any value.
func (k *kv) Put(ctx context.Context, key string, val []byte) error {
	if err := checkKey(key); err != nil {
		return err
	}
	_, err := k.d.exec(ctx, "kv put", `
		INSERT INTO kv (namespace, key, value, modified) VALUES ($1, $2, $3, $4)
		ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, modified = EXCLUDED.modified`,
		k.namespace, key, k.seal(key, val), k.d.now())
	return err
}

// Update stores what fn makes of the value at key as one atomic step: the
// row is read FOR UPDATE, so no other write to key comes between fn's read
// and the write, on any node. fn gets the current value and true, or nil
// and false when key is absent; old is fn's to read only while it runs. An
// absent key is inserted with ON CONFLICT DO NOTHING: if another writer
// created it meanwhile, the transaction is rolled back and fn runs again on
// the value then stored. An error from fn stores nothing and is returned as
// it is (an *addon.Error) or wrapped (errors.Is finds it). fn runs inside
// the transaction, holding a connection and the row's lock: it must be
// quick and must not call the store.
func (k *kv) Update(ctx context.Context, key string, fn func(old []byte, found bool) ([]byte, error)) error {
	if err := checkKey(key); err != nil {
		return err
	}
	for {
		var (
			fnErr error
			raced bool
		)
		err := k.d.inTx(ctx, "kv update", func(tx pgx.Tx) error {
			raced = false
			var stored []byte
			err := tx.QueryRow(ctx, "SELECT value FROM kv WHERE namespace = $1 AND key = $2 FOR UPDATE",
				k.namespace, key).Scan(&stored)
			found := err == nil
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			var old []byte
			if found {
				if old, err = k.open(key, stored); err != nil {
					return err
				}
			}
			val, err := fn(old, found)
			if err != nil {
				fnErr = err
				return err
			}
			if found {
				_, err = tx.Exec(ctx, "UPDATE kv SET value = $3, modified = $4 WHERE namespace = $1 AND key = $2",
					k.namespace, key, k.seal(key, val), k.d.now())
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO kv (namespace, key, value, modified) VALUES ($1, $2, $3, $4)
				ON CONFLICT (namespace, key) DO NOTHING`, k.namespace, key, k.seal(key, val), k.d.now())
			if err == nil && tag.RowsAffected() == 0 {
				raced = true
				return errRaced
			}
			return err
		})
		switch {
		case raced:
			continue
		case fnErr != nil:
			var ae *addon.Error
			if errors.As(fnErr, &ae) {
				return fnErr
			}
			return fmt.Errorf("pgstore: kv update: %w", fnErr)
		}
		return err
	}
}

// errRaced rolls back an Update whose insert lost to another writer.
var errRaced = errors.New("key created concurrently")

// Delete removes key; NotFound if it is absent.
func (k *kv) Delete(ctx context.Context, key string) error {
	if checkKey(key) != nil {
		return k.notFound(key)
	}
	n, err := k.d.exec(ctx, "kv delete", "DELETE FROM kv WHERE namespace = $1 AND key = $2", k.namespace, key)
	if err == nil && n == 0 {
		return k.notFound(key)
	}
	return err
}

// List returns the keys that start with prefix, in byte order; an empty
// prefix lists them all. No match is an empty list, not an error.
func (k *kv) List(ctx context.Context, prefix string) ([]string, error) {
	if checkText("prefix", prefix) != nil {
		return nil, nil
	}
	lo, hi := prefixRange(prefix)
	rows, err := k.d.pool.Query(ctx, `SELECT key FROM kv WHERE namespace = $1 AND key >= $2 AND ($3::text IS NULL OR key < $3)
		ORDER BY key`, k.namespace, lo, hi)
	if err != nil {
		return nil, wrapErr("kv list", err)
	}
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return keys, wrapErr("kv list", err)
}

// prefixRange returns the range [lo, hi) of the text that starts with p,
// in byte order (COLLATE "C"); hi is nil when there is no bound above.
// UTF-8 orders as its code points do, so hi is p with its last code point
// incremented (dropping code points that are the greatest there is).
func prefixRange(p string) (lo string, hi *string) {
	rs := []rune(p)
	for i := len(rs) - 1; i >= 0; i-- {
		next := rs[i] + 1
		if next == 0xD800 { // surrogates are no text: skip them
			next = 0xE000
		}
		if next <= utf8.MaxRune {
			s := string(append(rs[:i:i], next))
			return p, &s
		}
	}
	return p, nil
}
