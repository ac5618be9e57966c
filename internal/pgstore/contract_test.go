package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
	"github.com/hipconnect/hipconnect/internal/seal"
	"github.com/hipconnect/hipconnect/internal/storetest"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// newKey returns a random secrets key.
func newKey() []byte {
	k := make([]byte, seal.KeySize)
	_, _ = rand.Read(k)
	return k
}

// open opens the database dsn with o, closed at t's cleanup.
func open(t *testing.T, dsn string, o Options) *DB {
	t.Helper()
	o.DSN = dsn
	db, err := Open(t.Context(), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// openNodes opens n DBs on the database dsn (one per node, each its own
// pool), closed at t's cleanup.
func openNodes(t *testing.T, dsn string, n int) []*DB {
	t.Helper()
	dbs := make([]*DB, n)
	for i := range dbs {
		dbs[i] = open(t, dsn, Options{})
	}
	return dbs
}

// query runs sql on the database dsn, outside the store, and scans its one
// row into dest (none: no row expected). It may run in a cleanup.
func query(t *testing.T, dsn, sql string, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if len(dest) == 0 {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return
	}
	if err := conn.QueryRow(ctx, sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestContract runs the store contract suite, each case on a database of
// its own, with a secrets key, as the daemon would open it.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		db := open(t, pgtest.Start(t), Options{Key: newKey()})
		return storetest.Backend{Store: db, Certs: db.CertStorage()}
	})
}

// TestMigrateOnceConcurrently: three nodes opening an empty database at
// once migrate it once, and all succeed.
func TestMigrateOnceConcurrently(t *testing.T) {
	dsn := pgtest.Start(t)
	key := newKey()
	const nodes = 3
	var (
		wg       sync.WaitGroup
		migrated atomic.Int32
		start    = make(chan struct{})
	)
	for range nodes {
		wg.Go(func() {
			<-start
			db, err := Open(t.Context(), Options{DSN: dsn, Key: key})
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			defer db.Close()
			for _, w := range db.Warnings() {
				if strings.Contains(w, "migrated the database schema from version 0 to 2") {
					migrated.Add(1)
				}
			}
			if err := db.Ping(t.Context()); err != nil {
				t.Errorf("Ping: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := migrated.Load(); got != 1 {
		t.Errorf("%d of %d nodes migrated, want 1", got, nodes)
	}
	for v := 1; v <= 2; v++ {
		var applied int
		query(t, dsn, fmt.Sprintf("SELECT count(*) FROM %s WHERE version_id = %d AND is_applied", schemaTable, v), &applied)
		if applied != 1 {
			t.Errorf("migration %d recorded %d times, want once", v, applied)
		}
	}
	var checks int
	query(t, dsn, "SELECT count(*) FROM meta WHERE name = 'secrets'", &checks)
	if checks != 1 {
		t.Errorf("%d key checks, want 1", checks)
	}
}

// TestNewerSchemaRefused: a database migrated by a newer hipconnect is
// refused with a message that says what to do.
func TestNewerSchemaRefused(t *testing.T) {
	dsn := pgtest.Start(t)
	db := open(t, dsn, Options{})
	if v, err := db.SchemaVersion(t.Context()); err != nil || v != 2 {
		t.Fatalf("SchemaVersion = %d, %v; want 2", v, err)
	}
	_ = db.Close()
	query(t, dsn, "INSERT INTO "+schemaTable+" (version_id, is_applied) VALUES (7, true)")
	_, err := Open(t.Context(), Options{DSN: dsn})
	want := "the database schema is version 7, newer than this hipconnect knows (2): upgrade hipconnect"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Open of a newer schema: %v; want an error saying %q", err, want)
	}
}

// TestSecretsKeyRules: the bbolt store's rules for the key at Open.
func TestSecretsKeyRules(t *testing.T) {
	ctx := t.Context()
	inst := addon.Installation{OAuthID: "i1", OAuthSecret: "s3cret", InstalledAt: time.Unix(1700000000, 0).UTC(),
		UpdatedAt: time.Unix(1700000000, 0).UTC()}
	tok := addon.Token{AccessToken: "t0ken", ExpiresAt: time.Unix(1800000000, 0).UTC()}

	t.Run("WrongKeyRefused", func(t *testing.T) {
		dsn := pgtest.Start(t)
		db := open(t, dsn, Options{Key: newKey()})
		_ = db.Close()
		_, err := Open(ctx, Options{DSN: dsn, Key: newKey()})
		if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "wrong key or damaged data") {
			t.Fatalf("Open with another key: %v; want ErrWrongKey", err)
		}
	})
	t.Run("KeyRequired", func(t *testing.T) {
		dsn := pgtest.Start(t)
		db := open(t, dsn, Options{Key: newKey()})
		_ = db.Close()
		if _, err := Open(ctx, Options{DSN: dsn}); !errors.Is(err, ErrKeyRequired) {
			t.Fatalf("Open without a key of an encrypted database: %v; want ErrKeyRequired", err)
		}
	})
	t.Run("EncryptsPlaintextInPlace", func(t *testing.T) {
		dsn := pgtest.Start(t)
		plain := open(t, dsn, Options{})
		if err := plain.PutInstallation(ctx, inst); err != nil {
			t.Fatal(err)
		}
		if err := plain.PutToken(ctx, inst.OAuthID, tok); err != nil {
			t.Fatal(err)
		}
		if err := plain.CertStorage().Store(ctx, "certificates/ca/a/a.key", []byte("private")); err != nil {
			t.Fatal(err)
		}
		_ = plain.Close()

		key := newKey()
		db := open(t, dsn, Options{Key: key})
		if w := strings.Join(db.Warnings(), "\n"); !strings.Contains(w, "encrypted the secrets of 1 installations, 1 tokens and 1 certmagic keys") ||
			!strings.Contains(w, "VACUUM FULL") {
			t.Errorf("Warnings = %q, want the secrets encrypted in place and the tables rewritten", w)
		}
		for _, q := range []string{
			"SELECT oauth_secret FROM installations", "SELECT access_token FROM tokens",
			"SELECT convert_from(value, 'UTF8') FROM kv WHERE key LIKE '%.key'",
		} {
			var v string
			query(t, dsn, q, &v)
			if !seal.IsSealed(v) {
				t.Errorf("%s = %q, want it encrypted", q, v)
			}
		}
		if got, err := db.Installation(ctx, "i1"); err != nil || got.OAuthSecret != "s3cret" {
			t.Errorf("Installation = %+v, %v; want the secret decrypted", got, err)
		}
		if got, err := db.Token(ctx, "i1"); err != nil || got.AccessToken != "t0ken" {
			t.Errorf("Token = %+v, %v; want it decrypted", got, err)
		}
		if got, err := db.CertStorage().Load(ctx, "certificates/ca/a/a.key"); err != nil || string(got) != "private" {
			t.Errorf("Load(a.key) = %q, %v; want it decrypted", got, err)
		}
		_ = db.Close()
		// Opened again with the key: nothing more to do.
		again := open(t, dsn, Options{Key: key})
		if w := again.Warnings(); len(w) != 0 {
			t.Errorf("Warnings of the second Open = %q, want none", w)
		}
	})
	t.Run("NoKeyPlaintext", func(t *testing.T) {
		dsn := pgtest.Start(t)
		db := open(t, dsn, Options{})
		if err := db.PutInstallation(ctx, inst); err != nil {
			t.Fatal(err)
		}
		if err := db.PutToken(ctx, inst.OAuthID, tok); err != nil {
			t.Fatal(err)
		}
		var secret, token string
		query(t, dsn, "SELECT oauth_secret FROM installations", &secret)
		query(t, dsn, "SELECT access_token FROM tokens", &token)
		if secret != inst.OAuthSecret || token != tok.AccessToken {
			t.Errorf("stored without a key: %q, %q; want the plaintext", secret, token)
		}
		if got, err := db.Token(ctx, inst.OAuthID); err != nil || got.AccessToken != tok.AccessToken {
			t.Errorf("Token = %+v, %v", got, err)
		}
		var checks int
		query(t, dsn, "SELECT count(*) FROM meta", &checks)
		if checks != 0 {
			t.Errorf("a key check without a key")
		}
	})
	t.Run("MovedCiphertextRefused", func(t *testing.T) {
		dsn := pgtest.Start(t)
		db := open(t, dsn, Options{Key: newKey()})
		for _, id := range []string{"a", "b"} {
			i := inst
			i.OAuthID = id
			if err := db.PutInstallation(ctx, i); err != nil {
				t.Fatal(err)
			}
		}
		// b's secret copied onto a: the additional data no longer matches.
		query(t, dsn, "UPDATE installations SET oauth_secret = (SELECT oauth_secret FROM installations WHERE oauth_id = 'b') WHERE oauth_id = 'a'")
		if _, err := db.Installation(ctx, "a"); !errors.Is(err, ErrWrongKey) {
			t.Errorf("Installation with a moved secret: %v; want ErrWrongKey", err)
		}
	})
}

// TestConcurrentEnqueueAcrossNodes: one message delivered to several nodes
// at once (each its own DB and pool) makes exactly one job, told to exactly
// one node's OnAdded.
func TestConcurrentEnqueueAcrossNodes(t *testing.T) {
	dsn := pgtest.Start(t)
	const nodes, perNode = 3, 8
	dbs := openNodes(t, dsn, nodes)
	var told atomic.Int32
	for _, db := range dbs {
		db.OnAdded(func(addon.Job) { told.Add(1) })
	}
	ctx := t.Context()
	if err := dbs[0].PutInstallation(ctx, addon.Installation{OAuthID: "i1"}); err != nil {
		t.Fatal(err)
	}
	date := time.Now().UTC().Truncate(time.Second)
	for round := range 5 {
		j := addon.Job{OAuthID: "i1", RoomID: 7, MessageID: fmt.Sprint("m", round), MessageDate: date, Command: "echo"}
		var (
			wg    sync.WaitGroup
			fresh atomic.Int32
			ids   sync.Map
			start = make(chan struct{})
		)
		for n := range nodes * perNode {
			wg.Go(func() {
				<-start
				got, isNew, err := dbs[n%nodes].Enqueue(ctx, j)
				if err != nil {
					t.Errorf("Enqueue: %v", err)
					return
				}
				if isNew {
					fresh.Add(1)
				}
				ids.Store(got.ID, true)
			})
		}
		close(start)
		wg.Wait()
		if fresh.Load() != 1 {
			t.Errorf("round %d: %d deliveries were new, want 1", round, fresh.Load())
		}
		n := 0
		ids.Range(func(any, any) bool { n++; return true })
		if n != 1 {
			t.Errorf("round %d: Enqueue answered %d different job IDs, want 1", round, n)
		}
	}
	jobs, err := dbs[1].Pending(ctx, 0)
	if err != nil || len(jobs) != 5 {
		t.Fatalf("Pending = %d jobs, %v; want 5", len(jobs), err)
	}
	if told.Load() != 5 {
		t.Errorf("OnAdded told %d times, want 5", told.Load())
	}
}
