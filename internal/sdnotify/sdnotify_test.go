package sdnotify

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// env returns a getenv that reads from m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// listen opens a unixgram socket at name and returns it with a function that
// reads one datagram, failing the test after a second.
func listen(t *testing.T, name string) func() string {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %q: %v", name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return func() string {
		t.Helper()
		buf := make([]byte, 4096)
		if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("read datagram: %v", err)
		}
		return string(buf[:n])
	}
}

func TestNotifyNoSocket(t *testing.T) {
	sent, err := Notify(env(nil), Ready)
	if sent || err != nil {
		t.Fatalf("Notify without NOTIFY_SOCKET = (%v, %v), want (false, nil)", sent, err)
	}
}

func TestNotifySends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	read := listen(t, path)
	abstract := fmt.Sprintf("@hipconnect-sdnotify-test-%d", os.Getpid())
	readAbstract := listen(t, abstract)

	tests := []struct {
		name   string
		socket string
		read   func() string
		state  string
	}{
		{"ready on a path", path, read, Ready},
		{"several states", path, read, Stopping + "\n" + Status("shutting down")},
		{"reloading", path, read, Reloading()},
		{"watchdog on an abstract socket", abstract, readAbstract, Watchdog},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent, err := Notify(env(map[string]string{"NOTIFY_SOCKET": tt.socket}), tt.state)
			if err != nil || !sent {
				t.Fatalf("Notify = (%v, %v), want (true, nil)", sent, err)
			}
			if got := tt.read(); got != tt.state {
				t.Errorf("socket got %q, want %q", got, tt.state)
			}
		})
	}
}

func TestNotifyErrors(t *testing.T) {
	tests := []struct {
		name   string
		socket string
	}{
		{"missing socket file", filepath.Join(t.TempDir(), "absent.sock")},
		{"relative path", "notify.sock"},
		{"vsock address", "vsock:2:1234"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent, err := Notify(env(map[string]string{"NOTIFY_SOCKET": tt.socket}), Ready)
			if sent || err == nil {
				t.Fatalf("Notify = (%v, %v), want (false, error)", sent, err)
			}
		})
	}
}

func TestReloading(t *testing.T) {
	got := Reloading()
	first, rest, ok := strings.Cut(got, "\n")
	if first != "RELOADING=1" {
		t.Fatalf("Reloading() = %q, want it to start with RELOADING=1", got)
	}
	if !ok {
		return // no monotonic clock on this platform
	}
	usec, found := strings.CutPrefix(rest, "MONOTONIC_USEC=")
	if n, err := strconv.ParseInt(usec, 10, 64); !found || err != nil || n <= 0 {
		t.Errorf("Reloading() = %q, want a positive MONOTONIC_USEC", got)
	}
}

func TestWatchdogInterval(t *testing.T) {
	const pid = 4242
	tests := []struct {
		name   string
		env    map[string]string
		want   time.Duration
		wantOK bool
	}{
		{"unset", nil, 0, false},
		{"30s for any pid", map[string]string{"WATCHDOG_USEC": "30000000"}, 15 * time.Second, true},
		{"30s for this pid", map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15 * time.Second, true},
		{"for another pid", map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, 0, false},
		{"malformed pid", map[string]string{"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "main"}, 0, false},
		{"zero", map[string]string{"WATCHDOG_USEC": "0"}, 0, false},
		{"malformed", map[string]string{"WATCHDOG_USEC": "30s"}, 0, false},
		{"negative", map[string]string{"WATCHDOG_USEC": "-1"}, 0, false},
		{"huge", map[string]string{"WATCHDOG_USEC": "18446744073709551615"}, (1<<63 - 1) / 1000 * 1000 / 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := WatchdogInterval(env(tt.env), pid)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("WatchdogInterval = (%v, %v), want (%v, %v)", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
