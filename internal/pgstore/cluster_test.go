package pgstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
	"github.com/jackc/pgx/v5"
)

// lease runs a lease round that must succeed.
func lease(t *testing.T, db *DB, node string, ttl time.Duration) Leases {
	t.Helper()
	l, err := db.Lease(t.Context(), node, ttl)
	if err != nil {
		t.Fatalf("Lease(%s): %v", node, err)
	}
	return l
}

// putInsts stores installations i0..i(n-1) and returns their OAuthIDs.
func putInsts(t *testing.T, db *DB, n int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprint("i", i)
		putInst(t, db, ids[i])
	}
	slices.Sort(ids)
	return ids
}

// TestLeaseFairShare: three live nodes split seven installations 3/3/1,
// disjoint, all of them held; the next rounds keep them; a fourth node
// takes nothing live (no rebalancing) but a new installation goes to a
// node below its share.
func TestLeaseFairShare(t *testing.T) {
	dsn := pgtest.Start(t)
	dbs := openNodes(t, dsn, 3)
	names := []string{"a", "b", "c"}
	const ttl = time.Minute
	for n, db := range dbs { // heartbeats, before there is anything to hold
		if l := lease(t, db, names[n], ttl); len(l.Held) != 0 || l.Nodes != n+1 {
			t.Fatalf("first round of %s = %+v; want nothing held, %d nodes", names[n], l, n+1)
		}
	}
	all := putInsts(t, dbs[0], 7)
	check := func(round int) [][]string {
		t.Helper()
		var held [][]string
		var union []string
		for n, db := range dbs {
			l := lease(t, db, names[n], ttl)
			if l.Nodes != 3 || !slices.IsSorted(l.Held) {
				t.Errorf("round %d of %s = %+v; want 3 nodes, Held sorted", round, names[n], l)
			}
			held = append(held, l.Held)
			union = append(union, l.Held...)
		}
		if got := []int{len(held[0]), len(held[1]), len(held[2])}; !slices.Equal(got, []int{3, 3, 1}) {
			t.Errorf("round %d: holdings %v; want 3/3/1", round, held)
		}
		slices.Sort(union)
		if !slices.Equal(union, all) {
			t.Errorf("round %d: held %v together; want each of %v once", round, union, all)
		}
		return held
	}
	first := check(1)
	if again := check(2); !slices.EqualFunc(first, again, slices.Equal) {
		t.Errorf("second round moved leases: %v, then %v", first, again)
	}
	for n, db := range dbs { // each node knows what the others hold
		l := lease(t, db, names[n], ttl)
		want := slices.DeleteFunc(slices.Clone(all), func(id string) bool { return slices.Contains(l.Held, id) })
		if !slices.Equal(l.Elsewhere, want) {
			t.Errorf("%s: Elsewhere = %v, want the others' %v", names[n], l.Elsewhere, want)
		}
	}

	// A fourth node: its share is 2, but every lease is live.
	d := open(t, dsn, Options{})
	if l := lease(t, d, "d", ttl); len(l.Held) != 0 || l.Nodes != 4 {
		t.Errorf("round of a fourth node = %+v; want nothing held (no rebalancing), 4 nodes", l)
	}
	if l := lease(t, dbs[0], "a", ttl); !slices.Equal(l.Held, first[0]) {
		t.Errorf("a after d joined holds %v; want %v kept", l.Held, first[0])
	}
	putInst(t, dbs[0], "i7")
	if l := lease(t, dbs[0], "a", ttl); !slices.Equal(l.Held, first[0]) {
		t.Errorf("a, at its share, holds %v; want %v", l.Held, first[0])
	}
	if l := lease(t, dbs[2], "c", ttl); !slices.Equal(l.Held, append(slices.Clone(first[2]), "i7")) {
		t.Errorf("c, below its share ceil(8/4) = 2, holds %v; want %v and i7", l.Held, first[2])
	}

	if _, err := d.Lease(t.Context(), "", ttl); addon.KindOf(err) != addon.Invalid {
		t.Errorf("Lease of an empty node name: %v; want Invalid", err)
	}
	if _, err := d.Lease(t.Context(), "d", 0); addon.KindOf(err) != addon.Invalid {
		t.Errorf("Lease with ttl 0: %v; want Invalid", err)
	}
}

