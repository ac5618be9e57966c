package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
)

// DeadLetters returns every dead letter, in job ID order.
func (d *DB) DeadLetters(ctx context.Context) ([]addon.DeadLetter, error) {
	rows, err := d.pool.Query(ctx, "SELECT "+jobColumns+", reason, buried_at FROM dead_letters ORDER BY id")
	if err != nil {
		return nil, wrapErr("dead letters", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (addon.DeadLetter, error) {
		var dl addon.DeadLetter
		var at time.Time
		j, err := scanJob(r, &dl.Reason, &at)
		dl.Job, dl.At = j, utc(at)
		return dl, err
	})
	return out, wrapErr("dead letters", err)
}

// RetryDead moves dead letter id back into the outbox as a new job at the
// end of the queue: a new ID (greater than every ID before it), Attempts
// reset to zero, LastError kept (as the history), Received unchanged, in
// one transaction; a later duplicate delivery of its message answers with
// the new job. It adds the job as Enqueue does (the installation's row
// locked while the new ID is drawn, OnAdded and the listeners of Listen
// told). It returns the new job; NotFound if there is no such dead letter
// or its installation no longer exists; Unavailable if the installation's
// outbox is full (see Options.MaxPendingPerInstallation).
func (d *DB) RetryDead(ctx context.Context, id uint64) (addon.Job, error) {
	// The installation is known only once the dead letter is read: read it
	// first, to take its turn at adding before the transaction that adds.
	var owner string
	err := d.pool.QueryRow(ctx, "SELECT oauth_id FROM dead_letters WHERE id = $1", int64(id)).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return addon.Job{}, addon.Errorf(addon.NotFound, "dead letter %d not found", id)
	}
	if err != nil {
		return addon.Job{}, wrapErr("retry dead letter", err)
	}
	unlock := d.adding.lock(owner)
	defer unlock()
	var out addon.Job
	err = d.inTx(ctx, "retry dead letter", func(tx pgx.Tx) error {
		if err := lockInstallation(ctx, tx, owner); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return addon.Errorf(addon.NotFound, "installation %q of dead letter %d not found", owner, id)
			}
			return err
		}
		j, err := scanJob(tx.QueryRow(ctx, "DELETE FROM dead_letters WHERE id = $1 RETURNING "+jobColumns, int64(id)))
		if errors.Is(err, pgx.ErrNoRows) {
			return addon.Errorf(addon.NotFound, "dead letter %d not found", id)
		}
		if err != nil {
			return err
		}
		if err := d.checkRoom(ctx, tx, owner); err != nil {
			return err
		}
		j.Attempts = 0
		out, err = scanJob(tx.QueryRow(ctx, `
			INSERT INTO jobs (`+jobColumns+`)
			VALUES (nextval('job_ids'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			RETURNING `+jobColumns,
			j.OAuthID, j.RoomID, j.MessageID, messageDate(j), j.Command, j.Args, j.From, j.Received, j.Reply,
			j.ResponseOnly, j.Attempts, j.LastError))
		if err != nil {
			return err
		}
		if err := notifyAdded(ctx, tx, out); err != nil || j.MessageID == "" {
			return err
		}
		_, err = tx.Exec(ctx, `
			UPDATE seen SET job_id = $5
			WHERE oauth_id = $1 AND message_id = $2 AND message_date IN ($3, $4) AND job_id = $6`,
			j.OAuthID, j.MessageID, seenDate(j), epoch, int64(out.ID), int64(id))
		return err
	})
	if err != nil {
		return addon.Job{}, err
	}
	d.tellAdded(out)
	return out, nil
}

// DropDead deletes dead letter id for good; NotFound if there is none.
func (d *DB) DropDead(ctx context.Context, id uint64) error {
	n, err := d.exec(ctx, "drop dead letter", "DELETE FROM dead_letters WHERE id = $1", int64(id))
	if err == nil && n == 0 {
		return addon.Errorf(addon.NotFound, "dead letter %d not found", id)
	}
	return err
}

// PruneDead deletes the dead letters buried before olderThan and returns
// how many it deleted.
func (d *DB) PruneDead(ctx context.Context, olderThan time.Time) (int, error) {
	n, err := d.exec(ctx, "prune dead letters", "DELETE FROM dead_letters WHERE buried_at < $1", olderThan)
	return int(n), err
}
