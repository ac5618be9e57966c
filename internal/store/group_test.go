package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// TestGroupCommit: concurrent writes share commits; a failing write gets
// its own error and a panicking one panics in its caller, while the others
// are committed; nothing runs after close.
func TestGroupCommit(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	commits := func() (id int) {
		_ = db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
		return id
	}
	before := commits()
	g := newGroupCommit(db, time.Millisecond)
	boom := errors.New("boom")
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer func() {
				if p := recover(); p != nil {
					errs[i] = fmt.Errorf("panicked: %v", p)
				}
			}()
			errs[i] = g.run(func(tx *bolt.Tx) error {
				switch i {
				case 7:
					return boom
				case 9:
					panic("bad write")
				}
				return tx.Bucket([]byte("b")).Put(fmt.Append(nil, i), []byte("v"))
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i == 7 && !errors.Is(err, boom):
			t.Errorf("write 7: %v, want boom", err)
		case i == 9 && (err == nil || err.Error() != "panicked: bad write"):
			t.Errorf("write 9: %v, want its panic", err)
		case i != 7 && i != 9 && err != nil:
			t.Errorf("write %d: %v", i, err)
		}
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if got := tx.Bucket([]byte("b")).Stats().KeyN; got != n-2 {
			t.Errorf("%d keys stored, want %d", got, n-2)
		}
		return nil
	})
	// At most n-2 successful writes and 2 solo failures; shared, far fewer.
	if c := commits() - before; c >= n/2 {
		t.Errorf("%d commits for %d writes: few were shared", c, n)
	}
	g.close()
	if err := g.run(func(*bolt.Tx) error { return nil }); !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		t.Errorf("run after close = %v", err)
	}
}
