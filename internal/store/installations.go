package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// PutInstallation creates or replaces the installation with inst.OAuthID.
// An empty OAuthID, or one containing a NUL byte, is Invalid. The write is
// on disk when it returns nil. With a key, OAuthSecret is stored encrypted.
// Installation returns the new value once PutInstallation has returned.
func (d *DB) PutInstallation(ctx context.Context, inst addon.Installation) error {
	if err := checkOAuthID(inst.OAuthID); err != nil {
		return err
	}
	if d.sealer != nil {
		inst = d.sealer.sealInstallation(inst)
	}
	data, err := json.Marshal(inst)
	if err != nil {
		return fmt.Errorf("store: put installation: %w", err)
	}
	defer d.lookups.forget(inst.OAuthID)
	return d.update(ctx, "put installation", func(tx *bolt.Tx) error {
		return bucket(tx, bucketInstallations).Put([]byte(inst.OAuthID), data)
	})
}

// Installation returns the installation with the given OAuthID, or a
// NotFound error. A secret that does not decrypt is an ErrWrongKey error.
// What it found is cached in memory (see lookupCache), so asking again costs
// no transaction; the caller gets its own copy.
func (d *DB) Installation(ctx context.Context, oauthID string) (addon.Installation, error) {
	if err := ctx.Err(); err != nil {
		return addon.Installation{}, fmt.Errorf("store: installation: %w", err)
	}
	cached, ok, epoch := d.lookups.installation(oauthID)
	if ok {
		return cached, nil
	}
	var inst addon.Installation
	err := d.view(ctx, "installation", func(tx *bolt.Tx) error {
		v := bucket(tx, bucketInstallations).Get([]byte(oauthID))
		if v == nil {
			return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
		}
		return decode(v, &inst)
	})
	if err != nil {
		return addon.Installation{}, err
	}
	// Decrypt outside the transaction: it needs nothing from the file.
	if d.sealer != nil {
		if err := d.sealer.openInstallation(oauthID, &inst); err != nil {
			return addon.Installation{}, err
		}
	}
	d.lookups.fillInstallation(epoch, oauthID, inst)
	return inst, nil
}

