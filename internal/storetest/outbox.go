package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func outboxOrderCases() []testCase {
	return []testCase{
		{"IDsIncreasing", testOutboxIDs},
		{"PendingOrderAndLimit", testOutboxPendingLimit},
		{"Complete", testOutboxComplete},
		{"CompleteAllSkipsGone", testOutboxCompleteAll},
		{"RecordAttempt", testOutboxRecordAttempt},
		{"Bury", testOutboxBury},
	}
}

// enqueueJobs enqueues n new jobs of oauthID, messages prefix0.., with a
// reply on every other one, and returns them as stored.
func enqueueJobs(t *testing.T, s addon.Store, oauthID, prefix string, n int) []addon.Job {
	t.Helper()
	out := make([]addon.Job, 0, n)
	for i := range n {
		j := job(oauthID, fmt.Sprint(prefix, i), msgDate())
		if i%2 == 1 {
			j.Reply = &addon.Notification{Message: "reply " + fmt.Sprint(i), MessageFormat: "text", Color: "green", Notify: true}
		}
		out = append(out, enqueue(t, s, j))
	}
	return out
}

// testOutboxIDs: every new job gets an ID greater than every ID before it,
// across installations and after the jobs before are gone.
func testOutboxIDs(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	putInstallation(t, s, "b")
	var last uint64
	check := func(j addon.Job) {
		t.Helper()
		if j.ID <= last {
			t.Errorf("job of %s/%q got ID %d, not above %d", j.OAuthID, j.MessageID, j.ID, last)
		}
		last = j.ID
	}
	for i := range 3 {
		check(enqueue(t, s, job("a", fmt.Sprint("a", i), msgDate())))
		check(enqueue(t, s, job("b", fmt.Sprint("b", i), msgDate())))
	}
	if err := s.CompleteAll(ctx, pending(t, s)); err != nil {
		t.Fatal(err)
	}
	if got := pending(t, s); len(got) != 0 {
		t.Fatalf("Pending after CompleteAll = %v, want none", ids(got))
	}
	// The outbox is empty: a new ID must still exceed the ones gone.
	check(enqueue(t, s, job("a", "after", msgDate())))
	check(enqueue(t, s, addon.Job{OAuthID: "b", Command: "hascode"}))
}

// testOutboxPendingLimit: Pending returns the jobs in ID order, as they
// were stored, up to limit (none or a negative one: all).
func testOutboxPendingLimit(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	putInstallation(t, s, "b")
	var jobs []addon.Job
	for i := range 3 {
		jobs = append(jobs, enqueueJobs(t, s, []string{"a", "b"}[i%2], fmt.Sprint("m", i, "-"), 2)...)
	}
	all := pending(t, s)
	if len(all) != len(jobs) {
		t.Fatalf("Pending = %d jobs, want %d", len(all), len(jobs))
	}
	for i := range jobs {
		if !sameJob(all[i], jobs[i]) {
			t.Errorf("Pending[%d] = %+v, want %+v", i, all[i], jobs[i])
		}
	}
	for _, limit := range []int{-1, 0, 1, 4, len(jobs), len(jobs) + 5} {
		got, err := s.Pending(ctx, limit)
		if err != nil {
			t.Fatalf("Pending(%d): %v", limit, err)
		}
		want := ids(jobs)
		if limit > 0 && limit < len(want) {
			want = want[:limit]
		}
		if !slices.Equal(ids(got), want) {
			t.Errorf("Pending(%d) = %v, want %v", limit, ids(got), want)
		}
	}
}

// testOutboxComplete: Complete removes one job; completing it again, or an
// ID never assigned, is NotFound.
func testOutboxComplete(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 3)
	if err := s.Complete(ctx, jobs[1].ID); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if got, want := ids(pending(t, s)), []uint64{jobs[0].ID, jobs[2].ID}; !slices.Equal(got, want) {
		t.Errorf("Pending after Complete = %v, want %v", got, want)
	}
	wantNotFound(t, "second Complete", s.Complete(ctx, jobs[1].ID))
	wantNotFound(t, "Complete of an ID never assigned", s.Complete(ctx, jobs[2].ID+1000))
	if got := pending(t, s); len(got) != 2 {
		t.Errorf("Pending after refused Completes = %v, want 2 jobs", ids(got))
	}
}

