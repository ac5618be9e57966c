package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	"github.com/hipconnect/hipconnect/internal/store"
)

// outageStep is what the fake answers one delivery attempt to a room; a
// 429 step also says how long the daemon must wait.
type outageStep struct {
	name  string
	fault func(now time.Time) (hipchattest.Fault, time.Time) // the answer, and no retry before the time returned
}

var (
	dropStep = outageStep{"dropped", func(time.Time) (hipchattest.Fault, time.Time) { return hipchattest.Drop(), time.Time{} }}
	downStep = outageStep{"503", func(time.Time) (hipchattest.Fault, time.Time) { return hipchattest.Unavailable(), time.Time{} }}
	// floodStep: Retry-After 2 s and X-FloodControl-Reset.
	floodStep = outageStep{"429 flood control", func(now time.Time) (hipchattest.Fault, time.Time) {
		reset := now.Add(2 * time.Second)
		return hipchattest.FloodControlled(2*time.Second, reset), now.Add(2 * time.Second)
	}}
	// resetStep: X-Ratelimit-Reset only, 2-3 s ahead (whole seconds).
	resetStep = outageStep{"429 rate limit, reset only", func(now time.Time) (hipchattest.Fault, time.Time) {
		reset := now.Add(3 * time.Second).Truncate(time.Second)
		return hipchattest.RateLimited(0, reset), reset
	}}
	// retryAfterStep: Retry-After 2 s only.
	retryAfterStep = outageStep{"429 Retry-After only", func(now time.Time) (hipchattest.Fault, time.Time) {
		return hipchattest.RateLimited(2*time.Second, time.Time{}), now.Add(2 * time.Second)
	}}
)

// outageScript answers the delivery attempts of each room in turn by its
// script, then lets them through: the outage as each room sees it. It
// remembers, per room, the earliest time a 429 allowed the next attempt.
type outageScript struct {
	mu        sync.Mutex
	steps     map[string][]outageStep // notification path -> script
	attempts  map[string]int
	notBefore map[string][]time.Time // per path, per attempt: zero or the 429's time
}

func (o *outageScript) fault(w http.ResponseWriter, r *http.Request) bool {
	o.mu.Lock()
	steps, ok := o.steps[r.URL.Path]
	n := o.attempts[r.URL.Path]
	o.attempts[r.URL.Path]++
	var f hipchattest.Fault
	if ok && n < len(steps) {
		var nb time.Time
		f, nb = steps[n].fault(time.Now())
		o.notBefore[r.URL.Path] = append(o.notBefore[r.URL.Path], nb)
	}
	o.mu.Unlock()
	return f != nil && f(w, r)
}

func roomPath(room int64) string { return fmt.Sprintf("%s%d/notification", hipchattest.PathRoom, room) }

