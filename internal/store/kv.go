package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// KV is a namespace of the generic key/value area, implementing addon.KV:
// a top-level bucket "kv/<namespace>" of its own, created on first write.
// Each value is stored with its modified time. A *KV is safe for concurrent
// use; writes are on disk when they return nil. Its not-found errors are of
// kind NotFound and also satisfy errors.Is(err, fs.ErrNotExist).
//
// Keys under addon.KeyPrefix(oauthID) belong to that installation:
// DeleteInstallation removes them, in every namespace but
// CertMagicNamespace (certificates belong to hosts, not installations).
//
// With a key, the values of keys ending in ".key" in CertMagicNamespace
// (private keys) are stored encrypted; Get decrypts them and Stat reports
// their plaintext size.
type KV struct {
	d         *DB
	namespace string
}

var _ addon.KV = (*KV)(nil)

// kvHeader is the size of the modified time stored before each value.
const kvHeader = 8

// KV returns the key/value namespace with the given name (see type KV). It
// touches nothing; namespaces need no registration.
func (d *DB) KV(namespace string) addon.KV { return d.kvNamespace(namespace) }

// kvNamespace is KV with the concrete type, for the store's own users of
// what addon.KV lacks (Stat, the bucket).
func (d *DB) kvNamespace(namespace string) *KV {
	return &KV{d: d, namespace: namespace}
}

func (kv *KV) bucketName() []byte { return []byte(kvBucketPrefix + kv.namespace) }

// bucket returns the namespace's bucket, nil if nothing was ever put.
func (kv *KV) bucket(tx *bolt.Tx) *bolt.Bucket { return tx.Bucket(kv.bucketName()) }

func (kv *KV) notFound(key string) error {
	return addon.Wrap(addon.NotFound, fs.ErrNotExist, fmt.Sprintf("key %q not found in %s", key, kv.namespace))
}

// secret reports whether the value at key is stored encrypted.
func (kv *KV) secret(key string) bool {
	return kv.d.sealer != nil && kvSecret(kv.namespace, key)
}

