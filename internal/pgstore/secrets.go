package pgstore

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Secrets at rest.
//
// With a key, each secret is stored as secretPrefix followed by the standard
// base64 of nonce (12 random bytes, fresh for every write) || AES-256-GCM
// ciphertext || tag (16 bytes). The additional data binds a ciphertext to
// its record (table and id), so it cannot be moved to another one:
//
//	installations.oauth_secret     "installations" "\x00" oauth_id
//	tokens.access_token            "tokens" "\x00" oauth_id
//	kv value of a certmagic "*.key" "kv/certmagic" "\x00" key
//	meta "secrets" (the key check)  "meta" "\x00" "secrets"
//
// These are the bbolt store's format and additional data, so a sealed value
// means the same in both stores under the same key.
//
// The key check (a known text, encrypted) is written when the database's
// secrets become encrypted: its presence says they are, and decrypting it
// proves at Open that the key is the right one.

// keySize is the length of Options.Key: an AES-256 key.
const keySize = 32

// secretPrefix starts every encrypted value ("v1": AES-256-GCM, 96-bit
// random nonce, base64).
const secretPrefix = "enc:v1:"

// keyCheckText is what the meta "secrets" row holds, encrypted.
const keyCheckText = "hipconnect secrets v1"

// metaSecrets is the name of the key check's row in meta.
const metaSecrets = "secrets"

// certMagicNamespace is the key/value namespace of certmagic's storage.
const certMagicNamespace = "certmagic"

// sealer encrypts and decrypts secrets. It is safe for concurrent use.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(key []byte) (*sealer, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("key is %d bytes, want %d (AES-256)", len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

// aad is the additional data of the secret in record id of table.
func aad(table, id string) []byte { return []byte(table + "\x00" + id) }

func installationAAD(oauthID string) []byte { return aad("installations", oauthID) }
func tokenAAD(oauthID string) []byte        { return aad("tokens", oauthID) }
func certKeyAAD(key string) []byte          { return aad("kv/"+certMagicNamespace, key) }
func keyCheckAAD() []byte                   { return aad("meta", metaSecrets) }

// seal encrypts plain for the record named by ad.
func (s *sealer) seal(ad, plain []byte) string {
	return secretPrefix + base64.StdEncoding.EncodeToString(s.aead.Seal(nil, nil, plain, ad))
}

