// Package seal is the format of secrets at rest, the same in every store
// backend, so that a value sealed by one means the same in another under
// the same key.
//
// A sealed value is Prefix followed by the standard base64 of nonce (12
// random bytes, fresh for every Seal) || AES-256-GCM ciphertext || tag (16
// bytes). The additional data (AD) binds a ciphertext to its record, so
// that it cannot be moved to another one.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key: AES-256.
const KeySize = 32

// Prefix starts every sealed value ("v1": AES-256-GCM, 96-bit random
// nonce, base64).
const Prefix = "enc:v1:"

// ErrWrongKey is what Open returns for every value it cannot open: the key
// is not the one it was sealed with, or the value was damaged or moved.
var ErrWrongKey = errors.New("wrong key or damaged data")

// Sealer seals and opens values with one key. It is safe for concurrent use.
type Sealer struct {
	aead cipher.AEAD
}

// New returns a Sealer for key, which must be KeySize bytes.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d (AES-256)", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	// Seal draws a fresh 12-byte random nonce and prepends it; Open takes
	// it from there.
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// AD is the additional data of the secret in record id of table (a bbolt
// bucket or a PostgreSQL table, named as the format says).
func AD(table, id string) []byte { return []byte(table + "\x00" + id) }

// Seal encrypts plain for the record named by ad.
func (s *Sealer) Seal(ad, plain []byte) string {
	return Prefix + base64.StdEncoding.EncodeToString(s.aead.Seal(nil, nil, plain, ad))
}

// Open decrypts a value Seal made for the record named by ad; an empty
// value opens to an empty, non-nil slice. Every failure is ErrWrongKey:
// nothing of the value ends up in the error.
func (s *Sealer) Open(ad []byte, v string) ([]byte, error) {
	b64, ok := strings.CutPrefix(v, Prefix)
	if !ok {
		return nil, ErrWrongKey
	}
	ct, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, ErrWrongKey
	}
	plain, err := s.aead.Open(nil, nil, ct, ad)
	if err != nil {
		return nil, ErrWrongKey
	}
	if plain == nil {
		plain = []byte{}
	}
	return plain, nil
}

// SealedLen is the plaintext length of the sealed value v, without
// opening it.
func (s *Sealer) SealedLen(v []byte) int {
	b64 := v[len(Prefix):]
	n := len(b64) / 4 * 3
	for i := len(b64) - 1; i >= 0 && b64[i] == '='; i-- {
		n--
	}
	return max(n-s.aead.Overhead(), 0)
}

// IsSealed reports whether v is a sealed value.
func IsSealed(v string) bool { return strings.HasPrefix(v, Prefix) }
