// Command hipconnect-load measures hipconnect under load. It plays HipChat
// Server and a search backend on loopback (HTTPS with its own CA, real
// HS256 JWTs, PROTOCOL.md), installs itself into hipconnect the way
// HipChat does, then sends a bounded number of room_message webhooks at a
// given concurrency (closed loop) or rate (open loop), and measures for
// each command the time from the webhook sent to the room notification
// received. It reports throughput, latency percentiles, errors, and the
// daemon's startup time, RSS and CPU from /proc. With -tls files the daemon
// serves its public listener over HTTPS (tls.mode: files) with a
// certificate from the tool's CA. With -baseline it drives
// a bare server doing the same HTTP exchanges the same way, and reports
// each figure as a ratio to it.
//
// It stops by itself: at most -commands commands, none sent after
// -duration, and each awaited at most -timeout. See docs/performance.md.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: hipconnect-load (-hipconnect BINARY | -target URL) [flags]

Starts (or drives) hipconnect, installs -installs installations of the
add-on from a fake HipChat on 127.0.0.2, then sends -commands room_message
webhooks spread over the installations and -rooms rooms each, and waits for
each command's room notification. Examples:

  hipconnect-load -hipconnect ./hipconnect -installs 100 -rooms 10 -commands 5000 -concurrency 64 -baseline
  hipconnect-load -hipconnect ./hipconnect -installs 100 -rooms 10 -commands 5000 -rate 300 -baseline
  hipconnect-load -hipconnect ./hipconnect -tls files -installs 10 -rooms 2 -commands 200 -concurrency 8 -restart
  hipconnect-load -target http://127.0.0.1:8080 -ops http://127.0.0.1:9464 -pid 1234 -ca-dir ./ca -search-addr 127.0.0.4:8443

