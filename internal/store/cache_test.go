package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// cached reports whether the lookup cache holds an installation and a
// token for id.
func cached(d *DB, id string) (inst, tok bool) {
	d.lookups.mu.RLock()
	defer d.lookups.mu.RUnlock()
	_, inst = d.lookups.insts[id]
	_, tok = d.lookups.tokens[id]
	return inst, tok
}

// pokeFile writes the file behind the store's back, so a test can tell a
// cached answer from a read.
func pokeFile(t *testing.T, d *DB, bkt, key string, v []byte) {
	t.Helper()
	if err := d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bkt)).Put([]byte(key), v) }); err != nil {
		t.Fatal(err)
	}
}

func TestLookupCache(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Key: testKey(1)})
	tok := addon.Token{AccessToken: "tok-1", Scope: "send_notification", ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	if err := d.PutToken(ctx, "a", tok); err != nil {
		t.Fatal(err)
	}
	getInst := func(want addon.Installation) {
		t.Helper()
		if got, err := d.Installation(ctx, "a"); err != nil || got != want {
			t.Errorf("Installation = %+v, %v; want %+v", got, err, want)
		}
	}
	getTok := func(want addon.Token) {
		t.Helper()
		if got, err := d.Token(ctx, "a"); err != nil || got != want {
			t.Errorf("Token = %+v, %v; want %+v", got, err, want)
		}
	}

	// A write forgets; the next read fills.
	if i, k := cached(d, "a"); i || k {
		t.Fatalf("cached after Put: installation %v, token %v", i, k)
	}
	getInst(inst("a"))
	getTok(tok)
	if i, k := cached(d, "a"); !i || !k {
		t.Fatalf("cached after reads: installation %v, token %v; want both", i, k)
	}

	// Cached reads answer from memory: garbage written behind the store's
	// back is not read.
	pokeFile(t, d, bucketInstallations, "a", []byte("garbage"))
	pokeFile(t, d, bucketTokens, "a", []byte("garbage"))
	getInst(inst("a"))
	getTok(tok)

	// Callers get their own copies.
	got, _ := d.Installation(ctx, "a")
	got.OAuthSecret, got.APIURL, got.RoomID = "changed", "changed", 99
	gotTok, _ := d.Token(ctx, "a")
	gotTok.AccessToken = "changed"
	getInst(inst("a"))
	getTok(tok)

	// Put then read returns the new value.
	up := inst("a")
	up.OAuthSecret, up.RoomID = "secret-2", 42
	if err := d.PutInstallation(ctx, up); err != nil {
		t.Fatal(err)
	}
	tok2 := tok
	tok2.AccessToken = "tok-2"
	if err := d.PutToken(ctx, "a", tok2); err != nil {
		t.Fatal(err)
	}
	getInst(up)
	getTok(tok2)

	// DeleteToken, then DeleteInstallation (which takes the token along).
	if err := d.DeleteToken(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Token(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Token after DeleteToken err = %v, want NotFound", err)
	}
	getInst(up)
	if err := d.PutToken(ctx, "a", tok); err != nil {
		t.Fatal(err)
	}
	getTok(tok)
	if err := d.DeleteInstallation(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Installation(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Installation after delete err = %v, want NotFound", err)
	}
	if _, err := d.Token(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Token after DeleteInstallation err = %v, want NotFound", err)
	}
	if i, k := cached(d, "a"); i || k {
		t.Errorf("cached after delete: installation %v, token %v", i, k)
	}

	// A cancelled context fails even on a hit.
	if err := d.PutInstallation(ctx, inst("b")); err != nil {
		t.Fatal(err)
	}
	getB := func(ctx context.Context) error { _, err := d.Installation(ctx, "b"); return err }
	if err := getB(ctx); err != nil {
		t.Fatal(err)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := getB(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Installation with a cancelled context err = %v, want Canceled", err)
	}

	// Close forgets, and a closed store answers nothing from memory.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := getB(ctx); !errors.Is(err, berrors.ErrDatabaseNotOpen) {
		t.Errorf("Installation after Close err = %v, want ErrDatabaseNotOpen", err)
	}
}

// TestLookupCacheNoStaleFill: a reader that read the old value from the file
// before a write committed must not put it in the cache after the write
// forgot it. beforeFill runs the write at exactly that point.
func TestLookupCacheNoStaleFill(t *testing.T) {
	ctx := context.Background()
	tok := addon.Token{AccessToken: "old"}
	newInst := inst("a")
	newInst.OAuthSecret = "new"
	for _, tc := range []struct {
		name  string
		read  func(d *DB) error
		write func(d *DB) error
		check func(t *testing.T, d *DB)
	}{
		{
			name:  "installation/put",
			read:  func(d *DB) error { _, err := d.Installation(ctx, "a"); return err },
			write: func(d *DB) error { return d.PutInstallation(ctx, newInst) },
			check: func(t *testing.T, d *DB) {
				if got, err := d.Installation(ctx, "a"); err != nil || got != newInst {
					t.Errorf("Installation = %+v, %v; want %+v", got, err, newInst)
				}
			},
		},
		{
			name:  "installation/delete",
			read:  func(d *DB) error { _, err := d.Installation(ctx, "a"); return err },
			write: func(d *DB) error { return d.DeleteInstallation(ctx, "a") },
			check: func(t *testing.T, d *DB) {
				if got, err := d.Installation(ctx, "a"); !addon.IsNotFound(err) {
					t.Errorf("Installation = %+v, %v; want NotFound", got, err)
				}
			},
		},
		{
			name:  "token/put",
			read:  func(d *DB) error { _, err := d.Token(ctx, "a"); return err },
			write: func(d *DB) error { return d.PutToken(ctx, "a", addon.Token{AccessToken: "new"}) },
			check: func(t *testing.T, d *DB) {
				if got, err := d.Token(ctx, "a"); err != nil || got.AccessToken != "new" {
					t.Errorf("Token = %+v, %v; want new", got, err)
				}
			},
		},
		{
			name:  "token/delete installation",
			read:  func(d *DB) error { _, err := d.Token(ctx, "a"); return err },
			write: func(d *DB) error { return d.DeleteInstallation(ctx, "a") },
			check: func(t *testing.T, d *DB) {
				if got, err := d.Token(ctx, "a"); !addon.IsNotFound(err) {
					t.Errorf("Token = %+v, %v; want NotFound", got, err)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Key: testKey(1)})
			if err := d.PutInstallation(ctx, inst("a")); err != nil {
				t.Fatal(err)
			}
			if err := d.PutToken(ctx, "a", tok); err != nil {
				t.Fatal(err)
			}
			var writes int
			d.lookups.beforeFill = func() {
				// Only the first fill, the one of the old value; the
				// write itself does not fill.
				if writes++; writes == 1 {
					if err := tc.write(d); err != nil {
						t.Error(err)
					}
				}
			}
			if err := tc.read(d); err != nil {
				t.Fatal(err) // the old value, read before the write
			}
			if writes == 0 {
				t.Fatal("the read did not reach the fill")
			}
			d.lookups.beforeFill = nil
			tc.check(t, d)
		})
	}
}

// TestLookupCacheConcurrent runs readers against a writer that keeps
// replacing the installation and token (run it with -race): once a write
// has returned, no reader may see an older value.
func TestLookupCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{BatchDelay: -1})
	const writes = 50
	version := func(n int) (addon.Installation, addon.Token) {
		in := inst("a")
		in.OAuthSecret = fmt.Sprint(n)
		return in, addon.Token{AccessToken: fmt.Sprint(n)}
	}
	put := func(n int) {
		in, tok := version(n)
		if err := d.PutInstallation(ctx, in); err != nil {
			t.Error(err)
		}
		if err := d.PutToken(ctx, "a", tok); err != nil {
			t.Error(err)
		}
	}
	put(0)
	var (
		mu        sync.Mutex
		committed int // the last version whose writes have returned
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				floor := committed
				mu.Unlock()
				in, err := d.Installation(ctx, "a")
				if err != nil {
					t.Error(err)
					return
				}
				tok, err := d.Token(ctx, "a")
				if err != nil {
					t.Error(err)
					return
				}
				var gi, gt int
				fmt.Sscan(in.OAuthSecret, &gi)
				fmt.Sscan(tok.AccessToken, &gt)
				if gi < floor || gt < floor {
					t.Errorf("read installation %d, token %d after version %d was written", gi, gt, floor)
					return
				}
			}
		})
	}
	for n := 1; n <= writes; n++ {
		put(n)
		mu.Lock()
		committed = n
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	want, wantTok := version(writes)
	if got, err := d.Installation(ctx, "a"); err != nil || got != want {
		t.Errorf("final Installation = %+v, %v; want %+v", got, err, want)
	}
	if got, err := d.Token(ctx, "a"); err != nil || got != wantTok {
		t.Errorf("final Token = %+v, %v; want %+v", got, err, wantTok)
	}
}

// TestLookupCacheTypesAreFlat guards lookupCache's copying: it returns
// entries by value, which is a full copy only while addon.Installation and
// addon.Token hold no pointers, slices or maps (time.Time aside, whose
// Location is never modified). A field that breaks this needs a deep copy
// in lookupCache.installation or token.
func TestLookupCacheTypesAreFlat(t *testing.T) {
	timeType := reflect.TypeFor[time.Time]()
	for _, typ := range []reflect.Type{reflect.TypeFor[addon.Installation](), reflect.TypeFor[addon.Token]()} {
		for f := range typ.Fields() {
			switch f.Type.Kind() {
			case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
				reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
			default:
				if f.Type != timeType {
					t.Errorf("%s.%s is a %s: lookupCache must copy it deeply", typ, f.Name, f.Type)
				}
			}
		}
	}
}
