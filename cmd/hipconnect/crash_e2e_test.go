package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// Crash test load: senders post commands concurrently while the daemon is
// killed (SIGKILL) kills times, after a random 20-200 ms each time.
const (
	crashCommands = 300
	crashSenders  = 8
	crashRooms    = 12
	crashKills    = 5
	// crashWorkers is the dispatcher's default Workers: at most that many
	// deliveries are in flight when the daemon dies, so at most that many
	// replies per kill may reach HipChat twice (at-least-once).
	crashWorkers = 8
)

// sent is one command of the crash load.
type sent struct {
	room      int64
	msgID     string
	firstSend time.Time // the first webhook attempt began
	ack       time.Time // a webhook attempt got 2xx; zero if none did
	attempts  int
}

// webhookPoster posts room_message webhooks for one installation; it
// reports transport errors instead of failing the test, since the daemon
// dies under it.
type webhookPoster struct {
	client   *http.Client
	base     string
	oauthID  string
	jwt      func() string // a new JWT per webhook, as HipChat signs them
	path     string        // e.g. "/webhook/echo"
	textBase string        // the command before the message id, e.g. "/echo "
}

func (p webhookPoster) post(room int64, msgID string) (int, error) {
	body := hipchattest.RoomMessage(p.oauthID, room, msgID, p.textBase+msgID)
	req, err := http.NewRequest("POST", p.base+p.path, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+p.jwt())
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// checkStore opens the store of the (stopped) daemon d as the CLI does,
// runs bbolt's consistency check and the outbox counter check, and
// returns the number of jobs still pending.
func checkStore(t *testing.T, d *proc) int {
	t.Helper()
	cfg, err := config.Load(d.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := daemon.OpenStore(cfg, false, nil)
	if err != nil {
		t.Fatalf("open the store: %v", err)
	}
	defer func() {
		if err := db.Close(); err != nil {
			t.Errorf("close the store: %v", err)
		}
	}()
	if err := db.Check(); err != nil {
		t.Errorf("store check: %v", err)
	}
	jobs, err := db.Pending(context.Background(), 0)
	if err != nil {
		t.Errorf("pending jobs: %v", err)
	}
	return len(jobs)
}

// pendingJobs reads the outbox size from the running daemon's metrics.
func pendingJobs(t *testing.T, d *proc) int {
	t.Helper()
	n, err := strconv.Atoi(d.metric(t, `hipconnect_outbox_jobs{state="pending"}`))
	if err != nil {
		t.Fatalf("hipconnect_outbox_jobs: %v", err)
	}
	return n
}

// TestCrashSafety kills the daemon with SIGKILL at random moments under a
// load of webhooks and checks the outbox's promises: every acknowledged
// command is delivered, at most the in-flight ones of each kill twice, in
// acknowledgement order per room, and the store passes its consistency
// check after every kill.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	d, hc := setup(t)
	id, secret := install(t, d, hc, 0) // global: every room, no greeting
	poster := webhookPoster{
		client: &http.Client{Timeout: 5 * time.Second}, base: d.base, oauthID: id,
		jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/echo", textBase: "/echo ",
	}

	cmds := make([]sent, crashCommands)
	for i := range cmds {
		cmds[i] = sent{room: 1000 + int64(rng.IntN(crashRooms)), msgID: fmt.Sprintf("crash-%03d", i)}
	}
	start := time.Now()
	deadline := start.Add(30 * time.Second) // the load gives up after this
	var (
		next     atomic.Int64
		refused  atomic.Int64 // answers other than 2xx (the daemon starting or stopping)
		failures atomic.Int64 // transport errors (the daemon dead)
		wg       sync.WaitGroup
		mu       sync.Mutex // guards cmds' times
	)
	stop := make(chan struct{}) // closed when the test ends, however it ends
	defer wg.Wait()
	defer close(stop)
	pause := func(d time.Duration) bool {
		select {
		case <-stop:
			return false
		case <-time.After(d):
			return true
		}
	}
	for range crashSenders {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cmds) {
					return
				}
				c := &cmds[i]
				mu.Lock()
				c.firstSend = time.Now()
				mu.Unlock()
				// HipChat retries a webhook that got no 2xx; so does
				// this sender, with the same message id, until it does.
				for time.Now().Before(deadline) {
					code, err := poster.post(c.room, c.msgID)
					mu.Lock()
					c.attempts++
					if err == nil && code/100 == 2 {
						c.ack = time.Now()
					}
					mu.Unlock()
					if err == nil && code/100 == 2 {
						break
					}
					if err != nil {
						failures.Add(1)
					} else {
						refused.Add(1)
						if code/100 == 4 {
							t.Errorf("webhook %s = %d, want 2xx", c.msgID, code)
							return
						}
					}
					if !pause(10 * time.Millisecond) {
						return
					}
				}
				// Spread the load so that most kills hit it.
				if !pause(time.Duration(5+rand.IntN(20)) * time.Millisecond) {
					return
				}
			}
		})
	}

	// Kill, check the store, restart; the senders keep going throughout.
	// Requests a killed process wrote before it died may reach the fake's
	// handlers a little later: wait for those before restarting, so that
	// what the fake records before a restart came from the processes
	// before it, and what it records after, from those after.
	var restarted []time.Time // just before each restart
	for round := 1; round <= crashKills; round++ {
		time.Sleep(20*time.Millisecond + time.Duration(rng.Int64N(int64(180*time.Millisecond))))
		mu.Lock()
		acked := 0
		for _, c := range cmds {
			if !c.ack.IsZero() {
				acked++
			}
		}
		mu.Unlock()
		delivered := len(hc.Notifications())
		d.stop(syscall.SIGKILL)
		pending := checkStore(t, d)
		for n, quiet, until := -1, 0, time.Now().Add(time.Second); quiet < 2 && time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			if m := len(hc.Notifications()); m == n {
				quiet++
			} else {
				n, quiet = m, 0
			}
		}
		t.Logf("kill %d at %v: %d acknowledged, %d notifications, %d pending in the store",
			round, time.Since(start).Round(time.Millisecond), acked, delivered, pending)
		restarted = append(restarted, time.Now())
		d.start()
	}
	wg.Wait()
	loadDone := time.Since(start)

	// Every acknowledged command must arrive; then the outbox must empty.
	acked := map[string]*sent{}
	for i := range cmds {
		if !cmds[i].ack.IsZero() {
			acked[cmds[i].msgID] = &cmds[i]
		}
	}
	if len(acked) != len(cmds) {
		t.Errorf("%d of %d commands acknowledged within the deadline", len(acked), len(cmds))
	}
	var got []hipchattest.Notification
	for waitUntil := time.Now().Add(30 * time.Second); ; {
		got = hc.Notifications()
		seen := map[string]bool{}
		for _, n := range got {
			seen[n.Body.Message] = true
		}
		missing := 0
		for m := range acked {
			if !seen[m] {
				missing++
			}
		}
		if missing == 0 && pendingJobs(t, d) == 0 {
			break
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("%d acknowledged commands not delivered, %d jobs pending", missing, pendingJobs(t, d))
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.stop(syscall.SIGTERM)
	if pending := checkStore(t, d); pending != 0 {
		t.Errorf("%d jobs left in the outbox after every command was delivered", pending)
	}
	got = hc.Notifications() // final: the daemon is gone
	t.Logf("load done after %v, all delivered after %v", loadDone.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	// Duplicates: only across a kill, at most crashWorkers per kill.
	deliveries := map[string][]hipchattest.Notification{}
	firstIdx := map[string]int{}
	for i, n := range got {
		m := n.Body.Message
		if !isCrashCommand(m) {
			t.Errorf("unexpected notification %q", m)
			continue
		}
		if _, ok := firstIdx[m]; !ok {
			firstIdx[m] = i
		}
		deliveries[m] = append(deliveries[m], n)
	}
	perKill := make([]int, len(restarted))
	dups := 0
	for m, ns := range deliveries {
		for k := 1; k < len(ns); k++ {
			dups++
			if want := cmds[mustIndex(t, m)].room; ns[k].RoomID != want {
				t.Errorf("%s delivered to room %d, want %d", m, ns[k].RoomID, want)
			}
			// The kill that ended the process of the earlier delivery:
			// that delivery was still in flight (its job not completed).
			kill := -1
			for j, r := range restarted {
				if ns[k-1].At.Before(r) {
					kill = j
					break
				}
			}
			if kill < 0 || !restarted[kill].Before(ns[k].At) {
				t.Errorf("%s delivered twice (at %v and %v) with no kill in between",
					m, ns[k-1].At.Sub(start), ns[k].At.Sub(start))
				continue
			}
			perKill[kill]++
		}
	}
	for k, n := range perKill {
		if n > crashWorkers {
			t.Errorf("kill %d: %d replies delivered again, want at most %d (the deliveries in flight)", k+1, n, crashWorkers)
		}
	}
	if dups > crashKills*crashWorkers {
		t.Errorf("%d duplicate deliveries, want at most %d", dups, crashKills*crashWorkers)
	}

	// Order: a command acknowledged before another to the same room was
	// first sent is first delivered before it.
	pairs, retried := 0, 0
	for _, a := range acked {
		if a.attempts > 1 {
			retried++
		}
		for _, b := range acked {
			if a == b || a.room != b.room || !a.ack.Before(b.firstSend) {
				continue
			}
			pairs++
			ia, oka := firstIdx[a.msgID]
			ib, okb := firstIdx[b.msgID]
			if oka && okb && ia > ib {
				t.Errorf("room %d: %s (acknowledged first) delivered after %s", a.room, a.msgID, b.msgID)
			}
		}
	}
	t.Logf("%d commands over %d rooms, %d acknowledged, %d delivered (%d notifications); %d kills; "+
		"%d duplicates (per kill %v, bound %d per kill); %d commands needed webhook retries (%d attempts failed in transport, %d refused); %d ordered pairs checked",
		len(cmds), crashRooms, len(acked), len(firstIdx), len(got), len(restarted),
		dups, perKill, crashWorkers, retried, failures.Load(), refused.Load(), pairs)
}

func isCrashCommand(m string) bool {
	var n int
	_, err := fmt.Sscanf(m, "crash-%03d", &n)
	return err == nil
}

func mustIndex(t *testing.T, m string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(m, "crash-%03d", &n); err != nil {
		t.Fatalf("message %q is not a crash command", m)
	}
	return n
}
