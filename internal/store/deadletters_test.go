package store

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// enqueueN enqueues n jobs for oauthID with message ids prefix0.. and
// returns them.
func enqueueN(t testing.TB, d *DB, oauthID, prefix string, n int) []addon.Job {
	t.Helper()
	var out []addon.Job
	for i := range n {
		j, isNew, err := d.Enqueue(context.Background(), addon.Job{
			OAuthID: oauthID, MessageID: fmt.Sprintf("%s%d", prefix, i), Command: "hascode", Args: fmt.Sprint(i)})
		if err != nil || !isNew {
			t.Fatalf("Enqueue %s/%s%d: new=%v err=%v", oauthID, prefix, i, isNew, err)
		}
		out = append(out, j)
	}
	return out
}

func pendingIDs(t testing.TB, d *DB) []uint64 {
	t.Helper()
	pend, err := d.Pending(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, j := range pend {
		ids = append(ids, j.ID)
	}
	return ids
}

// openWithJobs opens a test store holding installation "a" and n jobs of
// it (see enqueueN).
func openWithJobs(t *testing.T, n int) (*DB, []addon.Job) {
	t.Helper()
	d := openTest(t)
	if err := d.PutInstallation(context.Background(), inst("a")); err != nil {
		t.Fatal(err)
	}
	return d, enqueueN(t, d, "a", "m", n)
}

func pendingFor(t testing.TB, d *DB, oauthID string) int {
	t.Helper()
	return d.counts.pending()[oauthID]
}

func TestRecordAttempt(t *testing.T) {
	ctx := context.Background()
	d, jobs := openWithJobs(t, 2)

	long := strings.Repeat("é", MaxReasonBytes) // 2 bytes each: the cut falls inside one
	tests := []struct {
		name         string
		id           uint64
		reason       string
		wantNotFound bool
		wantAttempts int
		wantError    string
	}{
		{"first failure", jobs[0].ID, "hipchat: 503 Service Unavailable", false, 1, "hipchat: 503 Service Unavailable"},
		{"second failure replaces the reason", jobs[0].ID, "dial tcp: i/o timeout", false, 2, "dial tcp: i/o timeout"},
		{"empty reason", jobs[0].ID, "", false, 3, ""},
		{"long reason is cut on a character boundary", jobs[1].ID, long, false, 1, long[:MaxReasonBytes]},
		{"unknown job", 999, "x", true, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.RecordAttempt(ctx, tt.id, tt.reason)
			if tt.wantNotFound {
				if !addon.IsNotFound(err) {
					t.Errorf("err = %v, want NotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pend, err := d.Pending(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range pend {
				if j.ID != tt.id {
					continue
				}
				if j.Attempts != tt.wantAttempts || j.LastError != tt.wantError {
					t.Errorf("job = attempts %d, last error %.40q; want %d, %.40q",
						j.Attempts, j.LastError, tt.wantAttempts, tt.wantError)
				}
				if !utf8.ValidString(j.LastError) || len(j.LastError) > MaxReasonBytes {
					t.Errorf("LastError: %d bytes, valid UTF-8 %v", len(j.LastError), utf8.ValidString(j.LastError))
				}
				if j.Args == "" || j.Command != "hascode" {
					t.Errorf("job fields lost: %+v", j)
				}
				return
			}
			t.Errorf("job %d no longer pending", tt.id)
		})
	}
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("PendingFor = %d, want 2 (attempts do not change the count)", got)
	}
}

func TestBuryRetryDrop(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	jobs := enqueueN(t, d, "a", "m", 3)
	if err := d.RecordAttempt(ctx, jobs[1].ID, "hipchat: 404 room not found"); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	if err := d.Bury(ctx, jobs[1].ID, "room gone"); err != nil {
		t.Fatalf("Bury: %v", err)
	}

	if got, want := fmt.Sprint(pendingIDs(t, d)), fmt.Sprint([]uint64{jobs[0].ID, jobs[2].ID}); got != want {
		t.Errorf("Pending after Bury = %s, want %s", got, want)
	}
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("PendingFor after Bury = %d, want 2", got)
	}
	dead, err := d.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantJob := jobs[1]
	wantJob.Attempts, wantJob.LastError = 1, "hipchat: 404 room not found"
	if len(dead) != 1 || dead[0].Job != wantJob || dead[0].Reason != "room gone" || !dead[0].At.Equal(clk.Now()) {
		t.Fatalf("DeadLetters = %+v, want one of job %+v, reason %q at %v", dead, wantJob, "room gone", clk.Now())
	}
	s, err := d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.PendingJobs != 2 || s.DeadLetters != 1 {
		t.Errorf("Stats = %d pending, %d dead; want 2, 1", s.PendingJobs, s.DeadLetters)
	}

	// A buried job is gone from the outbox for every job operation.
	notFound := map[string]error{
		"Bury again":                 d.Bury(ctx, jobs[1].ID, "again"),
		"Complete buried":            d.Complete(ctx, jobs[1].ID),
		"RecordAttempt buried":       d.RecordAttempt(ctx, jobs[1].ID, "x"),
		"Bury unknown":               d.Bury(ctx, 999, "x"),
		"DropDead unknown":           d.DropDead(ctx, 999),
		"DropDead of a pending job":  d.DropDead(ctx, jobs[0].ID),
		"RetryDead of a pending job": func() error { _, err := d.RetryDead(ctx, jobs[0].ID); return err }(),
		"RetryDead unknown":          func() error { _, err := d.RetryDead(ctx, 999); return err }(),
	}
	for name, err := range notFound {
		if !addon.IsNotFound(err) {
			t.Errorf("%s: err = %v, want NotFound", name, err)
		}
	}

	// RetryDead: a new ID at the end of the queue, attempts reset, history kept.
	retried, err := d.RetryDead(ctx, jobs[1].ID)
	if err != nil {
		t.Fatalf("RetryDead: %v", err)
	}
	if retried.ID <= jobs[2].ID {
		t.Errorf("retried ID %d, want one after %d", retried.ID, jobs[2].ID)
	}
	want := wantJob
	want.ID, want.Attempts = retried.ID, 0
	if retried != want {
		t.Errorf("RetryDead = %+v, want %+v", retried, want)
	}
	if got, want := fmt.Sprint(pendingIDs(t, d)), fmt.Sprint([]uint64{jobs[0].ID, jobs[2].ID, retried.ID}); got != want {
		t.Errorf("Pending after RetryDead = %s, want %s", got, want)
	}
	if dead, err := d.DeadLetters(ctx); err != nil || len(dead) != 0 {
		t.Errorf("DeadLetters after RetryDead = %+v, %v; want none", dead, err)
	}
	if got := pendingFor(t, d, "a"); got != 3 {
		t.Errorf("PendingFor after RetryDead = %d, want 3", got)
	}
	if _, err := d.RetryDead(ctx, jobs[1].ID); !addon.IsNotFound(err) {
		t.Errorf("second RetryDead err = %v, want NotFound", err)
	}
	// A late duplicate delivery of its message answers with the new job.
	dup, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: jobs[1].MessageID})
	if err != nil || isNew || dup.ID != retried.ID {
		t.Errorf("duplicate after RetryDead = ID %d new=%v err=%v; want ID %d, not new", dup.ID, isNew, err, retried.ID)
	}

	// DropDead forgets a dead letter for good.
	if err := d.Bury(ctx, jobs[0].ID, "bad command"); err != nil {
		t.Fatal(err)
	}
	if err := d.DropDead(ctx, jobs[0].ID); err != nil {
		t.Fatalf("DropDead: %v", err)
	}
	if err := d.DropDead(ctx, jobs[0].ID); !addon.IsNotFound(err) {
		t.Errorf("second DropDead err = %v, want NotFound", err)
	}
	if dead, err := d.DeadLetters(ctx); err != nil || len(dead) != 0 {
		t.Errorf("DeadLetters after DropDead = %+v, %v; want none", dead, err)
	}
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("PendingFor at the end = %d, want 2", got)
	}
}

