package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports (getconf CLK_TCK).
const clockTicks = 100

// procSample is what /proc says about a process at one moment.
type procSample struct {
	RSSKB int64         // VmRSS
	HWMKB int64         // VmHWM: peak RSS since start
	CPU   time.Duration // utime + stime
}

// readProc reads /proc/<pid>/status and /proc/<pid>/stat.
func readProc(pid int) (procSample, error) {
	s, err := readStatus(pid)
	if err != nil {
		return s, err
	}
	_, s.CPU, err = readStat(pid)
	return s, err
}

// readStat reads the parent's id and the CPU time (utime + stime) of
// process pid from /proc/<pid>/stat.
func readStat(pid int) (ppid int, cpu time.Duration, err error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces: fields are counted from
	// the last ')'. rest[0] is field 3 (state), rest[1] field 4 (ppid);
	// utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	rest := strings.Fields(string(stat[i+1:]))
	if len(rest) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ppid, err0 := strconv.Atoi(rest[1])
	ut, err1 := strconv.ParseInt(rest[11], 10, 64)
	st, err2 := strconv.ParseInt(rest[12], 10, 64)
	if err := errors.Join(err0, err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return ppid, time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procTree is every process's parent and CPU time, read from /proc at
// one moment; a process that ended meanwhile is missing.
type procTree map[int]procEntry

type procEntry struct {
	ppid int
	cpu  time.Duration
}

func readProcTree() procTree {
	t := procTree{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, cpu, err := readStat(pid); err == nil {
			t[pid] = procEntry{ppid, cpu}
		}
	}
	return t
}

// below returns pids (each once) and every process below them.
func (t procTree) below(pids []int) []int {
	children := map[int][]int{}
	for pid, p := range t {
		children[p.ppid] = append(children[p.ppid], pid)
	}
	seen := map[int]bool{}
	var out []int
	for queue := slices.Clone(pids); len(queue) > 0; queue = queue[1:] {
		if p := queue[0]; !seen[p] {
			seen[p] = true
			out = append(out, p)
			queue = append(queue, children[p]...)
		}
	}
	return out
}

// cpuOf is the CPU time of the processes pids and of their descendants
// (a database's backends are its postmaster's children) together, and how
// many processes that is, from one read of /proc. A process that ended
// counts nothing, so a descendant that came and went between two calls is
// missed.
func cpuOf(pids []int) (cpu time.Duration, processes int) {
	t := readProcTree()
	below := t.below(pids)
	for _, pid := range below {
		cpu += t[pid].cpu
	}
	return cpu, len(below)
}

// readStatus reads RSSKB and HWMKB from /proc/<pid>/status only, for
// the memory figures and the sampler's poll, which need no CPU time.
func readStatus(pid int) (procSample, error) {
	var s procSample
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range bytes.Lines(status) {
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		var dst *int64
		switch string(name) {
		case "VmRSS":
			dst = &s.RSSKB
		case "VmHWM":
			dst = &s.HWMKB
		default:
			continue
		}
		f := strings.Fields(string(val)) // "12345 kB"
		if len(f) > 0 {
			*dst, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return s, nil
}

// sampler polls a process's RSS and keeps the largest value seen between
// start and stop; it is how "RSS under load" is measured (VmHWM also
// covers startup and installs).
type sampler struct {
	pid   int
	max   atomic.Int64
	stopc chan struct{}
	done  chan struct{}
}

func startSampler(pid int, every time.Duration) *sampler {
	s := &sampler{pid: pid, stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if p, err := readStatus(pid); err == nil {
				storeMax(&s.max, p.RSSKB)
			}
			select {
			case <-s.stopc:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and returns the largest RSS seen, in kB.
func (s *sampler) stop() int64 {
	close(s.stopc)
	<-s.done
	if p, err := readStatus(s.pid); err == nil {
		storeMax(&s.max, p.RSSKB)
	}
	return s.max.Load()
}

// child is a server process the tool started: hipconnect or the baseline.
type child struct {
	name    string
	cmd     *exec.Cmd
	log     *os.File
	exited  chan struct{}
	waitErr error
	ready   time.Duration // process start to the first 200 from readyURL
}

// startChild starts cmd, its output appended to logPath, and polls
// readyURL every millisecond until it answers 200: the time from just
// before the fork to that answer is the startup time. tc is the poll's TLS
// configuration for an https readyURL (each poll is a new connection, so a
// handshake). It gives up after timeout or when the process exits.
func startChild(ctx context.Context, name string, cmd *exec.Cmd, logPath, readyURL string, tc *tls.Config, timeout time.Duration) (*child, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	c := &child{name: name, cmd: cmd, log: lf, exited: make(chan struct{})}
	poll := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext:       (&net.Dialer{Timeout: time.Second}).DialContext,
		DisableKeepAlives: true, Proxy: nil, TLSClientConfig: tc,
	}}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		_ = lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		resp, err := poll.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				c.ready = time.Since(start)
				return c, nil
			}
		}
		select {
		case <-c.exited:
			_ = lf.Close()
			return nil, fmt.Errorf("%s exited before it was ready (%v); its log: %s", name, c.waitErr, logPath)
		case <-deadline.C:
			c.kill()
			return nil, fmt.Errorf("%s not ready within %s; its log: %s", name, timeout, logPath)
		case <-ctx.Done():
			c.kill()
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM and waits up to grace, then kills. It returns how
// long the process took to exit, and an error if it had to be killed or
// exited with a failure.
func (c *child) stop(grace time.Duration) (time.Duration, error) {
	defer c.log.Close()
	start := time.Now()
	select {
	case <-c.exited:
		return 0, fmt.Errorf("%s had exited: %v", c.name, c.waitErr)
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		if c.waitErr != nil {
			return time.Since(start), fmt.Errorf("%s: %w", c.name, c.waitErr)
		}
		return time.Since(start), nil
	case <-time.After(grace):
		c.kill()
		return time.Since(start), fmt.Errorf("%s did not stop within %s: killed", c.name, grace)
	}
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
}

// freePort reserves a port on ip; the listener is closed again at once, so
// the child binds it a moment later.
func freePort(ip string) (string, error) {
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
