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
	cpuPIDs                 []int // -cpu-pid: more processes whose CPU the phase counts
	caDir                   string
	hipchatAddr, searchAddr string
	installs, rooms         int
	commands                int
	concurrency             int
	rate                    float64
	duration, timeout       time.Duration
	command                 string
	reply                   string // replyAPI or replyResponse: how replies reach the room
	baseline, json, restart bool
	installConcurrency      int
	profileDir              string
	profileTime             time.Duration
	dir                     string
	logLevel                string
	env                     []string
}

// The values of -reply: the started daemon's commands[].reply, and the
// way the baseline answers: through the REST API, or in the webhook's
// response (200 with the notification).
const (
	replyAPI      = "api"
	replyResponse = "response"
)

// The values of -tls: the tls.mode the started daemon is given.
const (
	tlsOff   = "off"
	tlsFiles = "files"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// pidsFlag is a repeatable flag of process ids.
type pidsFlag []int

func (p *pidsFlag) String() string { return fmt.Sprint(*p) }
func (p *pidsFlag) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a process id", v)
	}
	*p = append(*p, n)
	return nil
}

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

// parse reads the flags in args into options, printing the usage and flag
// errors to stderr. It returns flag.ErrHelp for -h, an error wrapping
// errUsage for any flag or combination it refuses, and otherwise options
// with every default applied (-concurrency 32 without -rate).
func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	var rate string
	fs := flag.NewFlagSet("hipconnect-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	o.define(fs, &rate)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return o, err
	} else if err != nil {
		return o, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	err := o.check(rate) // before o is returned: check sets o.rate and o.concurrency
	return o, err
}

// define registers o's flags on fs with their defaults; -rate, which
// check turns into o.rate, goes to rate as given.
func (o *options) define(fs *flag.FlagSet, rate *string) {
	fs.StringVar(&o.hipconnect, "hipconnect", "", "start this hipconnect `binary` with a generated configuration (127.0.0.1, see -tls)")
	fs.StringVar(&o.target, "target", "", "drive an already running hipconnect at this base `URL` instead")
	fs.StringVar(&o.tls, "tls", tlsOff, "with -hipconnect: the daemon's tls.`mode`, off (HTTP) or files (HTTPS with a certificate for 127.0.0.1 from the tool's CA; the baseline too)")
	fs.StringVar(&o.ops, "ops", "", "with -target: its ops listener `URL`, for -profile-dir")
	fs.IntVar(&o.pid, "pid", 0, "with -target: its process `id`, for RSS and CPU from /proc")
	fs.Var((*pidsFlag)(&o.cpuPIDs), "cpu-pid", "another process `id` whose CPU under load, with its descendants', is added to hipconnect's (another node of a cluster, PostgreSQL's postmaster; with -target it needs -pid; repeatable)")
	fs.StringVar(&o.caDir, "ca-dir", "", "keep the fakes' CA in `dir` (ca.pem is the target's hipchat.ca_file); default: a new CA per run")
	fs.StringVar(&o.hipchatAddr, "hipchat-addr", "127.0.0.2:0", "the fake HipChat listens here (must be on the daemon's allowlist)")
	fs.StringVar(&o.searchAddr, "search-addr", "127.0.0.4:0", "the fake search backend listens here (with -target: the port of its hascode search_url)")
	fs.IntVar(&o.installs, "installs", 10, "installations (global installs, each its own OAuth client and token)")
	fs.IntVar(&o.rooms, "rooms", 10, "rooms per installation the commands are spread over")
	fs.IntVar(&o.commands, "commands", 1000, "commands to send (the run's bound)")
	fs.IntVar(&o.concurrency, "concurrency", 0, "closed loop: commands in flight, each awaited before the next (default 32 without -rate)")
	fs.StringVar(rate, "rate", "", "open loop: webhooks per second, `R` or R/s")
	fs.DurationVar(&o.duration, "duration", time.Minute, "send nothing after this long")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "how long a command's notification is awaited")
	fs.StringVar(&o.command, "command", "echo", "the slash command: echo (no backend) or hascode (search backend, history, glance)")
	fs.StringVar(&o.reply, "reply", replyAPI, "how replies reach the room: api (REST notification after a 204) or response (200 with the reply), for hipconnect and the baseline alike")
	fs.BoolVar(&o.baseline, "baseline", false, "also drive the bare baseline server the same way, and print ratios")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.BoolVar(&o.restart, "restart", false, "restart hipconnect after the installs: startup time with them stored, and RSS without the install phase")
	fs.IntVar(&o.installConcurrency, "install-concurrency", 8, "installs in flight")
	fs.StringVar(&o.profileDir, "profile-dir", "", "write hipconnect's CPU profile under load, and its heap, allocs, mutex and block profiles after it, to `dir` (turns server.pprof on)")
	fs.DurationVar(&o.profileTime, "profile-seconds", 5*time.Second, "length of the CPU profile, from the start of the load")
	fs.StringVar(&o.dir, "dir", "", "work (configuration, store, logs) in `dir` and keep it; default a temporary directory, removed")
	fs.StringVar(&o.logLevel, "log-level", "info", "hipconnect's log.level")
	fs.Var((*multiFlag)(&o.env), "env", "`NAME=value` for hipconnect's environment: HIPCONNECT_* (e.g. HIPCONNECT_STORAGE__MAX_PENDING=5000) or GOGC, GOMEMLIMIT, GOMAXPROCS, GODEBUG (repeatable)")
}