// TestOutage takes HipChat away while commands keep coming: each room's
// first delivery attempts are dropped without an answer, answered 503,
// then 429 with rate-limit headers, and only then accepted. Every command
// acknowledged meanwhile must arrive afterwards, in order per room, with
// the retries backing off and no retry before a 429 said so. Then the
// fake enforces HipChat's real limits and the daemon must stay under them
// by itself.
func TestOutage(t *testing.T) {
	t.Parallel()
	d, hc := setup(t)
	id, secret := install(t, d, hc, 0) // global: every room, no greeting
	tok := hc.Signer(id, secret, 0, 10*time.Minute)
	command := func(room int64, msgID string) {
		t.Helper()
		if code, body := d.do("POST", "/webhook/echo", tok(), hipchattest.RoomMessage(id, room, msgID, "/echo "+msgID)); code != http.StatusNoContent {
			t.Fatalf("webhook %s = %d %s, want 204", msgID, code, body)
		}
	}

	scripts := map[int64][]outageStep{
		1: {dropStep, dropStep, downStep, floodStep},
		2: {dropStep, downStep, resetStep},
		3: {downStep, dropStep, retryAfterStep},
	}
	script := &outageScript{steps: map[string][]outageStep{}, attempts: map[string]int{}, notBefore: map[string][]time.Time{}}
	for room, steps := range scripts {
		script.steps[roomPath(room)] = steps
	}
	hc.SetFault(hipchattest.OnPath(hipchattest.PathRoom, script.fault))

	start := time.Now()
	const perRoom = 4
	for i := range perRoom {
		for room := range int64(3) {
			command(room+1, fmt.Sprintf("out-%d-%d", room+1, i))
		}
		time.Sleep(250 * time.Millisecond)
	}
	got := wait(t, hc, 3*perRoom)
	t.Logf("%d commands acknowledged during the outage, all delivered after %v", 3*perRoom, time.Since(start).Round(time.Millisecond))
	for room := range int64(3) {
		var msgs []string
		for _, n := range got {
			if n.RoomID == room+1 {
				msgs = append(msgs, n.Body.Message)
			}
		}
		want := fmt.Sprint([]string{fmt.Sprintf("out-%d-0", room+1), fmt.Sprintf("out-%d-1", room+1),
			fmt.Sprintf("out-%d-2", room+1), fmt.Sprintf("out-%d-3", room+1)})
		if fmt.Sprint(msgs) != want {
			t.Errorf("room %d got %v, want %v (each once, in order)", room+1, msgs, want)
		}
	}

	// The request log: per room, the scripted failures then success, with
	// backoff between failures and no retry before a 429's time.
	const slack = 500 * time.Millisecond // a delivery's own work between attempts
	for room, steps := range scripts {
		var reqs []hipchattest.Request
		for _, r := range hc.Requests() {
			if r.Path == roomPath(room) {
				reqs = append(reqs, r)
			}
		}
		if len(reqs) != len(steps)+perRoom {
			t.Errorf("room %d: %d requests, want %d failures then %d deliveries: %v", room, len(reqs), len(steps), perRoom, reqs)
			continue
		}
		var gaps []string
		prev := time.Duration(0)
		for k, step := range steps {
			wantStatus := map[string]int{"dropped": 0, "503": 503}[step.name]
			if strings.HasPrefix(step.name, "429") {
				wantStatus = 429
			}
			if reqs[k].Status != wantStatus {
				t.Errorf("room %d attempt %d: status %d, want %d (%s)", room, k+1, reqs[k].Status, wantStatus, step.name)
			}
			gap := reqs[k+1].At.Sub(reqs[k].At)
			gaps = append(gaps, fmt.Sprintf("%s then %v", step.name, gap.Round(time.Millisecond)))
			if nb := script.notBefore[roomPath(room)][k]; !nb.IsZero() {
				if reqs[k+1].At.Before(nb) {
					t.Errorf("room %d: retried %v before the 429 allowed", room, nb.Sub(reqs[k+1].At))
				}
				continue
			}
			// Backoff: 1 s doubling per attempt, up to 20% less.
			base := time.Second << k
			if gap < base*4/5 || gap > base+slack {
				t.Errorf("room %d: %v between attempts %d and %d, want %v to %v", room, gap, k+1, k+2, base*4/5, base)
			}
			if gap <= prev {
				t.Errorf("room %d: the gap after attempt %d (%v) did not grow (%v before)", room, k+1, gap, prev)
			}
			prev = gap
		}
		t.Logf("room %d: %s", room, strings.Join(gaps, ", "))
	}
	if got := d.metric(t, "hipconnect_hipchat_rate_limited_total"); got != "3" {
		t.Errorf("hipconnect_hipchat_rate_limited_total = %s, want 3", got)
	}

	// HipChat healed, and enforcing its documented limits: 35 commands to
	// one room. The first 30 go at once; the 31st must wait for the
	// minute to pass (here: no attempt at all for a while), not be sent
	// and refused. How it then goes out at the minute is
	// TestPacingUnderEnforcedLimits's part, on a fake clock.
	hc.SetFault(nil)
	before := len(hc.Requests())
	hc.SetLimits(hipchattest.HipChatLimits)
	const room, burst = 9, 35
	for i := range burst {
		command(room, fmt.Sprintf("pace-%02d", i))
	}
	inRoom := func() (msgs []string) {
		for _, n := range hc.Notifications() {
			if n.RoomID == room {
				msgs = append(msgs, n.Body.Message)
			}
		}
		return msgs
	}
	for deadline := time.Now().Add(15 * time.Second); len(inRoom()) < 30; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 30 notifications in room %d", len(inRoom()), room)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	msgs := inRoom()
	attempts, limited := 0, 0
	for _, r := range hc.Requests()[before:] {
		if r.Path == roomPath(room) {
			attempts++
		}
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	if len(msgs) != 30 || attempts != 30 || limited != 0 {
		t.Errorf("after 30 notifications to one room and 1.5 s: %d delivered, %d attempts, %d answered 429; want 30, 30, 0",
			len(msgs), attempts, limited)
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("pace-%02d", i); m != want {
			t.Errorf("room %d notification %d = %s, want %s", room, i, m, want)
			break
		}
	}
	if n := pendingJobs(t, d); n != burst-30 {
		t.Errorf("%d jobs pending, want %d waiting for the minute", n, burst-30)
	}
}

// TestPacingUnderEnforcedLimits runs the dispatcher against the fake
// HipChat enforcing HipChat's documented limits exactly, on a fake clock:
// the dispatcher, the real HipChat client and token cache, a real store,
// and the fake's own handler reached through its Transport, all inside a
// testing/synctest bubble (no network: a goroutine waiting on a socket
// would stop the bubble's clock). Minutes of pacing take well under a
// second. The daemon wires the same parts; TestOutage checks on the real
// binary that it holds back the 31st notification to a room.
func TestPacingUnderEnforcedLimits(t *testing.T) {
	t.Parallel()
	for _, slow := range []time.Duration{0, 3 * time.Second} {
		name := "30 per minute per room"
		if slow > 0 {
			name += ", first command slow"
		}
		t.Run(name, func(t *testing.T) { synctest.Test(t, func(t *testing.T) { testRoomPacing(t, slow) }) })
	}
	t.Run("500 per 5 minutes per token", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			const rooms, perRoom = 20, 26 // 520 requests; 26 per room stays under the room limit
			hc, start := runPacing(t, 6*time.Minute, nil, func(enqueue func(room int64, msg string)) {
				for i := range perRoom {
					for r := range int64(rooms) {
						enqueue(r+1, fmt.Sprintf("r%d-%02d", r+1, i))
					}
				}
			})
			got := hc.Notifications()
			if len(got) != rooms*perRoom {
				t.Fatalf("%d of %d delivered within 6 minutes", len(got), rooms*perRoom)
			}
			if d := got[500].At.Sub(got[0].At); d < 5*time.Minute || d > 5*time.Minute+time.Second {
				t.Errorf("the 501st went %v after the 1st, want 5 minutes (and no more than a second later)", d)
			}
			t.Logf("1st at +%v, 500th at +%v, 501st at +%v, last at +%v", got[0].At.Sub(start), got[499].At.Sub(start),
				got[500].At.Sub(start), got[len(got)-1].At.Sub(start))
		})
	})
}

