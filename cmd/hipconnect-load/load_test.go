package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hipconnectBin is the daemon built once for these tests.
var hipconnectBin string

func TestMain(m *testing.M) {
	// The baseline server is this test binary started again (os.Executable).
	if os.Getenv(baselineEnv) == "1" {
		ctx, stop := signalContext()
		defer stop()
		if err := serveBaseline(ctx, os.Getenv); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "hipconnect-load-test")
	if err != nil {
		panic(err)
	}
	hipconnectBin = filepath.Join(dir, "hipconnect")
	out, err := exec.Command("go", "build", "-o", hipconnectBin, "github.com/hipconnect/hipconnect/cmd/hipconnect").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build hipconnect: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// runJSON runs the tool with -json and decodes its report.
func runJSON(t *testing.T, args ...string) *report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, append(args, "-json", "-dir", t.TempDir()), &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var r report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	return &r
}

// checkPhase checks what every complete run must show: commands sent,
// acknowledged and notified, posted of them through the fake HipChat.
func checkPhase(t *testing.T, p *phase, commands, posted int) {
	t.Helper()
	if p == nil {
		t.Fatal("phase missing from the report")
	}
	l := p.Load
	if l.Sent != commands || l.Accepted != commands || l.Notified != commands || l.Missing != 0 || len(l.Errors) != 0 {
		t.Errorf("%s: sent %d accepted %d notified %d missing %d errors %v, want all %d", p.Name,
			l.Sent, l.Accepted, l.Notified, l.Missing, l.Errors, commands)
	}
	if l.Latency.N != commands || !(l.Latency.P50 > 0 && l.Latency.P50 <= l.Latency.P90 &&
		l.Latency.P90 <= l.Latency.P99 && l.Latency.P99 <= l.Latency.Max) {
		t.Errorf("%s: latency %+v", p.Name, l.Latency)
	}
	if l.Throughput <= 0 || l.Seconds <= 0 {
		t.Errorf("%s: throughput %.1f over %.3f s", p.Name, l.Throughput, l.Seconds)
	}
	if p.ReadyMS <= 0 || p.RSSLoadMB <= 0 || p.HWMMB <= 0 || p.CPUPerCommandUS <= 0 {
		t.Errorf("%s: ready %.1f ms, RSS under load %.1f MB, VmHWM %.1f MB, CPU %.0f us/command: want all measured",
			p.Name, p.ReadyMS, p.RSSLoadMB, p.HWMMB, p.CPUPerCommandUS)
	}
	if got := p.Fake["notifications"]; got != posted {
		t.Errorf("%s: the fake HipChat accepted %d notifications, want %d", p.Name, got, posted)
	}
	if p.Fake["refused"] != 0 {
		t.Errorf("%s: the fake HipChat refused %d requests", p.Name, p.Fake["refused"])
	}
}

// TestClosedLoop runs a small bounded load against the real daemon and
// the baseline, as CI does: echo, 2 installations, 20 rooms.
func TestClosedLoop(t *testing.T) {
	const commands = 200
	r := runJSON(t, "-hipconnect", hipconnectBin, "-installs", "2", "-rooms", "20", "-commands", fmt.Sprint(commands),
		"-concurrency", "8", "-baseline", "-duration", "20s", "-timeout", "10s")
	checkPhase(t, r.Hipconnect, commands, commands)
	checkPhase(t, r.Baseline, commands, commands)
	h := r.Hipconnect
	if h.Installs != 2 || h.InstallsPerSecond <= 0 || len(h.InstallErrors) != 0 {
		t.Errorf("installs: %d at %.1f/s, errors %v", h.Installs, h.InstallsPerSecond, h.InstallErrors)
	}
	// Installing proves the credentials at the token endpoint; the
	// commands then use the stored tokens.
	if h.Fake["tokens"] != 0 || h.Fake["capabilities"] != 0 {
		t.Errorf("under load the daemon asked for %d tokens and %d capability documents, want none", h.Fake["tokens"], h.Fake["capabilities"])
	}
	if h.RSSIdleMB <= 0 || h.ShutdownMS <= 0 {
		t.Errorf("idle RSS %.1f MB, shutdown %.0f ms", h.RSSIdleMB, h.ShutdownMS)
	}
	for _, k := range []string{"throughput", "latency_p50", "latency_p99", "cpu_per_command", "rss_load", "ready"} {
		if r.Ratios[k] <= 0 {
			t.Errorf("ratio %s = %v, want > 0 (ratios %v)", k, r.Ratios[k], r.Ratios)
		}
	}
}

