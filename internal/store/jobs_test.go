package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

func TestEnqueueDuplicate(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}

	j := addon.Job{OAuthID: "a", RoomID: 7, MessageID: "m1", Command: "hascode", Args: "foo", From: "Ann"}
	first, isNew, err := d.Enqueue(ctx, j)
	if err != nil || !isNew {
		t.Fatalf("first Enqueue: new=%v err=%v, want true, nil", isNew, err)
	}
	if first.ID == 0 {
		t.Error("first job got ID 0")
	}
	if !first.Received.Equal(clk.Now()) {
		t.Errorf("Received = %v, want the store's clock %v", first.Received, clk.Now())
	}

	j2 := j
	j2.Args = "changed"
	dup, isNew, err := d.Enqueue(ctx, j2)
	if err != nil || isNew {
		t.Fatalf("duplicate Enqueue: new=%v err=%v, want false, nil", isNew, err)
	}
	if dup != first {
		t.Errorf("duplicate returned %+v, want the stored job %+v", dup, first)
	}

	// Same message id in another installation is a different message.
	if err := d.PutInstallation(ctx, inst("b")); err != nil {
		t.Fatal(err)
	}
	other, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "b", MessageID: "m1"})
	if err != nil || !isNew || other.ID <= first.ID {
		t.Errorf("Enqueue b/m1 = %+v new=%v err=%v, want a new job after %d", other, isNew, err, first.ID)
	}

	// No message id: always new.
	for i := 0; i < 2; i++ {
		if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a"}); err != nil || !isNew {
			t.Errorf("Enqueue without message id #%d: new=%v err=%v", i, isNew, err)
		}
	}

	// A duplicate of a completed job is still a duplicate.
	if err := d.Complete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	dup, isNew, err = d.Enqueue(ctx, j)
	if err != nil || isNew || dup.ID != first.ID {
		t.Errorf("Enqueue after Complete = %+v new=%v err=%v, want old ID %d, not new", dup, isNew, err, first.ID)
	}

	pend, err := d.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(pend), 3; got != want {
		t.Errorf("pending = %d, want %d", got, want)
	}
}

func TestEnqueueUnknownInstallation(t *testing.T) {
	d := openTest(t)
	_, _, err := d.Enqueue(context.Background(), addon.Job{OAuthID: "ghost", MessageID: "m"})
	if !addon.IsNotFound(err) {
		t.Errorf("err = %v, want NotFound", err)
	}
	_, _, err = d.Enqueue(context.Background(), addon.Job{MessageID: "m"})
	if got := addon.KindOf(err); got != addon.Invalid {
		t.Errorf("empty OAuthID kind = %s (%v), want invalid", got, err)
	}
}

func TestEnqueueConcurrent(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	for _, id := range []string{"a", "b"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
	}

	const goroutines, perG = 50, 20
	// Message k of goroutine g is message (g*perG+k) % 300 of installation
	// a or b by parity of g: 1000 deliveries, 600 distinct messages; plus
	// one job without a message id per goroutine.
	var newCount, dupCount atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*(perG+1))
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oauth := []string{"a", "b"}[g%2]
			for k := range perG {
				msg := fmt.Sprintf("m%d", (g*perG+k)%300)
				_, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: oauth, MessageID: msg})
				if err != nil {
					errs <- err
					return
				}
				if isNew {
					newCount.Add(1)
				} else {
					dupCount.Add(1)
				}
			}
			if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: oauth}); err != nil || !isNew {
				errs <- fmt.Errorf("no-message-id job: new=%v err=%v", isNew, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Count the distinct (installation, message) pairs the loop produced.
	distinct := map[string]bool{}
	for g := range goroutines {
		for k := range perG {
			distinct[fmt.Sprintf("%d/m%d", g%2, (g*perG+k)%300)] = true
		}
	}
	if got, want := newCount.Load(), int64(len(distinct)); got != want {
		t.Errorf("new = %d, want %d", got, want)
	}
	if got, want := dupCount.Load(), int64(goroutines*perG-len(distinct)); got != want {
		t.Errorf("duplicates = %d, want %d", got, want)
	}
	pend, err := d.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(pend), len(distinct)+goroutines; got != want {
		t.Errorf("pending jobs = %d, want %d", got, want)
	}
	ids := map[uint64]bool{}
	pairs := map[string]bool{}
	for _, j := range pend {
		if ids[j.ID] {
			t.Errorf("job ID %d twice", j.ID)
		}
		ids[j.ID] = true
		if j.MessageID == "" {
			continue
		}
		p := j.OAuthID + "/" + j.MessageID
		if pairs[p] {
			t.Errorf("two jobs for %s", p)
		}
		pairs[p] = true
	}
}

func TestPendingOrderLimitComplete(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	var want []uint64
	for i := range 5 {
		j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: fmt.Sprint(i), Args: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		if len(want) > 0 && j.ID <= want[len(want)-1] {
			t.Errorf("ID %d not above %d", j.ID, want[len(want)-1])
		}
		want = append(want, j.ID)
	}

	tests := []struct {
		name  string
		limit int
		want  []uint64
	}{
		{"all with zero", 0, want},
		{"all with negative", -1, want},
		{"limit 2", 2, want[:2]},
		{"limit above count", 10, want},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pend, err := d.Pending(ctx, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, j := range pend {
				got = append(got, j.ID)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("Pending(%d) IDs = %v, want %v", tt.limit, got, tt.want)
			}
		})
	}

	if err := d.Complete(ctx, want[1]); err != nil {
		t.Fatal(err)
	}
	if err := d.Complete(ctx, want[1]); !addon.IsNotFound(err) {
		t.Errorf("second Complete err = %v, want NotFound", err)
	}
	pend, err := d.Pending(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != 2 || pend[0].ID != want[0] || pend[1].ID != want[2] {
		t.Errorf("Pending after Complete = %+v, want IDs %d, %d", pend, want[0], want[2])
	}
	if pend[1].Args != "2" {
		t.Errorf("job fields lost: %+v", pend[1])
	}
}

func TestCompleteConcurrent(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for range 40 {
		j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	// Every job completed twice at once: exactly one of each pair succeeds.
	var ok, notFound atomic.Int64
	var wg sync.WaitGroup
	for _, id := range append(ids, ids...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch err := d.Complete(ctx, id); {
			case err == nil:
				ok.Add(1)
			case addon.IsNotFound(err):
				notFound.Add(1)
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 40 || notFound.Load() != 40 {
		t.Errorf("ok=%d notFound=%d, want 40 and 40", ok.Load(), notFound.Load())
	}
	if pend, err := d.Pending(ctx, 0); err != nil || len(pend) != 0 {
		t.Errorf("Pending = %d jobs, %v; want none", len(pend), err)
	}
}

func TestPruneSeen(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old1", "old2"} {
		if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: m}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Add(25 * time.Hour)
	if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "fresh"}); err != nil {
		t.Fatal(err)
	}

	n, err := d.PruneSeen(ctx, clk.Now().Add(-SeenRetention))
	if err != nil || n != 2 {
		t.Fatalf("PruneSeen = %d, %v; want 2", n, err)
	}
	if n, err := d.PruneSeen(ctx, clk.Now().Add(-SeenRetention)); err != nil || n != 0 {
		t.Errorf("second PruneSeen = %d, %v; want 0", n, err)
	}
	if _, isNew, _ := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "fresh"}); isNew {
		t.Error("fresh message id was pruned")
	}
	if _, isNew, _ := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "old1"}); !isNew {
		t.Error("pruned message id still counts as seen")
	}
}

