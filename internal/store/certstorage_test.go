package store

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func TestCertStorage(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	s := d.CertStorage()
	if d.CertStorage() != s {
		t.Error("CertStorage returns a different value on each call")
	}

	if _, err := s.Load(ctx, "certificates/x"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load missing err = %v, want fs.ErrNotExist", err)
	}
	if keys, err := s.List(ctx, "", true); err != nil || len(keys) != 0 {
		t.Errorf("List of empty root = %v, %v", keys, err)
	}
	if _, err := s.List(ctx, "certificates", false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List missing dir err = %v, want fs.ErrNotExist", err)
	}

	files := map[string]string{
		"acme/ca/users/me@x/me.json":       "account",
		"acme/ca/users/me@x/me.key":        "account key",
		"certificates/ca/a.example/a.crt":  "cert a",
		"certificates/ca/a.example/a.key":  "key a",
		"certificates/ca/a.example/a.json": "meta a",
		"certificates/ca/b.example/b.crt":  "cert b",
		"certificates/ca2/c.example/c.crt": "cert c",
		"last_clean.json":                  "{}",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatalf("Store(%s): %v", k, err)
		}
	}

	got, err := s.Load(ctx, "certificates/ca/a.example/a.crt")
	if err != nil || string(got) != "cert a" {
		t.Errorf("Load = %q, %v", got, err)
	}
	if err := s.Store(ctx, "certificates/ca/a.example/a.crt", []byte("cert a2")); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(ctx, "certificates/ca/a.example/a.crt"); string(got) != "cert a2" {
		t.Errorf("Load after overwrite = %q", got)
	}

	exists := []struct {
		key  string
		want bool
	}{
		{"certificates/ca/a.example/a.crt", true},
		{"certificates/ca/a.example", true},
		{"certificates", true},
		{"certificates/c", false}, // component prefix only, not string prefix
		{"certificates/ca/a.example/a.crt/x", false},
		{"nope", false},
	}
	for _, tt := range exists {
		if got := s.Exists(ctx, tt.key); got != tt.want {
			t.Errorf("Exists(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}

	lists := []struct {
		name      string
		path      string
		recursive bool
		want      []string
	}{
		{"root", "", false, []string{"acme", "certificates", "last_clean.json"}},
		{"issuers", "certificates", false, []string{"certificates/ca", "certificates/ca2"}},
		{"sites", "certificates/ca", false, []string{"certificates/ca/a.example", "certificates/ca/b.example"}},
		{"site files", "certificates/ca/a.example/", false, []string{
			"certificates/ca/a.example/a.crt", "certificates/ca/a.example/a.json", "certificates/ca/a.example/a.key"}},
		{"recursive", "certificates", true, []string{
			"certificates/ca", "certificates/ca/a.example",
			"certificates/ca/a.example/a.crt", "certificates/ca/a.example/a.json", "certificates/ca/a.example/a.key",
			"certificates/ca/b.example", "certificates/ca/b.example/b.crt",
			"certificates/ca2", "certificates/ca2/c.example", "certificates/ca2/c.example/c.crt"}},
		{"file has no children", "last_clean.json", false, nil},
	}
	for _, tt := range lists {
		t.Run("List "+tt.name, func(t *testing.T) {
			got, err := s.List(ctx, tt.path, tt.recursive)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			want := slices.Clone(tt.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("List(%q, %v) = %q, want %q", tt.path, tt.recursive, got, want)
			}
		})
	}

	ki, err := s.Stat(ctx, "certificates/ca/b.example/b.crt")
	want := certmagic.KeyInfo{Key: "certificates/ca/b.example/b.crt", Modified: clk.Now(), Size: 6, IsTerminal: true}
	if err != nil || ki.Key != want.Key || !ki.Modified.Equal(want.Modified) || ki.Size != want.Size || !ki.IsTerminal {
		t.Errorf("Stat file = %+v, %v; want %+v", ki, err, want)
	}
	ki, err = s.Stat(ctx, "certificates/ca")
	if err != nil || ki.IsTerminal || ki.Key != "certificates/ca" {
		t.Errorf("Stat dir = %+v, %v; want a non-terminal key", ki, err)
	}
	if _, err := s.Stat(ctx, "certificates/zz"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat missing err = %v, want fs.ErrNotExist", err)
	}

	// Delete a file, a directory, something absent.
	if err := s.Delete(ctx, "last_clean.json"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "certificates/ca"); err != nil {
		t.Errorf("Delete of absent dir err = %v, want nil", err)
	}
	if err := s.Delete(ctx, ""); err == nil {
		t.Error("Delete of the root succeeded, want refusal")
	}
	rest, err := s.List(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rest)
	wantRest := []string{
		"acme", "acme/ca", "acme/ca/users", "acme/ca/users/me@x",
		"acme/ca/users/me@x/me.json", "acme/ca/users/me@x/me.key",
		"certificates", "certificates/ca2", "certificates/ca2/c.example", "certificates/ca2/c.example/c.crt",
	}
	if !slices.Equal(rest, wantRest) {
		t.Errorf("after deletes List = %q, want %q", rest, wantRest)
	}
	if s.Exists(ctx, "certificates/ca") {
		t.Error("deleted directory still exists")
	}

	// It lives in the KV namespace.
	if v, err := d.KV(CertMagicNamespace).Get(ctx, "acme/ca/users/me@x/me.key"); err != nil || string(v) != "account key" {
		t.Errorf("KV view of certmagic = %q, %v", v, err)
	}
}

func TestCertStorageLock(t *testing.T) {
	d := openTest(t)
	s := d.CertStorage()
	ctx := context.Background()

	// Mutual exclusion: a counter guarded only by the lock.
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Lock(ctx, "issue_cert_a.example"); err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			if err := s.Unlock(ctx, "issue_cert_a.example"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if got := maxInside.Load(); got != 1 {
		t.Errorf("at most %d holders at once, want 1", got)
	}

	// Cancellation while waiting; other names are independent.
	if err := s.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Lock(ctx, "y"); err != nil {
		t.Errorf("Lock of another name blocked: %v", err)
	}
	tl := s.(certmagic.TryLocker)
	if ok, err := tl.TryLock(ctx, "x"); ok || err != nil {
		t.Errorf("TryLock of held lock = %v, %v; want false, nil", ok, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := s.Lock(cctx, "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock with expiring ctx err = %v, want DeadlineExceeded", err)
	}

	// A waiter gets the lock when it is released.
	got := make(chan error, 1)
	go func() { got <- s.Lock(ctx, "x") }()
	select {
	case err := <-got:
		t.Fatalf("Lock returned %v while held", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := s.Unlock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter never got the released lock")
	}
	for _, name := range []string{"x", "y"} {
		if err := s.Unlock(ctx, name); err != nil {
			t.Errorf("Unlock(%s): %v", name, err)
		}
	}
	if err := s.Unlock(ctx, "x"); err == nil {
		t.Error("Unlock of a free lock succeeded")
	}
	if ok, err := tl.TryLock(ctx, "x"); !ok || err != nil {
		t.Errorf("TryLock of free lock = %v, %v", ok, err)
	}
	_ = s.Unlock(ctx, "x")
}