// Get returns a copy of the value at key (empty, not nil, for an empty
// value), or NotFound. A secret value that does not decrypt is an
// ErrWrongKey error.
func (kv *KV) Get(ctx context.Context, key string) ([]byte, error) {
	var val []byte
	err := kv.d.view(ctx, "kv get", func(tx *bolt.Tx) error {
		v, _, ok := kvGet(kv.bucket(tx), key)
		if !ok {
			return kv.notFound(key)
		}
		val = bytes.Clone(v)
		if val == nil {
			val = []byte{}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if kv.secret(key) {
		plain, err := kv.d.sealer.Open(aad(string(kv.bucketName()), key), string(val))
		if err != nil {
			return nil, fmt.Errorf("store: decrypt %s %q: %w", kv.namespace, key, err)
		}
		if plain == nil {
			plain = []byte{}
		}
		return plain, nil
	}
	return val, nil
}

// Put stores val at key with the store's current time as modified time,
// replacing any value. An empty key is Invalid.
func (kv *KV) Put(ctx context.Context, key string, val []byte) error {
	if key == "" {
		return addon.Errorf(addon.Invalid, "empty key")
	}
	if kv.secret(key) {
		val = []byte(kv.d.sealer.Seal(aad(string(kv.bucketName()), key), val))
	}
	rec := kvRecord(kv.d.now(), val)
	return kv.d.update(ctx, "kv put", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(kv.bucketName())
		if err != nil {
			return err
		}
		return b.Put([]byte(key), rec)
	})
}

// Update stores what fn makes of the value at key, as one atomic step: no
// other write to key comes between fn's read and the write. fn gets the
// current value and true, or nil and false when key is absent; old belongs
// to the store and is valid only while fn runs, so fn must neither modify
// nor retain it. The value fn returns is stored with the store's current
// time as modified time. An error from fn stores nothing and is returned
// by Update as it is (if it is an *addon.Error) or wrapped (errors.Is
// finds it). An empty key is Invalid.
//
// Concurrent Updates, of any keys, share one transaction and one fsync
// (see Options.BatchDelay), so a lone Update waits up to that delay. That
// is also why fn may run more than once for one Update, each time on the
// value then stored: it must be a pure function of old (capturing its
// results afresh on each run) and quick, as it runs inside the store's
// single write transaction; it must not call the store. The value is on
// disk when Update returns nil.
func (kv *KV) Update(ctx context.Context, key string, fn func(old []byte, found bool) ([]byte, error)) error {
	if key == "" {
		return addon.Errorf(addon.Invalid, "empty key")
	}
	mod := kv.d.now()
	secret := kv.secret(key)
	var ad []byte
	if secret {
		ad = aad(string(kv.bucketName()), key)
	}
	return kv.d.batch(ctx, "kv update", func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(kv.bucketName())
		if err != nil {
			return err
		}
		old, _, found := kvGet(b, key)
		if secret && found {
			if old, err = kv.d.sealer.Open(ad, string(old)); err != nil {
				return fmt.Errorf("decrypt %s %q: %w", kv.namespace, key, err)
			}
		}
		val, err := fn(old, found)
		if err != nil {
			return err
		}
		if secret {
			val = []byte(kv.d.sealer.Seal(ad, val))
		}
		return b.Put([]byte(key), kvRecord(mod, val))
	})
}

// Delete removes key; NotFound if it is absent.
func (kv *KV) Delete(ctx context.Context, key string) error {
	return kv.d.update(ctx, "kv delete", func(tx *bolt.Tx) error {
		b := kv.bucket(tx)
		if b == nil || b.Get([]byte(key)) == nil {
			return kv.notFound(key)
		}
		return b.Delete([]byte(key))
	})
}

// List returns the keys that start with prefix, in byte order; an empty
// prefix lists them all. No match is an empty list, not an error.
func (kv *KV) List(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	err := kv.d.view(ctx, "kv list", func(tx *bolt.Tx) error {
		b := kv.bucket(tx)
		if b == nil {
			return nil
		}
		p := []byte(prefix)
		c := b.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			keys = append(keys, string(k))
		}
		return nil
	})
	return keys, err
}

// Stat returns the size and modified time of the value at key, or NotFound.
func (kv *KV) Stat(ctx context.Context, key string) (size int64, modified time.Time, err error) {
	err = kv.d.view(ctx, "kv stat", func(tx *bolt.Tx) error {
		v, mod, ok := kvGet(kv.bucket(tx), key)
		if !ok {
			return kv.notFound(key)
		}
		size, modified = kv.size(key, v), mod
		return nil
	})
	return size, modified, err
}

// size is the size of the value v stored at key: its plaintext size if it
// is encrypted.
func (kv *KV) size(key string, v []byte) int64 {
	if kv.secret(key) && isSealed(v) {
		return int64(kv.d.sealer.SealedLen(v))
	}
	return int64(len(v))
}

// kvGet returns the value (still inside the transaction) and modified time
// at key in b, which may be nil.
func kvGet(b *bolt.Bucket, key string) (val []byte, modified time.Time, ok bool) {
	if b == nil || key == "" {
		return nil, time.Time{}, false
	}
	rec := b.Get([]byte(key))
	if rec == nil {
		return nil, time.Time{}, false
	}
	if len(rec) < kvHeader {
		// Not written by Put; treat the whole record as the value.
		return rec, time.Time{}, true
	}
	return rec[kvHeader:], time.Unix(0, int64(binary.BigEndian.Uint64(rec))), true
}

// kvBucketNames returns the names of the KV namespace buckets.
func kvBucketNames(tx *bolt.Tx) []string {
	var names []string
	p := []byte(kvBucketPrefix)
	c := tx.Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		names = append(names, string(k))
	}
	return names
}

// keysWithPrefix returns copies of the keys in b that start with prefix.
func keysWithPrefix(b *bolt.Bucket, prefix []byte) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	return keys
}

// deleteKeys deletes keys from b (deleting while a cursor walks b would
// make it skip keys, so callers collect them first).
func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