// testOutboxCompleteAll: CompleteAll removes the jobs given and skips the
// ones already gone.
func testOutboxCompleteAll(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	putInstallation(t, s, "b")
	jobs := append(enqueueJobs(t, s, "a", "m", 3), enqueueJobs(t, s, "b", "m", 2)...)
	if err := s.Complete(ctx, jobs[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Bury(ctx, jobs[3].ID, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := s.CompleteAll(ctx, []addon.Job{jobs[0], jobs[1], jobs[3], jobs[4]}); err != nil {
		t.Fatalf("CompleteAll with jobs already gone: %v", err)
	}
	if got, want := ids(pending(t, s)), []uint64{jobs[2].ID}; !slices.Equal(got, want) {
		t.Errorf("Pending after CompleteAll = %v, want %v", got, want)
	}
	if got, want := deadIDs(t, s), []uint64{jobs[3].ID}; !slices.Equal(got, want) {
		t.Errorf("CompleteAll touched the dead letters: %v, want %v", got, want)
	}
	if err := s.CompleteAll(ctx, nil); err != nil {
		t.Errorf("CompleteAll of nothing: %v", err)
	}
}

// testOutboxRecordAttempt: each attempt increments Attempts and replaces
// LastError, leaving the rest of the job and the other jobs as they were.
func testOutboxRecordAttempt(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 2)
	for _, reason := range []string{"hipchat: 503", "dial tcp: i/o timeout", ""} {
		if err := s.RecordAttempt(ctx, jobs[1].ID, reason); err != nil {
			t.Fatalf("RecordAttempt(%q): %v", reason, err)
		}
		jobs[1].Attempts++
		jobs[1].LastError = reason
		got := pending(t, s)
		if len(got) != 2 || !sameJob(got[0], jobs[0]) || !sameJob(got[1], jobs[1]) {
			t.Fatalf("Pending after RecordAttempt(%q) = %+v, want %+v", reason, got, jobs)
		}
	}
}

// testOutboxBury: Bury moves a job out of the outbox into the dead letters
// with its reason, as it was (attempts included).
func testOutboxBury(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 3)
	if err := s.RecordAttempt(ctx, jobs[1].ID, "hipchat: 404"); err != nil {
		t.Fatal(err)
	}
	jobs[1].Attempts, jobs[1].LastError = 1, "hipchat: 404"
	before := time.Now()
	if err := s.Bury(ctx, jobs[1].ID, "room gone"); err != nil {
		t.Fatalf("Bury: %v", err)
	}
	if got, want := ids(pending(t, s)), []uint64{jobs[0].ID, jobs[2].ID}; !slices.Equal(got, want) {
		t.Errorf("Pending after Bury = %v, want %v", got, want)
	}
	dead, err := s.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || !sameJob(dead[0].Job, jobs[1]) || dead[0].Reason != "room gone" || dead[0].At.IsZero() {
		t.Fatalf("DeadLetters = %+v, want job %+v, reason %q, a time", dead, jobs[1], "room gone")
	}
	if at := dead[0].At; at.Before(before.Add(-time.Hour)) || at.After(time.Now().Add(time.Hour)) {
		t.Errorf("DeadLetter.At = %v, want about now (%v)", at, before)
	}
	wantNotFound(t, "Complete of a buried job", s.Complete(ctx, jobs[1].ID))
}

func outboxDedupeCases() []testCase {
	return []testCase{
		{"DuplicateNotNew", testDedupeDuplicate},
		{"ConcurrentDuplicates", testDedupeConcurrent},
		{"EmptyMessageIDAlwaysNew", testDedupeNoMessageID},
		{"OtherInstallationNew", testDedupeOtherInstallation},
		{"OtherDateNew", testDedupeOtherDate},
		{"PruneSeen", testDedupePruneSeen},
	}
}

// testDedupeDuplicate: the same (OAuthID, MessageDate, MessageID) again is
// not new and makes no second job, even after the first was completed.
func testDedupeDuplicate(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	j := job("a", "m1", msgDate())
	first := enqueue(t, s, j)
	again := j
	again.Args = "a different body"
	if isNew(t, s, again) {
		t.Error("a duplicate delivery counts as new")
	}
	if got := pending(t, s); len(got) != 1 || !sameJob(got[0], first) {
		t.Errorf("Pending after a duplicate = %+v, want only %+v", got, first)
	}
	if err := s.Complete(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	if isNew(t, s, j) {
		t.Error("a duplicate of a completed job counts as new")
	}
	if got := pending(t, s); len(got) != 0 {
		t.Errorf("Pending after a duplicate of a completed job = %v, want none", ids(got))
	}
}

// testDedupeConcurrent: of 20 deliveries of one message at once, exactly
// one is new.
func testDedupeConcurrent(t *testing.T, b Backend) {
	s := b.Store
	putInstallation(t, s, "a")
	const n = 20
	j := job("a", "raced", msgDate())
	var fresh, dups atomic.Int32
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			_, isNew, err := s.Enqueue(t.Context(), j)
			switch {
			case err != nil:
				t.Errorf("Enqueue: %v", err)
			case isNew:
				fresh.Add(1)
			default:
				dups.Add(1)
			}
		})
	}
	close(start)
	waitGroup(t, &wg)
	if fresh.Load() != 1 || dups.Load() != n-1 {
		t.Errorf("new = %d, duplicates = %d; want 1 and %d", fresh.Load(), dups.Load(), n-1)
	}
	if got := pending(t, s); len(got) != 1 {
		t.Errorf("Pending = %v, want one job", ids(got))
	}
}