// TestLeaseExpiry: a node renewing its leases keeps them past their first
// expiry; once it stops, another node claims them after the ttl and not
// before; heartbeats ten ttls old are deleted, younger ones kept but not
// counted live.
func TestLeaseExpiry(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Start(t)
	a, b := open(t, dsn, Options{}), open(t, dsn, Options{})
	all := putInsts(t, a, 3)
	const ttl = time.Second
	if l := lease(t, a, "a", ttl); !slices.Equal(l.Held, all) || l.Nodes != 1 {
		t.Fatalf("a alone = %+v; want all of %v, 1 node", l, all)
	}
	start := time.Now()
	for time.Since(start) < 1300*time.Millisecond { // past the first expiry
		time.Sleep(250 * time.Millisecond)
		if l := lease(t, a, "a", ttl); !slices.Equal(l.Held, all) {
			t.Fatalf("a renewing holds %v; want %v", l.Held, all)
		}
		if l := lease(t, b, "b", ttl); len(l.Held) != 0 || l.Nodes != 2 {
			t.Fatalf("b while a renews = %+v; want nothing, 2 nodes", l)
		}
	}
	lastA := time.Now()
	time.Sleep(ttl / 2)
	if l := lease(t, b, "b", ttl); len(l.Held) != 0 {
		t.Fatalf("b took %v before a's leases expired", l.Held)
	}
	time.Sleep(time.Until(lastA.Add(ttl + 100*time.Millisecond)))
	if l := lease(t, b, "b", ttl); !slices.Equal(l.Held, all) || l.Nodes != 1 {
		t.Fatalf("b after a's leases expired = %+v; want all of %v, 1 node (a not live)", l, all)
	}
	// a comes back: nothing of b's is taken.
	if l := lease(t, a, "a", ttl); len(l.Held) != 0 || l.Nodes != 2 {
		t.Errorf("a back = %+v; want nothing, 2 nodes", l)
	}

	query(t, dsn, "INSERT INTO nodes (name, seen) VALUES ('gone', now() - interval '11 seconds'), ('away', now() - interval '5 seconds')")
	if l := lease(t, a, "a", ttl); l.Nodes != 2 {
		t.Errorf("Nodes = %d with a stale heartbeat; want 2 (a, b)", l.Nodes)
	}
	var names string
	query(t, dsn, "SELECT string_agg(name, ',' ORDER BY name) FROM nodes", &names)
	if names != "a,away,b" {
		t.Errorf("heartbeats kept: %s; want a,away,b (gone's deleted)", names)
	}
}

