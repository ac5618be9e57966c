package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// installation is one OAuth client the fake HipChat knows.
type installation struct {
	id, secret string
}

// firstRoom is the id of room 0; rooms are firstRoom, firstRoom+1, ...
const firstRoom = 1000

// plan says which installation and room each command goes to, and holds
// the JWT HipChat would sign for each (a new one per request, with its own
// jti, signed before the load starts so that signing costs the generator
// nothing while it runs). Commands go round-robin over the
// installations, then over the rooms: command k uses installation k mod I
// and room (k div I) mod R, so consecutive commands land on different
// installations and rooms, and HipChat's per-room and per-token limits
// (which the daemon's pacer enforces) are reached as late as possible.
type plan struct {
	command  string // echo or hascode
	installs []installation
	rooms    int
	n        int      // commands
	jwts     []string // by command k
}

// newPlan signs one JWT per command, valid for ttl, as HipChat does
// (PROTOCOL.md section 5): HS256 with the installation's oauthSecret, iss,
// sub, iat, exp, jti, context.room_id.
func newPlan(command string, installs []installation, rooms, n int, ttl time.Duration) (*plan, error) {
	p := &plan{command: command, installs: installs, rooms: rooms, n: n}
	p.jwts = make([]string, n)
	now := time.Now()
	for k := range n {
		inst, room := p.pair(k)
		tok, err := hipchat.SignJWT(inst.id, inst.secret, hipchat.Claims{Subject: "1661743", RoomID: room,
			UserTZ: "Europe/Berlin", IssuedAt: now, ExpiresAt: now.Add(ttl), ID: randomHex(8)})
		if err != nil {
			return nil, err
		}
		p.jwts[k] = tok
	}
	return p, nil
}

func (p *plan) pair(k int) (installation, int64) {
	i := k % len(p.installs)
	r := (k / len(p.installs)) % p.rooms
	return p.installs[i], int64(firstRoom + r)
}

// webhook returns the body and JWT of command k, whose message carries
// marker. The strings spliced in are hex, digits and ASCII letters: no
// JSON escaping is needed.
func (p *plan) webhook(buf []byte, k int, marker string) ([]byte, string) {
	inst, room := p.pair(k)
	rs := strconv.FormatInt(room, 10)
	b := append(buf[:0], `{"event":"room_message","item":{"message":{"date":"`...)
	// Sent now, as HipChat dates a message when it receives it.
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000000+00:00")
	b = append(b, `",`+
		`"from":{"id":1661743,"mention_name":"Blinky","name":"Blinky the Three Eyed Fish",`+
		`"links":{"self":"https://hipchat.example.com/v2/user/1661743"}},"id":"`...)
	b = append(b, marker...)
	b = append(b, `","mentions":[],"message":"/`...)
	b = append(b, p.command...)
	b = append(b, ' ')
	b = append(b, marker...)
	b = append(b, `","type":"message"},"room":{"id":`...)
	b = append(b, rs...)
	b = append(b, `,"name":"Room `...)
	b = append(b, rs...)
	b = append(b, `","links":{"self":"https://hipchat.example.com/v2/room/`...)
	b = append(b, rs...)
	b = append(b, `"}}},"oauth_client_id":"`...)
	b = append(b, inst.id...)
	b = append(b, `","webhook_id":578829}`...)
	return b, p.jwts[k%len(p.jwts)]
}

// budget returns the most API requests one installation's token makes and
// the most notifications one room gets, to compare with HipChat's limits
// (which the daemon paces itself to): a search also updates the room's
// glance, so it counts twice under the token.
func (p *plan) budget() (perToken, perRoom int) {
	i, pairs := len(p.installs), len(p.installs)*p.rooms
	perToken = (p.n + i - 1) / i
	if p.command == "hascode" {
		perToken *= 2
	}
	return perToken, (p.n + pairs - 1) / pairs
}

// recorder matches notifications to commands: command k's message carries
// prefix+k, and the recorder keeps the time it was sent and the time its
// notification arrived, both as offsets from t0 (monotonic clock).
type recorder struct {
	t0     time.Time
	prefix string
	sent   []atomic.Int64 // ns since t0; 0 = not sent
	acked  []atomic.Int64 // webhook round trip, ns
	recv   []atomic.Int64 // ns since t0; 0 = no notification
	owner  []atomic.Int32 // closed loop: the worker waiting for command k, +1
	wake   []chan struct{}

	notifiedN, duplicates, unmatched atomic.Int64
	last                             atomic.Int64 // latest recv
}

// storeMax raises a to v if v is larger.
func storeMax(a *atomic.Int64, v int64) {
	for l := a.Load(); v > l && !a.CompareAndSwap(l, v); l = a.Load() {
	}
}

func newRecorder(n int, nonce string, workers int) *recorder {
	r := &recorder{t0: time.Now(), prefix: "hl" + nonce + "x",
		sent: make([]atomic.Int64, n), acked: make([]atomic.Int64, n), recv: make([]atomic.Int64, n),
		owner: make([]atomic.Int32, n), wake: make([]chan struct{}, workers)}
	for i := range r.wake {
		r.wake[i] = make(chan struct{}, 1)
	}
	return r
}

