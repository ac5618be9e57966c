package store

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/seal"
	bolt "go.etcd.io/bbolt"
)

// Secrets at rest.
//
// With a key, each secret is sealed in package seal's format; the
// additional data binds a ciphertext to its record, so it cannot be moved
// to another one:
//
//	installation oauthSecret  "installations" "\x00" oauthId
//	token accessToken         "tokens" "\x00" oauthId
//	certmagic "*.key" value   "kv/certmagic" "\x00" key
//	meta "secrets" key check  "meta" "\x00" "secrets"
//
// The key check (a known text, encrypted) is written when the first secret
// is: its presence says the file's secrets are encrypted, and decrypting it
// proves at Open that the key is the right one.

// KeySize is the length of Options.Key: an AES-256 key.
const KeySize = seal.KeySize

// keyCheckText is what the meta "secrets" record holds, encrypted.
const keyCheckText = "hipconnect secrets v1"

var (
	// ErrKeyRequired is returned by Open without a key for a file whose
	// secrets are encrypted.
	ErrKeyRequired = errors.New("secrets are encrypted: storage.key_file is required")
	// ErrWrongKey is returned when a secret does not decrypt: the key is not
	// the one it was encrypted with, or the data was damaged or moved.
	ErrWrongKey = seal.ErrWrongKey
)

// sealer seals the store's secrets (see package seal for the format).
type sealer struct{ *seal.Sealer }

func newSealer(key []byte) (*sealer, error) {
	s, err := seal.New(key)
	if err != nil {
		return nil, err
	}
	return &sealer{s}, nil
}

// aad is the additional data of the secret in record id of a bucket.
func aad(bucketName, id string) []byte { return seal.AD(bucketName, id) }

func isSealed(v []byte) bool { return seal.IsSealed(string(v)) }

// sealInstallation returns inst with its OAuthSecret encrypted.
func (s *sealer) sealInstallation(inst addon.Installation) addon.Installation {
	inst.OAuthSecret = s.Seal(aad(bucketInstallations, inst.OAuthID), []byte(inst.OAuthSecret))
	return inst
}

// openInstallation decrypts the OAuthSecret of the installation stored at
// key oauthID.
func (s *sealer) openInstallation(oauthID string, inst *addon.Installation) error {
	plain, err := s.Open(aad(bucketInstallations, oauthID), inst.OAuthSecret)
	if err != nil {
		return fmt.Errorf("store: decrypt secret of installation %q: %w", oauthID, err)
	}
	inst.OAuthSecret = string(plain)
	return nil
}

func (s *sealer) sealToken(oauthID string, t addon.Token) addon.Token {
	t.AccessToken = s.Seal(aad(bucketTokens, oauthID), []byte(t.AccessToken))
	return t
}

func (s *sealer) openToken(oauthID string, t *addon.Token) error {
	plain, err := s.Open(aad(bucketTokens, oauthID), t.AccessToken)
	if err != nil {
		return fmt.Errorf("store: decrypt token of installation %q: %w", oauthID, err)
	}
	t.AccessToken = string(plain)
	return nil
}

// kvSecret reports whether values at key in the namespace are secrets:
// private keys (ACME account, certificates) in certmagic's storage.
func kvSecret(namespace, key string) bool {
	return namespace == CertMagicNamespace && strings.HasSuffix(key, ".key")
}