// check validates the parsed flags and settles the load's shape from
// rate (the -rate flag as given). It returns the first problem found, as
// an error wrapping errUsage.
func (o *options) check(rate string) error {
	if err := o.checkServer(); err != nil {
		return err
	}
	if err := o.setLoop(rate); err != nil {
		return err
	}
	if err := o.checkBounds(); err != nil {
		return err
	}
	if err := o.checkFakeAddrs(); err != nil {
		return err
	}
	if o.reply != replyAPI && o.reply != replyResponse {
		return fmt.Errorf("%w: -reply must be api or response, got %q", errUsage, o.reply)
	}
	return o.checkEnv()
}

// checkServer requires exactly one of -hipconnect and -target, and a -tls
// mode that goes with it.
func (o *options) checkServer() error {
	if (o.hipconnect == "") == (o.target == "") {
		return fmt.Errorf("%w: give exactly one of -hipconnect and -target", errUsage)
	}
	switch {
	case o.tls != tlsOff && o.tls != tlsFiles:
		return fmt.Errorf("%w: -tls must be %s or %s", errUsage, tlsOff, tlsFiles)
	case o.tls == tlsFiles && o.target != "":
		return fmt.Errorf("%w: -tls files needs -hipconnect (with -target the URL's scheme says)", errUsage)
	case len(o.cpuPIDs) > 0 && o.target != "" && o.pid == 0:
		return fmt.Errorf("%w: -cpu-pid with -target needs -pid", errUsage)
	}
	return nil
}

// setLoop sets o.rate from rate ("R" or "R/s", empty for none), refuses
// -rate with -concurrency, and gives the closed loop its default
// concurrency of 32 when neither is set.
func (o *options) setLoop(rate string) error {
	if rate != "" {
		r, err := strconv.ParseFloat(strings.TrimSuffix(rate, "/s"), 64)
		if err != nil || r <= 0 {
			return fmt.Errorf("%w: -rate %q is not a positive number", errUsage, rate)
		}
		o.rate = r
	}
	switch {
	case o.rate > 0 && o.concurrency > 0:
		return fmt.Errorf("%w: give -concurrency or -rate, not both", errUsage)
	case o.rate == 0 && o.concurrency == 0:
		o.concurrency = 32
	}
	return nil
}

// checkBounds checks -command and that the counts and durations are
// positive and the counts within the tool's bounds.
func (o *options) checkBounds() error {
	if o.command != "echo" && o.command != "hascode" {
		return fmt.Errorf("%w: -command must be echo or hascode", errUsage)
	}
	if o.installs < 1 || o.rooms < 1 || o.commands < 1 || o.concurrency < 0 || o.installConcurrency < 1 {
		return fmt.Errorf("%w: -installs, -rooms, -commands and -install-concurrency must be positive", errUsage)
	}
	if o.commands > 10_000_000 || o.installs > 1_000_000 || o.rooms > 100_000 {
		return fmt.Errorf("%w: at most 10,000,000 commands, 1,000,000 installations, 100,000 rooms", errUsage)
	}
	if o.duration <= 0 || o.timeout <= 0 {
		return fmt.Errorf("%w: -duration and -timeout must be positive", errUsage)
	}
	return nil
}