func TestDeadLettersOrder(t *testing.T) {
	ctx := context.Background()
	d, jobs := openWithJobs(t, 4)
	for _, i := range []int{3, 0, 2} {
		if err := d.Bury(ctx, jobs[i].ID, fmt.Sprint("reason ", i)); err != nil {
			t.Fatal(err)
		}
	}
	dead, err := d.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, dl := range dead {
		got = append(got, dl.Job.ID)
	}
	if want := []uint64{jobs[0].ID, jobs[2].ID, jobs[3].ID}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("DeadLetters IDs = %v, want %v (ID order)", got, want)
	}
}

func TestDeleteInstallationRemovesDeadLettersAndCounter(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	for _, id := range []string{"a", "ab"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
		jobs := enqueueN(t, d, id, "m", 3)
		if err := d.Bury(ctx, jobs[0].ID, "gone"); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.DeleteInstallation(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	dead, err := d.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Job.OAuthID != "ab" {
		t.Errorf("DeadLetters = %+v, want only ab's", dead)
	}
	if got := pendingFor(t, d, "a"); got != 0 {
		t.Errorf("PendingFor(a) = %d, want 0", got)
	}
	if got := pendingFor(t, d, "ab"); got != 2 {
		t.Errorf("PendingFor(ab) = %d, want 2", got)
	}
	if n, ok := d.counts.pending()["a"]; ok {
		t.Errorf("count of a left: %d", n)
	}
}

func TestRetryDeadInstallationGone(t *testing.T) {
	ctx := context.Background()
	d, jobs := openWithJobs(t, 1)
	j := jobs[0]
	if err := d.Bury(ctx, j.ID, "gone"); err != nil {
		t.Fatal(err)
	}
	// DeleteInstallation takes the dead letters along; an installation
	// record removed by other means (an older hipconnect, by hand) leaves
	// them behind.
	err := d.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketInstallations).Delete([]byte("a"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.RetryDead(ctx, j.ID); !addon.IsNotFound(err) || !strings.Contains(err.Error(), `installation "a"`) {
		t.Errorf("RetryDead err = %v, want NotFound naming the installation", err)
	}
	if dead, err := d.DeadLetters(ctx); err != nil || len(dead) != 1 {
		t.Errorf("DeadLetters = %+v, %v; want the dead letter kept", dead, err)
	}
	if pend := pendingIDs(t, d); len(pend) != 0 {
		t.Errorf("Pending = %v, want none", pend)
	}
}

// Complete and Bury of the same job race (a delivery finishing while the
// worker gives up): exactly one wins, and the counters stay right.
func TestBuryCompleteConcurrent(t *testing.T) {
	ctx := context.Background()
	d, jobs := openWithJobs(t, 30)
	var completed, buried, lost atomic.Int64
	var wg sync.WaitGroup
	// race runs op, counting its success in won and its NotFound in lost.
	race := func(won *atomic.Int64, op func() error) {
		defer wg.Done()
		if err := op(); err == nil {
			won.Add(1)
		} else if !addon.IsNotFound(err) {
			t.Error(err)
		} else {
			lost.Add(1)
		}
	}
	for _, j := range jobs {
		wg.Add(3)
		go race(&completed, func() error { return d.Complete(ctx, j.ID) })
		go race(&buried, func() error { return d.Bury(ctx, j.ID, "give up") })
		go func() {
			defer wg.Done()
			if err := d.RecordAttempt(ctx, j.ID, "failed"); err != nil && !addon.IsNotFound(err) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if completed.Load()+buried.Load() != 30 || lost.Load() != 30 {
		t.Errorf("completed %d + buried %d, lost %d; want 30 winners and 30 NotFound",
			completed.Load(), buried.Load(), lost.Load())
	}
	dead, err := d.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(dead)) != buried.Load() {
		t.Errorf("%d dead letters, want %d", len(dead), buried.Load())
	}
	if got := pendingFor(t, d, "a"); got != 0 {
		t.Errorf("PendingFor = %d, want 0", got)
	}
	if err := d.Check(); err != nil {
		t.Error(err)
	}
}

func TestPruneDead(t *testing.T) {
	ctx := context.Background()
	clock := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clock.Now})
	if err := d.PutInstallation(ctx, addon.Installation{OAuthID: "a", OAuthSecret: "s"}); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for i := range 5 {
		j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: 1, MessageID: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	old := d.now()
	for _, id := range ids[:3] {
		if err := d.Bury(ctx, id, "old"); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(31 * 24 * time.Hour)
	for _, id := range ids[3:] {
		if err := d.Bury(ctx, id, "recent"); err != nil {
			t.Fatal(err)
		}
	}
	n, err := d.PruneDead(ctx, d.now().Add(-DeadRetention))
	if err != nil || n != 3 {
		t.Fatalf("PruneDead = %d, %v; want the 3 buried at %v", n, err, old)
	}
	left, err := d.DeadLetters(ctx)
	if err != nil || len(left) != 2 || left[0].Reason != "recent" {
		t.Errorf("left %+v, %v", left, err)
	}
}