// testRoomPacing sends 35 commands to one room; the first one's command
// takes slow to run (a search), as the first search after a quiet spell
// may: its notification reaches HipChat that much later than the
// dispatcher started it.
func testRoomPacing(t *testing.T, slow time.Duration) {
	const n = 35
	run := func(j addon.Job) {
		if j.Args == "m-00" {
			time.Sleep(slow)
		}
	}
	hc, start := runPacing(t, 2*time.Minute, run, func(enqueue func(room int64, msg string)) {
		for i := range n {
			enqueue(1, fmt.Sprintf("m-%02d", i))
		}
	})
	got := hc.Notifications()
	if len(got) != n {
		t.Fatalf("%d of %d delivered within 2 minutes", len(got), n)
	}
	for i, g := range got {
		if want := fmt.Sprintf("m-%02d", i); g.Body.Message != want {
			t.Fatalf("notification %d = %s, want %s", i, g.Body.Message, want)
		}
	}
	if d := got[30].At.Sub(got[0].At); d < time.Minute || d > time.Minute+time.Second {
		t.Errorf("the 31st went %v after the 1st, want a minute (and no more than a second later)", d)
	}
	t.Logf("1st at +%v, 30th at +%v, 31st at +%v, 35th at +%v", got[0].At.Sub(start), got[29].At.Sub(start),
		got[30].At.Sub(start), got[34].At.Sub(start))
}

