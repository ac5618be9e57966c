package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/metrics"
	"github.com/hipconnect/hipconnect/internal/pgstore"
	"github.com/hipconnect/hipconnect/internal/store"
)

// Store is what the daemon needs of a storage backend: the store contract,
// certmagic's storage, a liveness check and Close. *store.DB (bbolt) and
// *pgstore.DB (PostgreSQL) are the two; what only one of them can do
// (hot backups of the file, several nodes) the daemon asks of it by type.
type Store interface {
	addon.Store
	CertStorage() certmagic.Storage
	// Ping reports whether the store answers (and, for PostgreSQL, takes
	// writes).
	Ping(ctx context.Context) error
	// Warnings are what Open found worth telling the operator.
	Warnings() []string
	Close() error
}

// KVNamespaces are the key/value namespaces the daemon keeps data in
// (`hipconnect store copy` copies them).
var KVNamespaces = []string{uiNamespace, install.PendingNamespace}

const uiNamespace = "ui"

// OpenStore opens the configured store with its secrets key. The daemon
// (create true) makes the key on first start; the CLI never does, and opens
// a store without a key file as it is. A key file is never created for a
// store that already holds encrypted secrets: a lost key is reported as
// such instead of being replaced by a new one that cannot read them.
//
// With storage.backend postgres, ctx and storage.open_timeout bound the
// connection and migration; every node must have the same key file.
func OpenStore(ctx context.Context, cfg *config.Config, create bool, now func() time.Time) (Store, error) {
	var (
		db  Store
		err error
	)
	if cfg.Storage.Backend == config.BackendPostgres {
		db, err = openPostgres(ctx, cfg, create, now)
	} else {
		db, err = openBolt(cfg, create, now)
	}
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return db, nil
}

func openBolt(cfg *config.Config, create bool, now func() time.Time) (*store.DB, error) {
	opts := store.Options{Timeout: cfg.Storage.OpenTimeout, Now: now, MaxPendingPerInstallation: cfg.Storage.MaxPending}
	keyPath := KeyFile(cfg)
	if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(cfg.Storage.Path); err == nil || !create {
			db, err := store.Open(cfg.Storage.Path, opts)
			if errors.Is(err, store.ErrKeyRequired) {
				return nil, fmt.Errorf("%w: the key file %s is missing; restore it from your backup", err, keyPath)
			}
			if err != nil || !create {
				return db, err
			}
			if err := db.Close(); err != nil {
				return nil, err
			}
		}
	}
	key, err := store.LoadOrCreateKey(keyPath)
	if err != nil {
		return nil, err
	}
	opts.Key = key
	return store.Open(cfg.Storage.Path, opts)
}

func openPostgres(ctx context.Context, cfg *config.Config, create bool, now func() time.Time) (*pgstore.DB, error) {
	pg := cfg.Storage.Postgres
	opts := pgstore.Options{DSN: pg.DSN, MaxConns: int32(pg.MaxConns), Now: now, MaxPendingPerInstallation: cfg.Storage.MaxPending}
	if pg.PasswordFile != "" {
		if err := store.CheckPrivate(pg.PasswordFile); err != nil {
			return nil, fmt.Errorf("storage.postgres.password_file: %w", err)
		}
		b, err := os.ReadFile(pg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("storage.postgres.password_file: %w", err)
		}
		opts.Password = strings.TrimRight(string(b), "\r\n")
	}
	keyPath := KeyFile(cfg)
	if _, err := os.Stat(keyPath); create || err == nil {
		if opts.Key, err = store.LoadOrCreateKey(keyPath); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Storage.OpenTimeout)
	defer cancel()
	db, err := pgstore.Open(ctx, opts)
	switch {
	case errors.Is(err, pgstore.ErrWrongKey):
		return nil, fmt.Errorf("%w: the key file %s is not the key of this database's secrets; every node needs the same key file: copy it from the node that first used the database", err, keyPath)
	case errors.Is(err, pgstore.ErrKeyRequired):
		return nil, fmt.Errorf("%w: the key file %s is missing; copy it from another node or restore it from your backup", err, keyPath)
	}
	return db, err
}

// storeStats are the store's counts for the metrics.
func storeStats(ctx context.Context, db Store) (metrics.Stats, error) {
	var (
		s   addon.StoreStats
		err error
	)
	switch db := db.(type) {
	case *store.DB:
		var fs store.Stats
		fs, err = db.Stats(ctx)
		s = fs.StoreStats
	case *pgstore.DB:
		s, err = db.Stats(ctx)
	default:
		return metrics.Stats{}, fmt.Errorf("daemon: no stats for the store %T", db)
	}
	return metrics.Stats{Installations: s.Installations, PendingJobs: s.PendingJobs,
		DeadLetters: s.DeadLetters, OldestPending: s.OldestPending}, err
}

// ErrNoHotBackup is the answer of a hot backup of a PostgreSQL store:
// pg_dump is the tool for that (docs/operations.md).
var ErrNoHotBackup = addon.Errorf(addon.Invalid, "storage.backend postgres: back up the database with pg_dump (docs/operations.md), not with hipconnect backup")