// TestReplyInResponse drives hipconnect and the baseline with replies in
// the webhook's response: every command is notified through its 200, none
// through the fake HipChat, which sees the glance updates only.
func TestReplyInResponse(t *testing.T) {
	const commands = 100
	r := runJSON(t, "-hipconnect", hipconnectBin, "-command", "hascode", "-reply", "response", "-installs", "2", "-rooms", "10",
		"-commands", fmt.Sprint(commands), "-concurrency", "4", "-baseline", "-duration", "20s", "-timeout", "10s")
	checkPhase(t, r.Hipconnect, commands, 0)
	checkPhase(t, r.Baseline, commands, 0)
	for _, p := range []*phase{r.Hipconnect, r.Baseline} {
		if p.Fake["searches"] != commands {
			t.Errorf("%s: %d searches, want %d", p.Name, p.Fake["searches"], commands)
		}
	}
}

// TestOpenLoopHascode runs the search command at a fixed rate, with a
// restart after the installs: every command makes one search and one
// glance update besides its notification.
func TestOpenLoopHascode(t *testing.T) {
	const commands = 100
	r := runJSON(t, "-hipconnect", hipconnectBin, "-command", "hascode", "-installs", "2", "-rooms", "10",
		"-commands", fmt.Sprint(commands), "-rate", "200/s", "-restart", "-duration", "20s", "-timeout", "10s")
	checkPhase(t, r.Hipconnect, commands, commands)
	h := r.Hipconnect
	if h.Fake["searches"] != commands || h.Fake["glances"] != commands {
		t.Errorf("searches %d, glances %d, want %d each", h.Fake["searches"], h.Fake["glances"], commands)
	}
	if h.ReadyAfterRestartMS <= 0 {
		t.Errorf("no startup time after the restart")
	}
	if r.Baseline != nil || r.Ratios != nil {
		t.Errorf("baseline ran without -baseline")
	}
	if r.Setup.Rate != 200 || r.Setup.Concurrency != 0 {
		t.Errorf("setup = %+v", r.Setup)
	}
}

// TestTLSFiles runs a small load against the daemon serving HTTPS with
// tls.mode files, and the baseline over HTTPS too, with a restart after the
// install: installs and webhooks go over TLS to a certificate from the
// tool's CA.
func TestTLSFiles(t *testing.T) {
	const commands = 50
	r := runJSON(t, "-hipconnect", hipconnectBin, "-tls", "files", "-installs", "1", "-rooms", "2",
		"-commands", fmt.Sprint(commands), "-concurrency", "4", "-restart", "-baseline", "-duration", "20s", "-timeout", "10s")
	if r.Setup.TLS != "files" {
		t.Errorf("setup.tls = %q, want files", r.Setup.TLS)
	}
	checkPhase(t, r.Hipconnect, commands, commands)
	checkPhase(t, r.Baseline, commands, commands)
	h := r.Hipconnect
	if h.Installs != 1 || len(h.InstallErrors) != 0 || h.ReadyAfterRestartMS <= 0 {
		t.Errorf("installs %d, errors %v, ready after restart %.1f ms", h.Installs, h.InstallErrors, h.ReadyAfterRestartMS)
	}
}

