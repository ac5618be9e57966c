package pgstore

import (
	"context"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Stats counts what the database holds, in one statement (so one
// snapshot). The counts are exact (count(*)): each reads its whole table,
// which takes longer as the tables grow.
func (d *DB) Stats(ctx context.Context) (addon.StoreStats, error) {
	var (
		s      addon.StoreStats
		oldest *time.Time
	)
	err := d.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM installations),
		(SELECT count(*) FROM tokens),
		(SELECT count(*) FROM jobs),
		(SELECT count(*) FROM dead_letters),
		(SELECT count(*) FROM seen),
		(SELECT received FROM jobs ORDER BY id LIMIT 1),
		EXISTS (SELECT 1 FROM meta WHERE name = $1)`, metaSecrets).
		Scan(&s.Installations, &s.Tokens, &s.PendingJobs, &s.DeadLetters, &s.SeenMessages, &oldest, &s.SecretsEncrypted)
	if err != nil {
		return addon.StoreStats{}, wrapErr("stats", err)
	}
	if oldest != nil {
		s.OldestPending = utc(*oldest)
	}
	return s, nil
}

// PoolStats reports the connection pool: connections in use, idle, total
// (in use, idle and being opened), and the maximum (Options.MaxConns).
// Listen's connections and Open's are not the pool's.
func (d *DB) PoolStats() (acquired, idle, total, max int32) {
	s := d.pool.Stat()
	return s.AcquiredConns(), s.IdleConns(), s.TotalConns(), s.MaxConns()
}
