package store

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestKV(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Now: clk.Now})
	kv := d.KV("settings")

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