// testDedupeNoMessageID: a job without MessageID is always new.
func testDedupeNoMessageID(t *testing.T, b Backend) {
	s := b.Store
	putInstallation(t, s, "a")
	j := job("a", "", msgDate())
	var got []uint64
	for range 3 {
		got = append(got, enqueue(t, s, j).ID)
	}
	if p := ids(pending(t, s)); !slices.Equal(p, got) {
		t.Errorf("Pending = %v, want the 3 jobs %v", p, got)
	}
}

// testDedupeOtherInstallation: the same message in another installation is
// another message.
func testDedupeOtherInstallation(t *testing.T, b Backend) {
	s := b.Store
	putInstallation(t, s, "a")
	putInstallation(t, s, "ab")
	date := msgDate()
	enqueue(t, s, job("a", "m1", date))
	if !isNew(t, s, job("ab", "m1", date)) {
		t.Error("the same message id and date in another installation counts as seen")
	}
	if isNew(t, s, job("ab", "m1", date)) {
		t.Error("a duplicate in the second installation counts as new")
	}
	if got := pending(t, s); len(got) != 2 {
		t.Errorf("Pending = %v, want 2 jobs", ids(got))
	}
}

// testDedupeOtherDate: the same message id with another date is another
// message.
func testDedupeOtherDate(t *testing.T, b Backend) {
	s := b.Store
	putInstallation(t, s, "a")
	date := msgDate()
	enqueue(t, s, job("a", "m1", date))
	if !isNew(t, s, job("a", "m1", date.Add(time.Second))) {
		t.Error("the same message id with another date counts as seen")
	}
}

