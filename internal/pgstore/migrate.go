package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/hipconnect/hipconnect/internal/seal"
)

// migrations are the schema's SQL migrations, NNNNN_name.sql, applied in
// order by goose. A new schema version is a new file; a file once released
// never changes.
//
//go:embed migrations/*.sql
var migrations embed.FS

// schemaTable is the table goose records the applied migrations in.
const schemaTable = "hipconnect_schema"

// migrateLockKey is the key of the PostgreSQL advisory lock (the session
// kind) Open holds while it migrates the schema and settles the secrets:
// "hipconn1" in ASCII. It is database-wide, so two hipconnect deployments in
// two schemas of one database only take turns at Open.
const migrateLockKey int64 = 0x68697063_6f6e6e31

// prepare makes the database ready for this code, on a connection of its
// own (not the pool's) holding the migration lock: it refuses a schema
// newer than this code knows, applies the migrations the database lacks,
// and settles the secrets (see settleSecrets). It returns notes for
// Warnings. Whoever holds the lock, the others wait in pg_advisory_lock
// (or until ctx is done); the lock goes with the session, so a node that
// dies while migrating releases it.
func prepare(ctx context.Context, cc *pgx.ConnConfig, s *seal.Sealer) ([]string, error) {
	conn, err := pgx.ConnectConfig(ctx, cc.Copy())
	if err != nil {
		return nil, wrapErr("connect", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrateLockKey); err != nil {
		return nil, wrapErr("take the migration lock", err)
	}
	// Closing the connection would release the lock too; unlocking first
	// lets the next node in at once.
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrateLockKey) }()

	notes, err := migrate(ctx, cc)
	if err != nil {
		return nil, err
	}
	note, vacuum, err := settleSecrets(ctx, conn, s)
	if err != nil {
		return nil, err
	}
	if note != "" {
		notes = append(notes, note)
	}
	if vacuum {
		// The plaintext rows are dead tuples now: rewrite the tables so
		// they leave the data files (not the WAL, nor earlier backups).
		if _, err := conn.Exec(ctx, "VACUUM FULL installations, tokens, kv"); err != nil {
			return nil, wrapErr("vacuum after encrypting the secrets", err)
		}
		notes = append(notes, "the tables installations, tokens and kv were rewritten (VACUUM FULL) so no plaintext secret "+
			"stays in them; backups, WAL archives and standbys made before may still hold the secrets in plaintext: replace them")
	}
	return notes, nil
}

// migrate applies the migrations the database lacks with goose, over a
// database/sql connection of its own; the caller holds the migration lock.
func migrate(ctx context.Context, cc *pgx.ConnConfig) ([]string, error) {
	sqlDB := stdlib.OpenDB(*cc.Copy())
	defer sqlDB.Close()
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, sqlDB, sub,
		goose.WithTableName(schemaTable), goose.WithDisableGlobalRegistry(true), goose.WithLogger(goose.NopLogger()))
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	sources := p.ListSources()
	known := sources[len(sources)-1].Version
	current, err := p.GetDBVersion(ctx)
	if err != nil {
		return nil, wrapErr("read the schema version", err)
	}
	if current > known {
		return nil, fmt.Errorf("the database schema is version %d, newer than this hipconnect knows (%d): upgrade hipconnect",
			current, known)
	}
	if current == known {
		return nil, nil
	}
	results, err := p.Up(ctx)
	if err != nil {
		var pe *goose.PartialError
		if errors.As(err, &pe) && pe.Failed != nil {
			return nil, wrapErr(fmt.Sprintf("migrate the schema (%s)", pe.Failed.Source.Path), pe.Err)
		}
		return nil, wrapErr("migrate the schema", err)
	}
	var notes []string
	if len(results) > 0 {
		notes = append(notes, fmt.Sprintf("migrated the database schema from version %d to %d", current,
			results[len(results)-1].Source.Version))
	}
	return notes, nil
}

// SchemaVersion returns the database's schema version (the highest
// migration applied).
func (d *DB) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	err := d.pool.QueryRow(ctx, "SELECT coalesce(max(version_id), 0) FROM "+schemaTable).Scan(&v)
	return v, wrapErr("schema version", err)
}
