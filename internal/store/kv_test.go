package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

func TestKV(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	kv := d.kvNamespace("settings")

	if _, err := kv.Get(ctx, "x"); !addon.IsNotFound(err) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Get in untouched namespace err = %v, want NotFound and fs.ErrNotExist", err)
	}
	if keys, err := kv.List(ctx, ""); err != nil || len(keys) != 0 {
		t.Errorf("List in untouched namespace = %v, %v", keys, err)
	}
	if err := kv.Delete(ctx, "x"); !addon.IsNotFound(err) {
		t.Errorf("Delete absent err = %v, want NotFound", err)
	}
	if err := kv.Put(ctx, "", []byte("v")); addon.KindOf(err) != addon.Invalid {
		t.Errorf("Put empty key err = %v, want Invalid", err)
	}

	put := func(k, v string) {
		t.Helper()
		if err := kv.Put(ctx, k, []byte(v)); err != nil {
			t.Fatalf("Put(%s): %v", k, err)
		}
	}
	put("room/2/color", "red")
	clk.Add(time.Minute)
	put("room/1/color", "green")
	put("room/10/color", "blue")
	put("global", "")

	got, err := kv.Get(ctx, "room/1/color")
	if err != nil || string(got) != "green" {
		t.Errorf("Get = %q, %v", got, err)
	}
	if got, err := kv.Get(ctx, "global"); err != nil || got == nil || len(got) != 0 {
		t.Errorf("Get of empty value = %#v, %v; want empty non-nil", got, err)
	}
	size, mod, err := kv.Stat(ctx, "room/1/color")
	if err != nil || size != 5 || !mod.Equal(clk.Now()) {
		t.Errorf("Stat = %d, %v, %v; want 5, %v", size, mod, err, clk.Now())
	}
	if _, _, err := kv.Stat(ctx, "room/3/color"); !addon.IsNotFound(err) {
		t.Errorf("Stat absent err = %v, want NotFound", err)
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"global", "room/1/color", "room/10/color", "room/2/color"}},
		{"room/1", []string{"room/1/color", "room/10/color"}},
		{"room/1/", []string{"room/1/color"}},
		{"zzz", nil},
	}
	for _, tt := range tests {
		keys, err := kv.List(ctx, tt.prefix)
		if err != nil || !slices.Equal(keys, tt.want) {
			t.Errorf("List(%q) = %v, %v; want %v", tt.prefix, keys, err, tt.want)
		}
	}

	// Namespaces are apart.
	if _, err := d.KV("other").Get(ctx, "global"); !addon.IsNotFound(err) {
		t.Errorf("other namespace sees settings: %v", err)
	}

	// Get returns a copy the caller may keep and change.
	got[0] = 'X'
	if again, _ := kv.Get(ctx, "room/1/color"); string(again) != "green" {
		t.Errorf("stored value changed to %q through a returned slice", again)
	}

	if err := kv.Delete(ctx, "room/1/color"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "room/1/color"); !addon.IsNotFound(err) {
		t.Errorf("Get after Delete err = %v", err)
	}
}

func TestKVUpdate(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	kv := d.kvNamespace("ui")

	if err := kv.Update(ctx, "", func([]byte, bool) ([]byte, error) { return nil, nil }); addon.KindOf(err) != addon.Invalid {
		t.Errorf("Update of empty key err = %v, want Invalid", err)
	}

	// Absent: fn sees nil, false, in a namespace not yet created.
	err := kv.Update(ctx, "k", func(old []byte, found bool) ([]byte, error) {
		if old != nil || found {
			t.Errorf("fn of absent key got %q, %v", old, found)
		}
		return []byte("one"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Minute)
	err = kv.Update(ctx, "k", func(old []byte, found bool) ([]byte, error) {
		if string(old) != "one" || !found {
			t.Errorf("fn got %q, %v; want one, true", old, found)
		}
		return append(bytes.Clone(old), "+two"...), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := kv.Get(ctx, "k"); err != nil || string(got) != "one+two" {
		t.Errorf("Get after Update = %q, %v", got, err)
	}
	if size, mod, err := kv.Stat(ctx, "k"); err != nil || size != 7 || !mod.Equal(clk.Now()) {
		t.Errorf("Stat = %d, %v, %v; want 7, %v", size, mod, err, clk.Now())
	}

	// An error from fn stores nothing and comes back: a domain error as it
	// is, another wrapped.
	refused := addon.Errorf(addon.Conflict, "no")
	boom := errors.New("boom")
	for _, want := range []error{refused, boom} {
		err := kv.Update(ctx, "k", func([]byte, bool) ([]byte, error) { return []byte("lost"), want })
		if !errors.Is(err, want) || (want == refused && err != refused) {
			t.Errorf("Update with fn failing = %v, want %v", err, want)
		}
	}
	if got, _ := kv.Get(ctx, "k"); string(got) != "one+two" {
		t.Errorf("value after failed Updates = %q, want one+two", got)
	}

	// A cancelled context writes nothing.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := kv.Update(cctx, "k", func([]byte, bool) ([]byte, error) { return []byte("lost"), nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with cancelled context = %v", err)
	}
}

// TestKVUpdateConcurrent increments counters from many goroutines at once;
// some Updates fail, which makes bolt run the rest of their batch again:
// no increment is lost or applied twice.
func TestKVUpdateConcurrent(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{})
	kv := d.kvNamespace("ui")
	const keys, workers, rounds = 3, 24, 10
	incr := func(old []byte, found bool) ([]byte, error) {
		n := 0
		if found {
			var err error
			if n, err = strconv.Atoi(string(old)); err != nil {
				return nil, err
			}
		}
		return strconv.AppendInt(nil, int64(n+1), 10), nil
	}
	fail := errors.New("refused")
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				key := fmt.Sprint("counter/", (w+r)%keys)
				if err := kv.Update(ctx, key, incr); err != nil {
					t.Errorf("Update(%s): %v", key, err)
				}
				if r%3 == 0 {
					err := kv.Update(ctx, key, func([]byte, bool) ([]byte, error) { return nil, fail })
					if !errors.Is(err, fail) {
						t.Errorf("failing Update(%s) = %v", key, err)
					}
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for k := range keys {
		v, err := kv.Get(ctx, fmt.Sprint("counter/", k))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(string(v))
		total += n
	}
	if total != workers*rounds {
		t.Errorf("counters add up to %d, want %d", total, workers*rounds)
	}
}

// TestKVUpdateSecret: a secret value is stored encrypted; fn sees and makes
// plaintext.
func TestKVUpdateSecret(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Key: testKey(1)})
	kv := d.kvNamespace(CertMagicNamespace)
	const key = "certificates/a.example/a.example.key"
	for _, want := range []string{"", "PRIVATE"} {
		err := kv.Update(ctx, key, func(old []byte, found bool) ([]byte, error) {
			if string(old) != want || found != (want != "") {
				t.Errorf("fn got %q, %v; want %q", old, found, want)
			}
			return append(bytes.Clone(old), "PRIVATE"...), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got, err := kv.Get(ctx, key); err != nil || string(got) != "PRIVATEPRIVATE" {
		t.Errorf("Get = %q, %v", got, err)
	}
	var raw []byte
	_ = d.db.View(func(tx *bolt.Tx) error {
		raw = bytes.Clone(kv.bucket(tx).Get([]byte(key)))
		return nil
	})
	if bytes.Contains(raw, []byte("PRIVATE")) || !isSealed(raw[kvHeader:]) {
		t.Errorf("stored in the clear: %q", raw)
	}
}
