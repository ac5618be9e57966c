package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
)

const installationColumns = `oauth_id, oauth_secret, capabilities_url, group_id, room_id, api_url, token_url,
	hipchat_origin, integration, installed_at, updated_at`

// PutInstallation creates or replaces the installation with inst.OAuthID.
// An empty OAuthID, or one PostgreSQL text cannot hold, is Invalid. With a
// key, OAuthSecret is stored encrypted.
func (d *DB) PutInstallation(ctx context.Context, inst addon.Installation) error {
	if err := checkOAuthID(inst.OAuthID); err != nil {
		return err
	}
	secret := d.sealed(installationAAD(inst.OAuthID), clean(inst.OAuthSecret))
	_, err := d.exec(ctx, "put installation", `
		INSERT INTO installations (`+installationColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
		ON CONFLICT (oauth_id) DO UPDATE SET
			oauth_secret = EXCLUDED.oauth_secret, capabilities_url = EXCLUDED.capabilities_url,
			group_id = EXCLUDED.group_id, room_id = EXCLUDED.room_id, api_url = EXCLUDED.api_url,
			token_url = EXCLUDED.token_url, hipchat_origin = EXCLUDED.hipchat_origin,
			integration = EXCLUDED.integration, installed_at = EXCLUDED.installed_at,
			updated_at = EXCLUDED.updated_at`,
		inst.OAuthID, secret, clean(inst.CapabilitiesURL), inst.GroupID, inst.RoomID, clean(inst.APIURL),
		clean(inst.TokenURL), clean(inst.HipChatOrigin), clean(inst.Integration), inst.InstalledAt, inst.UpdatedAt)
	return err
}

// scanInstallation reads a row of installationColumns and decrypts its
// secret.
func (d *DB) scanInstallation(row pgx.Row) (addon.Installation, error) {
	var inst addon.Installation
	var installed, updated time.Time
	if err := row.Scan(&inst.OAuthID, &inst.OAuthSecret, &inst.CapabilitiesURL, &inst.GroupID, &inst.RoomID,
		&inst.APIURL, &inst.TokenURL, &inst.HipChatOrigin, &inst.Integration, &installed, &updated); err != nil {
		return addon.Installation{}, err
	}
	inst.InstalledAt, inst.UpdatedAt = utc(installed), utc(updated)
	secret, err := d.opened("secret of installation "+inst.OAuthID, installationAAD(inst.OAuthID), inst.OAuthSecret)
	if err != nil {
		return addon.Installation{}, err
	}
	inst.OAuthSecret = secret
	return inst, nil
}

// Installation returns the installation with the given OAuthID, or a
// NotFound error. A secret that does not decrypt is an ErrWrongKey error.
// Nothing is cached: another node may change it at any time.
func (d *DB) Installation(ctx context.Context, oauthID string) (addon.Installation, error) {
	if checkText("oauth id", oauthID) != nil {
		return addon.Installation{}, addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
	}
	inst, err := d.scanInstallation(d.pool.QueryRow(ctx,
		"SELECT "+installationColumns+" FROM installations WHERE oauth_id = $1", oauthID))
	if errors.Is(err, pgx.ErrNoRows) {
		return addon.Installation{}, addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
	}
	return inst, wrapErr("installation", err)
}

// Installations returns every installation, ordered by OAuthID (byte order).
func (d *DB) Installations(ctx context.Context) ([]addon.Installation, error) {
	rows, err := d.pool.Query(ctx, "SELECT "+installationColumns+" FROM installations ORDER BY oauth_id")
	if err != nil {
		return nil, wrapErr("installations", err)
	}
	all, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (addon.Installation, error) {
		return d.scanInstallation(r)
	})
	return all, wrapErr("installations", err)
}

// DeleteInstallation removes, in one transaction, the installation and
// with it (ON DELETE CASCADE) its token, pending jobs, dead letters, seen
// message ids (so its messages are new again should it be installed again)
// and pacing windows, and every key/value entry under
// addon.KeyPrefix(oauthID) in every namespace but certmagic's (certificates
// belong to hosts, not installations). Deleting an absent installation
// returns NotFound and changes nothing. It waits for the installation's
// additions to the outbox in flight (on any node), which then find it gone.
func (d *DB) DeleteInstallation(ctx context.Context, oauthID string) error {
	if checkText("oauth id", oauthID) != nil {
		return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
	}
	return d.inTx(ctx, "delete installation", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM installations WHERE oauth_id = $1", oauthID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
		}
		lo, hi := prefixRange(addon.KeyPrefix(oauthID))
		_, err = tx.Exec(ctx, "DELETE FROM kv WHERE key >= $1 AND ($2::text IS NULL OR key < $2) AND namespace <> $3",
			lo, hi, addon.CertMagicNamespace)
		return err
	})
}

// PutToken stores the access token of an installation. It returns NotFound
// if the installation does not exist (it was deleted meanwhile), so no token
// outlives its installation. With a key, AccessToken is stored encrypted.
func (d *DB) PutToken(ctx context.Context, oauthID string, t addon.Token) error {
	if checkOAuthID(oauthID) != nil {
		return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
	}
	_, err := d.pool.Exec(ctx, `
		INSERT INTO tokens (oauth_id, access_token, scope, expires_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (oauth_id) DO UPDATE SET
			access_token = EXCLUDED.access_token, scope = EXCLUDED.scope, expires_at = EXCLUDED.expires_at`,
		oauthID, d.sealed(tokenAAD(oauthID), clean(t.AccessToken)), clean(t.Scope), t.ExpiresAt)
	if pgCode(err) == codeForeignKey {
		return addon.Errorf(addon.NotFound, "installation %q not found", oauthID)
	}
	return wrapErr("put token", err)
}

// Token returns the stored access token of an installation, or NotFound.
// A token that does not decrypt is an ErrWrongKey error.
func (d *DB) Token(ctx context.Context, oauthID string) (addon.Token, error) {
	if checkText("oauth id", oauthID) != nil {
		return addon.Token{}, addon.Errorf(addon.NotFound, "token of installation %q not found", oauthID)
	}
	var t addon.Token
	var expires time.Time
	err := d.pool.QueryRow(ctx, "SELECT access_token, scope, expires_at FROM tokens WHERE oauth_id = $1", oauthID).
		Scan(&t.AccessToken, &t.Scope, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return addon.Token{}, addon.Errorf(addon.NotFound, "token of installation %q not found", oauthID)
	}
	if err != nil {
		return addon.Token{}, wrapErr("token", err)
	}
	t.ExpiresAt = utc(expires)
	if t.AccessToken, err = d.opened("token of installation "+oauthID, tokenAAD(oauthID), t.AccessToken); err != nil {
		return addon.Token{}, err
	}
	return t, nil
}

// DeleteToken forgets the stored token of an installation. It returns
// NotFound if no token was stored; callers that only want it gone may
// ignore that.
func (d *DB) DeleteToken(ctx context.Context, oauthID string) error {
	if checkText("oauth id", oauthID) != nil {
		return addon.Errorf(addon.NotFound, "token of installation %q not found", oauthID)
	}
	n, err := d.exec(ctx, "delete token", "DELETE FROM tokens WHERE oauth_id = $1", oauthID)
	if err == nil && n == 0 {
		return addon.Errorf(addon.NotFound, "token of installation %q not found", oauthID)
	}
	return err
}