// TestServerFiles checks the certificate -tls files gives the daemon: the
// files are 0600 and the client configuration trusts it for 127.0.0.1.
func TestServerFiles(t *testing.T) {
	a, err := newAuthority()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := a.serverFiles(dir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{st.certFile, st.keyFile} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(f) != dir {
			t.Errorf("%s: %v, %v; want mode 0600 in %s", f, fi, err, dir)
		}
	}
	cert, err := tls.LoadX509KeyPair(st.certFile, st.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: st.client.RootCAs, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("the client does not trust the certificate for 127.0.0.1: %v", err)
	}
}

// TestTextReport checks the human-readable report names every figure.
func TestTextReport(t *testing.T) {
	var stdout bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, []string{"-hipconnect", hipconnectBin, "-installs", "1", "-rooms", "5", "-commands", "20",
		"-concurrency", "2", "-baseline", "-dir", t.TempDir()}, &stdout, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"startup to ready", "installs", "throughput", "p50", "p90", "p99", "max",
		"RSS", "CPU under load", "== baseline", "hipconnect / baseline:", "tls: off"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, stdout.String())
		}
	}
}

func TestParse(t *testing.T) {
	rows := []struct {
		name string
		args []string
	}{
		{"no server", []string{}},
		{"both servers", []string{"-hipconnect", "x", "-target", "http://127.0.0.1:1"}},
		{"rate and concurrency", []string{"-hipconnect", "x", "-rate", "10", "-concurrency", "2"}},
		{"bad rate", []string{"-hipconnect", "x", "-rate", "fast"}},
		{"bad command", []string{"-hipconnect", "x", "-command", "rm"}},
		{"no rooms", []string{"-hipconnect", "x", "-rooms", "0"}},
		{"fake off loopback", []string{"-hipconnect", "x", "-hipchat-addr", "10.0.0.1:0"}},
		{"bad env", []string{"-hipconnect", "x", "-env", "PATH=/tmp"}},
		{"bad tls", []string{"-hipconnect", "x", "-tls", "acme"}},
		{"tls with target", []string{"-target", "https://127.0.0.1:1", "-tls", "files"}},
		{"argument", []string{"-hipconnect", "x", "extra"}},
		{"bad reply", []string{"-hipconnect", "x", "-reply", "auto"}},
		{"cpu-pid without pid", []string{"-target", "http://127.0.0.1:1", "-cpu-pid", "5"}},
		{"cpu-pid not an id", []string{"-target", "http://127.0.0.1:1", "-pid", "1", "-cpu-pid", "x"}},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parse(tt.args, io.Discard); !errors.Is(err, errUsage) {
				t.Errorf("parse(%q) = %v, want a usage error", tt.args, err)
			}
		})
	}
	o, err := parse([]string{"-hipconnect", "x", "-rate", "250/s"}, io.Discard)
	if err != nil || o.rate != 250 || o.concurrency != 0 {
		t.Errorf("-rate 250/s: %+v, %v", o, err)
	}
	o, err = parse([]string{"-hipconnect", "x"}, io.Discard)
	if err != nil || o.concurrency != 32 || o.tls != "off" {
		t.Errorf("defaults: concurrency %d, tls %q, %v", o.concurrency, o.tls, err)
	}
}

func TestRecorder(t *testing.T) {
	r := newRecorder(3, "abc", 1)
	at := r.t0.Add(5 * time.Millisecond)
	r.notified("<b>3 articles for "+r.marker(2)+":</b>", at)
	r.notified(r.marker(2), at) // again: a duplicate
	r.notified("The Blog Search add-on has been installed in this room", at)
	r.notified(r.prefix+"7", at) // out of range
	r.notified("hlzzzx1", at)    // another run's
	if got := r.recv[2].Load(); got != int64(5*time.Millisecond) {
		t.Errorf("recv[2] = %d", got)
	}
	if r.notifiedN.Load() != 1 || r.duplicates.Load() != 1 || r.unmatched.Load() != 3 {
		t.Errorf("notified %d duplicates %d unmatched %d, want 1 1 3", r.notifiedN.Load(), r.duplicates.Load(), r.unmatched.Load())
	}
}