// checkFakeAddrs requires the fakes' listen addresses to be host:port on
// a loopback IP.
func (o *options) checkFakeAddrs() error {
	for _, addr := range []string{o.hipchatAddr, o.searchAddr} {
		if h, _, err := net.SplitHostPort(addr); err != nil || !isLoopback(h) {
			return fmt.Errorf("%w: %q: the fakes listen on loopback addresses only", errUsage, addr)
		}
	}
	return nil
}

// checkEnv requires every -env to be NAME=value with a HIPCONNECT_ name or
// one of runtimeEnv.
func (o *options) checkEnv() error {
	for _, e := range o.env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || !(strings.HasPrefix(name, "HIPCONNECT_") || runtimeEnv[name]) {
			return fmt.Errorf("%w: -env %q: want HIPCONNECT_NAME=value or a Go runtime variable (GOGC, GOMEMLIMIT, GOMAXPROCS, GODEBUG)", errUsage, e)
		}
	}
	return nil
}

// runtimeEnv are the Go runtime's variables -env passes on too.
var runtimeEnv = map[string]bool{"GOGC": true, "GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// run is main without the process: the test calls it. It returns nil for
// -h (the usage is printed), an error wrapping errUsage for bad flags, the
// first failure setting up or driving a server, or, once the report is
// written to stdout, an "incomplete run" error if a phase fell short of
// -commands notified.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // -h: the usage is printed
	} else if err != nil {
		return err
	}
	rep := newReport(o)
	dir, cleanup, err := workDir(o.dir)
	if err != nil {
		return err
	}
	defer cleanup()
	r, err := newRig(o, dir)
	if err != nil {
		return err
	}
	defer r.close()
	rep.Warnings = append(rep.Warnings, r.p.budgetWarnings()...)
	if err := r.runPhases(ctx, rep); err != nil {
		return err
	}
	rep.Setup.LoadAfter = loadavg()
	rep.Warnings = append(rep.Warnings, loadWarnings(rep.Setup.LoadBefore)...)
	if err := writeReport(stdout, rep, o.json); err != nil {
		return err
	}
	return incomplete(rep, o.commands)
}

// newReport starts the report of a run with options o: its setup and the
// machine's figures before the run.
func newReport(o options) *report {
	rep := &report{Setup: setup{Command: o.command, Commands: o.commands, Installs: o.installs, Rooms: o.rooms,
		Concurrency: o.concurrency, Rate: o.rate, Duration: o.duration.String(), CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), Kernel: kernel(), LoadBefore: loadavg(), Started: time.Now().UTC()}}
	if o.hipconnect != "" {
		rep.Setup.TLS = o.tls
	}
	return rep
}

// workDir returns the run's work directory and what to call when the run
// is over: dir itself (created 0700 if missing) and a no-op, or, for dir
// empty, a new temporary directory and the removal of it.
func workDir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, os.MkdirAll(dir, 0o700)
	}
	tmp, err := os.MkdirTemp("", "hipconnect-load-")
	if err != nil {
		return "", nil, err
	}
	return tmp, func() { _ = os.RemoveAll(tmp) }, nil
}

// rig is what a run sets up once and drives each server with: its
// options and work directory, the fakes' CA certificate file (the
// daemon's hipchat.ca_file), the started servers' certificate (-tls files;
// nil otherwise), the running fakes, and the plan.
type rig struct {
	o      options
	dir    string
	caFile string
	st     *serverTLS
	hc     *fakeHipChat
	search *fakeSearch
	p      *plan
}

