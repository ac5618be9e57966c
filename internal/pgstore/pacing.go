package pgstore

import (
	"context"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/jackc/pgx/v5"
)

var _ addon.Pacing = (*DB)(nil)

// SavePacing implements addon.Pacing in one transaction, its statements
// sent at once: the installations named are locked FOR KEY SHARE first, so
// that a removal racing the save waits for it and then takes the windows
// along; windows of installations not stored are skipped. The send times
// are kept to the nanosecond.
func (d *DB) SavePacing(ctx context.Context, windows []addon.PaceWindow) error {
	if len(windows) == 0 {
		return nil
	}
	ids := make([]string, 0, len(windows))
	for _, w := range windows {
		if checkOAuthID(w.OAuthID) == nil {
			ids = append(ids, w.OAuthID)
		}
	}
	return d.inTx(ctx, "save pacing", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "SELECT oauth_id FROM installations WHERE oauth_id = ANY($1) FOR KEY SHARE", ids)
		if err != nil {
			return err
		}
		present, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		stored := make(map[string]bool, len(present))
		for _, id := range present {
			stored[id] = true
		}
		var b pgx.Batch
		for _, w := range windows {
			switch {
			case !stored[w.OAuthID]:
			case len(w.Times) == 0:
				b.Queue("DELETE FROM pacing WHERE oauth_id = $1 AND room = $2", w.OAuthID, w.Room)
			default:
				times := make([]int64, len(w.Times))
				for i, t := range w.Times {
					times[i] = t.UnixNano()
				}
				b.Queue(`INSERT INTO pacing (oauth_id, room, times) VALUES ($1, $2, $3)
					ON CONFLICT (oauth_id, room) DO UPDATE SET times = EXCLUDED.times`, w.OAuthID, w.Room, times)
			}
		}
		if b.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, &b).Close()
	})
}

// LoadPacing implements addon.Pacing.
func (d *DB) LoadPacing(ctx context.Context) ([]addon.PaceWindow, error) {
	rows, err := d.pool.Query(ctx, "SELECT oauth_id, room, times FROM pacing ORDER BY oauth_id, room")
	if err != nil {
		return nil, wrapErr("load pacing", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (addon.PaceWindow, error) {
		var (
			w     addon.PaceWindow
			times []int64
		)
		if err := r.Scan(&w.OAuthID, &w.Room, &times); err != nil {
			return w, err
		}
		w.Times = make([]time.Time, len(times))
		for i, ns := range times {
			w.Times[i] = time.Unix(0, ns).UTC()
		}
		return w, nil
	})
	return out, wrapErr("load pacing", err)
}
