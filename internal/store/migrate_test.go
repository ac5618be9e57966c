package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// TestMigrateSchema3: the ui keys of schema 3 move under their
// installation's addon.KeyPrefix with their values; the keys of a removed
// installation (left behind before schema 4) are dropped; other keys stay.
func TestMigrateSchema3(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d := openPath(t, path, Options{})
	const odd = "a/b c" // needs escaping
	for _, id := range []string{"kept", odd} {
		if err := d.PutInstallation(ctx, addon.Installation{OAuthID: id, GroupID: 1}); err != nil {
			t.Fatal(err)
		}
	}
	ui := d.KV("ui")
	old := map[string]string{
		"settings/kept":      `{"maxResults":3}`,
		"room/kept/100":      `{"week":"2026-W48"}`,
		"settings/a%2Fb%20c": `{"maxResults":4}`,
		"room/a%2Fb%20c/7":   `{"week":"2026-W47"}`,
		"settings/gone":      `{"maxResults":5}`, // installation removed under schema 3
		"room/gone/1":        `{}`,
		"room/kept/x":        `not a room key`,
		"other":              `untouched`,
	}
	for k, v := range old {
		if err := ui.Put(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put([]byte(keySchemaVersion), u64(3))
	}); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	d = openPath(t, path, Options{})
	if w := d.Warnings(); len(w) != 1 || !strings.Contains(w[0], "4 ui keys moved under their installation, 2 of removed installations deleted") {
		t.Errorf("Warnings = %q", w)
	}
	ui = d.KV("ui")
	want := map[string]string{
		addon.KeyPrefix("kept") + "settings": `{"maxResults":3}`,
		addon.KeyPrefix("kept") + "room/100": `{"week":"2026-W48"}`,
		addon.KeyPrefix(odd) + "settings":    `{"maxResults":4}`,
		addon.KeyPrefix(odd) + "room/7":      `{"week":"2026-W47"}`,
		"room/kept/x":                        `not a room key`,
		"other":                              `untouched`,
	}
	keys, err := ui.List(ctx, "")
	if err != nil || len(keys) != len(want) {
		t.Fatalf("keys after migration = %q, %v; want %d", keys, err, len(want))
	}
	for k, v := range want {
		if got, err := ui.Get(ctx, k); err != nil || string(got) != v {
			t.Errorf("%s = %q, %v; want %q", k, got, err, v)
		}
	}
	if err := d.DeleteInstallation(ctx, odd); err != nil {
		t.Fatal(err)
	}
	if keys, _ := ui.List(ctx, addon.KeyPrefix(odd)); len(keys) != 0 {
		t.Errorf("migrated keys outlive their installation: %q", keys)
	}
}
