package pgstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// jobsChannel is the notification channel of the jobs added to the outbox.
const jobsChannel = "hipconnect_jobs"

// maxNotifiedOAuthID is the longest OAuthID a notification names:
// PostgreSQL refuses payloads of 8000 bytes and more.
const maxNotifiedOAuthID = 1024

// listenBatch bounds how many jobs Listen reads in one statement.
const listenBatch = 1000

// notifyAdded tells the listeners (see Listen) of j, in the transaction
// that adds it to the outbox: the notification is delivered when, and if,
// that transaction commits. The payload is j's ID in decimal, a space and
// its OAuthID (the rest of the payload, spaces and all), or the ID alone
// if the OAuthID is longer than 1024 bytes.
func notifyAdded(ctx context.Context, tx pgx.Tx, j addon.Job) error {
	payload := strconv.FormatUint(j.ID, 10)
	if len(j.OAuthID) <= maxNotifiedOAuthID {
		payload += " " + j.OAuthID
	}
	_, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", jobsChannel, payload)
	return err
}

// notified is the job ID and OAuthID ("" if the payload has none) of a
// payload of notifyAdded.
func notified(payload string) (id uint64, oauthID string, ok bool) {
	idText, oauthID, _ := strings.Cut(payload, " ")
	n, err := strconv.ParseUint(idText, 10, 64)
	return n, oauthID, err == nil
}

// Listen listens for the jobs committed by any node (this one included)
// on a connection of its own, not the pool's (same DSN, password and TLS
// settings), until ctx ends (it returns ctx.Err()), the connection fails
// or the DB is closed (an error: the caller listens again, and reads the
// outbox again after ready). It calls ready once LISTEN is in effect: jobs
// committed before are not told, so the caller reads the outbox after
// ready. Then, for each notification, in order, it reads the job and calls
// added with it; a job already gone (delivered, buried, its installation
// removed) is skipped, and so is a job of an installation that want (if
// not nil) says is not wanted: it is not read. want and added are called
// on Listen's goroutine. The calls are made one at a time, in commit order:
// of one installation, in ID order (see OnAdded). Notifications that
// arrive together are read with one statement, up to 1000 at a time.
// added must not block for long: notifications wait while it runs.
//
// PostgreSQL keeps notifications not yet read in a queue of limited size
// (max_notify_queue_size, 8 GB by default); a listener that stops reading
// holds back the queue for every notifying transaction.
func (d *DB) Listen(ctx context.Context, ready func(), want func(oauthID string) bool, added func(addon.Job)) error {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(d.life, cancel)()
	fail := func(what string, err error) error {
		switch {
		case parent.Err() != nil:
			return parent.Err()
		case d.life.Err() != nil:
			return errors.New("pgstore: listen: the store is closed")
		}
		return wrapErr("listen: "+what, err)
	}

	var queue []uint64 // notified, not yet read; only this goroutine touches it
	cc := d.connConfig.Copy()
	cc.OnNotification = func(_ *pgconn.PgConn, n *pgconn.Notification) {
		if n.Channel != jobsChannel {
			return
		}
		id, oauthID, ok := notified(n.Payload)
		if ok && (want == nil || oauthID == "" || want(oauthID)) {
			queue = append(queue, id)
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fail("connect", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+jobsChannel); err != nil {
		return fail("LISTEN", err)
	}
	ready()
	for {
		if len(queue) == 0 {
			// Returns once a notification is handed to OnNotification.
			if err := conn.PgConn().WaitForNotification(ctx); err != nil {
				return fail("wait", err)
			}
			continue
		}
		n := min(len(queue), listenBatch)
		ids := queue[:n:n]
		queue = queue[n:]
		jobs, err := jobsByID(ctx, conn, ids)
		if err != nil {
			return fail("read jobs", err)
		}
		for _, id := range ids {
			if j, ok := jobs[id]; ok {
				added(j)
			}
		}
	}
}

// jobsByID reads the stored jobs among ids.
func jobsByID(ctx context.Context, conn *pgx.Conn, ids []uint64) (map[uint64]addon.Job, error) {
	keys := make([]int64, len(ids))
	for i, id := range ids {
		keys[i] = int64(id)
	}
	rows, err := conn.Query(ctx, "SELECT "+jobColumns+" FROM jobs WHERE id = ANY($1)", keys)
	if err != nil {
		return nil, err
	}
	jobs, err := collectJobs(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]addon.Job, len(jobs))
	for _, j := range jobs {
		out[j.ID] = j
	}
	return out, nil
}