func TestPlan(t *testing.T) {
	installs := []installation{{"a", "sa"}, {"b", "sb"}}
	p, err := newPlan("echo", installs, 3, 10, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.jwts) != 10 || p.jwts[0] == p.jwts[6] {
		t.Errorf("%d JWTs for 10 commands, want one each", len(p.jwts))
	}
	seen := map[string]bool{}
	for k := range 6 {
		inst, room := p.pair(k)
		seen[fmt.Sprint(inst.id, room)] = true
	}
	if len(seen) != 6 {
		t.Errorf("the first 6 commands use %d distinct pairs, want 6", len(seen))
	}
	body, _ := p.webhook(nil, 4, "hlabcx4")
	var wh struct {
		Event string `json:"event"`
		Item  struct {
			Message struct{ ID, Message string } `json:"message"`
			Room    struct{ ID int64 }           `json:"room"`
		} `json:"item"`
		OAuthClientID string `json:"oauth_client_id"`
	}
	if err := json.Unmarshal(body, &wh); err != nil {
		t.Fatalf("webhook body: %v\n%s", err, body)
	}
	if wh.Event != "room_message" || wh.Item.Message.Message != "/echo hlabcx4" || wh.Item.Message.ID != "hlabcx4" ||
		wh.Item.Room.ID != firstRoom+2 || wh.OAuthClientID != "a" {
		t.Errorf("webhook = %+v", wh)
	}
	if perToken, perRoom := p.budget(); perToken != 5 || perRoom != 2 {
		t.Errorf("budget = %d, %d; want 5, 2", perToken, perRoom)
	}
}

func TestSummarize(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	s := summarize(d)
	if s.N != 100 || s.P50 != 50 || s.P90 != 90 || s.P99 != 99 || s.Max != 100 || s.Mean != 50.5 {
		t.Errorf("summarize = %+v", s)
	}
	if (summarize(nil) != stats{}) {
		t.Errorf("summarize(nil) not zero")
	}
}

// TestCPUOf checks -cpu-pid's counting: each process once, with its
// descendants.
func TestCPUOf(t *testing.T) {
	cpu := func(pids ...int) time.Duration { d, _ := cpuOf(pids); return d }
	for deadline := time.Now().Add(5 * time.Second); cpu(os.Getpid()) < 20*time.Millisecond && time.Now().Before(deadline); {
		_ = sha256.Sum256(make([]byte, 1<<16)) // spend some CPU
	}
	one := cpu(os.Getpid())
	again := cpu(os.Getpid(), os.Getpid(), 1<<30) // counted once; a pid that cannot exist counts nothing
	if one <= 0 || again < one || again > one+time.Second {
		t.Errorf("cpuOf(self) = %v, cpuOf(self, self, none) = %v; want about the same", one, again)
	}
	if parent := cpu(os.Getppid()); parent < again {
		t.Errorf("cpuOf(parent) = %v, less than this process's %v: its descendants are not counted", parent, again)
	}
	if below := readProcTree().below([]int{os.Getppid()}); !slices.Contains(below, os.Getpid()) || below[0] != os.Getppid() {
		t.Errorf("below(parent) = %v, want the parent first and this process (%d) among them", below, os.Getpid())
	}
}

// TestCADirReused checks -ca-dir: the CA is made once and read back after,
// so a running daemon's hipchat.ca_file stays valid across runs.
func TestCADirReused(t *testing.T) {
	dir := t.TempDir()
	a1, err := loadOrCreateAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	a2, err := loadOrCreateAuthority(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a1.ca.CertPEM, a2.ca.CertPEM) {
		t.Error("a second run made a new CA")
	}
	if fi, err := os.Stat(filepath.Join(dir, "ca-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca-key.pem: %v, %v; want mode 0600", fi, err)
	}
	if _, err := a2.leaf("127.0.0.2", "127.0.0.4"); err != nil {
		t.Errorf("leaf from the reloaded CA: %v", err)
	}
}
