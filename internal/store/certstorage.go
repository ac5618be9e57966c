package store

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/caddyserver/certmagic"
	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// CertMagicNamespace is the KV namespace that holds certmagic's storage.
const CertMagicNamespace = addon.CertMagicNamespace

// CertStorage returns certmagic's storage (certificates, keys, ACME account,
// OCSP staples) kept in the KV namespace CertMagicNamespace of this file.
// Every call returns the same value, so all its users share one lock table.
//
// Keys use "/" to separate path components; a leading or trailing "/" is
// ignored. Directories exist only implicitly, as prefixes of stored keys.
// Load, List and Stat of an absent key return an error satisfying
// errors.Is(err, fs.ErrNotExist) (and addon.IsNotFound); Delete of an absent
// key is not an error, and Delete of a directory removes everything under it
// in one transaction. Store and Delete are on disk when they return nil.
//
// Lock and TryLock are in-process locks per name: enough, because the bbolt
// file is used by one process at a time (Open takes its flock), so no other
// process can share this storage. They honour ctx cancellation. A lock held
// when the process dies disappears with it, so there are no stale locks.
func (d *DB) CertStorage() certmagic.Storage { return d.certs }

var (
	_ certmagic.Storage   = (*certStorage)(nil)
	_ certmagic.TryLocker = (*certStorage)(nil)
)

// certStorage implements certmagic.Storage on a KV namespace.
type certStorage struct {
	kv *KV

	mu    sync.Mutex
	locks map[string]chan struct{} // closed when the named lock is released
}

func newCertStorage(kv *KV) *certStorage {
	return &certStorage{kv: kv, locks: make(map[string]chan struct{})}
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
		return fmt.Errorf("store: certmagic store: %w", addon.Errorf(addon.Invalid, "empty key"))
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

// Delete removes key and, if it is a directory, everything under it. An
// absent key is not an error. An empty key (the whole storage) is refused.
func (s *certStorage) Delete(ctx context.Context, key string) error {
	key = cleanKey(key)
	if key == "" {
		return fmt.Errorf("store: certmagic delete: %w", addon.Errorf(addon.Invalid, "refusing to delete the whole storage"))
	}
	return s.kv.d.update(ctx, "certmagic delete", func(tx *bolt.Tx) error {
		b := s.kv.bucket(tx)
		if b == nil {
			return nil
		}
		doomed := keysWithPrefix(b, []byte(key+"/"))
		if b.Get([]byte(key)) != nil {
			doomed = append(doomed, []byte(key))
		}
		return deleteKeys(b, doomed)
	})
}

// Exists reports whether key is a stored key or a directory of stored keys.
// An error checking counts as false.
func (s *certStorage) Exists(ctx context.Context, key string) bool {
	key = cleanKey(key)
	var ok bool
	err := s.kv.d.view(ctx, "certmagic exists", func(tx *bolt.Tx) error {
		ok = isFile(s.kv.bucket(tx), key) || isDir(s.kv.bucket(tx), key)
		return nil
	})
	return err == nil && ok
}

// List returns the keys under the directory path: its immediate children
// (files and directories) or, if recursive, every file and directory below
// it, each directory before its contents. A path that is a file has no
// children; a path that does not exist is an fs.ErrNotExist error.
func (s *certStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	path = cleanKey(path)
	var keys []string
	err := s.kv.d.view(ctx, "certmagic list", func(tx *bolt.Tx) error {
		b := s.kv.bucket(tx)
		if b == nil {
			if path == "" {
				return nil // nothing stored yet: the root is empty
			}
			return notExist("list", path)
		}
		prefix := ""
		if path != "" {
			prefix = path + "/"
		}
		seen := make(map[string]bool)
		add := func(k string) {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
		p := []byte(prefix)
		c := b.Cursor()
		for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
			rest := string(k[len(prefix):])
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
		if len(keys) == 0 && path != "" && !isFile(b, path) {
			return notExist("list", path)
		}
		return nil
	})
	return keys, err
}

// Stat describes key: a stored key (IsTerminal, with size and modified time)
// or a directory; otherwise an fs.ErrNotExist error.
func (s *certStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	key = cleanKey(key)
	var ki certmagic.KeyInfo
	err := s.kv.d.view(ctx, "certmagic stat", func(tx *bolt.Tx) error {
		b := s.kv.bucket(tx)
		if v, mod, ok := kvGet(b, key); ok {
			ki = certmagic.KeyInfo{Key: key, Modified: mod, Size: s.kv.size(key, v), IsTerminal: true}
			return nil
		}
		if isDir(b, key) {
			ki = certmagic.KeyInfo{Key: key, IsTerminal: false}
			return nil
		}
		return notExist("stat", key)
	})
	return ki, err
}

// Lock takes the in-process lock called name, waiting until it is free or
// ctx is done.
func (s *certStorage) Lock(ctx context.Context, name string) error {
	for {
		ok, wait := s.tryLock(name)
		if ok {
			return nil
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return fmt.Errorf("store: certmagic lock %q: %w", name, ctx.Err())
		}
	}
}

// TryLock takes the lock called name if it is free, without waiting.
func (s *certStorage) TryLock(ctx context.Context, name string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("store: certmagic trylock %q: %w", name, err)
	}
	ok, _ := s.tryLock(name)
	return ok, nil
}

// tryLock takes name if free; otherwise it returns a channel closed on
// release.
func (s *certStorage) tryLock(name string) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ch, held := s.locks[name]; held {
		return false, ch
	}
	s.locks[name] = make(chan struct{})
	return true, nil
}

// Unlock releases the lock called name; unlocking a lock not held is an
// error.
func (s *certStorage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch, held := s.locks[name]
	if !held {
		return fmt.Errorf("store: certmagic unlock %q: not locked", name)
	}
	delete(s.locks, name)
	close(ch)
	return nil
}

func isFile(b *bolt.Bucket, key string) bool {
	return b != nil && key != "" && b.Get([]byte(key)) != nil
}

// isDir reports whether some key lies under key+"/"; "" is the root, a
// directory whenever anything is stored.
func isDir(b *bolt.Bucket, key string) bool {
	if b == nil {
		return false
	}
	prefix := []byte(key + "/")
	if key == "" {
		prefix = nil
	}
	k, _ := b.Cursor().Seek(prefix)
	return k != nil && bytes.HasPrefix(k, prefix)
}