// TestSeenByDate: a message is recognised by its date and id, or by its id
// alone if it was first seen without a date; PruneSeen forgets what was
// received before the cutoff, whatever HipChat's clock said.
func TestSeenByDate(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	enqueue := func(id string, date time.Time) bool {
		t.Helper()
		_, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: id, MessageDate: date})
		if err != nil {
			t.Fatal(err)
		}
		return isNew
	}
	start := clk.Now()
	enqueue("old", start)
	enqueue("undated", time.Time{})
	clk.Add(25 * time.Hour)
	now := clk.Now()
	enqueue("behind", start.Add(-time.Hour)) // HipChat's clock a day behind
	enqueue("ahead", now.Add(time.Hour))
	if enqueue("old", start) || enqueue("undated", now) || enqueue("behind", start.Add(-time.Hour)) {
		t.Error("a delivery seen before counts as new")
	}
	if !enqueue("old", start.Add(time.Second)) {
		t.Error("another date with the same id counts as seen")
	}
	n, err := d.PruneSeen(ctx, now.Add(-SeenRetention))
	if err != nil || n != 2 {
		t.Fatalf("PruneSeen = %d, %v; want 2 (old, undated)", n, err)
	}
	if enqueue("behind", start.Add(-time.Hour)) || enqueue("ahead", now.Add(time.Hour)) {
		t.Error("a message received within the retention was pruned")
	}
	if !enqueue("old", start) {
		t.Error("a message received before the cutoff is still seen")
	}
}

// BenchmarkEnqueue enqueues distinct jobs from many goroutines, as concurrent
// webhook deliveries do; the group commit folds them into few commits (fsyncs).
// jobs/commit reports the coalescing.
func BenchmarkEnqueue(b *testing.B) {
	ctx := context.Background()
	d := openTest(b)
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		b.Fatal(err)
	}
	txid := func() int {
		var id int
		_ = d.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	var seq atomic.Int64
	before := txid()
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			msg := fmt.Sprintf("m%d", seq.Add(1))
			if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: msg, Command: "hascode"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if commits := txid() - before; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "jobs/commit")
	}
}

// BenchmarkEnqueueSerial is the same with one goroutine: each Enqueue waits
// for its own commit (and bolt's batch delay), the figure to compare.
func BenchmarkEnqueueSerial(b *testing.B) {
	ctx := context.Background()
	d := openTest(b)
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: fmt.Sprint(i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCompleteAll removes the jobs still pending in one write, skips the
// ones already gone, and keeps the pending counts right
// (openPath's cleanup runs Check).
func TestCompleteAll(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{MaxPendingPerInstallation: 3})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	var jobs []addon.Job
	for i := range 3 {
		j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: int64(i % 2), MessageID: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
	}
	if err := d.Complete(ctx, jobs[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := d.CompleteAll(ctx, jobs[:2]); err != nil {
		t.Fatalf("CompleteAll with a job already gone: %v", err)
	}
	left, err := d.Pending(ctx, 0)
	if err != nil || len(left) != 1 || left[0].ID != jobs[2].ID {
		t.Fatalf("pending after CompleteAll = %v, %v; want job %d only", left, err, jobs[2].ID)
	}
	// Two slots freed: the bound of 3 admits two more.
	for i := range 2 {
		if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 5, MessageID: fmt.Sprint("more", i)}); err != nil {
			t.Errorf("enqueue after CompleteAll: %v", err)
		}
	}
}
