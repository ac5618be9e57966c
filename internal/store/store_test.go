package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock {
	return &clock{t: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openTest opens a store in a fresh directory; cleanup checks it and closes.
func openTest(t testing.TB) *DB {
	t.Helper()
	return openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: newClock().Now})
}

// openPath opens path; cleanup runs Check (unless closed already) and Close.
func openPath(t testing.TB, path string, o Options) *DB {
	t.Helper()
	d, err := Open(path, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := d.Check(); err != nil && !errors.Is(err, berrors.ErrDatabaseNotOpen) {
			t.Errorf("Check: %v", err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

func inst(id string) addon.Installation {
	return addon.Installation{
		OAuthID:         id,
		OAuthSecret:     "secret-" + id,
		CapabilitiesURL: "https://hipchat.example/v2/capabilities",
		GroupID:         1,
		APIURL:          "https://hipchat.example/v2/",
		TokenURL:        "https://hipchat.example/v2/oauth/token",
		HipChatOrigin:   "https://hipchat.example",
		InstalledAt:     time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestOpenCreatesDirAndMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "hipconnect.db")
	d := openPath(t, path, Options{})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Errorf("file mode = %04o, want %04o", got, want)
	}
	di, err := os.Stat(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := di.Mode().Perm(), os.FileMode(0o700); got != want {
		t.Errorf("dir mode = %04o, want %04o", got, want)
	}
	if w := d.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q, want none", w)
	}
	if err := d.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestOpenRefusesOpenMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		d, err = Open(path, Options{})
		if err == nil {
			d.Close()
			t.Fatalf("Open of a %04o file succeeded, want refusal", mode)
		}
		want := fmt.Sprintf("store: %s is readable by group or others (mode %04o): chmod 0600", path, mode)
		if err.Error() != want {
			t.Errorf("err = %q, want %q", err, want)
		}
		if err := CheckPrivate(path); err == nil || err.Error() != want {
			t.Errorf("CheckPrivate = %v, want %q", err, want)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != mode {
			t.Errorf("mode after refused Open = %04o, want it untouched (%04o)", got, mode)
		}
	}

	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivate(path); err != nil {
		t.Errorf("CheckPrivate of a 0600 file: %v", err)
	}
	d = openPath(t, path, Options{})
	if w := d.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q, want none", w)
	}
	if err := CheckPrivate(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("CheckPrivate of a directory = %v, want refusal", err)
	}
	if err := CheckPrivate(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CheckPrivate of a missing file = %v, want fs.ErrNotExist", err)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	openPath(t, path, Options{})
	start := time.Now()
	d2, err := Open(path, Options{Timeout: 200 * time.Millisecond})
	if err == nil {
		d2.Close()
		t.Fatal("second Open succeeded, want an in-use error")
	}
	// bbolt gives up one 50ms retry interval before the timeout.
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Errorf("second Open failed after %v, want it to wait for the 200ms timeout", elapsed)
	}
	if !errors.Is(err, berrors.ErrTimeout) || !strings.Contains(err.Error(), "in use") ||
		!strings.HasPrefix(err.Error(), "store: open: ") {
		t.Errorf("err = %v, want a store: open: ... in use ... timeout error", err)
	}
}

func TestOpenNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = d.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put([]byte(keySchemaVersion), u64(SchemaVersion+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d, err = Open(path, Options{})
	if err == nil {
		d.Close()
		t.Fatal("Open of a newer schema succeeded")
	}
	if want := fmt.Sprintf("schema version %d is newer", SchemaVersion+1); !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v, want it to name the newer schema", err)
	}
}

func TestOpenForeignBoltRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("widgets"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	d, err := Open(path, Options{})
	if err == nil {
		d.Close()
		t.Fatal("Open of a foreign bbolt file succeeded")
	}
	if !strings.Contains(err.Error(), "not a hipconnect store") {
		t.Errorf("err = %v", err)
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	tok := addon.Token{AccessToken: "tok", Scope: "send_notification", ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := d.PutToken(ctx, "a", tok); err != nil {
		t.Fatal(err)
	}
	j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m1", Command: "hascode"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.KV("settings").Put(ctx, "a/color", []byte("green")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := d.Ping(ctx); err == nil {
		t.Error("Ping after Close succeeded")
	}

	d = openPath(t, path, Options{})
	got, err := d.Installation(ctx, "a")
	if err != nil || got != inst("a") {
		t.Errorf("Installation = %+v, %v; want %+v", got, err, inst("a"))
	}
	gotTok, err := d.Token(ctx, "a")
	if err != nil || gotTok != tok {
		t.Errorf("Token = %+v, %v; want %+v", gotTok, err, tok)
	}
	pend, err := d.Pending(ctx, 0)
	if err != nil || len(pend) != 1 || pend[0].ID != j.ID {
		t.Errorf("Pending = %+v, %v; want job %d", pend, err, j.ID)
	}
	if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m1"}); err != nil || isNew {
		t.Errorf("Enqueue duplicate after reopen: new=%v err=%v, want false, nil", isNew, err)
	}
	v, err := d.KV("settings").Get(ctx, "a/color")
	if err != nil || string(v) != "green" {
		t.Errorf("KV Get = %q, %v", v, err)
	}
}

func TestStats(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	s, err := d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Installations != 0 || s.PendingJobs != 0 || !s.OldestPending.IsZero() || s.SizeBytes == 0 {
		t.Errorf("empty Stats = %+v", s)
	}
	for _, id := range []string{"a", "b"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
	}
	first := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	for i, msg := range []string{"m1", "m2", "m3"} {
		_, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: msg, Received: first.Add(time.Duration(i) * time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
	}
	s, err = d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Installations != 2 || s.PendingJobs != 3 || !s.OldestPending.Equal(first) || s.SeenMessages != 3 {
		t.Errorf("Stats = %+v, want 2 installations, 3 pending, oldest %v, 3 seen", s, first)
	}
}

func TestContextCanceled(t *testing.T) {
	d := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.PutInstallation(ctx, inst("a")); !errors.Is(err, context.Canceled) {
		t.Errorf("PutInstallation with canceled ctx = %v", err)
	}
	if _, err := d.Installations(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Installations with canceled ctx = %v", err)
	}
	if err := d.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with canceled ctx = %v", err)
	}
}
