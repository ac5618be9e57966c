package store

import (
	"path/filepath"
	"testing"

	"github.com/hipconnect/hipconnect/internal/storetest"
)

// TestContract runs the store contract suite on a real bbolt file with a
// secrets key, as the daemon opens it.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		dir := t.TempDir()
		key, err := LoadOrCreateKey(filepath.Join(dir, "hipconnect.db.key"))
		if err != nil {
			t.Fatal(err)
		}
		db, err := Open(filepath.Join(dir, "hipconnect.db"), Options{Key: key})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return storetest.Backend{Store: db, Certs: db.CertStorage()}
	})
}