// Installations returns every installation, ordered by OAuthID (byte order).
func (d *DB) Installations(ctx context.Context) ([]addon.Installation, error) {
	var (
		all  []addon.Installation
		keys []string
	)
	err := d.view(ctx, "installations", func(tx *bolt.Tx) error {
		return bucket(tx, bucketInstallations).ForEach(func(k, v []byte) error {
			var inst addon.Installation
			if err := decode(v, &inst); err != nil {
				return err
			}
			all = append(all, inst)
			keys = append(keys, string(k))
			return ctx.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	if d.sealer != nil {
		for i := range all {
			if err := d.sealer.openInstallation(keys[i], &all[i]); err != nil {
				return nil, err
			}
		}
	}
	return all, nil
}

// DeleteInstallation removes, in one transaction, the installation, its
// token, its pending jobs, its dead letters, its seen message ids (so its
// messages are new again should it be installed again) and every key/value
// entry under addon.KeyPrefix(oauthID) in every namespace except
// CertMagicNamespace. Deleting an absent installation returns NotFound and
// changes nothing.
func (d *DB) DeleteInstallation(ctx context.Context, oauthID string) error {
	defer d.lookups.forget(oauthID)
	var jobs int
	err := d.update(ctx, "delete installation", func(tx *bolt.Tx) error {
		id := []byte(oauthID)
		insts := bucket(tx, bucketInstallations)
		if insts.Get(id) == nil {
			return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
		}
		if err := insts.Delete(id); err != nil {
			return err
		}
		if err := bucket(tx, bucketTokens).Delete(id); err != nil {
			return err
		}
		var err error
		if d.counts.none(oauthID) {
			jobs = 0 // no need to read the outbox
		} else if jobs, err = removeInstallationJobs(tx, oauthID); err != nil {
			return err
		}
		if err := removeInstallationDead(tx, oauthID); err != nil {
			return err
		}
		if err := removeInstallationSeen(tx, oauthID); err != nil {
			return err
		}
		return removeInstallationKV(tx, oauthID)
	})
	if err == nil {
		d.counts.removed(map[string]int{oauthID: jobs})
	}
	return err
}

// removeInstallationDead deletes the dead letters of an installation.
func removeInstallationDead(tx *bolt.Tx, oauthID string) error {
	dead := bucket(tx, bucketDead)
	var keys [][]byte
	err := dead.ForEach(func(k, v []byte) error {
		var dl struct {
			Job struct {
				OAuthID string `json:"oauthId"`
			} `json:"job"`
		}
		if err := json.Unmarshal(v, &dl); err != nil {
			return fmt.Errorf("dead letter %x: %w", k, err)
		}
		if dl.Job.OAuthID == oauthID {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return deleteKeys(dead, keys)
}

// removeInstallationSeen deletes the seen message ids of an installation.
// Seen keys hold oauthID "\x00" after their date: all are read, but no
// value is decoded.
func removeInstallationSeen(tx *bolt.Tx, oauthID string) error {
	seen := bucket(tx, bucketSeen)
	infix := seenKey(time.Time{}, oauthID, "")[8:]
	var keys [][]byte
	_ = seen.ForEach(func(k, _ []byte) error {
		if len(k) > 8 && bytes.HasPrefix(k[8:], infix) {
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	return deleteKeys(seen, keys)
}

// removeInstallationKV deletes the keys under addon.KeyPrefix(oauthID) in
// every KV namespace bucket but CertMagicNamespace's. Keys are in byte
// order, so each bucket is read from the prefix on, only as far as it goes.
func removeInstallationKV(tx *bolt.Tx, oauthID string) error {
	prefix := []byte(addon.KeyPrefix(oauthID))
	for _, name := range kvBucketNames(tx) {
		if name == kvBucketPrefix+CertMagicNamespace {
			continue
		}
		b := tx.Bucket([]byte(name))
		if err := deleteKeys(b, keysWithPrefix(b, prefix)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// PutToken stores the access token of an installation. It returns NotFound
// if the installation does not exist (it was deleted meanwhile), so no token
// outlives its installation. With a key, AccessToken is stored encrypted.
func (d *DB) PutToken(ctx context.Context, oauthID string, t addon.Token) error {
	if d.sealer != nil {
		t = d.sealer.sealToken(oauthID, t)
	}
	data, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("store: put token: %w", err)
	}
	defer d.lookups.forget(oauthID)
	return d.update(ctx, "put token", func(tx *bolt.Tx) error {
		id := []byte(oauthID)
		if bucket(tx, bucketInstallations).Get(id) == nil {
			return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
		}
		return bucket(tx, bucketTokens).Put(id, data)
	})
}

// Token returns the stored access token of an installation, or NotFound.
// A token that does not decrypt is an ErrWrongKey error. Like Installation,
// it answers from memory what it found before.
func (d *DB) Token(ctx context.Context, oauthID string) (addon.Token, error) {
	if err := ctx.Err(); err != nil {
		return addon.Token{}, fmt.Errorf("store: token: %w", err)
	}
	cached, ok, epoch := d.lookups.token(oauthID)
	if ok {
		return cached, nil
	}
	var t addon.Token
	err := d.view(ctx, "token", func(tx *bolt.Tx) error {
		v := bucket(tx, bucketTokens).Get([]byte(oauthID))
		if v == nil {
			return addon.Errorf(addon.NotFound, "token of installation %q not found", oauthID)
		}
		return decode(v, &t)
	})
	if err != nil {
		return addon.Token{}, err
	}
	if d.sealer != nil {
		if err := d.sealer.openToken(oauthID, &t); err != nil {
			return addon.Token{}, err
		}
	}
	d.lookups.fillToken(epoch, oauthID, t)
	return t, nil
}

// DeleteToken forgets the stored token of an installation. It returns
// NotFound if no token was stored; callers that only want it gone may ignore
// that.
func (d *DB) DeleteToken(ctx context.Context, oauthID string) error {
	defer d.lookups.forget(oauthID)
	return d.update(ctx, "delete token", func(tx *bolt.Tx) error {
		tokens := bucket(tx, bucketTokens)
		id := []byte(oauthID)
		if tokens.Get(id) == nil {
			return addon.Errorf(addon.NotFound, "token of installation %q not found", oauthID)
		}
		return tokens.Delete(id)
	})
}

// checkOAuthID rejects ids that cannot be keys: empty, or holding the NUL
// byte that separates the parts of a seen key.
func checkOAuthID(id string) error {
	if id == "" {
		return addon.Errorf(addon.Invalid, "empty oauth id")
	}
	if strings.IndexByte(id, 0) >= 0 {
		return addon.Errorf(addon.Invalid, "oauth id contains a NUL byte")
	}
	return nil
}

// decode unmarshals a stored JSON value. json.Unmarshal copies what it
// keeps, so the result stays valid after the transaction.
func decode(v []byte, into any) error {
	if err := json.Unmarshal(v, into); err != nil {
		return fmt.Errorf("decode %T: %w", into, err)
	}
	return nil
}
