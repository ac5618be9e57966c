package pgstore

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
)

// jobColumns are the columns of a job, in jobs and in dead_letters.
const jobColumns = `id, oauth_id, room_id, message_id, message_date, command, args, sender, received, reply,
	response_only, attempts, last_error`

// maxReasonBytes caps the failure reason RecordAttempt and Bury store (as
// LastError or DeadLetter.Reason), as the bbolt store does; a longer one is
// cut at a character boundary.
const maxReasonBytes = 2048

// scanJob reads a row of jobColumns, then into extra.
func scanJob(row pgx.Row, extra ...any) (addon.Job, error) {
	var (
		j        addon.Job
		id       int64
		date     *time.Time
		received time.Time
	)
	dest := append([]any{&id, &j.OAuthID, &j.RoomID, &j.MessageID, &date, &j.Command, &j.Args, &j.From,
		&received, &j.Reply, &j.ResponseOnly, &j.Attempts, &j.LastError}, extra...)
	if err := row.Scan(dest...); err != nil {
		return addon.Job{}, err
	}
	j.ID = uint64(id)
	if date != nil {
		j.MessageDate = utc(*date)
	}
	j.Received = utc(received)
	return j, nil
}

// collectJobs reads rows of jobColumns.
func collectJobs(rows pgx.Rows) ([]addon.Job, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (addon.Job, error) { return scanJob(r) })
}

// cleanJob makes the text of j storable (see clean).
func cleanJob(j addon.Job) addon.Job {
	j.MessageID, j.Command, j.Args, j.From, j.LastError = clean(j.MessageID), clean(j.Command), clean(j.Args), clean(j.From), clean(j.LastError)
	return j
}

// messageDate is j's MessageDate as a column value: nil when it has none.
func messageDate(j addon.Job) any {
	if j.MessageDate.IsZero() {
		return nil
	}
	return j.MessageDate
}

// seenDate is the date of j's message in seen: its MessageDate, or the Unix
// epoch when it has none (or one not after the epoch), as the bbolt store
// keys it.
func seenDate(j addon.Job) time.Time {
	if j.MessageDate.IsZero() || j.MessageDate.UnixMicro() <= 0 {
		return epoch
	}
	return j.MessageDate
}

// epoch is seen's date of a message without one.
var epoch = time.Unix(0, 0).UTC()

// Enqueue stores j unless a job with the same (OAuthID, MessageDate,
// MessageID) was enqueued before (and its seen message id not yet pruned,
// see PruneSeen); it reports whether j was new. The mark is a row of seen,
// whose primary key is that triple, inserted with ON CONFLICT DO NOTHING in
// the transaction that stores the job: however many deliveries of a message
// race, on however many nodes, one job is made. A job with an empty
// MessageID is always new. Beyond the contract, as in the bbolt store, a
// job is also a duplicate of an earlier one with its MessageID and no
// MessageDate.
//
// A new job gets the next ID of the sequence job_ids, greater than every ID
// before it (IDs are never reused; a duplicate may leave a gap), and, if
// j.Received is zero, the store's current time. For a duplicate, Enqueue
// returns the stored job if it is still pending, or else j with the first
// job's ID. Times are kept to the microsecond: the job returned is the one
// stored.
//
// The installation must exist (NotFound otherwise). Its row is locked (FOR
// NO KEY UPDATE) while the job is added, so that the installation's jobs
// are added one at a time across all nodes: a concurrent
// DeleteInstallation waits (the job then goes with the installation), the
// pending bound is exact, and of one installation's jobs a greater ID
// commits later (see OnAdded and Listen). The transaction of a new job
// also notifies it to the listeners of every node (see Listen). With
// Options.MaxPendingPerInstallation, a new job for an installation that
// already has that many pending jobs is refused with an Unavailable error
// and nothing is stored; a duplicate is still answered (not new, no
// error).
func (d *DB) Enqueue(ctx context.Context, j addon.Job) (addon.Job, bool, error) {
	if err := checkOAuthID(j.OAuthID); err != nil {
		return addon.Job{}, false, err
	}
	now := d.now()
	if j.Received.IsZero() {
		j.Received = now
	}
	j = cleanJob(j)
	unlock := d.adding.lock(j.OAuthID)
	defer unlock()
	var (
		out   addon.Job
		isNew bool
	)
	err := d.inTx(ctx, "enqueue", func(tx pgx.Tx) error {
		out, isNew = addon.Job{}, false
		if err := lockInstallation(ctx, tx, j.OAuthID); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return addon.Errorf(addon.NotFound, "installation %q not found", j.OAuthID)
			}
			return err
		}
		if j.MessageID != "" {
			dup, found, err := duplicateOf(ctx, tx, j)
			if err != nil || found {
				out = dup
				return err
			}
		}
		if err := d.checkRoom(ctx, tx, j.OAuthID); err != nil {
			return err
		}
		nj, inserted, err := insertJob(ctx, tx, j, now)
		if err != nil {
			return err
		}
		if inserted {
			out, isNew = nj, true
			return notifyAdded(ctx, tx, nj)
		}
		// The mark appeared after duplicateOf looked (it cannot under the
		// installation's lock, but the constraint is what decides).
		out, _, err = duplicateOf(ctx, tx, j)
		return err
	})
	if err != nil {
		return addon.Job{}, false, err
	}
	if isNew {
		d.tellAdded(out)
	}
	return out, isNew, nil
}

