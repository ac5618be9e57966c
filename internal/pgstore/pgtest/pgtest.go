// Package pgtest gives tests a throwaway PostgreSQL: one cluster per test
// binary, made with initdb in a temporary directory and started with
// pg_ctl on a free loopback port, and a fresh database for each Start.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.Start(t) // a new, empty database; dropped at t's cleanup
//		...
//	}
//
// The cluster listens on 127.0.0.1 only, keeps its unix sockets in its own
// directory and runs with fsync off (its data is thrown away). The
// superuser "postgres" connects over TCP without a password (Start's DSN
// names it); every other role needs its password (scram-sha-256), so a test
// can check password authentication with a role it creates.
//
// The binaries are found on PATH (initdb and pg_ctl side by side) or under
// /usr/lib/postgresql/*/bin (Debian's layout), the newest version first.
// When there are none, Start skips the test and names the package to
// install, unless the environment variable CI is set: then it fails, so a
// CI without PostgreSQL does not pass by skipping. PostgreSQL refuses to
// run as root: as root, pgtest runs initdb and pg_ctl through
// `runuser -u postgres --` (Debian's postgresql package creates that user)
// and gives it the cluster's directory.
//
// Main stops the cluster (pg_ctl stop -m immediate) and removes its
// directory when the tests are done. Should the test binary die without
// getting there (killed, timed out), a watcher process started with the
// cluster notices within a second and does the same.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// InstallHint is the command that installs what pgtest needs on Debian.
const InstallHint = "apt-get install postgresql"

// Superuser is the cluster's superuser, the role of Start's DSNs.
const Superuser = "postgres"

// runAs is the unprivileged user that runs PostgreSQL when the tests run
// as root.
const runAs = "postgres"

// The one cluster of this test binary. Tests share it; each gets its own
// database.
var (
	mainRunning atomic.Bool
	once        sync.Once
	shared      *cluster
	startErr    error // why the cluster could not be started
	missing     bool  // startErr is "PostgreSQL is not installed"
	dbCount     atomic.Int64
)