// runPacing enqueues jobs for one installation, runs a dispatcher wired as
// the daemon wires it against an in-process fake enforcing HipChat's
// limits for d of the bubble's time, and checks that the fake answered
// no 429. It must run inside a synctest bubble.
func runPacing(t *testing.T, d time.Duration, run func(addon.Job), jobs func(enqueue func(room int64, msg string))) (*hipchattest.Server, time.Time) {
	ctx := context.Background()
	hc := hipchattest.New(t, hipchattest.Options{NoListen: true, Limits: hipchattest.HipChatLimits})
	db, err := store.Open(filepath.Join(t.TempDir(), "hipconnect.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Check(); err != nil {
			t.Error(err)
		}
		_ = db.Close()
	})
	client := &hipchat.Client{HTTP: hc.Client(), Allowed: func(string) bool { return true }}
	caps, err := client.Capabilities(ctx, hc.CapabilitiesURL())
	if err != nil {
		t.Fatal(err)
	}
	id, secret := hc.NewClient()
	inst := addon.Installation{OAuthID: id, OAuthSecret: secret, CapabilitiesURL: hc.CapabilitiesURL(), GroupID: 1,
		APIURL: caps.APIURL, TokenURL: caps.TokenURL, HipChatOrigin: caps.Origin}
	if err := db.PutInstallation(ctx, inst); err != nil {
		t.Fatal(err)
	}
	jobs(func(room int64, msg string) {
		if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: id, RoomID: room, MessageID: msg, Command: "echo", Args: msg}); err != nil {
			t.Fatal(err)
		}
	})

	tokens := hipchat.NewTokens(client, db, daemon.Scopes, time.Minute)
	dispatcher := delivery.New(delivery.Options{
		Store: db,
		Run: func(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
			if run != nil {
				run(j)
			}
			return addon.Notification{Message: j.Args, MessageFormat: "text"}, nil
		},
		Send: func(ctx context.Context, inst addon.Installation, roomID int64, n addon.Notification) error {
			return tokens.Do(ctx, inst, func(tok string) error { return client.SendNotification(ctx, inst, tok, roomID, n) })
		},
	})
	start := time.Now()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = dispatcher.Run(runCtx); close(done) }()
	dispatcher.Wake()
	time.Sleep(d) // the bubble's clock: instant once every goroutine waits
	cancel()
	<-done

	for _, r := range hc.Requests() {
		if r.Status == http.StatusTooManyRequests {
			t.Errorf("the fake answered 429 at +%v to %s", r.At.Sub(start), r.Path)
		}
	}
	return hc, start
}

// TestOutboxFull: while HipChat is down the outbox fills up; at
// storage.max_pending a webhook gets 503 and leaves nothing behind, so
// HipChat's retry of it later is a new command that runs once.
func TestOutboxFull(t *testing.T) {
	t.Parallel()
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	blogURL, _ := blog(t, "127.0.0.4:0")
	cfg := strings.Replace(fmt.Sprintf(e2eConfig, blogURL), "storage:\n", "storage:\n  max_pending: 3\n", 1)
	d := newDaemonWithCA(t, cfg, hc.CAPEM())
	hc.SetFault(hipchattest.OnPath(hipchattest.PathRoom, hipchattest.Unavailable()))
	id, secret := install(t, d, hc, 0)
	tok := hc.Signer(id, secret, 0, 10*time.Minute)
	webhook := func(msgID string) int {
		code, _ := d.do("POST", "/webhook/echo", tok(), hipchattest.RoomMessage(id, 1, msgID, "/echo "+msgID))
		return code
	}
	for i := 1; i <= 3; i++ {
		if code := webhook(fmt.Sprint("full-", i)); code != http.StatusNoContent {
			t.Fatalf("webhook %d = %d, want 204", i, code)
		}
	}
	if code := webhook("full-4"); code != http.StatusServiceUnavailable {
		t.Errorf("webhook with the outbox full = %d, want 503", code)
	}
	if code := webhook("full-2"); code != http.StatusNoContent {
		t.Errorf("a duplicate with the outbox full = %d, want 204 (already acknowledged)", code)
	}
	if n := pendingJobs(t, d); n != 3 {
		t.Errorf("%d jobs pending, want 3", n)
	}

	hc.SetFault(nil) // HipChat is back; the outbox drains
	wait(t, hc, 3)
	// A delivered job leaves the outbox once its removal is committed,
	// just after HipChat got its reply.
	for deadline := time.Now().Add(5 * time.Second); pendingJobs(t, d) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if code := webhook("full-4"); code != http.StatusNoContent {
		t.Errorf("the refused webhook again, with room in the outbox = %d, want 204", code)
	}
	wait(t, hc, 4)
	time.Sleep(200 * time.Millisecond) // anything extra would show by now
	got := hc.Notifications()
	var msgs []string
	for _, n := range got {
		msgs = append(msgs, n.Body.Message)
	}
	if want := "[full-1 full-2 full-3 full-4]"; fmt.Sprint(msgs) != want {
		t.Errorf("delivered %v, want %s", msgs, want)
	}
}