// lockInstallation locks the installation's row for an addition to the
// outbox; pgx.ErrNoRows if there is none. FOR NO KEY UPDATE leaves the
// foreign key checks of other writes (FOR KEY SHARE) free.
func lockInstallation(ctx context.Context, tx pgx.Tx, oauthID string) error {
	var one int
	return tx.QueryRow(ctx, "SELECT 1 FROM installations WHERE oauth_id = $1 FOR NO KEY UPDATE", oauthID).Scan(&one)
}

// duplicateOf looks for the mark of j's message (or of the same message
// without a date) and returns what Enqueue answers for a duplicate.
func duplicateOf(ctx context.Context, tx pgx.Tx, j addon.Job) (addon.Job, bool, error) {
	var id int64
	err := tx.QueryRow(ctx, `
		SELECT job_id FROM seen
		WHERE oauth_id = $1 AND message_id = $2 AND message_date IN ($3, $4)
		ORDER BY message_date DESC LIMIT 1`,
		j.OAuthID, j.MessageID, seenDate(j), epoch).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return addon.Job{}, false, nil
	}
	if err != nil {
		return addon.Job{}, false, err
	}
	stored, err := scanJob(tx.QueryRow(ctx, "SELECT "+jobColumns+" FROM jobs WHERE id = $1", id))
	switch {
	case err == nil:
		return stored, true, nil
	case errors.Is(err, pgx.ErrNoRows):
		j.ID = uint64(id)
		return j, true, nil
	}
	return addon.Job{}, false, err
}

// checkRoom fails with the outbox-full error if the installation has
// Options.MaxPendingPerInstallation pending jobs; it counts no further.
func (d *DB) checkRoom(ctx context.Context, tx pgx.Tx, oauthID string) error {
	if d.maxPending <= 0 {
		return nil
	}
	var n int
	if err := tx.QueryRow(ctx, "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE oauth_id = $1 LIMIT $2) p",
		oauthID, d.maxPending).Scan(&n); err != nil {
		return err
	}
	if n >= d.maxPending {
		return addon.Errorf(addon.Unavailable, "pgstore: outbox of installation %s is full (%d pending)", oauthID, n)
	}
	return nil
}

// insertJob stores j under the next ID and, if it has a MessageID, the mark
// of its message (received now), in one statement: if the mark is there
// already, nothing is stored and inserted is false.
func insertJob(ctx context.Context, tx pgx.Tx, j addon.Job, now time.Time) (nj addon.Job, inserted bool, err error) {
	if j.MessageID == "" {
		nj, err = scanJob(tx.QueryRow(ctx, `
			INSERT INTO jobs (`+jobColumns+`)
			VALUES (nextval('job_ids'), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			RETURNING `+jobColumns,
			j.OAuthID, j.RoomID, j.MessageID, messageDate(j), j.Command, j.Args, j.From, j.Received, j.Reply,
			j.ResponseOnly, j.Attempts, j.LastError))
		return nj, err == nil, err
	}
	nj, err = scanJob(tx.QueryRow(ctx, `
		WITH mark AS (
			INSERT INTO seen (oauth_id, message_date, message_id, job_id, received)
			VALUES ($1, $13, $3, nextval('job_ids'), $14)
			ON CONFLICT DO NOTHING
			RETURNING job_id
		)
		INSERT INTO jobs (`+jobColumns+`)
		SELECT mark.job_id, $1, $2::bigint, $3, $4::timestamptz, $5::text, $6::text, $7::text, $8::timestamptz,
			$9::json, $10::boolean, $11::integer, $12::text
		FROM mark
		RETURNING `+jobColumns,
		j.OAuthID, j.RoomID, j.MessageID, messageDate(j), j.Command, j.Args, j.From, j.Received, j.Reply,
		j.ResponseOnly, j.Attempts, j.LastError, seenDate(j), now))
	if errors.Is(err, pgx.ErrNoRows) {
		return addon.Job{}, false, nil
	}
	return nj, err == nil, err
}