func (r *recorder) marker(k int) string { return r.prefix + strconv.Itoa(k) }

// since is now as an offset from t0, never 0.
func (r *recorder) since(t time.Time) int64 { return max(int64(t.Sub(r.t0)), 1) }

// notified implements sink.
func (r *recorder) notified(msg string, at time.Time) {
	i := strings.Index(msg, r.prefix)
	if i < 0 {
		r.unmatched.Add(1) // a greeting, or a notification of another run
		return
	}
	digits := msg[i+len(r.prefix):]
	end := 0
	for end < len(digits) && digits[end] >= '0' && digits[end] <= '9' {
		end++
	}
	k, err := strconv.Atoi(digits[:end])
	if err != nil || k < 0 || k >= len(r.recv) {
		r.unmatched.Add(1)
		return
	}
	t := r.since(at)
	if !r.recv[k].CompareAndSwap(0, t) {
		r.duplicates.Add(1) // at-least-once delivery sent it twice
		return
	}
	r.notifiedN.Add(1)
	storeMax(&r.last, t)
	if w := r.owner[k].Load(); w > 0 {
		select {
		case r.wake[w-1] <- struct{}{}:
		default:
		}
	}
}

// loadSpec is how to drive one server.
type loadSpec struct {
	url         string      // webhook URL without the command: base + "/webhook/"
	tls         *tls.Config // for an https url; nil: the system's roots
	concurrency int         // closed loop: commands in flight
	rate        float64
	duration    time.Duration // no command is sent after this
	timeout     time.Duration // how long a command's notification is awaited; the run ends by duration + timeout
}

// loadResult is what one load run measured.
type loadResult struct {
	Sent       int            `json:"sent"`
	Accepted   int            `json:"accepted"` // webhooks answered 204, or 200 with the reply
	Notified   int            `json:"notified"`
	Missing    int            `json:"missing"` // accepted, no notification in time
	Duplicates int            `json:"duplicates"`
	Unmatched  int            `json:"unmatched"`
	Errors     map[string]int `json:"errors,omitempty"` // webhook failures by status or error
	// Seconds runs from the first webhook sent to the last notification
	// received; Throughput is Notified / Seconds.
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"commands_per_second"`
	SendRate   float64 `json:"send_rate"` // webhooks sent per second while sending
	Latency    stats   `json:"latency_ms"`
	Ack        stats   `json:"webhook_ack_ms"`

	start, end time.Time
}

// errorSet counts failures by kind.
type errorSet struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorSet) add(kind string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	e.m[kind]++
}

// webhookClient is the HTTP client HipChat's side uses toward the server:
// keep-alive connections, enough of them for every command in flight.
// Over https (tc, nil for the system's roots) it speaks HTTP/1.1 as over
// http: one request per connection at a time, a handshake per connection.
func webhookClient(conns int, tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

// driver sends one run's webhooks and counts what came of them.
type driver struct {
	p      *plan
	rec    *recorder
	spec   loadSpec
	client *http.Client
	url    string

	errs             errorSet
	sentN, accepted  atomic.Int64
	lastSend         atomic.Int64 // rec.since of the last send
	start, stopSends time.Time
}

// drive sends the plan's commands to spec.url and waits for their
// notifications, which the fake HipChat hands to rec: at spec.rate per
// second when it is set (open loop), else from spec.concurrency senders
// that each wait for their command's notification (closed loop).
func drive(ctx context.Context, p *plan, rec *recorder, spec loadSpec) loadResult {
	inflight := spec.concurrency
	if spec.rate > 0 {
		inflight = 2048
	}
	d := &driver{p: p, rec: rec, spec: spec, client: webhookClient(inflight, spec.tls), url: spec.url + p.command}
	defer d.client.CloseIdleConnections()
	d.start = time.Now()
	d.stopSends = d.start.Add(spec.duration)
	if spec.rate > 0 {
		d.openLoop(ctx, inflight)
	} else {
		d.closedLoop(ctx)
	}
	return d.result(time.Now())
}

// send posts command k's webhook (built in buf, returned for reuse) and
// reports whether it was acknowledged: 204, or 200 with the reply, which
// counts as its notification.
func (d *driver) send(ctx context.Context, k int, buf []byte) ([]byte, bool) {
	body, tok := d.p.webhook(buf, k, d.rec.marker(k))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, bytes.NewReader(body))
	if err != nil {
		d.errs.add("request: " + err.Error())
		return body, false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+tok)
	t := time.Now()
	d.rec.sent[k].Store(d.rec.since(t))
	d.sentN.Add(1)
	resp, err := d.client.Do(req)
	d.rec.acked[k].Store(int64(time.Since(t)))
	storeMax(&d.lastSend, d.rec.since(t))
	if err != nil {
		if ctx.Err() == nil {
			d.errs.add("transport: " + shortErr(err))
		}
		return body, false
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
	case http.StatusOK: // the reply in the response
		var n struct {
			Message string `json:"message"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&n); err != nil || n.Message == "" {
			d.errs.add("reply in the response: not a notification")
			return body, false
		}
		d.rec.notified(n.Message, time.Now())
	default:
		d.errs.add("status " + strconv.Itoa(resp.StatusCode))
		return body, false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	d.accepted.Add(1)
	return body, true
}