// TestPacingCountsGlanceUpdates: a search command costs two API requests
// under the installation's token, its reply and the glance update with the
// room's search count. 260 searches in a burst against a fake enforcing
// HipChat's 500 requests per 5 minutes per token: the daemon must stop at
// 500 by itself, not learn about the limit from 429s.
func TestPacingCountsGlanceUpdates(t *testing.T) {
	t.Parallel()
	d, hc := setup(t)
	id, secret := install(t, d, hc, 0)
	hc.SetLimits(hipchattest.HipChatLimits)
	poster := webhookPoster{client: &http.Client{Timeout: 5 * time.Second}, base: d.base, oauthID: id,
		jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/hascode", textBase: "/hascode "}
	const rooms, perRoom, senders = 13, 20, 8 // 20 per room: under the room limit
	var next atomic.Int64
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < rooms*perRoom; i = int(next.Add(1) - 1) {
				// "3": the blog answers three hits; the id keeps messages apart.
				if code, err := poster.post(int64(i%rooms+1), fmt.Sprintf("3 %03d", i)); err != nil || code != http.StatusNoContent {
					t.Errorf("webhook %d = %d %v, want 204", i, code, err)
					return
				}
			}
		})
	}
	wg.Wait()
	count := func() (api, limited int) {
		for _, r := range hc.Requests() {
			if strings.HasPrefix(r.Path, hipchattest.PathRoom) || strings.HasPrefix(r.Path, hipchattest.PathGlance) {
				api++
			}
			if r.Status == http.StatusTooManyRequests {
				limited++
			}
		}
		return api, limited
	}
	// The budget is 500 requests; then nothing more may go for a while.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if api, _ := count(); api >= 500 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("only %d API requests after 20 s", api)
		}
	}
	time.Sleep(time.Second)
	api, limited := count()
	t.Logf("%d searches: %d notifications, %d glance updates, %d API requests, %d answered 429",
		rooms*perRoom, len(hc.Notifications()), len(hc.GlanceUpdates()), api, limited)
	if limited != 0 || api != 500 {
		t.Errorf("%d API requests, %d answered 429; want exactly 500 (the budget) and none", api, limited)
	}
}

// TestRestartKeepsThePace: a restart in the middle of a paced burst (40
// replies for one room, 30 per minute allowed) sends no more than the room
// has left, so the fake HipChat, enforcing HipChat's limits, answers no
// 429: the pacer's windows are saved at shutdown and loaded at start.
func TestRestartKeepsThePace(t *testing.T) {
	t.Parallel()
	d, hc := setup(t)
	id, secret := install(t, d, hc, 0)
	hc.SetLimits(hipchattest.HipChatLimits)
	poster := webhookPoster{client: &http.Client{Timeout: 5 * time.Second}, base: d.base, oauthID: id,
		jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/echo", textBase: "/echo "}
	for i := range 40 {
		if code, err := poster.post(7, fmt.Sprintf("burst-%02d", i)); err != nil || code != http.StatusNoContent {
			t.Fatalf("webhook %d = %d %v, want 204", i, code, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := hc.WaitNotifications(ctx, 30); err != nil {
		t.Fatalf("first 30 replies: %v", err)
	}
	d.stop(syscall.SIGTERM)
	d.start()
	time.Sleep(3 * time.Second) // the restarted daemon would send at once if it forgot
	limited := 0
	for _, r := range hc.Requests() {
		if r.Status == http.StatusTooManyRequests {
			limited++
		}
	}
	if n := len(hc.Notifications()); limited != 0 || n != 30 {
		t.Errorf("after the restart: %d notifications, %d answered 429; want 30 (the room's minute is spent) and none", n, limited)
	}
}
