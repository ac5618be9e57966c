package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
)

func putInst(t *testing.T, db *DB, id string) {
	t.Helper()
	if err := db.PutInstallation(t.Context(), addon.Installation{OAuthID: id}); err != nil {
		t.Fatal(err)
	}
}

// TestPendingBound: an installation at MaxPendingPerInstallation gets an
// Unavailable error for a new job and nothing is stored; a duplicate is
// still answered; other installations are not bound by it; RetryDead is
// bound too and leaves the dead letter in place.
func TestPendingBound(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Start(t), Options{MaxPendingPerInstallation: 2})
	putInst(t, db, "a")
	putInst(t, db, "b")
	date := time.Now().UTC().Truncate(time.Second)
	msg := func(id, m string) addon.Job {
		return addon.Job{OAuthID: id, RoomID: 1, MessageID: m, MessageDate: date, Command: "echo"}
	}
	first, _, err := db.Enqueue(ctx, msg("a", "m1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Enqueue(ctx, msg("a", "m2")); err != nil {
		t.Fatal(err)
	}
	_, _, err = db.Enqueue(ctx, msg("a", "m3"))
	if addon.KindOf(err) != addon.Unavailable || !strings.Contains(err.Error(), "full (2 pending)") {
		t.Fatalf("Enqueue over the bound: %v; want Unavailable, full", err)
	}
	if got, isNew, err := db.Enqueue(ctx, msg("a", "m1")); err != nil || isNew || got.ID != first.ID {
		t.Errorf("duplicate at the bound = %d, %v, %v; want job %d, not new, no error", got.ID, isNew, err, first.ID)
	}
	if _, isNew, err := db.Enqueue(ctx, msg("b", "m1")); err != nil || !isNew {
		t.Errorf("another installation: new=%v, %v", isNew, err)
	}
	// The refused message left no mark: once there is room, it is new.
	if err := db.Bury(ctx, first.ID, "gave up"); err != nil {
		t.Fatal(err)
	}
	if _, isNew, err := db.Enqueue(ctx, msg("a", "m3")); err != nil || !isNew {
		t.Errorf("refused message once there is room: new=%v, %v; want new", isNew, err)
	}
	if _, err := db.RetryDead(ctx, first.ID); addon.KindOf(err) != addon.Unavailable {
		t.Errorf("RetryDead over the bound: %v; want Unavailable", err)
	}
	dead, err := db.DeadLetters(ctx)
	if err != nil || len(dead) != 1 || dead[0].Job.ID != first.ID {
		t.Errorf("DeadLetters after a refused RetryDead = %+v, %v; want the dead letter kept", dead, err)
	}
}