// Pending returns up to limit stored jobs in ID order; limit <= 0 means all.
// A job of another installation committed meanwhile may show up above IDs
// not yet committed; of one installation, none is missing below the
// greatest returned (see Enqueue).
func (d *DB) Pending(ctx context.Context, limit int) ([]addon.Job, error) {
	var lim any // NULL: no limit
	if limit > 0 {
		lim = limit
	}
	rows, err := d.pool.Query(ctx, "SELECT "+jobColumns+" FROM jobs ORDER BY id LIMIT $1", lim)
	if err != nil {
		return nil, wrapErr("pending", err)
	}
	jobs, err := collectJobs(rows)
	return jobs, wrapErr("pending", err)
}

// Complete removes a delivered (or given-up) job. It returns NotFound if
// no job has that ID (already completed or buried, or its installation was
// removed); callers may ignore that. The job's seen message id stays, so a
// late duplicate delivery is still dropped.
func (d *DB) Complete(ctx context.Context, id uint64) error {
	n, err := d.exec(ctx, "complete", "DELETE FROM jobs WHERE id = $1", int64(id))
	if err == nil && n == 0 {
		return addon.Errorf(addon.NotFound, "job %d not found", id)
	}
	return err
}

// CompleteAll removes the delivered jobs that are still pending, in one
// statement; jobs no longer stored are skipped.
func (d *DB) CompleteAll(ctx context.Context, jobs []addon.Job) error {
	if len(jobs) == 0 {
		return nil
	}
	ids := make([]int64, len(jobs))
	for i, j := range jobs {
		ids[i] = int64(j.ID)
	}
	_, err := d.exec(ctx, "complete", "DELETE FROM jobs WHERE id = ANY($1)", ids)
	return err
}

// RecordAttempt stores a failed attempt at job id: Attempts is incremented
// and LastError set to reason (cut to 2048 bytes). It returns NotFound if
// no pending job has that ID.
func (d *DB) RecordAttempt(ctx context.Context, id uint64, reason string) error {
	n, err := d.exec(ctx, "record attempt", "UPDATE jobs SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
		int64(id), cutReason(reason))
	if err == nil && n == 0 {
		return addon.Errorf(addon.NotFound, "job %d not found", id)
	}
	return err
}

// Bury moves job id out of the outbox into the dead letters, keeping its
// ID, with reason (cut to 2048 bytes) and the store's current time, in one
// statement. It returns NotFound if no pending job has that ID.
func (d *DB) Bury(ctx context.Context, id uint64, reason string) error {
	n, err := d.exec(ctx, "bury", `
		WITH j AS (DELETE FROM jobs WHERE id = $1 RETURNING `+jobColumns+`)
		INSERT INTO dead_letters (`+jobColumns+`, reason, buried_at)
		SELECT `+jobColumns+`, $2::text, $3::timestamptz FROM j`,
		int64(id), cutReason(reason), d.now())
	if err == nil && n == 0 {
		return addon.Errorf(addon.NotFound, "job %d not found", id)
	}
	return err
}

// PruneSeen forgets the seen message ids dated before olderThan and also
// received (by the store's clock) before it, as the bbolt store does: a
// message HipChat dated earlier than it reached us, from a clock behind
// ours, is kept until its receipt is as old. It returns how many it forgot.
func (d *DB) PruneSeen(ctx context.Context, olderThan time.Time) (int, error) {
	n, err := d.exec(ctx, "prune seen", "DELETE FROM seen WHERE message_date < $1 AND received < $1", olderThan)
	return int(n), err
}

// cutReason cuts s to at most maxReasonBytes without splitting a
// character, and makes it storable.
func cutReason(s string) string {
	s = clean(s)
	if len(s) <= maxReasonBytes {
		return s
	}
	i := maxReasonBytes
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
