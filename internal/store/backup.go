package store

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// maxCheckErrors caps how many consistency problems Check reports.
const maxCheckErrors = 10

// restoreLockTimeout is how long Restore waits for the lock of the live file
// before deciding a daemon holds it.
const restoreLockTimeout = 500 * time.Millisecond

// Backup writes a consistent copy of the whole file to w while the store
// stays in use (a read transaction: writers are not blocked). It returns the
// number of bytes written. The copy is a bbolt file that Open and Restore
// accept.
func (d *DB) Backup(w io.Writer) (int64, error) {
	var n int64
	err := d.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store: backup: %w", err)
	}
	return n, nil
}

// BackupFile writes a hot backup to path atomically: into path+".tmp"
// (mode 0600), fsynced, renamed over path, and the directory (which must
// exist) fsynced. A failure leaves any earlier file at path untouched. It
// refuses to write over the live file.
func (d *DB) BackupFile(path string) error {
	if same, _ := sameFile(path, d.path); same {
		return fmt.Errorf("store: backup: %s is the live database", path)
	}
	err := writeFileAtomic(path, func(f *os.File) error {
		_, err := d.Backup(f)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: backup: %w", err)
	}
	return nil
}

// Check runs bbolt's consistency check over the whole file and, if that
// passes, checks that the counts of pending jobs kept in memory match the
// jobs. It returns the first problems found, joined, or nil. It runs in a
// write transaction (the check is only safe alongside writers that way), so
// writers wait for it.
func (d *DB) Check() error {
	var errs []error
	err := d.db.Update(func(tx *bolt.Tx) error {
		errs = checkTx(tx)
		if len(errs) == 0 {
			errs = d.checkCounts(tx)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: check: %w", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("store: check: %w", errors.Join(errs...))
	}
	return nil
}

// checkTx drains tx.Check (stopping early would leave its goroutine using a
// finished transaction) and keeps the first maxCheckErrors problems.
func checkTx(tx *bolt.Tx) []error {
	var errs []error
	for err := range tx.Check() {
		if len(errs) < maxCheckErrors {
			errs = append(errs, err)
		}
	}
	return errs
}

// checkCounts compares the counts of pending jobs with the jobs bucket.
func (d *DB) checkCounts(tx *bolt.Tx) []error {
	want, err := countJobs(tx)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for id, n := range d.counts.pending() {
		if n != want[id] && len(errs) < maxCheckErrors {
			errs = append(errs, fmt.Errorf("pending count of installation %q is %d, but it has %d jobs", id, n, want[id]))
		}
		delete(want, id)
	}
	for id, n := range want {
		if len(errs) < maxCheckErrors {
			errs = append(errs, fmt.Errorf("installation %q has %d jobs but a pending count of 0", id, n))
		}
	}
	return errs
}

// Restore replaces the store at dbPath by the backup at backupPath. It first
// opens the backup read-only, checks that it passes Check and holds a schema
// this code knows, then copies it next to dbPath (mode 0600, fsynced) and
// renames it over dbPath, so dbPath is either the old file or the whole
// backup. It refuses while another process (a running daemon) holds
// dbPath's lock; it holds that lock itself while replacing. A dbPath that
// bbolt cannot open at all (damaged) is replaced.
func Restore(backupPath, dbPath string) error {
	if same, _ := sameFile(backupPath, dbPath); same {
		return fmt.Errorf("store: restore: backup %s is the database itself", backupPath)
	}
	if err := verifyBackup(backupPath); err != nil {
		return fmt.Errorf("store: restore: backup %s: %w", backupPath, err)
	}

	if _, err := os.Stat(dbPath); err == nil {
		live, err := openBolt(dbPath, &bolt.Options{Timeout: restoreLockTimeout})
		switch {
		case errors.Is(err, berrors.ErrTimeout):
			return fmt.Errorf("store: restore: %s is in use by a running hipconnect; stop it first: %w", dbPath, err)
		case err == nil:
			// Keep the lock while the file is swapped.
			defer live.Close()
		default:
			// Damaged beyond opening: bbolt took and released the lock, so
			// nobody holds it; replace the file.
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("store: restore: %w", err)
	} else if err := os.MkdirAll(filepath.Dir(dbPath), 0o700); err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}

	src, err := os.Open(backupPath)
	if err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	defer src.Close()
	err = writeFileAtomic(dbPath, func(f *os.File) error {
		_, err := io.Copy(f, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("store: restore: %w", err)
	}
	return nil
}

// verifyBackup opens path read-only and checks its consistency and schema.
// bbolt panics on some damage; that is returned as an error too.
func verifyBackup(path string) (err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file")
	}
	b, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: restoreLockTimeout})
	if err != nil {
		return err
	}
	defer b.Close()
	return b.View(func(tx *bolt.Tx) (err error) {
		defer recoverDamage(&err)
		// The check first: it survives damage that reading would panic on.
		if errs := checkTx(tx); len(errs) > 0 {
			return fmt.Errorf("consistency check: %w", errors.Join(errs...))
		}
		v, err := schemaVersion(tx)
		if err != nil {
			return err
		}
		if v == 0 {
			return fmt.Errorf("not a hipconnect store (no schema version)")
		}
		if v > SchemaVersion {
			return fmt.Errorf("schema version %d is newer than this hipconnect understands (%d)", v, SchemaVersion)
		}
		return nil
	})
}

// openBolt is bolt.Open returning bbolt's panics on a damaged file as an
// error. After such a panic bbolt leaves the file descriptor (and its lock)
// open until the process exits; callers fail and exit anyway.
func openBolt(path string, o *bolt.Options) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("damaged file (bbolt: %v)", r)
		}
	}()
	return bolt.Open(path, 0o600, o)
}

// recoverDamage turns a bbolt panic (its reaction to some damaged pages)
// into an error in *err. Deferred only around reads of a file that may be
// damaged, where a crash would help nobody.
func recoverDamage(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("damaged file (bbolt: %v)", r)
	}
}

// writeFileAtomic writes path through path+".tmp" (mode 0600): write, fsync,
// close, rename, fsync the directory. On failure the temporary file is
// removed and path is untouched.
func writeFileAtomic(path string, write func(*os.File) error) (err error) {
	tmp := path + ".tmp"
	// A leftover from a crash may have another mode: start afresh.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so a rename in it survives a crash.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// sameFile reports whether a and b name the same existing file.
func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}