// TestReleaseLeases: a node's leases and heartbeat released are another
// node's at its next round.
func TestReleaseLeases(t *testing.T) {
	dsn := pgtest.Start(t)
	a, b := open(t, dsn, Options{}), open(t, dsn, Options{})
	all := putInsts(t, a, 3)
	lease(t, a, "a", time.Minute)
	if l := lease(t, b, "b", time.Minute); len(l.Held) != 0 {
		t.Fatalf("b took %v of a's live leases", l.Held)
	}
	if err := a.ReleaseLeases(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if l := lease(t, b, "b", time.Minute); !slices.Equal(l.Held, all) || l.Nodes != 1 {
		t.Errorf("b after a's release = %+v; want all of %v, 1 node", l, all)
	}
	if err := a.ReleaseLeases(t.Context(), "nobody"); err != nil {
		t.Errorf("ReleaseLeases of a node holding nothing: %v", err)
	}
	if err := a.ReleaseLeases(t.Context(), ""); addon.KindOf(err) != addon.Invalid {
		t.Errorf("ReleaseLeases of an empty name: %v; want Invalid", err)
	}
}

// TestLeaseGoesWithInstallation: deleting an installation deletes its
// lease.
func TestLeaseGoesWithInstallation(t *testing.T) {
	dsn := pgtest.Start(t)
	db := open(t, dsn, Options{})
	putInsts(t, db, 2)
	lease(t, db, "a", time.Minute)
	if err := db.DeleteInstallation(t.Context(), "i0"); err != nil {
		t.Fatal(err)
	}
	var n int
	query(t, dsn, "SELECT count(*) FROM leases WHERE oauth_id = 'i0'", &n)
	if n != 0 {
		t.Errorf("the lease of a deleted installation outlived it")
	}
	if l := lease(t, db, "a", time.Minute); !slices.Equal(l.Held, []string{"i1"}) {
		t.Errorf("Held after the delete = %v; want [i1]", l.Held)
	}
}

// TestLeaseDoesNotWait: a round neither waits for an Enqueue holding its
// installation's row (and claims it), nor for a delete in progress (and
// skips it), nor for another round claiming an expired lease (and leaves
// it).
func TestLeaseDoesNotWait(t *testing.T) {
	dsn := pgtest.Start(t)
	db := open(t, dsn, Options{})
	putInsts(t, db, 4)
	query(t, dsn, "INSERT INTO leases (oauth_id, node, expires) VALUES ('i3', 'dead', now() - interval '1 second')")
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	for _, sql := range []string{
		"SELECT 1 FROM installations WHERE oauth_id = 'i0' FOR NO KEY UPDATE", // as Enqueue
		"DELETE FROM installations WHERE oauth_id = 'i1'",                     // as DeleteInstallation
		"SELECT 1 FROM leases WHERE oauth_id = 'i3' FOR UPDATE",               // as another round's claim
	} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	within, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	l, err := db.Lease(within, "a", time.Minute)
	if err != nil {
		t.Fatalf("Lease beside the locks: %v", err)
	}
	if !slices.Equal(l.Held, []string{"i0", "i2"}) {
		t.Errorf("Held = %v; want [i0 i2] (i1 being deleted, i3 being claimed)", l.Held)
	}
	if err := tx.Commit(ctx); err != nil { // the delete goes through
		t.Fatal(err)
	}
	if l := lease(t, db, "a", time.Minute); !slices.Equal(l.Held, []string{"i0", "i2", "i3"}) {
		t.Errorf("Held after the locks = %v; want [i0 i2 i3]", l.Held)
	}
}

// TestLeaseConcurrentRounds: four nodes running rounds at once, some
// pausing past the ttl so their leases move, while installations are
// enqueued to, added and deleted, never hold one installation at the same
// time: the time a node takes a lease as its own, from its round's return
// to its start plus the ttl (as the daemon does), never overlaps another
// node's for the same installation. No round fails (a deadlock would).
func TestLeaseConcurrentRounds(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Start(t)
	const (
		nodes = 4
		ttl   = 300 * time.Millisecond
		run   = 2 * time.Second
	)
	dbs := openNodes(t, dsn, nodes)
	putInsts(t, dbs[0], 12)
	ctx := t.Context()

	type hold struct {
		node        int
		from, until time.Time
	}
	var (
		mu     sync.Mutex
		holds  = map[string][]hold{}
		rounds int
	)
	deadline := time.Now().Add(run)
	var wg sync.WaitGroup
	for n := range nodes {
		wg.Go(func() {
			name := fmt.Sprint("node", n)
			rnd := rand.New(rand.NewPCG(uint64(n), 1))
			for time.Now().Before(deadline) {
				before := time.Now()
				l, err := dbs[n].Lease(ctx, name, ttl)
				after := time.Now()
				if err != nil {
					t.Errorf("Lease(%s): %v", name, err)
					return
				}
				mu.Lock()
				rounds++
				for _, id := range l.Held {
					holds[id] = append(holds[id], hold{n, after, before.Add(ttl)})
				}
				mu.Unlock()
				pause := time.Duration(rnd.IntN(100)) * time.Millisecond
				if rnd.IntN(8) == 0 {
					pause = ttl + 50*time.Millisecond // leases lapse: others take them
				}
				time.Sleep(pause)
			}
		})
	}
	wg.Go(func() { // enqueue, add and delete installations meanwhile
		for i := 0; time.Now().Before(deadline); i++ {
			db := dbs[i%nodes]
			id := fmt.Sprint("i", i%12)
			if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: id, MessageID: fmt.Sprint(i), Command: "echo"}); err != nil {
				t.Errorf("Enqueue: %v", err)
				return
			}
			if i%5 == 0 { // a new installation each time (see Lease on reusing an OAuthID), the one before last deleted
				if err := db.PutInstallation(ctx, addon.Installation{OAuthID: fmt.Sprint("n", i)}); err != nil {
					t.Errorf("PutInstallation: %v", err)
					return
				}
				if err := db.DeleteInstallation(ctx, fmt.Sprint("n", i-10)); err != nil && !addon.IsNotFound(err) {
					t.Errorf("DeleteInstallation: %v", err)
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	wg.Wait()

	moved := 0
	for id, hs := range holds {
		slices.SortFunc(hs, func(a, b hold) int { return a.from.Compare(b.from) })
		for i, h := range hs {
			for _, g := range hs[i+1:] {
				if g.node != h.node && g.from.Before(h.until) {
					t.Errorf("%s held by node%d until %v and by node%d from %v", id, h.node, h.until.Format("15:04:05.000"),
						g.node, g.from.Format("15:04:05.000"))
				}
			}
			if i > 0 && hs[i-1].node != h.node {
				moved++
			}
		}
	}
	t.Logf("%d rounds, %d changes of holder", rounds, moved)
	if moved == 0 {
		t.Error("no lease changed holders: the test did not test that")
	}
}

// TestMigrateFromVersion1: a database of schema version 1, with data, is
// migrated to version 2 at Open and works.
func TestMigrateFromVersion1(t *testing.T) {
	dsn := pgtest.Start(t)
	db := open(t, dsn, Options{})
	putInst(t, db, "i1")
	_ = db.Close()
	query(t, dsn, "DROP TABLE leases, nodes")
	query(t, dsn, "DELETE FROM "+schemaTable+" WHERE version_id = 2")
	db = open(t, dsn, Options{})
	if w := strings.Join(db.Warnings(), "\n"); !strings.Contains(w, "migrated the database schema from version 1 to 2") {
		t.Errorf("Warnings = %q; want the migration from 1 to 2", w)
	}
	if l := lease(t, db, "a", time.Minute); !slices.Equal(l.Held, []string{"i1"}) {
		t.Errorf("Held = %v; want [i1]", l.Held)
	}
}
