package store

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	d, err := Open(live, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m1"}); err != nil {
		t.Fatal(err)
	}
	if err := d.CertStorage().Store(ctx, "certificates/x/x.crt", []byte("pem")); err != nil {
		t.Fatal(err)
	}
	if err := d.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}

	// Backup to a writer while in use.
	var buf bytes.Buffer
	n, err := d.Backup(&buf)
	if err != nil || n != int64(buf.Len()) || n == 0 {
		t.Fatalf("Backup = %d, %v (buffer %d)", n, err, buf.Len())
	}

	// BackupFile: mode 0600, no temporary left, opens as a store.
	bk := filepath.Join(dir, "backups", "hipconnect.bak")
	if err := os.MkdirAll(filepath.Dir(bk), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bk+".tmp", []byte("leftover"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.BackupFile(bk); err != nil {
		t.Fatalf("BackupFile: %v", err)
	}
	fi, err := os.Stat(bk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode = %04o, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(bk + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	if err := d.BackupFile(live); err == nil || !strings.Contains(err.Error(), "live database") {
		t.Errorf("BackupFile over the live file err = %v, want refusal", err)
	}

	// Changes after the backup ...
	if err := d.PutInstallation(ctx, inst("b")); err != nil {
		t.Fatal(err)
	}

	// ... Restore refuses while the daemon holds the file.
	if err := Restore(bk, live); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Restore while open err = %v, want in-use refusal", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Restore(bk, live); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	fi, err = os.Stat(live)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored file mode = %v, %v", fi.Mode(), err)
	}

	d = openPath(t, live, Options{})
	if _, err := d.Installation(ctx, "a"); err != nil {
		t.Errorf("restored store lacks a: %v", err)
	}
	if _, err := d.Installation(ctx, "b"); !addon.IsNotFound(err) {
		t.Errorf("restored store has b (written after the backup): %v", err)
	}
	if pend, err := d.Pending(ctx, 0); err != nil || len(pend) != 1 {
		t.Errorf("restored Pending = %v, %v", pend, err)
	}
	if v, err := d.CertStorage().Load(ctx, "certificates/x/x.crt"); err != nil || string(v) != "pem" {
		t.Errorf("restored cert = %q, %v", v, err)
	}

	// The writer backup is a store too.
	other := filepath.Join(dir, "fromwriter.db")
	if err := os.WriteFile(other, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	d2 := openPath(t, other, Options{})
	if _, err := d2.Installation(ctx, "a"); err != nil {
		t.Errorf("writer backup lacks a: %v", err)
	}
}

func TestRestoreRejectsBadBackup(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	d, err := Open(live, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PutInstallation(context.Background(), inst("a")); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(live)
	if err != nil {
		t.Fatal(err)
	}

	junk := filepath.Join(dir, "junk.bak")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not bolt"), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	// A store from a newer hipconnect.
	newer := filepath.Join(dir, "newer.bak")
	nd, err := Open(newer, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = nd.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put([]byte(keySchemaVersion), u64(SchemaVersion+1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nd.Close(); err != nil {
		t.Fatal(err)
	}

	// A store whose data pages were overwritten (the meta pages, 0 and 1,
	// are intact, so it opens).
	corrupt := filepath.Join(dir, "corrupt.bak")
	cd, err := Open(corrupt, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := cd.PutInstallation(context.Background(), inst(fmt.Sprintf("inst-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := cd.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(corrupt)
	if err != nil {
		t.Fatal(err)
	}
	ps := os.Getpagesize()
	for i := 2 * ps; i < len(raw); i++ {
		raw[i] = 0xa5
	}
	if err := os.WriteFile(corrupt, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	// Opening (a copy of) it fails with an error, not a panic.
	corrupt2 := filepath.Join(dir, "corrupt2.db")
	if err := os.WriteFile(corrupt2, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if cdb, err := Open(corrupt2, Options{}); err == nil {
		cdb.Close()
		t.Error("Open of a corrupt file succeeded")
	} else {
		t.Logf("Open corrupt: %v", err)
	}

	tests := map[string]string{
		"newer schema": newer,
		"corrupt":      corrupt,
		"garbage":      junk,
		"missing":      filepath.Join(dir, "missing.bak"),
		"itself":       live,
	}
	for name, bk := range tests {
		t.Run(name, func(t *testing.T) {
			err := Restore(bk, live)
			if err == nil {
				t.Fatal("Restore succeeded")
			}
			t.Logf("Restore: %v", err)
			after, err := os.ReadFile(live)
			if err != nil || !bytes.Equal(before, after) {
				t.Errorf("live file changed by a refused restore")
			}
		})
	}
}

func TestRestoreOverDamagedAndMissing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := openPath(t, filepath.Join(dir, "src.db"), Options{})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	bk := filepath.Join(dir, "src.bak")
	if err := d.BackupFile(bk); err != nil {
		t.Fatal(err)
	}

	damaged := filepath.Join(dir, "damaged.db")
	if err := os.WriteFile(damaged, bytes.Repeat([]byte{0xff}, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "new", "restored.db")
	for _, target := range []string{damaged, missing} {
		if err := Restore(bk, target); err != nil {
			t.Fatalf("Restore to %s: %v", target, err)
		}
		r := openPath(t, target, Options{})
		if _, err := r.Installation(ctx, "a"); err != nil {
			t.Errorf("%s: %v", target, err)
		}
	}
}