// testDedupePruneSeen: PruneSeen forgets the message ids dated before its
// cutoff, and only those; a forgotten message is new again.
func testDedupePruneSeen(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	now := time.Now().UTC().Truncate(time.Second)
	old := job("a", "old", now.Add(-48*time.Hour))
	future := job("a", "future", now.Add(48*time.Hour))
	enqueue(t, s, old)
	enqueue(t, s, future)

	if n, err := s.PruneSeen(ctx, old.MessageDate.Add(-time.Hour)); err != nil || n != 0 {
		t.Errorf("PruneSeen before every date = %d, %v; want 0", n, err)
	}
	if isNew(t, s, old) {
		t.Error("a message dated after the cutoff was forgotten")
	}
	if n, err := s.PruneSeen(ctx, now.Add(time.Hour)); err != nil || n != 1 {
		t.Errorf("PruneSeen = %d, %v; want 1 (the old message)", n, err)
	}
	if !isNew(t, s, old) {
		t.Error("a pruned message still counts as seen")
	}
	if isNew(t, s, future) {
		t.Error("a message dated after the cutoff was pruned")
	}
}

func deadLetterCases() []testCase {
	return []testCase{
		{"OrderAndReason", testDeadOrder},
		{"RetryDead", testDeadRetry},
		{"DropDead", testDeadDrop},
		{"PruneDeadByAge", testDeadPrune},
		{"AbsentNotFound", testDeadAbsent},
	}
}

// testDeadOrder: DeadLetters lists in job ID order, whatever order they
// were buried in, each with its own reason.
func testDeadOrder(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 4)
	for _, i := range []int{3, 0, 2} {
		if err := s.Bury(ctx, jobs[i].ID, fmt.Sprint("reason ", i)); err != nil {
			t.Fatal(err)
		}
	}
	dead, err := s.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []int{0, 2, 3}
	if len(dead) != len(want) {
		t.Fatalf("DeadLetters = %d, want %d", len(dead), len(want))
	}
	for k, i := range want {
		if !sameJob(dead[k].Job, jobs[i]) || dead[k].Reason != fmt.Sprint("reason ", i) {
			t.Errorf("DeadLetters[%d] = %+v, want job %d with reason %q", k, dead[k], jobs[i].ID, fmt.Sprint("reason ", i))
		}
	}
	if got, want := ids(pending(t, s)), []uint64{jobs[1].ID}; !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v", got, want)
	}
}