// newRig sets a run up in dir: the CA (kept in -ca-dir if given), the
// certificate for -tls files, the CA file, both fakes, and the plan over
// -installs new OAuth clients of the fake HipChat. On success the caller
// must close the rig; on failure nothing is left running.
func newRig(o options, dir string) (*rig, error) {
	ca, err := openAuthority(o.caDir)
	if err != nil {
		return nil, err
	}
	r := &rig{o: o, dir: dir, caFile: filepath.Join(dir, "hipchat-ca.pem")}
	if o.hipconnect != "" && o.tls == tlsFiles {
		if r.st, err = ca.serverFiles(dir, "127.0.0.1"); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(r.caFile, ca.ca.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if r.hc, r.search, err = startFakes(o, ca); err != nil {
		return nil, err
	}
	if r.p, err = newRunPlan(o, r.hc); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// openAuthority loads or creates the CA kept in dir, or, for dir empty,
// makes a new one for this run only.
func openAuthority(dir string) (*authority, error) {
	if dir != "" {
		return loadOrCreateAuthority(dir)
	}
	return newAuthority()
}

// startFakes starts the fake HipChat and the fake search backend on
// -hipchat-addr and -search-addr, both serving one leaf certificate from
// ca for their hosts. On failure nothing is left running.
func startFakes(o options, ca *authority) (*fakeHipChat, *fakeSearch, error) {
	hcHost, _, _ := net.SplitHostPort(o.hipchatAddr)
	searchHost, _, _ := net.SplitHostPort(o.searchAddr)
	leaf, err := ca.leaf(hcHost, searchHost)
	if err != nil {
		return nil, nil, err
	}
	hc, err := startFakeHipChat(o.hipchatAddr, leaf)
	if err != nil {
		return nil, nil, err
	}
	search, err := startFakeSearch(o.searchAddr, leaf)
	if err != nil {
		hc.close()
		return nil, nil, err
	}
	return hc, search, nil
}

// newRunPlan makes -installs new OAuth clients of hc and the plan of
// -commands commands over them and -rooms rooms each, its JWTs valid for
// the whole run but within the hour the daemon accepts
// (hipchat.DefaultMaxAge).
func newRunPlan(o options, hc *fakeHipChat) (*plan, error) {
	installs := make([]installation, o.installs)
	for i := range installs {
		installs[i] = hc.newClient()
	}
	ttl := min(max(o.duration+o.timeout+5*time.Minute, 10*time.Minute), 55*time.Minute)
	return newPlan(o.command, installs, o.rooms, o.commands, ttl)
}

// close stops the fakes.
func (r *rig) close() {
	r.search.close()
	r.hc.close()
}

// runPhases measures hipconnect, then, with -baseline, the baseline and
// the ratios between the two, into rep.
func (r *rig) runPhases(ctx context.Context, rep *report) error {
	var err error
	if rep.Hipconnect, err = r.runHipconnect(ctx); err != nil {
		return err
	}
	if !r.o.baseline {
		return nil
	}
	if rep.Baseline, err = r.runBaseline(ctx); err != nil {
		return err
	}
	rep.Ratios = ratios(rep.Hipconnect, rep.Baseline)
	return nil
}

// budgetWarnings warns when p makes more API requests per installation or
// notifications per room than HipChat allows, so that the run measures the
// daemon's pacer rather than the daemon; nil when it does not.
func (p *plan) budgetWarnings() []string {
	if perToken, perRoom := p.budget(); perToken > 500 || perRoom > 30 {
		return []string{fmt.Sprintf("up to %d API requests per installation and %d notifications per room exceed "+
			"HipChat's limits (500 per token per 5 min, 30 per room per min) that hipconnect paces itself to: this run measures the pacer; "+
			"add -installs or -rooms", perToken, perRoom)}
	}
	return nil
}

// loadWarnings warns when the load average before the run (before, as
// loadavg gives it) was 1 or more: other work shared the CPUs. It returns
// nil otherwise.
func loadWarnings(before string) []string {
	la := strings.Fields(before)
	if len(la) == 0 {
		return nil
	}
	if v, _ := strconv.ParseFloat(la[0], 64); v >= 1 {
		return []string{"the load average was " + la[0] + " before the run: other work shares the CPUs, figures are noisy"}
	}
	return nil
}

// writeReport writes rep to w, as JSON if asJSON, else as text.
func writeReport(w io.Writer, rep *report, asJSON bool) error {
	if asJSON {
		return writeJSONReport(w, rep)
	}
	writeText(w, rep)
	return nil
}

// incomplete returns an error naming each phase of rep that did not send
// all commands or have every one notified, or that had failed installs;
// nil when there is none.
func incomplete(rep *report, commands int) error {
	var failed []string
	for _, ph := range []*phase{rep.Hipconnect, rep.Baseline} {
		if ph != nil && (ph.Load.Missing > 0 || len(ph.Load.Errors) > 0 || ph.Load.Sent < commands || len(ph.InstallErrors) > 0) {
			failed = append(failed, fmt.Sprintf("%s: %d of %d commands notified", ph.Name, ph.Load.Notified, commands))
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
    reply: %[11]s # as the baseline answers (-reply)
  - name: echo
    kind: echo
    reply: %[11]s
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
// the load, then shutdown. It starts the daemon for -hipconnect (serving
// HTTPS with r.st's certificate for -tls files) and always stops or kills
// it before returning; with -target it drives the daemon there. Installs
// and webhooks trust r.st.client's roots when r.st is set.
func (r *rig) runHipconnect(ctx context.Context) (*phase, error) {
	ph := &phase{Name: "hipconnect", Installs: len(r.p.installs)}
	srv, err := r.hipconnectServer(ctx, ph)
	if err != nil {
		return nil, err
	}
	defer srv.kill()
	ph.PID = srv.pid
	if s, ok := procStatus(srv.pid); ok {
		ph.RSSReadyMB = mb(s.RSSKB)
	}
	if err := r.installPhase(ctx, ph, srv.base); err != nil {
		return nil, err
	}
	if r.o.restart && srv.proc != nil {
		if err := srv.restart(ctx); err != nil {
			return nil, err
		}
		ph.ReadyAfterRestartMS, ph.PID = ms(srv.proc.ready), srv.pid
	}
	// Let the install phase's garbage go before taking the idle figure.
	time.Sleep(time.Second)
	if s, ok := procStatus(srv.pid); ok {
		ph.RSSIdleMB = mb(s.RSSKB)
	}
	if err := r.loadPhase(ctx, ph, srv); err != nil {
		return nil, err
	}
	if s, ok := procStatus(srv.pid); ok {
		ph.HWMMB = mb(s.HWMKB)
	}
	if srv.proc != nil {
		took, err := srv.stop()
		if err != nil {
			return nil, err
		}
		ph.ShutdownMS = ms(took)
	}
	return ph, nil
}

// server is the hipconnect a phase drives: its public base URL, its ops
// listener's URL (empty if unknown) and its process id (0 if unknown),
// and, when the tool started it, the daemon and its running process (proc
// nil once stopped).
type server struct {
	base, ops string
	pid       int
	d         *daemon
	proc      *child
}

// hipconnectServer returns the server to drive: for -target the one given
// by -target, -ops and -pid; for -hipconnect a daemon started and ready,
// whose startup time and log file (kept only with -dir) go into ph. The
// caller must kill the server.
func (r *rig) hipconnectServer(ctx context.Context, ph *phase) (*server, error) {
	if r.o.hipconnect == "" {
		return &server{base: strings.TrimSuffix(r.o.target, "/"), ops: strings.TrimSuffix(r.o.ops, "/"), pid: r.o.pid}, nil
	}
	d, err := r.newDaemon()
	if err != nil {
		return nil, err
	}
	if r.o.dir != "" { // else removed with the temporary directory
		ph.LogFile = d.logPath
	}
	srv := &server{base: d.base, ops: d.ops, d: d}
	if err := srv.launch(ctx); err != nil {
		return nil, err
	}
	ph.ReadyMS = ms(srv.proc.ready)
	return srv, nil
}

// launch starts s's daemon and waits until it is ready.
func (s *server) launch(ctx context.Context) error {
	c, err := s.d.start(ctx)
	if err != nil {
		return err
	}
	s.proc, s.pid = c, c.pid()
	return nil
}

// restart stops s's running daemon and starts it again. When the stop
// fails the process is left for kill; when the start fails there is none.
func (s *server) restart(ctx context.Context) error {
	if _, err := s.proc.stop(10 * time.Second); err != nil {
		return err
	}
	s.proc = nil
	return s.launch(ctx)
}

// stop stops s's running daemon, waiting up to 10 s, and returns how long
// it took to exit; s has no process after.
func (s *server) stop() (time.Duration, error) {
	c := s.proc
	s.proc = nil
	return c.stop(10 * time.Second)
}

// kill kills s's daemon process if it still has one.
func (s *server) kill() {
	if s.proc != nil {
		s.proc.kill()
	}
}

// daemon is a hipconnect the tool starts itself: the binary, the extra
// environment (-env), the generated configuration and log file, and the
// URLs of its public and ops listeners.
type daemon struct {
	bin, cfgPath, logPath string
	env                   []string
	base, ops             string
}

// newDaemon writes hipconnect's configuration into r.dir (daemonConfig,
// with two free ports on 127.0.0.1 for its listeners) and returns the
// daemon it describes, not yet started.
func (r *rig) newDaemon() (*daemon, error) {
	listen, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	opsAddr, err := freePort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	hcHost, _, _ := net.SplitHostPort(r.o.hipchatAddr)
	section, scheme := tlsSection(r.st)
	cfg := fmt.Sprintf(daemonConfig, listen, opsAddr, r.o.profileDir != "", filepath.Join(r.dir, "hipconnect.db"),
		hcHost, r.caFile, r.o.logLevel, r.search.searchURL(), scheme, section, r.o.reply)
	// /readyz is on the ops listener, plain HTTP in every mode; in files
	// mode the daemon is ready only with its certificate loaded.
	d := &daemon{bin: r.o.hipconnect, cfgPath: filepath.Join(r.dir, "hipconnect.yaml"), logPath: filepath.Join(r.dir, "hipconnect.log"),
		env: r.o.env, base: scheme + "://" + listen, ops: "http://" + opsAddr}
	if err := os.WriteFile(d.cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return d, nil
}

// start starts d ("serve --config", with PATH and d.env only, its output
// appended to d's log) and waits up to 30 s for its /readyz to answer 200.
func (d *daemon) start(ctx context.Context) (*child, error) {
	cmd := exec.Command(d.bin, "serve", "--config", d.cfgPath)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, d.env...)
	return startChild(ctx, "hipconnect", cmd, d.logPath, d.ops+"/readyz", nil, 30*time.Second)
}

// installPhase installs the plan's installations into the server at base,
// -install-concurrency at a time, and records in ph how long it took and
// what failed. It returns ctx's error if ctx ended meanwhile.
func (r *rig) installPhase(ctx context.Context, ph *phase, base string) error {
	took, errs := install(ctx, base, r.clientTLS(), r.hc, r.p.installs, r.o.installConcurrency)
	ph.InstallSeconds = round3(took.Seconds())
	ph.InstallsPerSecond = round3(float64(len(r.p.installs)) / took.Seconds())
	ph.InstallErrors = errs
	return ctx.Err()
}

// loadPhase runs the load against srv into ph, with -profile-dir taking
// CPU profiles meanwhile and the other profiles after; it fails only when
// profiling does.
func (r *rig) loadPhase(ctx context.Context, ph *phase, srv *server) error {
	var prof *profiler
	if r.o.profileDir != "" && srv.ops != "" {
		prof = startCPUProfile(srv.ops, r.o.profileDir, r.o.profileTime)
	}
	ph.Load, ph.Fake = r.measure(ctx, ph, srv.pid, r.o.cpuPIDs, r.loadSpec(srv.base))
	if prof != nil {
		return prof.finish()
	}
	return nil
}

// clientTLS is the TLS configuration of the tool's clients toward the
// servers it started: r.st's for -tls files, else nil (the system's roots).
func (r *rig) clientTLS() *tls.Config {
	if r.st == nil {
		return nil
	}
	return r.st.client
}

// loadSpec is how to drive the server at base: the load's flags, and
// clientTLS.
func (r *rig) loadSpec(base string) loadSpec {
	return loadSpec{url: base + "/webhook/", tls: r.clientTLS(), concurrency: r.o.concurrency, rate: r.o.rate,
		duration: r.o.duration, timeout: r.o.timeout}
}

// procStatus reads the status of process pid from /proc; false when pid is
// not positive or the status cannot be read.
func procStatus(pid int) (procSample, bool) {
	if pid <= 0 {
		return procSample{}, false
	}
	s, err := readStatus(pid)
	return s, err == nil
}

// runBaseline drives the baseline server with the same plan, over HTTPS
// with r.st's certificate if r.st is not nil. It always stops or kills the
// baseline process before returning.
func (r *rig) runBaseline(ctx context.Context) (*phase, error) {
	b, base, err := startBaseline(ctx, r.dir, r.caFile, r.st, r.hc, r.search, r.o.reply)
	if err != nil {
		return nil, err
	}
	defer func() {
		if b != nil {
			b.kill()
		}
	}()
	ph := &phase{Name: "baseline", PID: b.pid(), ReadyMS: ms(b.ready)}
	if s, ok := procStatus(b.pid()); ok {
		ph.RSSReadyMB, ph.RSSIdleMB = mb(s.RSSKB), mb(s.RSSKB)
	}
	ph.Load, ph.Fake = r.measure(ctx, ph, b.pid(), nil, r.loadSpec(base))
	if s, ok := procStatus(b.pid()); ok {
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

// measure runs the plan's load per spec against the server with process
// id pid (0 if unknown) and fills in ph's CPU and RSS figures, the
// server's only for pid known: RSS and CPU are pid's, and the "counted"
// CPU figures are pid's and also's (with their descendants) together; it
// returns the load result and how many requests of each kind the fakes
// saw meanwhile.
func (r *rig) measure(ctx context.Context, ph *phase, pid int, also []int, spec loadSpec) (loadResult, map[string]int) {
	before := fakeCounts(r.hc, r.search)
	rec := newRecorder(r.p.n, randomHex(3), max(spec.concurrency, 1))
	r.hc.setSink(rec)
	defer r.hc.setSink(nil)

	var samp *sampler
	var own0 procSample
	var all0 time.Duration
	all := append([]int{pid}, also...)
	if pid > 0 {
		samp = startSampler(pid, 20*time.Millisecond)
		own0, _ = readProc(pid)
		if len(also) > 0 {
			all0, _ = cpuOf(all)
		}
	}
	self0, _ := readProc(os.Getpid())
	t0 := time.Now()
	res := drive(ctx, r.p, rec, spec)
	wall := time.Since(t0)
	self1, _ := readProc(os.Getpid())
	ph.ToolCPUCores = round3((self1.CPU - self0.CPU).Seconds() / wall.Seconds())
	if samp != nil {
		own1, _ := readProc(pid)
		ph.RSSLoadMB = mb(samp.stop())
		ph.CPUCores, ph.CPUPerCommandUS = perCommand(own1.CPU-own0.CPU, wall, res.Notified)
		if len(also) > 0 {
			all1, n := cpuOf(all)
			ph.CountedProcesses = n
			ph.CountedCPUCores, ph.CountedCPUPerCommandUS = perCommand(all1-all0, wall, res.Notified)
		}
	}
	after := fakeCounts(r.hc, r.search)
	for k, v := range before {
		after[k] -= v
	}
	return res, after
}

// perCommand is cpu over wall in cores, and per notified command in µs (0
// when none was).
func perCommand(cpu, wall time.Duration, notified int) (cores, us float64) {
	cores = round3(cpu.Seconds() / wall.Seconds())
	if notified > 0 {
		us = round3(float64(cpu.Microseconds()) / float64(notified))
	}
	return cores, us
}

// fakeCounts returns how many requests of each kind the fakes have served
// so far, by the names the report uses.
func fakeCounts(hc *fakeHipChat, search *fakeSearch) map[string]int {
	return map[string]int{"capabilities": int(hc.capabilityRequests.Load()), "tokens": int(hc.tokenRequests.Load()),
		"notifications": int(hc.notifications.Load()), "glances": int(hc.glances.Load()), "refused": int(hc.refused.Load()),
		"searches": int(search.requests.Load())}
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