// openLoop sends command k at start + k/rate, at most inflight at once,
// until the plan or the sending time ends, then waits up to spec.timeout
// for the notifications still owed.
func (d *driver) openLoop(ctx context.Context, inflight int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, inflight)
	interval := time.Duration(float64(time.Second) / d.spec.rate)
loop:
	for k := 0; k < d.p.n; k++ {
		if wait := time.Until(d.start.Add(time.Duration(k) * interval)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				break loop
			}
		}
		if time.Now().After(d.stopSends) {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Go(func() {
			defer func() { <-sem }()
			_, _ = d.send(ctx, k, make([]byte, 0, 1024))
		})
	}
	wg.Wait()
	deadline := time.Now().Add(d.spec.timeout)
	for d.rec.notifiedN.Load() < d.accepted.Load() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
}

// closedLoop runs spec.concurrency senders, each sending the next command
// of the plan once its previous one was notified (or given up on).
func (d *driver) closedLoop(ctx context.Context) {
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := range d.spec.concurrency {
		wg.Go(func() {
			buf := make([]byte, 0, 1024)
			for {
				k := int(next.Add(1) - 1)
				if k >= d.p.n || ctx.Err() != nil || time.Now().After(d.stopSends) {
					return
				}
				d.rec.owner[k].Store(int32(w + 1))
				var ok bool
				if buf, ok = d.send(ctx, k, buf); ok && !d.awaitNotified(ctx, w, k) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// awaitNotified waits until command k (sent by worker w) was notified, for
// spec.timeout and never past the end of the run (duration + timeout),
// whatever the count. It reports false when ctx ended.
func (d *driver) awaitNotified(ctx context.Context, w, k int) bool {
	timer := time.NewTimer(min(d.spec.timeout, time.Until(d.stopSends.Add(d.spec.timeout))))
	defer timer.Stop()
	for d.rec.recv[k].Load() == 0 {
		select {
		case <-d.rec.wake[w]:
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// result sums up the run that ended at end.
func (d *driver) result(end time.Time) loadResult {
	rec := d.rec
	res := loadResult{Sent: int(d.sentN.Load()), Accepted: int(d.accepted.Load()), Notified: int(rec.notifiedN.Load()),
		Duplicates: int(rec.duplicates.Load()), Unmatched: int(rec.unmatched.Load()), Errors: d.errs.m, start: d.start, end: end}
	res.Missing = max(res.Accepted-res.Notified, 0)
	var lat, ack []time.Duration
	first := int64(-1)
	for k := range rec.sent {
		s := rec.sent[k].Load()
		if s == 0 {
			continue
		}
		if first < 0 || s < first {
			first = s
		}
		ack = append(ack, time.Duration(rec.acked[k].Load()))
		if r := rec.recv[k].Load(); r != 0 {
			lat = append(lat, time.Duration(r-s))
		}
	}
	res.Latency, res.Ack = summarize(lat), summarize(ack)
	if first >= 0 {
		if last := rec.last.Load(); last > first {
			res.Seconds = time.Duration(last - first).Seconds()
			res.Throughput = float64(res.Notified) / res.Seconds
			res.end = rec.t0.Add(time.Duration(last))
		}
		if ls := d.lastSend.Load(); ls > first && res.Sent > 1 {
			res.SendRate = float64(res.Sent-1) / time.Duration(ls-first).Seconds()
		}
	}
	return res
}

// shortErr keeps an error message to its last part (the URL is known).
func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// install installs every installation into the server at base through
// POST /installable, conc at a time, as HipChat does (PROTOCOL.md section
// 3): the daemon then reads the fake's capabilities and proves the
// credentials at its token endpoint. tc is the client's TLS configuration
// for an https base. It returns how long it took and the failures.
func install(ctx context.Context, base string, tc *tls.Config, hc *fakeHipChat, installs []installation, conc int) (time.Duration, map[string]int) {
	client := webhookClient(conc, tc)
	defer client.CloseIdleConnections()
	var errs errorSet
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(installs) || ctx.Err() != nil {
					return
				}
				body := fmt.Appendf(nil, `{"oauthId":%q,"oauthSecret":%q,"capabilitiesUrl":%q,"groupId":1}`,
					installs[i].id, installs[i].secret, hc.capabilitiesURL())
				resp, err := client.Post(base+"/installable", "application/json", bytes.NewReader(body))
				if err != nil {
					errs.add("transport: " + shortErr(err))
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs.add("status " + strconv.Itoa(resp.StatusCode))
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), errs.m
}