// TestOnAddedOrderAndCommitOrder: jobs of one installation enqueued at
// once from two nodes (two DBs) are told to each node's OnAdded in ID
// order, and commit in ID order: a reader never sees a job of the
// installation appear below one it saw before.
func TestOnAddedOrderAndCommitOrder(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx := t.Context()
	nodes := openNodes(t, dsn, 2)
	putInst(t, nodes[0], "i1")
	putInst(t, nodes[0], "i2")
	var mu sync.Mutex
	told := make(map[int]map[string][]uint64) // node -> installation -> IDs told, in order
	for n, db := range nodes {
		told[n] = map[string][]uint64{}
		db.OnAdded(func(j addon.Job) {
			mu.Lock()
			told[n][j.OAuthID] = append(told[n][j.OAuthID], j.ID)
			mu.Unlock()
		})
	}

	done, finished := make(chan struct{}), make(chan struct{})
	var readerErr error
	var reads int
	go func() { // the reader: snapshots only grow, never below their maximum
		defer close(done)
		last := false
		seen := map[uint64]bool{}
		var maxSeen uint64
		for {
			jobs, err := nodes[1].Pending(ctx, 0)
			if err != nil {
				readerErr = err
				return
			}
			reads++
			var max uint64
			for _, j := range jobs {
				if j.OAuthID != "i1" {
					continue
				}
				if !seen[j.ID] && j.ID < maxSeen {
					readerErr = fmt.Errorf("job %d of i1 appeared after job %d was seen", j.ID, maxSeen)
					return
				}
				seen[j.ID] = true
				max = j.ID
			}
			maxSeen = max
			if last {
				return
			}
			select {
			case <-finished:
				last = true // one more read, after every commit
			default:
			}
		}
	}()
	var wg sync.WaitGroup
	for n, db := range nodes {
		for g := range 4 {
			wg.Go(func() {
				for i := range 15 {
					for _, id := range []string{"i1", "i2"} {
						j := addon.Job{OAuthID: id, RoomID: int64(i % 3), MessageID: fmt.Sprint(n, "-", g, "-", i), Command: "echo"}
						if _, _, err := db.Enqueue(ctx, j); err != nil {
							t.Errorf("Enqueue: %v", err)
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	close(finished)
	<-done
	if readerErr != nil {
		t.Fatal(readerErr)
	}
	t.Logf("%d reads of the outbox while enqueueing", reads)
	for n := range nodes {
		for id, ids := range told[n] {
			if len(ids) != 4*15 || !slices.IsSorted(ids) {
				t.Errorf("node %d told %d jobs of %s, in order %v; want %d in ID order", n, len(ids), id, slices.IsSorted(ids), 4*15)
			}
		}
	}
}

// TestLocksAcrossNodes: a certmagic lock held by one node (DB) blocks
// another until released; a lock whose holder stopped refreshing it is
// taken over once stale; a held lock is refreshed past its lifetime; Close
// releases the locks held.
func TestLocksAcrossNodes(t *testing.T) {
	dsn := pgtest.Start(t)
	a, b := open(t, dsn, Options{}), open(t, dsn, Options{})
	for _, db := range []*DB{a, b} {
		db.certs.ttl = 400 * time.Millisecond
	}
	ca, cb := a.CertStorage(), b.CertStorage()
	within := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		t.Cleanup(cancel)
		return ctx
	}

	if err := ca.Lock(within(5*time.Second), "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	// Held past several lifetimes: the refresher keeps it.
	if err := cb.Lock(within(time.Second), "issue_cert_x"); err == nil {
		t.Fatal("the other node took a held lock")
	}
	got := make(chan error, 1)
	go func() { got <- cb.Lock(within(5*time.Second), "issue_cert_x") }()
	time.Sleep(50 * time.Millisecond)
	if err := cb.Unlock(t.Context(), "issue_cert_x"); err == nil {
		t.Error("Unlock on the node that does not hold the lock succeeded")
	}
	if err := ca.Unlock(t.Context(), "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiting node: %v", err)
	}
	if err := cb.Unlock(t.Context(), "issue_cert_x"); err != nil {
		t.Fatal(err)
	}

	// A holder that died: its row stays, no longer refreshed.
	query(t, dsn, "INSERT INTO certmagic_locks (name, owner, expires) VALUES ('stale', 'dead-node/1', now() + interval '300 milliseconds')")
	start := time.Now()
	if err := ca.Lock(within(5*time.Second), "stale"); err != nil {
		t.Fatalf("Lock of a stale lock: %v", err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("took a lock still fresh (after %v)", waited)
	}

	// Close gives back what a node holds.
	_ = a.Close()
	if err := cb.Lock(within(time.Second), "stale"); err != nil {
		t.Fatalf("Lock after the holder's Close: %v", err)
	}
	var n int
	query(t, dsn, "SELECT count(*) FROM certmagic_locks", &n)
	if n != 1 {
		t.Errorf("%d lock rows, want 1 (b's)", n)
	}
}

// TestPassword: Options.Password authenticates a role whose DSN carries
// none; a wrong one is refused.
func TestPassword(t *testing.T) {
	dsn := pgtest.Start(t)
	pgtest.Exec(t, "CREATE ROLE pwuser LOGIN PASSWORD 'right horse'")
	t.Cleanup(func() { pgtest.Exec(t, "DROP ROLE IF EXISTS pwuser") })
	query(t, dsn, "GRANT CREATE ON SCHEMA public TO pwuser")
	t.Cleanup(func() { query(t, dsn, "DROP OWNED BY pwuser") })
	roleDSN := strings.Replace(dsn, "postgres://"+pgtest.Superuser+"@", "postgres://pwuser@", 1)

	if _, err := Open(t.Context(), Options{DSN: roleDSN, Password: "wrong"}); err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	db := open(t, roleDSN, Options{Password: "right horse", MaxConns: 2})
	putInst(t, db, "i1")
	if err := db.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestUnreachableIsBusy: a database out of reach is an error of kind Busy
// (the callers answer "retry later"), at Open and after.
func TestUnreachableIsBusy(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = Open(ctx, Options{DSN: "postgres://postgres@" + addr + "/x?sslmode=disable&connect_timeout=5"})
	if addon.KindOf(err) != addon.Busy {
		t.Errorf("Open of an unreachable database: %v (kind %s); want Busy", err, addon.KindOf(err))
	}

	dsn := pgtest.Start(t)
	db := open(t, dsn, Options{})
	putInst(t, db, "i1")
	// Every connection of the database ends, as in a restart or failover.
	query(t, dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()", new(int))
	for range 3 { // the pool may notice the first broken connection only by using it
		_, err = db.Installation(t.Context(), "i1")
		if err == nil {
			break
		}
		if addon.KindOf(err) != addon.Busy {
			t.Fatalf("Installation on a terminated connection: %v (kind %s); want Busy", err, addon.KindOf(err))
		}
	}
	if err != nil {
		t.Errorf("the pool did not recover: %v", err)
	}
}

// TestText: keys PostgreSQL text cannot hold are Invalid to write and
// absent to read; other text with such bytes is stored with U+FFFD.
func TestText(t *testing.T) {
	ctx := t.Context()
	db := open(t, pgtest.Start(t), Options{})
	for _, id := range []string{"a\x00b", "a\xffb"} {
		if err := db.PutInstallation(ctx, addon.Installation{OAuthID: id}); addon.KindOf(err) != addon.Invalid {
			t.Errorf("PutInstallation(%q): %v; want Invalid", id, err)
		}
		if _, err := db.Installation(ctx, id); !addon.IsNotFound(err) {
			t.Errorf("Installation(%q): %v; want NotFound", id, err)
		}
		if err := db.KV("ui").Put(ctx, id, []byte("x")); addon.KindOf(err) != addon.Invalid {
			t.Errorf("KV Put(%q): %v; want Invalid", id, err)
		}
		if _, err := db.KV("ui").Get(ctx, id); !addon.IsNotFound(err) {
			t.Errorf("KV Get(%q): %v; want NotFound", id, err)
		}
	}
	putInst(t, db, "i1")
	j, _, err := db.Enqueue(ctx, addon.Job{OAuthID: "i1", MessageID: "m\x00", Args: "a\x00\xffz", Command: "echo",
		Reply: &addon.Notification{Message: "nul \x00 here"}})
	if err != nil {
		t.Fatalf("Enqueue of text with NUL and invalid UTF-8: %v", err)
	}
	if j.Args != "a\uFFFD\uFFFDz" || j.MessageID != "m\uFFFD" || j.Reply == nil || j.Reply.Message != "nul \x00 here" {
		t.Errorf("stored job = %+v, reply %+v; want U+FFFD in text, the reply as it was", j, j.Reply)
	}
	if _, isNew, err := db.Enqueue(ctx, addon.Job{OAuthID: "i1", MessageID: "m\x00"}); err != nil || isNew {
		t.Errorf("duplicate of a message id with NUL: new=%v, %v", isNew, err)
	}
	if err := db.RecordAttempt(ctx, j.ID, strings.Repeat("é", 2000)+"\x00"); err != nil {
		t.Fatal(err)
	}
	p, err := db.Pending(ctx, 0)
	if err != nil || len(p) != 1 || len(p[0].LastError) > maxReasonBytes || !strings.HasPrefix(p[0].LastError, "éé") {
		t.Errorf("LastError of a long reason = %d bytes, %v", len(p[0].LastError), err)
	}
}

// TestDeleteInstallationWaitsForEnqueue: a removal racing an enqueue of
// the same installation leaves no job behind, whichever wins.
func TestDeleteInstallationWaitsForEnqueue(t *testing.T) {
	ctx := t.Context()
	dsn := pgtest.Start(t)
	a, b := open(t, dsn, Options{}), open(t, dsn, Options{})
	for round := range 20 {
		id := fmt.Sprint("i", round)
		putInst(t, a, id)
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _, err := a.Enqueue(ctx, addon.Job{OAuthID: id, MessageID: "m", Command: "echo"})
			if err != nil && !addon.IsNotFound(err) {
				t.Errorf("Enqueue: %v", err)
			}
		})
		wg.Go(func() {
			if err := b.DeleteInstallation(ctx, id); err != nil {
				t.Errorf("DeleteInstallation: %v", err)
			}
		})
		wg.Wait()
	}
	jobs, err := a.Pending(ctx, 0)
	if err != nil || len(jobs) != 0 {
		t.Errorf("Pending = %+v, %v; want no job outliving its installation", jobs, err)
	}
	var seen int
	query(t, dsn, "SELECT count(*) FROM seen", &seen)
	if seen != 0 {
		t.Errorf("%d seen ids outlived their installations", seen)
	}
}

// TestOpenOptions: bad options are refused before connecting.
func TestOpenOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no DSN":        {},
		"short key":     {DSN: "postgres://x@127.0.0.1/x", Key: make([]byte, 16)},
		"negative cap":  {DSN: "postgres://x@127.0.0.1/x", MaxPendingPerInstallation: -1},
		"malformed DSN": {DSN: "postgres://x@127.0.0.1:notaport/x"},
	} {
		if _, err := Open(t.Context(), o); err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: Open = %v, want a refusal", name, err)
		}
	}
}

// TestDSNErrorHidesPassword: a DSN pgx cannot use is refused without its
// password, whichever way the password is written.
func TestDSNErrorHidesPassword(t *testing.T) {
	for _, dsn := range []string{
		"host=127.0.0.1 password = 's3cr3t' sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
		"host=127.0.0.1 password='s3\\'cr3t' sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
		"postgres://u:s3cr3t@127.0.0.1:notaport/x",
		"postgres://u:s3cr3t@127.0.0.1/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
	} {
		_, err := Open(t.Context(), Options{DSN: dsn})
		if err == nil {
			t.Errorf("Open(%q) = nil, want a refusal", dsn)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "cr3t") || !strings.Contains(msg, "storage.postgres.dsn") {
			t.Errorf("Open(%q) = %q: want the key named and no password", dsn, msg)
		} else {
			t.Logf("%s", msg)
		}
	}
}