// Main runs the tests (m.Run), then stops the cluster if a test started it,
// and exits with the tests' status. Call it from TestMain.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain with more to do after the tests: it returns
// the status instead of exiting.
func Run(m *testing.M) int {
	mainRunning.Store(true)
	code := m.Run()
	if shared != nil {
		if err := shared.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Start returns the DSN (a postgres:// URL, user Superuser) of a new, empty
// database in the test binary's cluster, starting the cluster on the first
// call. The database is dropped at t's cleanup. Without PostgreSQL it skips
// t (fails it when CI is set); see the package documentation.
func Start(t testing.TB) string {
	t.Helper()
	if !mainRunning.Load() {
		t.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain, so the cluster is stopped at the end")
	}
	once.Do(func() { shared, startErr = startCluster() })
	if startErr != nil {
		if missing && os.Getenv("CI") == "" {
			t.Skipf("pgtest: %v; install it with: %s", startErr, InstallHint)
		}
		if missing {
			t.Fatalf("pgtest: %v; install it with: %s (CI is set: failing rather than skipping)", startErr, InstallHint)
		}
		t.Fatalf("pgtest: %v", startErr)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbCount.Add(1))
	if err := shared.exec(t.Context(), "CREATE DATABASE "+name+" STRATEGY FILE_COPY"); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := shared.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return shared.dsn(name)
}

// Exec runs sql on the database postgres of the cluster as Superuser: for
// what a test needs set up outside its own database (roles, for one). It
// may run in a cleanup.
func Exec(t testing.TB, sql string) {
	t.Helper()
	if shared == nil {
		t.Fatal("pgtest: Exec before Start")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := shared.exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// cluster is a running throwaway PostgreSQL.
type cluster struct {
	dir     string   // the temporary directory: data/, the sockets, the log
	bin     string   // the directory of initdb and pg_ctl
	port    int      // on 127.0.0.1
	prefix  []string // runs a command as runAs: runuser -u postgres -- (nil when not root)
	watcher *os.Process

	mu sync.Mutex // one administrative statement at a time
}

func (c *cluster) data() string { return filepath.Join(c.dir, "data") }

// dsn is the URL of database name, as Superuser.
func (c *cluster) dsn(name string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.port, name)
}

// exec runs one statement on the database postgres.
func (c *cluster) exec(ctx context.Context, sql string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// findBin returns the directory holding initdb and pg_ctl.
func findBin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	// Newest version first: compare the version directories as numbers.
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, dir := range dirs {
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
				return dir, nil
			}
		}
	}
	return "", errors.New("PostgreSQL is not installed (no initdb and pg_ctl on PATH or under /usr/lib/postgresql/*/bin)")
}

// startCluster makes and starts the cluster.
func startCluster() (*cluster, error) {
	bin, err := findBin()
	if err != nil {
		missing = true
		return nil, err
	}
	dir, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir, bin: bin}
	if os.Geteuid() == 0 {
		if err := c.dropRoot(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}
	if err := c.initdb(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	// A free port can be taken by someone else before the server binds it:
	// try a few.
	for range 3 {
		if c.port, err = freePort(); err != nil {
			break
		}
		if err = c.start(); err == nil {
			break
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	c.watch()
	return c, nil
}

// dropRoot arranges for PostgreSQL to run as runAs: its commands go
// through runuser, and the directory becomes its own.
func (c *cluster) dropRoot() error {
	u, err := user.Lookup(runAs)
	if err != nil {
		return fmt.Errorf("running as root, and there is no user %q to run PostgreSQL as (%s creates it): %w", runAs, InstallHint, err)
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		return fmt.Errorf("running as root, and runuser is missing: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(c.dir, uid, gid); err != nil {
		return err
	}
	c.prefix = []string{runuser, "-u", runAs, "--"}
	return nil
}

// command returns the PostgreSQL program name with args, run as runAs
// when the tests run as root.
func (c *cluster) command(name string, args ...string) *exec.Cmd {
	argv := append(slices.Clone(c.prefix), filepath.Join(c.bin, name))
	argv = append(argv, args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	return cmd
}

func run(cmd *exec.Cmd) error {
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(cmd.Args, " "), err, out)
	}
	return nil
}

// hba lets Superuser in without a password and every other role with its
// password, over loopback TCP and the cluster's own sockets.
const hba = `local all all trust
host all ` + Superuser + ` 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
`

// initdb makes the cluster in data/, configured for throwaway speed.
func (c *cluster) initdb() error {
	if err := run(c.command("initdb", "-D", c.data(), "-U", Superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions")); err != nil {
		return err
	}
	conf := strings.Join([]string{
		"listen_addresses = '127.0.0.1'",
		"unix_socket_directories = '" + c.dir + "'",
		"fsync = off",
		"synchronous_commit = off",
		"full_page_writes = off",
		"max_connections = 200",
		"shared_buffers = 32MB",
		"log_min_messages = warning",
		"timezone = 'UTC'",
	}, "\n") + "\n"
	if err := writeInto(filepath.Join(c.data(), "postgresql.conf"), os.O_APPEND, conf); err != nil {
		return err
	}
	return writeInto(filepath.Join(c.data(), "pg_hba.conf"), os.O_TRUNC, hba)
}

// writeInto appends text to (flag os.O_APPEND) or replaces (os.O_TRUNC)
// the content of the existing file at path, which keeps its owner (runAs,
// when root writes it).
func writeInto(path string, flag int, text string) error {
	f, err := os.OpenFile(path, flag|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// start starts the server on c.port and waits until it accepts connections.
func (c *cluster) start() error {
	return run(c.command("pg_ctl", "start", "-w", "-t", "60", "-D", c.data(),
		"-l", filepath.Join(c.dir, "server.log"), "-o", "-p "+strconv.Itoa(c.port)))
}

// stopCmd is pg_ctl stop in shutdown mode (immediate, fast), waiting until
// the server is down.
func (c *cluster) stopCmd(mode string) *exec.Cmd {
	return c.command("pg_ctl", "stop", "-D", c.data(), "-m", mode, "-w")
}

// watcherScript waits for the test binary ($1) to exit, then stops the
// cluster and removes its directory: the safety net for a binary that
// dies before Main's cleanup.
const watcherScript = `pid=$1; dir=$2; shift 2
while kill -0 "$pid" 2>/dev/null; do sleep 1; done
"$@" >/dev/null 2>&1
rm -rf "$dir"`

// watch starts the watcher (see watcherScript) in a process group of its
// own, so that a signal to the test binary's group does not take it along.
func (c *cluster) watch() {
	stop := c.stopCmd("immediate")
	args := append([]string{"-c", watcherScript, "pgtest-watcher", strconv.Itoa(os.Getpid()), c.dir}, stop.Args...)
	cmd := exec.Command("/bin/sh", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err == nil {
		c.watcher = cmd.Process
		go func() { _ = cmd.Wait() }()
	}
}

// stop stops the server, ends the watcher and removes the directory.
func (c *cluster) stop() error {
	err := run(c.stopCmd("immediate"))
	if c.watcher != nil {
		_ = c.watcher.Kill()
	}
	if rmErr := os.RemoveAll(c.dir); err == nil {
		err = rmErr
	}
	return err
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Down stops the test binary's cluster (pg_ctl stop -m fast: clients are
// disconnected) and returns up, which starts it again on the same port
// and data. Every database of the binary goes down with it: call it only
// from a test that runs alone (not t.Parallel, in a package whose other
// tests using the cluster are). up is also called at t's cleanup if the
// test did not.
func Down(t testing.TB) (up func()) {
	t.Helper()
	if shared == nil {
		t.Fatal("pgtest: Down before Start")
	}
	if err := run(shared.stopCmd("fast")); err != nil {
		t.Fatalf("pgtest: stop the cluster: %v", err)
	}
	var once sync.Once
	up = func() {
		once.Do(func() {
			if err := shared.start(); err != nil {
				t.Fatalf("pgtest: start the cluster again: %v", err)
			}
		})
	}
	t.Cleanup(up)
	return up
}