// settleSecrets brings the file's secrets in line with the key s (nil: no
// key), inside initSchema's transaction, and returns a note for Warnings.
//
//   - no key, file not encrypted: nothing to do.
//   - no key, file encrypted: ErrKeyRequired.
//   - key, file encrypted: the key check must decrypt (ErrWrongKey).
//   - key, file not encrypted: every secret is encrypted in place and the
//     key check written; if there was any secret, the meta "compact" flag is
//     set so that Open rewrites the file without the plaintext left in its
//     free pages.
func settleSecrets(tx *bolt.Tx, s *sealer) (string, error) {
	meta := bucket(tx, bucketMeta)
	check := meta.Get([]byte(keySecrets))
	switch {
	case s == nil && check == nil:
		return "", nil
	case s == nil:
		return "", ErrKeyRequired
	case check != nil:
		plain, err := s.Open(aad(bucketMeta, keySecrets), string(check))
		if err != nil || string(plain) != keyCheckText {
			return "", ErrWrongKey
		}
		return "", nil
	}

	var insts, toks, keys int
	err := rewriteBucket(bucket(tx, bucketInstallations), func(k, v []byte) ([]byte, error) {
		var inst addon.Installation
		if err := decode(v, &inst); err != nil {
			return nil, fmt.Errorf("installation %q: %w", k, err)
		}
		if isSealed([]byte(inst.OAuthSecret)) {
			return nil, nil
		}
		inst.OAuthSecret = s.Seal(aad(bucketInstallations, string(k)), []byte(inst.OAuthSecret))
		insts++
		return json.Marshal(inst)
	})
	if err != nil {
		return "", err
	}
	err = rewriteBucket(bucket(tx, bucketTokens), func(k, v []byte) ([]byte, error) {
		var t addon.Token
		if err := decode(v, &t); err != nil {
			return nil, fmt.Errorf("token %q: %w", k, err)
		}
		if isSealed([]byte(t.AccessToken)) {
			return nil, nil
		}
		t = s.sealToken(string(k), t)
		toks++
		return json.Marshal(t)
	})
	if err != nil {
		return "", err
	}
	kvName := kvBucketPrefix + CertMagicNamespace
	if b := tx.Bucket([]byte(kvName)); b != nil {
		err = rewriteBucket(b, func(k, rec []byte) ([]byte, error) {
			if !kvSecret(CertMagicNamespace, string(k)) {
				return nil, nil
			}
			val, mod, _ := kvGet(b, string(k))
			if isSealed(val) {
				return nil, nil
			}
			keys++
			return kvRecord(mod, []byte(s.Seal(aad(kvName, string(k)), val))), nil
		})
		if err != nil {
			return "", err
		}
	}
	if err := meta.Put([]byte(keySecrets), []byte(s.Seal(aad(bucketMeta, keySecrets), []byte(keyCheckText)))); err != nil {
		return "", err
	}
	if insts+toks+keys == 0 {
		return "", nil
	}
	if err := meta.Put([]byte(keyCompact), []byte{1}); err != nil {
		return "", err
	}
	return fmt.Sprintf("encrypted the secrets of %d installations, %d tokens and %d certmagic keys in place",
		insts, toks, keys), nil
}

// rewriteBucket calls fn for each record of b and stores what it returns
// (nil: leave the record alone). Writes wait until the iteration is over.
func rewriteBucket(b *bolt.Bucket, fn func(k, v []byte) ([]byte, error)) error {
	type rec struct{ k, v []byte }
	var changed []rec
	err := b.ForEach(func(k, v []byte) error {
		nv, err := fn(k, v)
		if err != nil || nv == nil {
			return err
		}
		changed = append(changed, rec{bytes.Clone(k), nv})
		return nil
	})
	if err != nil {
		return err
	}
	for _, r := range changed {
		if err := b.Put(r.k, r.v); err != nil {
			return err
		}
	}
	return nil
}

// kvRecord is a KV record: modified time, then the value. A zero time
// (unknown) is stored as the Unix epoch.
func kvRecord(mod time.Time, val []byte) []byte {
	var ns int64
	if !mod.IsZero() {
		ns = mod.UnixNano()
	}
	rec := make([]byte, kvHeader+len(val))
	binary.BigEndian.PutUint64(rec, uint64(ns))
	copy(rec[kvHeader:], val)
	return rec
}

// compactInPlace rewrites the file with only its live data (bbolt leaves
// freed pages as they were, so after encrypting in place the plaintext would
// still be in the file). It copies into path+".compact", drops the meta
// "compact" flag there, renames it over the file and switches d to it. The
// copy is locked before the rename, so no other process can slip in; a crash
// before the rename leaves the flag set in the original, and the next Open
// compacts again.
func (d *DB) compactInPlace(timeout time.Duration) error {
	tmp := d.path + ".compact"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	dst, err := openBolt(tmp, &bolt.Options{Timeout: timeout})
	if err != nil {
		return err
	}
	err = bolt.Compact(dst, d.db, 0)
	if err == nil {
		err = dst.Update(func(tx *bolt.Tx) error {
			return bucket(tx, bucketMeta).Delete([]byte(keyCompact))
		})
	}
	if err == nil {
		err = os.Rename(tmp, d.path)
	}
	if err != nil {
		_ = dst.Close()
		_ = os.Remove(tmp)
		return err
	}
	old := d.db
	d.db = dst
	_ = old.Close()
	return syncDir(filepath.Dir(d.path))
}