// open decrypts a value seal made for the record named by ad. Every
// failure is ErrWrongKey; nothing of the value ends up in the error.
func (s *sealer) open(ad []byte, v string) ([]byte, error) {
	b64, ok := strings.CutPrefix(v, secretPrefix)
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

// sealedLen is the plaintext length of a sealed value, without decrypting.
func (s *sealer) sealedLen(v []byte) int {
	b64 := v[len(secretPrefix):]
	n := len(b64) / 4 * 3
	for i := len(b64) - 1; i >= 0 && b64[i] == '='; i-- {
		n--
	}
	return max(n-s.aead.Overhead(), 0)
}

func isSealed(v string) bool { return strings.HasPrefix(v, secretPrefix) }

// isSecretKV reports whether values at key in namespace are secrets:
// private keys (ACME account, certificates) in certmagic's storage.
func isSecretKV(namespace, key string) bool {
	return namespace == certMagicNamespace && strings.HasSuffix(key, ".key")
}

// sealed returns plain sealed for the record ad, or plain as it is without a
// key.
func (d *DB) sealed(ad []byte, plain string) string {
	if d.sealer == nil {
		return plain
	}
	return d.sealer.seal(ad, []byte(plain))
}

// opened returns v decrypted for the record ad, or v as it is without a
// key; what names the secret in the error.
func (d *DB) opened(what string, ad []byte, v string) (string, error) {
	if d.sealer == nil {
		return v, nil
	}
	plain, err := d.sealer.open(ad, v)
	if err != nil {
		return "", fmt.Errorf("pgstore: decrypt %s: %w", what, err)
	}
	return string(plain), nil
}

// settleSecrets brings the database's secrets in line with the key s (nil:
// no key), in one transaction on conn (the caller holds the migration
// lock), the rules of the bbolt store:
//
//   - no key, secrets not encrypted: nothing to do.
//   - no key, secrets encrypted: ErrKeyRequired.
//   - key, secrets encrypted: the key check must decrypt (ErrWrongKey).
//   - key, secrets not encrypted: every secret is encrypted in place and the
//     key check written, in one transaction; vacuum reports whether there
//     was any secret, whose plaintext then lingers in dead rows until the
//     tables are rewritten.
//
// Values already sealed are left alone. It returns a note for Warnings.
func settleSecrets(ctx context.Context, conn *pgx.Conn, s *sealer) (note string, vacuum bool, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var check string
		err := tx.QueryRow(ctx, "SELECT value FROM meta WHERE name = $1", metaSecrets).Scan(&check)
		found := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		switch {
		case s == nil && !found:
			return nil
		case s == nil:
			return ErrKeyRequired
		case found:
			plain, err := s.open(keyCheckAAD(), check)
			if err != nil || string(plain) != keyCheckText {
				return fmt.Errorf("the key is not the one the database's secrets were encrypted with: %w", ErrWrongKey)
			}
			return nil
		}
		insts, err := sealColumn(ctx, tx, s, "installations", "oauth_id", "oauth_secret", installationAAD)
		if err != nil {
			return err
		}
		toks, err := sealColumn(ctx, tx, s, "tokens", "oauth_id", "access_token", tokenAAD)
		if err != nil {
			return err
		}
		keys, err := sealCertKeys(ctx, tx, s)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO meta (name, value) VALUES ($1, $2)",
			metaSecrets, s.seal(keyCheckAAD(), []byte(keyCheckText))); err != nil {
			return err
		}
		if insts+toks+keys > 0 {
			note = fmt.Sprintf("encrypted the secrets of %d installations, %d tokens and %d certmagic keys in place", insts, toks, keys)
			vacuum = true
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrKeyRequired) && !errors.Is(err, ErrWrongKey) {
		err = wrapErr("settle the secrets", err)
	}
	return note, vacuum, err
}

// sealColumn encrypts, in table, the plaintext values of column (a text
// secret of the row keyed by idColumn) and returns how many it encrypted.
func sealColumn(ctx context.Context, tx pgx.Tx, s *sealer, table, idColumn, column string, ad func(string) []byte) (int, error) {
	rows, err := tx.Query(ctx, fmt.Sprintf("SELECT %s, %s FROM %s WHERE %s NOT LIKE 'enc:v1:%%'", idColumn, column, table, column))
	if err != nil {
		return 0, err
	}
	type rec struct{ id, v string }
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rec, error) {
		var x rec
		err := r.Scan(&x.id, &x.v)
		return x, err
	})
	if err != nil {
		return 0, err
	}
	for _, r := range recs {
		if _, err := tx.Exec(ctx, fmt.Sprintf("UPDATE %s SET %s = $2 WHERE %s = $1", table, column, idColumn),
			r.id, s.seal(ad(r.id), []byte(r.v))); err != nil {
			return 0, err
		}
	}
	return len(recs), nil
}

// sealCertKeys encrypts the plaintext values of certmagic's "*.key" keys.
func sealCertKeys(ctx context.Context, tx pgx.Tx, s *sealer) (int, error) {
	rows, err := tx.Query(ctx, `SELECT key, value FROM kv WHERE namespace = $1 AND key LIKE '%.key'`, certMagicNamespace)
	if err != nil {
		return 0, err
	}
	type rec struct {
		key string
		v   []byte
	}
	recs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (rec, error) {
		var x rec
		err := r.Scan(&x.key, &x.v)
		return x, err
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range recs {
		if isSealed(string(r.v)) {
			continue
		}
		if _, err := tx.Exec(ctx, "UPDATE kv SET value = $3 WHERE namespace = $1 AND key = $2",
			certMagicNamespace, r.key, []byte(s.seal(certKeyAAD(r.key), r.v))); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}