flags:
`

// options are the parsed flags.
type options struct {
	hipconnect, target, ops string
	tls                     string // tlsOff or tlsFiles
	pid                     int
	caDir                   string
	hipchatAddr, searchAddr string
	installs, rooms         int
	commands                int
	concurrency             int
	rate                    float64
	duration, timeout       time.Duration
	command                 string
	baseline, json, restart bool
	installConcurrency      int
	profileDir              string
	profileTime             time.Duration
	dir                     string
	logLevel                string
	env                     []string
}

// The values of -tls: the tls.mode the started daemon is given.
const (
	tlsOff   = "off"
	tlsFiles = "files"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// signalContext ends on SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
}

func main() {
	ctx, stop := signalContext()
	defer stop()
	if os.Getenv(baselineEnv) == "1" {
		if err := serveBaseline(ctx, os.Getenv); err != nil {
			fmt.Fprintln(os.Stderr, "hipconnect-load:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "hipconnect-load:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("hipconnect-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	fs.StringVar(&o.hipconnect, "hipconnect", "", "start this hipconnect `binary` with a generated configuration (127.0.0.1, see -tls)")
	fs.StringVar(&o.target, "target", "", "drive an already running hipconnect at this base `URL` instead")
	fs.StringVar(&o.tls, "tls", tlsOff, "with -hipconnect: the daemon's tls.`mode`, off (HTTP) or files (HTTPS with a certificate for 127.0.0.1 from the tool's CA; the baseline too)")
	fs.StringVar(&o.ops, "ops", "", "with -target: its ops listener `URL`, for -profile-dir")
	fs.IntVar(&o.pid, "pid", 0, "with -target: its process `id`, for RSS and CPU from /proc")
	fs.StringVar(&o.caDir, "ca-dir", "", "keep the fakes' CA in `dir` (ca.pem is the target's hipchat.ca_file); default: a new CA per run")
	fs.StringVar(&o.hipchatAddr, "hipchat-addr", "127.0.0.2:0", "the fake HipChat listens here (must be on the daemon's allowlist)")
	fs.StringVar(&o.searchAddr, "search-addr", "127.0.0.4:0", "the fake search backend listens here (with -target: the port of its hascode search_url)")
	fs.IntVar(&o.installs, "installs", 10, "installations (global installs, each its own OAuth client and token)")
	fs.IntVar(&o.rooms, "rooms", 10, "rooms per installation the commands are spread over")
	fs.IntVar(&o.commands, "commands", 1000, "commands to send (the run's bound)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "closed loop: commands in flight, each awaited before the next (default 32 without -rate)")
	rate := fs.String("rate", "", "open loop: webhooks per second, `R` or R/s")
	fs.DurationVar(&o.duration, "duration", time.Minute, "send nothing after this long")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long a command's notification is awaited")
	fs.StringVar(&o.command, "command", "echo", "the slash command: echo (no backend) or hascode (search backend, history, glance)")
	fs.BoolVar(&o.baseline, "baseline", false, "also drive the bare baseline server the same way, and print ratios")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.restart, "restart", false, "restart hipconnect after the installs: startup time with them stored, and RSS without the install phase")
	fs.IntVar(&o.installConcurrency, "install-concurrency", 8, "installs in flight")
	fs.StringVar(&o.profileDir, "profile-dir", "", "write hipconnect's CPU profile under load, and its heap, allocs, mutex and block profiles after it, to `dir` (turns server.pprof on)")
	fs.DurationVar(&o.profileTime, "profile-seconds", 5*time.Second, "length of the CPU profile, from the start of the load")
	fs.StringVar(&o.dir, "dir", "", "work (configuration, store, logs) in `dir` and keep it; default a temporary directory, removed")
	fs.StringVar(&o.logLevel, "log-level", "info", "hipconnect's log.level")
	fs.Var((*multiFlag)(&o.env), "env", "`NAME=value` for hipconnect's environment: HIPCONNECT_* (e.g. HIPCONNECT_STORAGE__MAX_PENDING=5000) or GOGC, GOMEMLIMIT, GOMAXPROCS, GODEBUG (repeatable)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return o, err
	} else if err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if (o.hipconnect == "") == (o.target == "") {
		return o, fmt.Errorf("%w: give exactly one of -hipconnect and -target", errUsage)
	}
	switch {
	case o.tls != tlsOff && o.tls != tlsFiles:
		return o, fmt.Errorf("%w: -tls must be %s or %s", errUsage, tlsOff, tlsFiles)
	case o.tls == tlsFiles && o.target != "":
		return o, fmt.Errorf("%w: -tls files needs -hipconnect (with -target the URL's scheme says)", errUsage)
	}
	if *rate != "" {
		r, err := strconv.ParseFloat(strings.TrimSuffix(*rate, "/s"), 64)
		if err != nil || r <= 0 {
			return o, fmt.Errorf("%w: -rate %q is not a positive number", errUsage, *rate)
		}
		o.rate = r
	}
	switch {
	case o.rate > 0 && o.concurrency > 0:
		return o, fmt.Errorf("%w: give -concurrency or -rate, not both", errUsage)
	case o.rate == 0 && o.concurrency == 0:
		o.concurrency = 32
	}
	if o.command != "echo" && o.command != "hascode" {
		return o, fmt.Errorf("%w: -command must be echo or hascode", errUsage)
	}
	if o.installs < 1 || o.rooms < 1 || o.commands < 1 || o.concurrency < 0 || o.installConcurrency < 1 {
		return o, fmt.Errorf("%w: -installs, -rooms, -commands and -install-concurrency must be positive", errUsage)
	}
	if o.commands > 10_000_000 || o.installs > 1_000_000 || o.rooms > 100_000 {
		return o, fmt.Errorf("%w: at most 10,000,000 commands, 1,000,000 installations, 100,000 rooms", errUsage)
	}
	if o.duration <= 0 || o.timeout <= 0 {
		return o, fmt.Errorf("%w: -duration and -timeout must be positive", errUsage)
	}
	for _, addr := range []string{o.hipchatAddr, o.searchAddr} {
		if h, _, err := net.SplitHostPort(addr); err != nil || !isLoopback(h) {
			return o, fmt.Errorf("%w: %q: the fakes listen on loopback addresses only", errUsage, addr)
		}
	}
	for _, e := range o.env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || !(strings.HasPrefix(name, "HIPCONNECT_") || runtimeEnv[name]) {
			return o, fmt.Errorf("%w: -env %q: want HIPCONNECT_NAME=value or a Go runtime variable (GOGC, GOMEMLIMIT, GOMAXPROCS, GODEBUG)", errUsage, e)
		}
	}
	return o, nil
}

// runtimeEnv are the Go runtime's variables -env passes on too.
var runtimeEnv = map[string]bool{"GOGC": true, "GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// run is main without the process: the test calls it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h: the usage is printed
	} else if err != nil {
		return err
	}
	rep := &report{Setup: setup{Command: o.command, Commands: o.commands, Installs: o.installs, Rooms: o.rooms,
		Concurrency: o.concurrency, Rate: o.rate, Duration: o.duration.String(), CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), Kernel: kernel(), LoadBefore: loadavg(), Started: time.Now().UTC()}}

	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "hipconnect-load-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}

	var ca *authority
	if o.caDir != "" {
		ca, err = loadOrCreateAuthority(o.caDir)
	} else {
		ca, err = newAuthority()
	}
	if err != nil {
		return err
	}
	var st *serverTLS // -tls files: the started servers' certificate
	if o.hipconnect != "" {
		rep.Setup.TLS = o.tls
		if o.tls == tlsFiles {
			if st, err = ca.serverFiles(dir, "127.0.0.1"); err != nil {
				return err
			}
		}
	}
	caFile := filepath.Join(dir, "hipchat-ca.pem")
	if err := os.WriteFile(caFile, ca.ca.CertPEM, 0o600); err != nil {
		return err
	}
	hcHost, _, _ := net.SplitHostPort(o.hipchatAddr)
	searchHost, _, _ := net.SplitHostPort(o.searchAddr)
	leaf, err := ca.leaf(hcHost, searchHost)
	if err != nil {
		return err
	}
	hc, err := startFakeHipChat(o.hipchatAddr, leaf)
	if err != nil {
		return err
	}
	defer hc.close()
	search, err := startFakeSearch(o.searchAddr, leaf)
	if err != nil {
		return err
	}
	defer search.close()

	installs := make([]installation, o.installs)
	for i := range installs {
		installs[i] = hc.newClient()
	}
	// JWTs live at most an hour for the daemon (hipchat.DefaultMaxAge).
	ttl := min(max(o.duration+o.timeout+5*time.Minute, 10*time.Minute), 55*time.Minute)
	p, err := newPlan(o.command, installs, o.rooms, o.commands, ttl)
	if err != nil {
		return err
	}
	if perToken, perRoom := p.budget(); perToken > 500 || perRoom > 30 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("up to %d API requests per installation and %d notifications per room exceed "+
			"HipChat's limits (500 per token per 5 min, 30 per room per min) that hipconnect paces itself to: this run measures the pacer; "+
			"add -installs or -rooms", perToken, perRoom))
	}

	rep.Hipconnect, err = runHipconnect(ctx, o, dir, caFile, st, hc, search, p)
	if err != nil {
		return err
	}
	if o.baseline {
		rep.Baseline, err = runBaseline(ctx, o, dir, caFile, st, hc, search, p)
		if err != nil {
			return err
		}
		rep.Ratios = ratios(rep.Hipconnect, rep.Baseline)
	}
	rep.Setup.LoadAfter = loadavg()
	if la := strings.Fields(rep.Setup.LoadBefore); len(la) > 0 {
		if v, _ := strconv.ParseFloat(la[0], 64); v >= 1 {
			rep.Warnings = append(rep.Warnings, "the load average was "+la[0]+" before the run: other work shares the CPUs, figures are noisy")
		}
	}
	if o.json {
		if err := writeJSONReport(stdout, rep); err != nil {
			return err
		}
	} else {
		writeText(stdout, rep)
	}
	var failed []string
	for _, ph := range []*phase{rep.Hipconnect, rep.Baseline} {
		if ph != nil && (ph.Load.Missing > 0 || len(ph.Load.Errors) > 0 || ph.Load.Sent < o.commands || len(ph.InstallErrors) > 0) {
			failed = append(failed, fmt.Sprintf("%s: %d of %d commands notified", ph.Name, ph.Load.Notified, o.commands))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("incomplete run: %s", strings.Join(failed, "; "))
	}
	return nil
}

// daemonConfig is the configuration the tool gives hipconnect: the public
// listener on 127.0.0.1, its base URL http or https by the tls section,
// the ops listener (always plain HTTP), the fake HipChat's host allowed
// with the tool's CA, the hascode command on the fake search backend
// (whose host the daemon adds to its allowlist itself), and the echo
// command.
const daemonConfig = `# Written by hipconnect-load.
server:
  base_url: %[9]s://%[1]s
  listen: %[1]s
  ops_listen: %[2]s
  shutdown_grace: 5s
  pprof: %[3]t
