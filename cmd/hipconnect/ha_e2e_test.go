package main

import (
	"context"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
	"github.com/hipconnect/hipconnect/internal/store"
	"github.com/hipconnect/hipconnect/internal/tlsmgr/pebbletest"
	"github.com/jackc/pgx/v5"
)

// haproxyBin is Debian's haproxy. Without it the test skips with the
// install command, or fails when CI is set.
func haproxyBin(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"haproxy", "/usr/sbin/haproxy"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("haproxy is not installed (CI is set: failing rather than skipping); apt-get install haproxy")
	}
	t.Skip("haproxy is not installed; install it with: apt-get install haproxy")
	return ""
}

// haproxyDefaults are the balancer's defaults in the tests: HTTP, short
// connect timeout, a request whose connection failed retried on another
// node.
const haproxyDefaults = `defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
`

// balancer starts haproxy in front of nodes (public address, ops address),
// as an operator would run it: round robin, health checks on /readyz of
// the ops listener, a request whose connection failed sent to another
// node. It returns the balancer's URL.
func balancer(t *testing.T, listen string, nodes [][2]string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, haproxyDefaults+`frontend hipconnect
  bind %s
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
`, listen)
	for i, n := range nodes {
		port := n[1][strings.LastIndexByte(n[1], ':')+1:]
		fmt.Fprintf(&b, "  server node%d %s check port %s inter 300ms fall 2 rise 2\n", i, n[0], port)
	}
	haproxy(t, b.String())
	url := "http://" + listen
	for deadline := time.Now().Add(15 * time.Second); ; {
		if resp, err := http.Get(url + "/atlassian-connect.json"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no node answers through haproxy")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// haproxy runs haproxy on cfg until the test ends; it has bound its
// frontends when haproxy returns (haproxy binds before it forks nothing:
// -db keeps it in the foreground and it exits on a bind failure).
func haproxy(t *testing.T, cfg string) {
	t.Helper()
	bin := haproxyBin(t)
	path := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := os.WriteFile(path, []byte("global\n  maxconn 2000\n"+cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	log := &syncBuffer{}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("haproxy log:\n%s", logTail(log.String(), 20))
		}
	})
	select {
	case <-exited:
		t.Fatalf("haproxy exited:\n%s", log.String())
	case <-time.After(300 * time.Millisecond):
	}
}

// clusterConfig is a node of a cluster on PostgreSQL behind the balancer
// at {{base}}: its own listeners, the shared database and key.
const clusterConfig = `
server:
  base_url: {{base}}
  listen: {{listen}}
  ops_listen: {{ops}}
  shutdown_grace: 2s
tls:
  mode: "off"
storage:
  backend: postgres
  path: {{dir}}/hipconnect.db
  postgres:
    dsn: "{{dsn}}"
` + echoNode

// echoNode is the rest of a test node's configuration: the fake
// HipChat's trust and allowlist, and /echo answered through the API.
const echoNode = `hipchat:
  allowed_hosts: ["127.0.0.2"]
  ca_file: {{dir}}/hipchat-ca.pem
log:
  level: info
addon:
  key: com.example.blogsearch
  name: Blog Search
commands:
  - name: echo
    kind: echo
    reply: api
`

// nodeDirs makes the directories of n nodes of one cluster, each holding
// the same secrets key (hipconnect.db.key, next to storage.path), as an
// operator copies it to every node.
func nodeDirs(t *testing.T, n int) []string {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "key")
	if _, err := store.LoadOrCreateKey(keyFile); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = t.TempDir()
		if err := os.WriteFile(filepath.Join(dirs[i], "hipconnect.db.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dirs
}

// cluster starts n hipconnect nodes on one new PostgreSQL database, with
// one key file, behind haproxy; it returns the nodes, the balancer (as a
// proc to send requests through) and the database's DSN.
func cluster(t *testing.T, hc *hipchattest.Server, n int) ([]*proc, *proc, string) {
	t.Helper()
	haproxyBin(t) // skip before starting anything
	dsn := pgtest.Start(t)
	lbListen := freePort(t, "127.0.0.1")
	dirs := nodeDirs(t, n)
	for _, dir := range dirs {
		if err := os.WriteFile(filepath.Join(dir, "hipchat-ca.pem"), hc.CAPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	nodes := make([]*proc, n)
	var addrs [][2]string
	for i := range nodes {
		listen, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
		yaml := strings.NewReplacer("{{base}}", "http://"+lbListen, "{{listen}}", listen, "{{ops}}", ops, "{{dsn}}", dsn).Replace(clusterConfig)
		nodes[i] = startDaemon(t, dirs[i], yaml, "http://"+listen, ops)
		addrs = append(addrs, [2]string{listen, ops})
	}
	lb := &proc{t: t, base: balancer(t, lbListen, addrs)}
	return nodes, lb, dsn
}

var nodeInfoRE = regexp.MustCompile(`hipconnect_cluster_node_info\{node="([^"]+)"\} 1`)

// nodeName is the name node d goes by in the database.
func nodeName(t *testing.T, d *proc) string {
	t.Helper()
	m := nodeInfoRE.FindStringSubmatch(d.metrics(t))
	if m == nil {
		t.Fatal("no hipconnect_cluster_node_info in the node's metrics")
	}
	return m[1]
}

// query runs sql on the cluster's database and returns its first column.
func query(t *testing.T, dsn, sql string, args ...any) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var v any
		err := r.Scan(&v)
		return fmt.Sprint(v), err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestClusterKillOneNode: three nodes on PostgreSQL behind haproxy, three
// installations made through the balancer, 300 commands over six rooms,
// and the node holding the most installations killed with SIGKILL a third
// of the way in. Every acknowledged command is delivered, in order per
// room; duplicates come only from the killed node's installations; no
// room gets more than HipChat's 30 notifications a minute.
func TestClusterKillOneNode(t *testing.T) {
	t.Parallel()
	const (
		installs     = 3
		roomsPerInst = 2
		perRoom      = 50 // more than a minute's flood budget: pacing matters
		commands     = installs * roomsPerInst * perRoom
		killAfter    = commands / 3
		senders      = 8
	)
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0", Limits: hipchattest.HipChatLimits})
	nodes, lb, dsn := cluster(t, hc, 3)

	posters := make([]webhookPoster, installs)
	oauthIDs := make([]string, installs)
	for i := range posters {
		id, secret := install(t, lb, hc, 0) // through the balancer
		oauthIDs[i] = id
		posters[i] = webhookPoster{client: &http.Client{Timeout: 10 * time.Second}, base: lb.base, oauthID: id,
			jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/echo", textBase: "/echo "}
	}
	roomOf := func(i int) (inst int, room int64) {
		inst = i % installs
		return inst, int64(1000 + 10*inst + (i/installs)%roomsPerInst)
	}
	instOfRoom := map[int64]string{}
	cmds := make([]sent, commands)
	for i := range cmds {
		inst, room := roomOf(i)
		cmds[i] = sent{room: room, msgID: fmt.Sprintf("ha-%04d", i)}
		instOfRoom[room] = oauthIDs[inst]
	}

	// Wait for the installations to be spread over the nodes.
	deadline := time.Now().Add(20 * time.Second)
	for {
		held := query(t, dsn, "SELECT node FROM leases WHERE expires > now()")
		if len(held) == installs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d installations held by a node after 20s", len(held), installs)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The victim: the node holding the most installations, chosen now so
	// that the kill lands where it is meant to.
	names := make([]string, len(nodes))
	victim, victimHeld := 0, map[string]bool{}
	for i, d := range nodes {
		names[i] = nodeName(t, d)
		if ids := query(t, dsn, "SELECT oauth_id FROM leases WHERE node = $1", names[i]); i == 0 || len(ids) > len(victimHeld) {
			victim, victimHeld = i, map[string]bool{}
			for _, id := range ids {
				victimHeld[id] = true
			}
		}
	}

	var (
		mu      sync.Mutex
		next    atomic.Int64
		acked   atomic.Int64
		failed  atomic.Int64 // transport errors and 5xx, retried
		wg      sync.WaitGroup
		stopAll = make(chan struct{})
	)
	defer close(stopAll)
	sendUntil := time.Now().Add(90 * time.Second)
	for range senders {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(cmds) {
					return
				}
				c := &cmds[i]
				inst, _ := roomOf(i)
				mu.Lock()
				c.firstSend = time.Now()
				mu.Unlock()
				for time.Now().Before(sendUntil) { // retried as HipChat retries, same message id
					code, err := posters[inst].post(c.room, c.msgID)
					mu.Lock()
					c.attempts++
					if err == nil && code/100 == 2 {
						c.ack = time.Now()
					}
					mu.Unlock()
					if err == nil && code/100 == 2 {
						acked.Add(1)
						break
					}
					if err == nil && code/100 == 4 {
						t.Errorf("webhook %s = %d, want 2xx", c.msgID, code)
						return
					}
					failed.Add(1)
					time.Sleep(20 * time.Millisecond)
				}
				select {
				case <-stopAll:
					return
				case <-time.After(time.Duration(10+rand.IntN(30)) * time.Millisecond):
				}
			}
		})
	}

	for acked.Load() < killAfter && time.Now().Before(sendUntil) {
		time.Sleep(5 * time.Millisecond)
	}
	killedAt := time.Now()
	nodes[victim].stop(syscall.SIGKILL)
	t.Logf("killed node %s holding %d installation(s) after %d acknowledged commands", names[victim], len(victimHeld), acked.Load())
	wg.Wait()

	ackedCmds := acknowledged(cmds)
	if len(ackedCmds) != commands {
		t.Errorf("%d of %d commands acknowledged", len(ackedCmds), commands)
	}

	// Everything acknowledged is delivered, and the outbox empties.
	waitDelivered(t, hc, ackedCmds, 150*time.Second, func() int {
		n, err := strconv.Atoi(query(t, dsn, "SELECT count(*) FROM jobs")[0])
		if err != nil {
			t.Fatal(err)
		}
		return n
	})
	got := hc.Notifications()
	allDone := time.Since(killedAt)

	firstIdx := map[string]int{}
	count := map[string]int{}
	times := map[int64][]time.Time{}
	for i, n := range got {
		m := n.Body.Message
		if _, ok := firstIdx[m]; !ok {
			firstIdx[m] = i
		}
		count[m]++
		times[n.RoomID] = append(times[n.RoomID], n.At)
	}
	dups := 0
	for m, c := range count {
		if c == 1 {
			continue
		}
		dups += c - 1
		if a := ackedCmds[m]; a != nil && !victimHeld[instOfRoom[a.room]] {
			t.Errorf("%s delivered %d times, but its installation was not the killed node's", m, c)
		}
	}
	pairs := checkOrder(t, ackedCmds, firstIdx)

	// No room faster than HipChat's flood control, and 429s only where the
	// killed node's pacing was taken over.
	for room, ts := range times {
		slices.SortFunc(ts, time.Time.Compare)
		for i := 30; i < len(ts); i++ {
			if ts[i].Sub(ts[i-30]) < time.Minute {
				t.Errorf("room %d: 31 notifications within %v", room, ts[i].Sub(ts[i-30]))
				break
			}
		}
	}
	limited, limitedElsewhere := 0, 0
	for _, r := range hc.Requests() {
		if r.Status != http.StatusTooManyRequests {
			continue
		}
		limited++
		var room int64
		if _, err := fmt.Sscanf(strings.TrimPrefix(r.Path, hipchattest.PathRoom), "%d/", &room); err == nil && !victimHeld[instOfRoom[room]] {
			limitedElsewhere++
		}
	}
	if limitedElsewhere > 0 {
		t.Errorf("%d requests answered 429 in rooms the killed node did not hold: the cluster went over HipChat's limits", limitedElsewhere)
	}
	var perNode []string
	for i, d := range nodes {
		if i != victim {
			perNode = append(perNode, fmt.Sprintf("%s delivered %s", names[i], d.metric(t, `hipconnect_deliveries_total{outcome="delivered"}`)))
		}
	}
	t.Logf("%d commands over %d rooms, %d acknowledged (%d retried sends), %d notifications, %d duplicates (all of the killed node's installations), %d ordered pairs checked; all delivered %v after the kill; %d answered 429 (all in the killed node's rooms); %s",
		commands, len(times), len(ackedCmds), failed.Load(), len(got), dups, pairs, allDone.Round(time.Millisecond), limited, strings.Join(perNode, ", "))
}

// TestClusterACMEOneOrder starts three nodes at once in acme mode against
// pebble, behind haproxy passing TLS and HTTP through (mode tcp) on the
// ports pebble validates: one node orders the certificate under the
// database's lock, the others wait and load it, whichever node a
// challenge reaches answers it from the shared storage, and all three
// serve the one certificate.
func TestClusterACMEOneOrder(t *testing.T) {
	t.Parallel()
	haproxyBin(t)
	addrs, err := net.DefaultResolver.LookupHost(context.Background(), "localhost")
	if err != nil || len(addrs) == 0 {
		t.Skipf("localhost does not resolve: %v", err)
	}
	ip := addrs[0]
	lbTLS, lbHTTP := freePort(t, ip), freePort(t, ip)
	pebble := pebbletest.Start(t, pebbletest.Options{HTTPPort: portNum(t, lbHTTP), TLSPort: portNum(t, lbTLS)})
	dsn := pgtest.Start(t)
	base := "https://localhost:" + portOf(t, lbTLS)

	const n = 3
	nodes := make([]*proc, n)
	var tlsServers, httpServers strings.Builder
	for i, dir := range nodeDirs(t, n) {
		listen, redirect, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
		fmt.Fprintf(&tlsServers, "  server node%d %s\n", i, listen)
		fmt.Fprintf(&httpServers, "  server node%d %s\n", i, redirect)
		yaml := strings.Replace(acmeConfig(base, listen, redirect, ops, pebble), "storage:\n", "storage:\n  backend: postgres\n  postgres:\n    dsn: \""+dsn+"\"\n", 1)
		nodes[i] = prepareDaemon(t, dir, yaml, base, ops)
	}
	haproxy(t, fmt.Sprintf(strings.Replace(haproxyDefaults, "mode http", "mode tcp", 1)+`frontend tls
  bind %s
  default_backend tls
frontend http
  bind %s
  default_backend http
backend tls
  balance roundrobin
%sbackend http
  balance roundrobin
%s`, lbTLS, lbHTTP, tlsServers.String(), httpServers.String()))

	// All three at once; ready means a node serves its certificate.
	errs := make(chan error, n)
	for _, d := range nodes {
		go func() { errs <- d.startReady() }()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := pebble.Orders(); got != 1 {
		t.Errorf("orders at pebble with three nodes started at once = %d, want 1", got)
	}
	var serial *big.Int
	for i := range nodes {
		// Through the balancer, round robin: each node in turn.
		r := mustFetch(t, httpsClient(pebble.Roots(), lbTLS), base+"/atlassian-connect.json", http.StatusOK)
		if serial == nil {
			serial = r.leaf.SerialNumber
		} else if r.leaf.SerialNumber.Cmp(serial) != 0 {
			t.Errorf("request %d served serial %x, want the one certificate %x", i, r.leaf.SerialNumber, serial)
		}
	}
	t.Logf("3 nodes started at once: %d order at pebble, one certificate (serial %x) served by every node", pebble.Orders(), serial)
}

// copyConfig is a self-signed daemon of TestStoreCopyToPostgres; %s is the
// storage section's extra keys.
const copyConfig = `
server:
  base_url: https://localhost:{{port}}
  listen: "{{listen}}"
  ops_listen: {{ops}}
  shutdown_grace: 2s
tls:
  mode: self-signed
storage:
  path: {{dir}}/hipconnect.db
%s` + echoNode

// TestStoreCopyToPostgres moves a bbolt host onto PostgreSQL as
// docs/operations.md says: a daemon on bbolt with an installation, a
// certificate and commands acknowledged while HipChat was out of reach is
// stopped, `hipconnect store copy` copies its store into an empty
// database, and the daemon started on the database serves the same
// installation (its JWTs verify) and certificate, and delivers the
// pending commands.
func TestStoreCopyToPostgres(t *testing.T) {
	t.Parallel()
	dsn := pgtest.Start(t)
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	listen, ops := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	mk := func(storage string) *proc {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "hipchat-ca.pem"), hc.CAPEM(), 0o600); err != nil {
			t.Fatal(err)
		}
		yaml := strings.NewReplacer("{{port}}", portOf(t, listen), "{{listen}}", listen, "{{ops}}", ops).Replace(fmt.Sprintf(copyConfig, storage))
		d := prepareDaemon(t, dir, yaml, "https://localhost:"+portOf(t, listen), ops)
		d.client = httpsClient(nil, listen)
		d.client.Transport.(*http.Transport).TLSClientConfig.InsecureSkipVerify = true // the serial is compared below
		return d
	}
	leafSerial := func(d *proc) string {
		r := mustFetch(t, d.client, d.base+"/atlassian-connect.json", http.StatusOK)
		return r.leaf.SerialNumber.String()
	}

	old := mk("")
	old.start()
	serial := leafSerial(old)
	id, secret := install(t, old, hc, 0)
	hc.BlockAPI(true)
	poster := webhookPoster{client: old.client, base: old.base, oauthID: id,
		jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/echo", textBase: "/echo "}
	const pending = 5
	for i := range pending {
		if code, err := poster.post(300+int64(i%2), fmt.Sprintf("moved-%d", i)); err != nil || code != http.StatusNoContent {
			t.Fatalf("webhook %d = %d, %v; want 204", i, code, err)
		}
	}
	old.stop(syscall.SIGTERM)

	pg := mk("  backend: postgres\n  postgres:\n    dsn: \"" + dsn + "\"\n")
	storeCopy := func() ([]byte, error) {
		return exec.Command(binary, "store", "copy", "--from-config", old.cfgPath, "--to-config", pg.cfgPath).CombinedOutput()
	}
	out, err := storeCopy()
	if err != nil {
		t.Fatalf("store copy: %v\n%s", err, out)
	}
	t.Logf("store copy: %s", strings.TrimSpace(string(out)))
	if !strings.Contains(string(out), "copied 1 installations, 1 tokens, 5 pending jobs") {
		t.Errorf("store copy reported %q, want 1 installation, its token and 5 pending jobs", out)
	}
	if out, err := storeCopy(); err == nil ||
		!strings.Contains(string(out), "not empty") {
		t.Errorf("a second copy into the filled database: %v\n%s; want a refusal naming it not empty", err, out)
	}

	hc.BlockAPI(false)
	pg.start()
	if got := leafSerial(pg); got != serial {
		t.Errorf("certificate serial %s after the move, want the copied %s", got, serial)
	}
	got := wait(t, hc, pending)
	seen := map[string]bool{}
	for _, n := range got {
		if n.OAuthID != id {
			t.Errorf("notification %q under %q, want the copied installation %q", n.Body.Message, n.OAuthID, id)
		}
		seen[n.Body.Message] = true
	}
	for i := range pending {
		if !seen[fmt.Sprintf("moved-%d", i)] {
			t.Errorf("moved-%d not delivered after the move", i)
		}
	}
	poster.base = pg.base
	if code, err := poster.post(300, "after-move"); err != nil || code != http.StatusNoContent {
		t.Errorf("webhook signed with the installation's secret after the move = %d, %v; want 204", code, err)
	}
	waitMessage(t, hc, "after-move")
}

// TestClusterDatabaseOutage stops PostgreSQL for 30 s under load, with two
// nodes behind haproxy. While it is down every node's /readyz is 503 and
// every webhook is answered 503 (by the node, or by haproxy with no node
// ready): nothing is acknowledged. Once it is back, every command
// acknowledged before the outage (held pending by a HipChat API that was
// out of reach) is delivered, and webhooks are acknowledged again. It does
// not run in parallel: it stops the test binary's one PostgreSQL.
func TestClusterDatabaseOutage(t *testing.T) {
	const outage = 30 * time.Second
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	nodes, lb, _ := cluster(t, hc, 2)
	id, secret := install(t, lb, hc, 0)
	poster := webhookPoster{client: &http.Client{Timeout: 5 * time.Second}, base: lb.base, oauthID: id,
		jwt: hc.Signer(id, secret, 0, 10*time.Minute), path: "/webhook/echo", textBase: "/echo "}
	direct := make([]webhookPoster, len(nodes)) // past the balancer, with its Host
	for i, d := range nodes {
		direct[i] = poster
		direct[i].client = httpsClient(nil, strings.TrimPrefix(d.base, "http://"))
	}

	hc.BlockAPI(true) // what is acknowledged now stays pending through the outage
	var before []string
	for i := range 20 {
		m := fmt.Sprintf("before-%02d", i)
		if code, err := poster.post(int64(400+i%3), m); err != nil || code != http.StatusNoContent {
			t.Fatalf("webhook %s = %d, %v; want 204", m, code, err)
		}
		before = append(before, m)
	}

	up := pgtest.Down(t)
	downAt := time.Now()
	var (
		sent, acked, refused, failed int
		ackedDuring                  []string
	)
	for i := 0; time.Since(downAt) < outage; i++ {
		p := poster
		if i%2 == 1 {
			p = direct[(i/2)%len(direct)]
		}
		m := fmt.Sprintf("during-%03d", i)
		code, err := p.post(int64(400+i%3), m)
		sent++
		switch {
		case err != nil:
			failed++
		case code/100 == 2:
			acked++
			ackedDuring = append(ackedDuring, m)
		case code == http.StatusServiceUnavailable:
			refused++
		default:
			t.Errorf("webhook %s during the outage = %d, want 503", m, code)
		}
		if i%10 == 0 {
			for _, d := range nodes {
				if d.ready() && time.Since(downAt) > 2*time.Second {
					t.Errorf("node %s ready %v into the database outage", d.ops, time.Since(downAt).Round(time.Millisecond))
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if acked > 0 {
		t.Errorf("%d webhooks acknowledged while the database was down (%v): nothing can have been committed", acked, ackedDuring)
	}
	up()
	hc.BlockAPI(false)
	backAt := time.Now()

	// Ready again, acknowledging again, and what was acknowledged before is delivered.
	for _, d := range nodes {
		if err := d.waitReady(30 * time.Second); err != nil {
			t.Fatalf("node %s not ready 30s after the database came back: %v", d.ops, err)
		}
	}
	ready := time.Since(backAt)
	for deadline := time.Now().Add(30 * time.Second); ; {
		code, err := poster.post(400, "after")
		if err == nil && code == http.StatusNoContent {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook after the outage = %d, %v; want 204", code, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, m := range append(before, "after") {
		waitMessage(t, hc, m)
	}
	t.Logf("database down %v: %d webhooks sent, %d answered 503, %d failed in transport, %d acknowledged; nodes ready %v after it came back; all %d commands acknowledged before it delivered after",
		outage, sent, refused, failed, acked, ready.Round(time.Millisecond), len(before))
}
