package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/seal"
)

// Secrets at rest.
//
// With a key, each secret is sealed in package seal's format; the
// additional data binds a ciphertext to its record (table and id), so it
// cannot be moved to another one:
//
//	installations.oauth_secret     "installations" "\x00" oauth_id
//	tokens.access_token            "tokens" "\x00" oauth_id
//	kv value of a certmagic "*.key" "kv/certmagic" "\x00" key
//	meta "secrets" (the key check)  "meta" "\x00" "secrets"
//
// These are the bbolt store's additional data, so a sealed value means the
// same in both stores under the same key.
//
// The key check (a known text, encrypted) is written when the database's
// secrets become encrypted: its presence says they are, and decrypting it
// proves at Open that the key is the right one.

// keyCheckText is what the meta "secrets" row holds, encrypted.
const keyCheckText = "hipconnect secrets v1"

// metaSecrets is the name of the key check's row in meta.
const metaSecrets = "secrets"

func installationAAD(oauthID string) []byte { return seal.AD("installations", oauthID) }
func tokenAAD(oauthID string) []byte        { return seal.AD("tokens", oauthID) }
func certKeyAAD(key string) []byte          { return seal.AD("kv/"+addon.CertMagicNamespace, key) }
func keyCheckAAD() []byte                   { return seal.AD("meta", metaSecrets) }

// isSecretKV reports whether values at key in namespace are secrets:
// private keys (ACME account, certificates) in certmagic's storage.
func isSecretKV(namespace, key string) bool {
	return namespace == addon.CertMagicNamespace && strings.HasSuffix(key, ".key")
}

// sealed returns plain sealed for the record ad, or plain as it is without a
// key.
func (d *DB) sealed(ad []byte, plain string) string {
	if d.sealer == nil {
		return plain
	}
	return d.sealer.Seal(ad, []byte(plain))
}

// opened returns v decrypted for the record ad, or v as it is without a
// key; what names the secret in the error.
func (d *DB) opened(what string, ad []byte, v string) (string, error) {
	if d.sealer == nil {
		return v, nil
	}
	plain, err := d.sealer.Open(ad, v)
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
func settleSecrets(ctx context.Context, conn *pgx.Conn, s *seal.Sealer) (note string, vacuum bool, err error) {
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
			plain, err := s.Open(keyCheckAAD(), check)
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
			metaSecrets, s.Seal(keyCheckAAD(), []byte(keyCheckText))); err != nil {
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
func sealColumn(ctx context.Context, tx pgx.Tx, s *seal.Sealer, table, idColumn, column string, ad func(string) []byte) (int, error) {
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
			r.id, s.Seal(ad(r.id), []byte(r.v))); err != nil {
			return 0, err
		}
	}
	return len(recs), nil
}

// sealCertKeys encrypts the plaintext values of certmagic's "*.key" keys.
func sealCertKeys(ctx context.Context, tx pgx.Tx, s *seal.Sealer) (int, error) {
	rows, err := tx.Query(ctx, `SELECT key, value FROM kv WHERE namespace = $1 AND key LIKE '%.key'`, addon.CertMagicNamespace)
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
		if seal.IsSealed(string(r.v)) {
			continue
		}
		if _, err := tx.Exec(ctx, "UPDATE kv SET value = $3 WHERE namespace = $1 AND key = $2",
			addon.CertMagicNamespace, r.key, []byte(s.Seal(certKeyAAD(r.key), r.v))); err != nil {
			return 0, err
		}
		n++
	}
	return n, nil
}