tls:
%[10]s
storage:
  path: %[4]s
hipchat:
  allowed_hosts: [%[5]q]
  ca_file: %[6]s
log:
  level: %[7]s
addon:
  key: com.example.blogsearch
  name: Blog Search
commands:
  - name: hascode
    search_url: %[8]q
    max_results: 10
    show_all_url: "https://blog.example/tag/{term}"
  - name: echo
    kind: echo
`

// tlsSection is daemonConfig's tls section, and the scheme of the base URL
// that goes with it: files mode with st's certificate, or off for st nil.
func tlsSection(st *serverTLS) (section, scheme string) {
	if st == nil {
		return `  mode: "off"`, "http"
	}
	return fmt.Sprintf("  mode: files\n  cert_file: %q\n  key_file: %q", st.certFile, st.keyFile), "https"
}

// runHipconnect measures hipconnect: startup, installs, RSS at rest, then
// the load. With st (-tls files) the daemon it starts serves HTTPS with st's
// certificate, and installs and webhooks trust st.client's roots.
func runHipconnect(ctx context.Context, o options, dir, caFile string, st *serverTLS, hc *fakeHipChat, search *fakeSearch, p *plan) (*phase, error) {
	ph := &phase{Name: "hipconnect", Installs: len(p.installs)}
	base, ops, pid := strings.TrimSuffix(o.target, "/"), strings.TrimSuffix(o.ops, "/"), o.pid
	var clientTLS *tls.Config
	if st != nil {
		clientTLS = st.client
	}
	var d *child
	var start func() (*child, error)
	if o.hipconnect != "" {
		listen, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		opsAddr, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		hcHost, _, _ := net.SplitHostPort(o.hipchatAddr)
		section, scheme := tlsSection(st)
		cfg := fmt.Sprintf(daemonConfig, listen, opsAddr, o.profileDir != "", filepath.Join(dir, "hipconnect.db"),
			hcHost, caFile, o.logLevel, search.searchURL(), scheme, section)
		cfgPath := filepath.Join(dir, "hipconnect.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			return nil, err
		}
		// /readyz is on the ops listener, plain HTTP in every mode; in files
		// mode the daemon is ready only with its certificate loaded.
		base, ops = scheme+"://"+listen, "http://"+opsAddr
		ph.LogFile = filepath.Join(dir, "hipconnect.log")
		if o.dir == "" {
			ph.LogFile = "" // removed with the temporary directory
		}
		start = func() (*child, error) {
			cmd := exec.Command(o.hipconnect, "serve", "--config", cfgPath)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, o.env...)
			return startChild(ctx, "hipconnect", cmd, filepath.Join(dir, "hipconnect.log"), ops+"/readyz", nil, 30*time.Second)
		}
		var errStart error
		if d, errStart = start(); errStart != nil {
			return nil, errStart
		}
		defer func() {
			if d != nil {
				d.kill()
			}
		}()
		ph.ReadyMS, pid = ms(d.ready), d.pid()
	}
	ph.PID = pid
	if pid > 0 {
		if s, err := readStatus(pid); err == nil {
			ph.RSSReadyMB = mb(s.RSSKB)
		}
	}

	took, errs := install(ctx, base, clientTLS, hc, p.installs, o.installConcurrency)
	ph.InstallSeconds = round3(took.Seconds())
	ph.InstallsPerSecond = round3(float64(len(p.installs)) / took.Seconds())
	ph.InstallErrors = errs
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}

	if o.restart && d != nil {
		if _, err := d.stop(10 * time.Second); err != nil {
			return nil, err
		}
		var errStart error
		if d, errStart = start(); errStart != nil {
			return nil, errStart
		}
		ph.ReadyAfterRestartMS, pid = ms(d.ready), d.pid()
		ph.PID = pid
	}
	// Let the install phase's garbage go before taking the idle figure.
	time.Sleep(time.Second)
	if pid > 0 {
		if s, err := readStatus(pid); err == nil {
			ph.RSSIdleMB = mb(s.RSSKB)
		}
	}

	var prof *profiler
	if o.profileDir != "" && ops != "" {
		prof = startCPUProfile(ops, o.profileDir, o.profileTime)
	}
	ph.Load, ph.Fake = measure(ctx, ph, pid, hc, search, p, loadSpec{url: base + "/webhook/", tls: clientTLS,
		concurrency: o.concurrency, rate: o.rate, duration: o.duration, timeout: o.timeout})
	if prof != nil {
		if err := prof.finish(); err != nil {
			return nil, err
		}
	}
	if pid > 0 {
		if s, err := readStatus(pid); err == nil {
			ph.HWMMB = mb(s.HWMKB)
		}
	}
	if d != nil {
		took, err := d.stop(10 * time.Second)
		d = nil
		if err != nil {
			return nil, err
		}
		ph.ShutdownMS = ms(took)
	}
	return ph, nil
}

// runBaseline drives the baseline server with the same plan, over HTTPS
// with st's certificate if st is not nil.
func runBaseline(ctx context.Context, o options, dir, caFile string, st *serverTLS, hc *fakeHipChat, search *fakeSearch, p *plan) (*phase, error) {
	b, base, err := startBaseline(ctx, dir, caFile, st, hc, search)
	if err != nil {
		return nil, err
	}
	defer func() {
		if b != nil {
			b.kill()
		}
	}()
	ph := &phase{Name: "baseline", PID: b.pid(), ReadyMS: ms(b.ready)}
	if s, err := readStatus(b.pid()); err == nil {
		ph.RSSReadyMB, ph.RSSIdleMB = mb(s.RSSKB), mb(s.RSSKB)
	}
	spec := loadSpec{url: base + "/webhook/", concurrency: o.concurrency, rate: o.rate, duration: o.duration, timeout: o.timeout}
	if st != nil {
		spec.tls = st.client
	}
	ph.Load, ph.Fake = measure(ctx, ph, b.pid(), hc, search, p, spec)
	if s, err := readStatus(b.pid()); err == nil {
		ph.HWMMB = mb(s.HWMKB)
	}
	took, err := b.stop(10 * time.Second)
	b = nil
	if err != nil {
		return nil, err
	}
	ph.ShutdownMS = ms(took)
	return ph, nil
}

// measure runs the load against one server and fills in its CPU and RSS
// figures; it returns the load result and what the fakes saw meanwhile.
func measure(ctx context.Context, ph *phase, pid int, hc *fakeHipChat, search *fakeSearch, p *plan, spec loadSpec) (loadResult, map[string]int) {
	counters := func() map[string]int {
		return map[string]int{"capabilities": int(hc.capabilityRequests.Load()), "tokens": int(hc.tokenRequests.Load()),
			"notifications": int(hc.notifications.Load()), "glances": int(hc.glances.Load()), "refused": int(hc.refused.Load()),
			"searches": int(search.requests.Load())}
	}
	before := counters()
	rec := newRecorder(p.n, randomHex(3), max(spec.concurrency, 1))
	hc.setSink(rec)
	defer hc.setSink(nil)

	var samp *sampler
	var cpu0 procSample
	if pid > 0 {
		samp = startSampler(pid, 20*time.Millisecond)
		cpu0, _ = readProc(pid)
	}
	self0, _ := readProc(os.Getpid())
	t0 := time.Now()
	res := drive(ctx, p, rec, spec)
	wall := time.Since(t0)
	self1, _ := readProc(os.Getpid())
	ph.ToolCPUCores = round3((self1.CPU - self0.CPU).Seconds() / wall.Seconds())
	if samp != nil {
		cpu1, _ := readProc(pid)
		ph.RSSLoadMB = mb(samp.stop())
		cpu := cpu1.CPU - cpu0.CPU
		ph.CPUCores = round3(cpu.Seconds() / wall.Seconds())
		if res.Notified > 0 {
			ph.CPUPerCommandUS = round3(float64(cpu.Microseconds()) / float64(res.Notified))
		}
	}
	after := counters()
	for k, v := range before {
		after[k] -= v
	}
	return res, after
}

// profiler fetches a CPU profile from the ops listener while the load runs.
type profiler struct {
	ops, dir string
	done     chan error
}

func startCPUProfile(ops, dir string, d time.Duration) *profiler {
	p := &profiler{ops: ops, dir: dir, done: make(chan error, 1)}
	go func() {
		p.done <- fetch(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", ops, max(int(d.Seconds()), 1)),
			filepath.Join(dir, "cpu.pprof"), d+30*time.Second)
	}()
	return p
}

// finish waits for the CPU profile, then takes the heap, allocation, mutex
// and block profiles (the last two are empty unless the daemon samples
// them: runtime.SetMutexProfileFraction, SetBlockProfileRate).
func (p *profiler) finish() error {
	if err := <-p.done; err != nil {
		return err
	}
	for _, name := range []string{"heap", "allocs", "mutex", "block"} {
		if err := fetch(p.ops+"/debug/pprof/"+name, filepath.Join(p.dir, name+".pprof"), 30*time.Second); err != nil {
			return err
		}
	}
	return nil
}

func fetch(url, file string, timeout time.Duration) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: timeout}).Get(url)
	if err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s: status %d (is server.pprof on?)", url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func round3(v float64) float64 {
	if v != v || v > 1e15 { // NaN, Inf
		return 0
	}
	return float64(int64(v*1000+0.5)) / 1000
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return runtime.GOOS
	}
	return "linux " + strings.TrimSpace(string(b))
}
