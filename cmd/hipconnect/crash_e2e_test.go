package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// Crash test load: senders post commands concurrently, and a hot backup
// streams from the admin socket back to back, while the daemon is killed
// (SIGKILL) crashKills times, after a random 20-200 ms each time.
const (
	crashMaxCommands = 20000 // a bound: the load stops when the kills do
	crashSenders     = 8
	crashRooms       = 12
	crashKills       = 100
	// crashBudget bounds the kill rounds; a machine too slow for 100 of
	// them in it fails the test rather than run fewer.
	crashBudget = 3 * time.Minute
)

// sent is one command of the crash load.
type sent struct {
	room      int64
	msgID     string
	firstSend time.Time // the first webhook attempt began
	ack       time.Time // a webhook attempt got 2xx; zero if none did
	attempts  int
}

// acknowledged returns the commands of cmds a webhook attempt got 2xx
// for, by message id.
func acknowledged(cmds []sent) map[string]*sent {
	acked := map[string]*sent{}
	for i := range cmds {
		if !cmds[i].ack.IsZero() {
			acked[cmds[i].msgID] = &cmds[i]
		}
	}
	return acked
}

// waitDelivered waits up to within for every command of acked to reach hc
// and for pending (the jobs in the outbox) to be 0, and fails t if they do
// not.
func waitDelivered(t *testing.T, hc *hipchattest.Server, acked map[string]*sent, within time.Duration, pending func() int) {
	t.Helper()
	for waitUntil := time.Now().Add(within); ; {
		seen := map[string]bool{}
		for _, n := range hc.Notifications() {
			seen[n.Body.Message] = true
		}
		missing := 0
		for m := range acked {
			if !seen[m] {
				missing++
			}
		}
		left := pending()
		if missing == 0 && left == 0 {
			return
		}
		if time.Now().After(waitUntil) {
			t.Fatalf("%d acknowledged commands not delivered, %d jobs pending", missing, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
// returns the jobs still pending.
func checkStore(t *testing.T, d *proc) []addon.Job {
	t.Helper()
	cfg, err := config.Load(d.cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	db, err := openBolt(cfg)
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
	return jobs
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
// load of webhooks and hot backups, and checks the outbox's promises: every
// acknowledged command is delivered, at most the in-flight ones of each
// kill twice, in acknowledgement order per room, and the store passes its
// consistency check after every kill.
func TestCrashSafety(t *testing.T) {
	t.Parallel()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))

	d, hc := setup(t)
	id, secret := install(t, d, hc, 0) // global: every room, no greeting
	l := &crashLoad{
		poster: webhookPoster{client: &http.Client{Timeout: 5 * time.Second}, base: d.base, oauthID: id,
			jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/echo", textBase: "/echo "},
		cmds: make([]sent, crashMaxCommands), stop: make(chan struct{}), loadEnd: make(chan struct{}),
	}
	for i := range l.cmds {
		l.cmds[i] = sent{room: 1000 + int64(rng.IntN(crashRooms)), msgID: fmt.Sprintf("crash-%05d", i)}
	}
	start := time.Now()
	l.deadline = start.Add(crashBudget + 30*time.Second) // senders give up retrying after this
	defer l.wg.Wait()
	defer close(l.stop)
	for range crashSenders {
		l.wg.Go(func() { l.send(t) })
	}
	l.wg.Go(func() { l.backups(d) })

	restarted, stored, rounds := l.kill(t, d, hc, rng, start)
	close(l.loadEnd)
	l.wg.Wait()
	loadDone := time.Since(start)
	if rounds.n < crashKills {
		t.Errorf("%d kill rounds in %v, want %d", rounds.n, crashBudget, crashKills)
	}
	cmds := l.cmds[:min(int(l.next.Load()), len(l.cmds))]
	if len(cmds) == len(l.cmds) {
		t.Errorf("the load ran out of its %d commands before the kills ended", len(l.cmds))
	}

	// Every acknowledged command must arrive; then the outbox must empty.
	acked := acknowledged(cmds)
	if len(acked) != len(cmds) {
		t.Errorf("%d of %d commands acknowledged within the deadline", len(acked), len(cmds))
	}
	waitDelivered(t, hc, acked, 60*time.Second, func() int { return pendingJobs(t, d) })
	d.stop(syscall.SIGTERM)
	if pending := checkStore(t, d); len(pending) != 0 {
		t.Errorf("%d jobs left in the outbox after every command was delivered", len(pending))
	}
	got := hc.Notifications() // final: the daemon is gone
	t.Logf("load done after %v, all delivered after %v", loadDone.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	perKill, firstIdx := checkDuplicates(t, cmds, got, restarted, stored)
	pairs := checkOrder(t, acked, firstIdx)
	dups, maxDups, killsWithDups := 0, 0, 0
	for _, n := range perKill {
		dups += n
		maxDups = max(maxDups, n)
		if n > 0 {
			killsWithDups++
		}
	}
	retried := 0
	for _, a := range acked {
		if a.attempts > 1 {
			retried++
		}
	}
	t.Logf("%d kills (%d with webhooks in flight, %d during a hot backup; %d backups completed); store check clean after each: %v",
		rounds.n, rounds.duringCommit, rounds.duringBackup, l.backupsDone.Load(), !t.Failed())
	t.Logf("%d commands over %d rooms, %d acknowledged, %d delivered (%d notifications); "+
		"%d duplicates: %d kills had any, at most %d per kill, %.2f per kill; per kill %v",
		len(cmds), crashRooms, len(acked), len(firstIdx), len(got),
		dups, killsWithDups, maxDups, float64(dups)/float64(max(rounds.n, 1)), perKill)
	t.Logf("%d commands needed webhook retries (%d attempts failed in transport, %d refused); %d ordered pairs checked",
		retried, l.failures.Load(), l.refused.Load(), pairs)
}

// crashLoad is the load of TestCrashSafety: webhooks from several senders
// and back-to-back hot backups, which go on while the daemon is killed and
// restarted under them.
type crashLoad struct {
	poster   webhookPoster
	cmds     []sent
	deadline time.Time
	next     atomic.Int64 // the next command to send
	inFlight atomic.Int64 // webhooks sent and not yet answered
	backup   atomic.Bool  // a hot backup is streaming
	refused  atomic.Int64 // answers other than 2xx (the daemon starting or stopping)
	failures atomic.Int64 // transport errors (the daemon dead)
	mu       sync.Mutex   // guards cmds' times
	wg       sync.WaitGroup
	stop     chan struct{} // closed when the test ends, however it ends
	loadEnd  chan struct{} // closed after the last kill: no new commands

	backupsDone atomic.Int64
}

// pause waits d, or reports false when the test ends.
func (l *crashLoad) pause(d time.Duration) bool {
	select {
	case <-l.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// send posts commands until the kills end, each until it is acknowledged.
func (l *crashLoad) send(t *testing.T) {
	for {
		select {
		case <-l.loadEnd:
			return
		default:
		}
		i := int(l.next.Add(1) - 1)
		if i >= len(l.cmds) {
			return
		}
		c := &l.cmds[i]
		l.mu.Lock()
		c.firstSend = time.Now()
		l.mu.Unlock()
		// HipChat retries a webhook that got no 2xx; so does this sender,
		// with the same message id, until it does.
		for time.Now().Before(l.deadline) {
			l.inFlight.Add(1)
			code, err := l.poster.post(c.room, c.msgID)
			l.inFlight.Add(-1)
			l.mu.Lock()
			c.attempts++
			if err == nil && code/100 == 2 {
				c.ack = time.Now()
			}
			l.mu.Unlock()
			if err == nil && code/100 == 2 {
				break
			}
			if err != nil {
				l.failures.Add(1)
			} else {
				l.refused.Add(1)
				if code/100 == 4 {
					t.Errorf("webhook %s = %d, want 2xx", c.msgID, code)
					return
				}
			}
			if !l.pause(10 * time.Millisecond) {
				return
			}
		}
		// Spread the load so that most kills hit it.
		if !l.pause(time.Duration(20+rand.IntN(40)) * time.Millisecond) {
			return
		}
	}
}

// backups streams hot backups from d's admin socket back to back until the
// kills end; those the kill cuts short are expected.
func (l *crashLoad) backups(d *proc) {
	cfg, err := config.Load(d.cfgPath, nil)
	if err != nil {
		return
	}
	sock := daemon.AdminSocket(cfg)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	for {
		select {
		case <-l.loadEnd:
			return
		case <-l.stop:
			return
		default:
		}
		l.backup.Store(true)
		resp, err := client.Get("http://hipconnect/backup")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				l.backupsDone.Add(1)
			}
		}
		l.backup.Store(false)
		if !l.pause(5 * time.Millisecond) {
			return
		}
	}
}

// killRounds counts the kill rounds and what they hit.
type killRounds struct {
	n, duringCommit, duringBackup int
}

// kill kills, checks the store and restarts d crashKills times (within
// crashBudget); the load keeps going throughout. Requests a killed process
// wrote before it died may reach the fake's handlers a little later: wait
// until the fake has no connection open and no request in hand, and its
// record stays still, before restarting, so that what the fake records
// before a restart came from the processes before it, and what it records
// after, from those after. It returns the times just before each restart.
func (l *crashLoad) kill(t *testing.T, d *proc, hc *hipchattest.Server, rng *rand.Rand, start time.Time) ([]time.Time, []map[string]bool, killRounds) {
	var (
		restarted []time.Time
		stored    []map[string]bool // per kill: the message ids of the jobs still in the store
		r         killRounds
	)
	for r.n < crashKills && time.Since(start) < crashBudget {
		time.Sleep(20*time.Millisecond + time.Duration(rng.Int64N(int64(180*time.Millisecond))))
		delivered := len(hc.Notifications())
		inFlight, backup := l.inFlight.Load(), l.backup.Load()
		d.stop(syscall.SIGKILL)
		r.n++
		if inFlight > 0 {
			r.duringCommit++
		}
		if backup {
			r.duringBackup++
		}
		pending := checkStore(t, d)
		ids := map[string]bool{}
		for _, j := range pending {
			ids[j.MessageID] = true
		}
		stored = append(stored, ids)
		if !hc.WaitIdle(10 * time.Second) {
			t.Errorf("kill %d: the fake HipChat still busy with the killed process's requests after 10 s", r.n)
		}
		for n, quiet, until := -1, 0, time.Now().Add(time.Second); quiet < 2 && time.Now().Before(until); time.Sleep(20 * time.Millisecond) {
			if m := len(hc.Notifications()); m == n {
				quiet++
			} else {
				n, quiet = m, 0
			}
		}
		if r.n%10 == 0 {
			t.Logf("kill %d at %v: %d commands sent, %d notifications, %d pending in the store",
				r.n, time.Since(start).Round(time.Millisecond), l.next.Load(), delivered, len(pending))
		}
		restarted = append(restarted, time.Now())
		d.start()
	}
	return restarted, stored, r
}

// checkDuplicates checks that a reply came twice only across a kill that
// ended the process of its earlier delivery while its job was still in the
// store (stored, per kill: in flight, or delivered and its removal not yet
// committed), and returns the duplicates per kill and the index of each
// reply's first delivery in got.
func checkDuplicates(t *testing.T, cmds []sent, got []hipchattest.Notification, restarted []time.Time, stored []map[string]bool) ([]int, map[string]int) {
	t.Helper()
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
	for m, ns := range deliveries {
		for k := 1; k < len(ns); k++ {
			if want := cmds[mustIndex(t, m)].room; ns[k].RoomID != want {
				t.Errorf("%s delivered to room %d, want %d", m, ns[k].RoomID, want)
			}
			kill := -1
			for j, r := range restarted {
				if ns[k-1].At.Before(r) {
					kill = j
					break
				}
			}
			if kill < 0 || !restarted[kill].Before(ns[k].At) {
				t.Errorf("%s delivered twice (at %v and %v) with no kill in between", m, ns[k-1].At, ns[k].At)
				continue
			}
			if !stored[kill][m] {
				t.Errorf("%s delivered again after kill %d, but its job was no longer in the store then", m, kill+1)
			}
			perKill[kill]++
		}
	}
	return perKill, firstIdx
}

// checkOrder checks that a command acknowledged before another to the same
// room was first sent is first delivered before it, and returns how many
// such pairs there were.
func checkOrder(t *testing.T, acked map[string]*sent, firstIdx map[string]int) int {
	t.Helper()
	byRoom := map[int64][]*sent{}
	for _, a := range acked {
		byRoom[a.room] = append(byRoom[a.room], a)
	}
	pairs := 0
	for room, cs := range byRoom {
		for _, a := range cs {
			for _, b := range cs {
				if a == b || !a.ack.Before(b.firstSend) {
					continue
				}
				pairs++
				ia, oka := firstIdx[a.msgID]
				ib, okb := firstIdx[b.msgID]
				if oka && okb && ia > ib {
					t.Errorf("room %d: %s (acknowledged first) delivered after %s", room, a.msgID, b.msgID)
				}
			}
		}
	}
	return pairs
}

func isCrashCommand(m string) bool {
	var n int
	_, err := fmt.Sscanf(m, "crash-%05d", &n)
	return err == nil
}

func mustIndex(t *testing.T, m string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscanf(m, "crash-%05d", &n); err != nil {
		t.Fatalf("message %q is not a crash command", m)
	}
	return n
}