// testDeadRetry: RetryDead makes the dead letter a pending job again, with
// a new ID above every other and no attempts.
func testDeadRetry(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 2)
	for range 2 {
		if err := s.RecordAttempt(ctx, jobs[0].ID, "failed"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Bury(ctx, jobs[0].ID, "gave up"); err != nil {
		t.Fatal(err)
	}
	later := enqueue(t, s, job("a", "later", msgDate()))

	retried, err := s.RetryDead(ctx, jobs[0].ID)
	if err != nil {
		t.Fatalf("RetryDead: %v", err)
	}
	if retried.ID <= later.ID {
		t.Errorf("retried job got ID %d, want one above %d", retried.ID, later.ID)
	}
	if retried.Attempts != 0 || retried.OAuthID != "a" || retried.MessageID != jobs[0].MessageID ||
		retried.Command != jobs[0].Command || retried.Args != jobs[0].Args || retried.RoomID != jobs[0].RoomID {
		t.Errorf("RetryDead = %+v, want job %+v with a new ID and attempts 0", retried, jobs[0])
	}
	p := pending(t, s)
	if got, want := ids(p), []uint64{jobs[1].ID, later.ID, retried.ID}; !slices.Equal(got, want) {
		t.Fatalf("Pending after RetryDead = %v, want %v", got, want)
	}
	if !sameJob(p[2], retried) {
		t.Errorf("pending retried job = %+v, want %+v as RetryDead returned it", p[2], retried)
	}
	if got := deadIDs(t, s); len(got) != 0 {
		t.Errorf("DeadLetters after RetryDead = %v, want none", got)
	}
	_, err = s.RetryDead(ctx, jobs[0].ID)
	wantNotFound(t, "second RetryDead", err)
}

// testDeadDrop: DropDead deletes one dead letter for good.
func testDeadDrop(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 3)
	for _, j := range jobs[:2] {
		if err := s.Bury(ctx, j.ID, "gone"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DropDead(ctx, jobs[0].ID); err != nil {
		t.Fatalf("DropDead: %v", err)
	}
	if got, want := deadIDs(t, s), []uint64{jobs[1].ID}; !slices.Equal(got, want) {
		t.Errorf("DeadLetters after DropDead = %v, want %v", got, want)
	}
	wantNotFound(t, "second DropDead", s.DropDead(ctx, jobs[0].ID))
	_, err := s.RetryDead(ctx, jobs[0].ID)
	wantNotFound(t, "RetryDead of a dropped dead letter", err)
	if got, want := ids(pending(t, s)), []uint64{jobs[2].ID}; !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want %v", got, want)
	}
}

// testDeadPrune: PruneDead deletes the dead letters buried before its
// cutoff, and only those. The cutoffs are the burial times the store
// reports, so its clock need not be the suite's.
func testDeadPrune(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	jobs := enqueueJobs(t, s, "a", "m", 2)
	if err := s.Bury(ctx, jobs[0].ID, "first"); err != nil {
		t.Fatal(err)
	}
	first := deadLetter(t, s, jobs[0].ID).At
	waitPast(t, first)
	if err := s.Bury(ctx, jobs[1].ID, "second"); err != nil {
		t.Fatal(err)
	}
	second := deadLetter(t, s, jobs[1].ID).At
	if !second.After(first) {
		t.Fatalf("second burial at %v, not after the first at %v", second, first)
	}

	if n, err := s.PruneDead(ctx, first); err != nil || n != 0 {
		t.Errorf("PruneDead(first burial) = %d, %v; want 0 (not buried before it)", n, err)
	}
	if n, err := s.PruneDead(ctx, second); err != nil || n != 1 {
		t.Errorf("PruneDead(second burial) = %d, %v; want 1", n, err)
	}
	if got, want := deadIDs(t, s), []uint64{jobs[1].ID}; !slices.Equal(got, want) {
		t.Errorf("DeadLetters after PruneDead = %v, want %v", got, want)
	}
	if n, err := s.PruneDead(ctx, second.Add(time.Second)); err != nil || n != 1 {
		t.Errorf("PruneDead(after both) = %d, %v; want 1", n, err)
	}
	if got := deadIDs(t, s); len(got) != 0 {
		t.Errorf("DeadLetters after the last PruneDead = %v, want none", got)
	}
}

// waitPast waits, a bounded while, until the clock has passed t0, so that
// a time taken next differs from it.
func waitPast(t *testing.T, t0 time.Time) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !time.Now().After(t0) {
		if time.Now().After(deadline) {
			t.Fatalf("the clock did not pass %v", t0)
		}
		time.Sleep(time.Millisecond)
	}
}

// testDeadAbsent: RetryDead and DropDead of an ID that is no dead letter
// (never assigned, or a pending job's) are NotFound and change nothing.
func testDeadAbsent(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	_, err := s.RetryDead(ctx, 12345)
	wantNotFound(t, "RetryDead on an empty store", err)
	wantNotFound(t, "DropDead on an empty store", s.DropDead(ctx, 12345))
	putInstallation(t, s, "a")
	j := enqueue(t, s, job("a", "m1", msgDate()))
	_, err = s.RetryDead(ctx, j.ID)
	wantNotFound(t, "RetryDead of a pending job", err)
	wantNotFound(t, "DropDead of a pending job", s.DropDead(ctx, j.ID))
	if got := pending(t, s); len(got) != 1 || !sameJob(got[0], j) {
		t.Errorf("Pending = %+v, want %+v untouched", got, j)
	}
}

// waitGroup waits for wg, failing t if that takes longer than waitLimit.
func waitGroup(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitLimit):
		t.Fatalf("goroutines still running after %v", waitLimit)
	}
}
