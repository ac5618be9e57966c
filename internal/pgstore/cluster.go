package pgstore

import (
	"context"
	"slices"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
)

// Leases is what one lease round leaves a node holding.
type Leases struct {
	Held  []string // OAuthIDs of the installations this node holds, sorted
	Nodes int      // live nodes (heartbeat younger than the ttl), this one included
	// Elsewhere are the OAuthIDs of the installations other nodes hold
	// unexpired leases on, sorted: their jobs are not this node's to
	// deliver, and no round of this node could claim them now.
	Elsewhere []string
}

// staleHeartbeats is how many ttls old a heartbeat is deleted at.
const staleHeartbeats = 10

// Lease runs one lease round for node, in one transaction, on the
// database's clock: it records node's heartbeat, renews node's unexpired
// leases to now()+ttl, and claims, up to its fair share
// ceil(installations / live nodes), installations whose lease is missing or
// expired, so that two nodes never both hold one. It never takes an
// unexpired lease of another node and never gives up one of its own (no
// rebalancing of live leases: a node that joins gets installations as
// leases expire or are released, and new installations). Heartbeats older
// than 10*ttl are deleted. node must be a non-empty text key and ttl at
// least a microsecond (Invalid otherwise).
//
// now() is the start of the round's transaction, so the expiry it writes
// is never later than ttl after the round began, and what it takes as
// expired had expired by then: a holder that stops delivering ttl after it
// asked (less a margin for its clock's drift from the database's) has
// stopped before another node may claim the installation.
//
// No statement of a round waits for Enqueue, DeleteInstallation or
// another node's claim of a different lease: the expired leases are
// claimed FOR UPDATE SKIP LOCKED, the missing ones with INSERT ... ON
// CONFLICT DO NOTHING in OAuthID order (a claim of the same missing lease
// waits for the other round's commit, then gives it up), their
// installations' rows locked FOR KEY SHARE SKIP LOCKED (see claimMissing).
// A lease of a deleted installation goes with it (ON DELETE CASCADE): an
// installation deleted and stored again under the same OAuthID (HipChat
// gives each installation a new one) may be claimed by another node before
// its former holder's next round tells it the lease is gone.
func (d *DB) Lease(ctx context.Context, node string, ttl time.Duration) (Leases, error) {
	if err := checkNode(node); err != nil {
		return Leases{}, err
	}
	if ttl < time.Microsecond {
		return Leases{}, addon.Errorf(addon.Invalid, "pgstore: lease: ttl %v is less than a microsecond", ttl)
	}
	var out Leases
	err := d.inTx(ctx, "lease", func(tx pgx.Tx) error {
		out = Leases{}
		if _, err := tx.Exec(ctx, `INSERT INTO nodes (name, seen) VALUES ($1, now())
			ON CONFLICT (name) DO UPDATE SET seen = EXCLUDED.seen`, node); err != nil {
			return err
		}
		// SKIP LOCKED: two rounds deleting the same heartbeats in different
		// orders would deadlock.
		if _, err := tx.Exec(ctx, `DELETE FROM nodes WHERE name IN (
			SELECT name FROM nodes WHERE seen < now() - $1::interval FOR UPDATE SKIP LOCKED)`,
			staleHeartbeats*ttl); err != nil {
			return err
		}
		held, err := oauthIDs(tx.Query(ctx, `UPDATE leases SET expires = now() + $2::interval
			WHERE node = $1 AND expires > now() RETURNING oauth_id`, node, ttl))
		if err != nil {
			return err
		}
		var installations int
		if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM installations),
			(SELECT count(*) FROM nodes WHERE seen > now() - $1::interval)`, ttl).Scan(&installations, &out.Nodes); err != nil {
			return err
		}
		share := (installations + out.Nodes - 1) / max(out.Nodes, 1)
		if want := share - len(held); want > 0 {
			got, err := claimExpired(ctx, tx, node, ttl, want)
			if err != nil {
				return err
			}
			held = append(held, got...)
		}
		if want := share - len(held); want > 0 {
			got, err := claimMissing(ctx, tx, node, ttl, want)
			if err != nil {
				return err
			}
			held = append(held, got...)
		}
		slices.Sort(held)
		out.Held = held
		out.Elsewhere, err = oauthIDs(tx.Query(ctx, `SELECT oauth_id FROM leases
			WHERE node <> $1 AND expires > now() ORDER BY oauth_id`, node))
		return err
	})
	if err != nil {
		return Leases{}, err
	}
	return out, nil
}

// claimExpired takes up to n expired leases (of any node, node's own
// included) for node. SKIP LOCKED passes over the leases another round is
// renewing or claiming, and those a DeleteInstallation is removing; a lease
// claimed and committed by another round since the statement's snapshot is
// checked again (expires <= now()) once locked, and left.
func claimExpired(ctx context.Context, tx pgx.Tx, node string, ttl time.Duration, n int) ([]string, error) {
	return oauthIDs(tx.Query(ctx, `
		WITH free AS MATERIALIZED (
			SELECT oauth_id FROM leases WHERE expires <= now()
			ORDER BY oauth_id LIMIT $3
			FOR UPDATE SKIP LOCKED
		)
		UPDATE leases SET node = $1, expires = now() + $2::interval
		FROM free WHERE leases.oauth_id = free.oauth_id
		RETURNING leases.oauth_id`, node, ttl, n))
}

// claimMissing takes up to n installations without a lease for node. The
// installations' rows are locked FOR KEY SHARE SKIP LOCKED: that mode does
// not conflict with Enqueue's FOR NO KEY UPDATE (nor PutInstallation's
// update), so neither waits for the other, and it is what the lease's
// foreign key check takes anyway; it conflicts only with a delete, so an
// installation being deleted is passed over (its lease would fail the
// foreign key) and one deleted after waits for this round. Two rounds
// inserting the same lease: the second waits for the first's commit and
// then does nothing (ON CONFLICT DO NOTHING); both insert in OAuthID order,
// so they cannot deadlock.
func claimMissing(ctx context.Context, tx pgx.Tx, node string, ttl time.Duration, n int) ([]string, error) {
	return oauthIDs(tx.Query(ctx, `
		WITH free AS MATERIALIZED (
			SELECT i.oauth_id FROM installations i
			WHERE NOT EXISTS (SELECT 1 FROM leases l WHERE l.oauth_id = i.oauth_id)
			ORDER BY i.oauth_id LIMIT $3
			FOR KEY SHARE OF i SKIP LOCKED
		)
		INSERT INTO leases (oauth_id, node, expires)
		SELECT oauth_id, $1, now() + $2::interval FROM free ORDER BY oauth_id
		ON CONFLICT (oauth_id) DO NOTHING
		RETURNING oauth_id`, node, ttl, n))
}

// ReleaseLeases gives up node's leases and heartbeat (a clean stop), in one
// statement, so that other nodes claim them at their next round.
func (d *DB) ReleaseLeases(ctx context.Context, node string) error {
	if err := checkNode(node); err != nil {
		return err
	}
	_, err := d.exec(ctx, "release leases",
		"WITH l AS (DELETE FROM leases WHERE node = $1) DELETE FROM nodes WHERE name = $1", node)
	return err
}

// checkNode rejects node names that cannot be keys.
func checkNode(node string) error {
	if node == "" {
		return addon.Errorf(addon.Invalid, "empty node name")
	}
	return checkText("node name", node)
}

// oauthIDs collects a query's rows of one text column.
func oauthIDs(rows pgx.Rows, err error) ([]string, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
