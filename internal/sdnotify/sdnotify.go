// Package sdnotify implements the two halves of systemd's service
// notification protocol that a Type=notify daemon needs: sending state
// changes to the service manager (sd_notify(3)) and reading the watchdog
// interval it expects (sd_watchdog_enabled(3)).
//
// It uses only the standard library. Both functions take the environment as
// a getenv function (os.Getenv in production) so tests and callers control
// it; neither unsets the variables, so child processes started by the daemon
// should be given an environment without them.
//
// When the daemon does not run under systemd (NOTIFY_SOCKET unset), Notify
// does nothing and reports sent == false, so callers can notify
// unconditionally.
package sdnotify

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// States understood by systemd (see sd_notify(3)). Several may be sent in one
// message, separated by newlines.
const (
	// Ready tells systemd that start-up is finished: listeners are bound and
	// the store is open. Under Type=notify the unit is "active" only then.
	Ready = "READY=1"
	// Stopping tells systemd that a graceful shutdown has begun.
	Stopping = "STOPPING=1"
	// Watchdog pets the watchdog; send it at the interval WatchdogInterval
	// returns, and only while the daemon is healthy.
	Watchdog = "WATCHDOG=1"
)

// Status returns the state that sets the one-line status shown by
// "systemctl status", e.g. Status("serving 3 installations").
func Status(text string) string {
	return "STATUS=" + strings.ReplaceAll(text, "\n", " ")
}

// Notify sends state to the socket named by $NOTIFY_SOCKET.
//
// The socket is a Unix datagram socket: a file system path, or an abstract
// socket when the name starts with "@". If NOTIFY_SOCKET is unset or empty,
// Notify returns (false, nil): the daemon is not supervised by systemd. It
// returns sent == true only when the whole message was written. Notify is
// safe for concurrent use; each call opens and closes its own socket.
func Notify(getenv func(string) string, state string) (sent bool, err error) {
	name := getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	// systemd also knows "vsock:" addresses (for virtual machines); a daemon
	// running as a service on its host is only ever given these two forms.
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return false, fmt.Errorf("sdnotify: notify: unsupported NOTIFY_SOCKET %q", name)
	}
	// On Linux the Go runtime maps a leading "@" to the abstract namespace
	// (a leading NUL byte), as systemd means it.
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sdnotify: notify: %w", err)
	}
	defer conn.Close()
	n, err := conn.Write([]byte(state))
	if err != nil {
		return false, fmt.Errorf("sdnotify: notify: %w", err)
	}
	if n != len(state) {
		return false, errors.New("sdnotify: notify: short write")
	}
	return true, nil
}

// WatchdogInterval reports how often the daemon should send Watchdog, given
// the process's own pid (os.Getpid()).
//
// systemd sets WATCHDOG_USEC to the unit's WatchdogSec= in microseconds, and
// WATCHDOG_PID to the process it expects pings from. ok is false when the
// watchdog is off: WATCHDOG_USEC unset, zero or malformed, or WATCHDOG_PID
// set to another process. Otherwise interval is half of WATCHDOG_USEC, as
// sd_watchdog_enabled(3) recommends, so one late ping does not kill the
// service.
func WatchdogInterval(getenv func(string) string, pid int) (interval time.Duration, ok bool) {
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec == 0 {
		return 0, false
	}
	if p := getenv("WATCHDOG_PID"); p != "" {
		want, err := strconv.Atoi(p)
		if err != nil || want != pid {
			return 0, false
		}
	}
	// Durations are int64 nanoseconds: cap absurd values instead of wrapping.
	const maxUsec = uint64(1<<63-1) / uint64(time.Microsecond)
	if usec > maxUsec {
		usec = maxUsec
	}
	return time.Duration(usec) * time.Microsecond / 2, true
}
