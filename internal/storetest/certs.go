package storetest

import (
	"errors"
	"io/fs"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func certCases() []testCase {
	return []testCase{
		{"StoreLoadDelete", testCertStoreLoadDelete},
		{"Exists", testCertExists},
		{"List", testCertList},
		{"Stat", testCertStat},
		{"LockExcludes", testCertLockExcludes},
		{"LockDistinctNames", testCertLockDistinct},
		{"UnlockUnheldHarmless", testCertUnlockUnheld},
	}
}

// certFiles are the keys the certmagic cases store, with their values.
var certFiles = map[string]string{
	"acme/ca/users/me@x/me.json":       "account",
	"acme/ca/users/me@x/me.key":        "account key",
	"certificates/ca/a.example/a.crt":  "cert a",
	"certificates/ca/a.example/a.key":  "key a",
	"certificates/ca/a.example/a.json": "meta a",
	"certificates/ca/ab.example/b.crt": "cert ab",
	"certificates/ca2/c.example/c.crt": "cert c",
	"last_clean.json":                  "{}",
}

// storeCertFiles stores certFiles in s.
func storeCertFiles(t *testing.T, s certmagic.Storage) {
	t.Helper()
	for k, v := range certFiles {
		if err := s.Store(t.Context(), k, []byte(v)); err != nil {
			t.Fatalf("Store(%s): %v", k, err)
		}
	}
}

// wantLoad fails t unless s holds want at key.
func wantLoad(t *testing.T, s certmagic.Storage, key, want string) {
	t.Helper()
	got, err := s.Load(t.Context(), key)
	if err != nil || string(got) != want {
		t.Errorf("Load(%s) = %q, %v; want %q", key, got, err, want)
	}
}

// wantNotExist fails t unless err satisfies errors.Is(err, fs.ErrNotExist).
func wantNotExist(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: err = %v, want fs.ErrNotExist", what, err)
	}
}

// testCertStoreLoadDelete: Load returns what Store stored last; Delete
// removes a file, or a directory with everything under it (by path
// component, not string prefix), and an absent key is no error.
func testCertStoreLoadDelete(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Certs
	_, err := s.Load(ctx, "certificates/ca/a.example/a.crt")
	wantNotExist(t, "Load of an empty storage", err)
	storeCertFiles(t, s)
	for k, v := range certFiles {
		wantLoad(t, s, k, v)
	}
	if err := s.Store(ctx, "certificates/ca/a.example/a.crt", []byte("cert a2")); err != nil {
		t.Fatal(err)
	}
	wantLoad(t, s, "certificates/ca/a.example/a.crt", "cert a2")

	if err := s.Delete(ctx, "last_clean.json"); err != nil {
		t.Fatalf("Delete of a file: %v", err)
	}
	_, err = s.Load(ctx, "last_clean.json")
	wantNotExist(t, "Load after Delete", err)
	if err := s.Delete(ctx, "certificates/ca/a.example"); err != nil {
		t.Fatalf("Delete of a directory: %v", err)
	}
	for _, k := range []string{"a.crt", "a.key", "a.json"} {
		_, err := s.Load(ctx, "certificates/ca/a.example/"+k)
		wantNotExist(t, "Load of a file in a deleted directory", err)
	}
	wantLoad(t, s, "certificates/ca/ab.example/b.crt", "cert ab")
	wantLoad(t, s, "certificates/ca2/c.example/c.crt", "cert c")
	for _, k := range []string{"certificates/ca/a.example", "last_clean.json", "nothing/here"} {
		if err := s.Delete(ctx, k); err != nil {
			t.Errorf("Delete of absent %s: %v, want nil", k, err)
		}
	}
}

// testCertExists: a stored key and each directory above it exist; a string
// prefix that is no path component does not.
func testCertExists(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Certs
	if s.Exists(ctx, "certificates") {
		t.Error("Exists in an empty storage")
	}
	storeCertFiles(t, s)
	tests := []struct {
		key  string
		want bool
	}{
		{"certificates/ca/a.example/a.crt", true},
		{"certificates/ca/a.example", true},
		{"certificates/ca", true},
		{"certificates", true},
		{"certificates/c", false},
		{"certificates/ca/a.exam", false},
		{"certificates/ca/a.example/a.crt/x", false},
		{"nope", false},
	}
	for _, tt := range tests {
		if got := s.Exists(ctx, tt.key); got != tt.want {
			t.Errorf("Exists(%q) = %v, want %v", tt.key, got, tt.want)
		}
	}
}

// testCertList: List names the immediate children of a directory, or with
// recursive every key and directory below it; a missing directory is
// fs.ErrNotExist. The order is not part of the contract.
func testCertList(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Certs
	storeCertFiles(t, s)
	tests := []struct {
		path      string
		recursive bool
		want      []string
	}{
		{"certificates", false, []string{"certificates/ca", "certificates/ca2"}},
		{"certificates/ca", false, []string{"certificates/ca/a.example", "certificates/ca/ab.example"}},
		{"certificates/ca/a.example", false, []string{
			"certificates/ca/a.example/a.crt", "certificates/ca/a.example/a.json", "certificates/ca/a.example/a.key"}},
		{"certificates", true, []string{
			"certificates/ca", "certificates/ca/a.example",
			"certificates/ca/a.example/a.crt", "certificates/ca/a.example/a.json", "certificates/ca/a.example/a.key",
			"certificates/ca/ab.example", "certificates/ca/ab.example/b.crt",
			"certificates/ca2", "certificates/ca2/c.example", "certificates/ca2/c.example/c.crt"}},
		{"acme/ca/users", true, []string{
			"acme/ca/users/me@x", "acme/ca/users/me@x/me.json", "acme/ca/users/me@x/me.key"}},
	}
	for _, tt := range tests {
		got, err := s.List(ctx, tt.path, tt.recursive)
		if err != nil {
			t.Errorf("List(%q, %v): %v", tt.path, tt.recursive, err)
			continue
		}
		if got := sortedCopy(got); !slices.Equal(got, sortedCopy(tt.want)) {
			t.Errorf("List(%q, %v) = %q, want %q", tt.path, tt.recursive, got, sortedCopy(tt.want))
		}
	}
	_, err := s.List(ctx, "certificates/zz", false)
	wantNotExist(t, "List of a missing directory", err)
}

// testCertStat: Stat describes a file (terminal, with size and a modified
// time) and a directory (not terminal); an absent key is fs.ErrNotExist.
func testCertStat(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Certs
	storeCertFiles(t, s)
	const file = "certificates/ca/ab.example/b.crt"
	ki, err := s.Stat(ctx, file)
	if err != nil || ki.Key != file || !ki.IsTerminal || ki.Size != int64(len(certFiles[file])) || ki.Modified.IsZero() {
		t.Errorf("Stat(file) = %+v, %v; want terminal %s of %d bytes with a modified time", ki, err, file, len(certFiles[file]))
	}
	const key = "certificates/ca/a.example/a.key" // a private key: maybe encrypted at rest
	if ki, err := s.Stat(ctx, key); err != nil || ki.Size != int64(len(certFiles[key])) {
		t.Errorf("Stat(private key) = %+v, %v; want its plaintext size %d", ki, err, len(certFiles[key]))
	}
	ki, err = s.Stat(ctx, "certificates/ca")
	if err != nil || ki.Key != "certificates/ca" || ki.IsTerminal {
		t.Errorf("Stat(directory) = %+v, %v; want a non-terminal certificates/ca", ki, err)
	}
	_, err = s.Stat(ctx, "certificates/zz")
	wantNotExist(t, "Stat of an absent key", err)
}

// lockWithin locks name, failing t unless that succeeds within waitLimit.
func lockWithin(t *testing.T, s certmagic.Storage, name string) {
	t.Helper()
	if err := s.Lock(ctxWithin(t, waitLimit), name); err != nil {
		t.Fatalf("Lock(%s): %v", name, err)
	}
}

// unlock unlocks name, which must be held.
func unlock(t *testing.T, s certmagic.Storage, name string) {
	t.Helper()
	if err := s.Unlock(t.Context(), name); err != nil {
		t.Fatalf("Unlock(%s): %v", name, err)
	}
}

// wantBlocked fails t unless Lock of name (held) fails once its context
// expires after blockFor, rather than taking the lock.
func wantBlocked(t *testing.T, s certmagic.Storage, name string) {
	t.Helper()
	if err := s.Lock(ctxWithin(t, blockFor), name); err == nil {
		t.Fatalf("Lock(%s) of a held lock succeeded", name)
	}
}

// testCertLockExcludes: a second Lock of a held name blocks until Unlock,
// then gets the lock.
func testCertLockExcludes(t *testing.T, b Backend) {
	s := b.Certs
	const name = "issue_cert_a.example"
	lockWithin(t, s, name)
	wantBlocked(t, s, name)

	var released atomic.Bool
	got := make(chan error, 1)
	ctx := ctxWithin(t, waitLimit)
	go func() {
		err := s.Lock(ctx, name)
		if err == nil && !released.Load() {
			err = errors.New("second Lock took the lock before Unlock")
		}
		got <- err
	}()
	released.Store(true)
	unlock(t, s, name)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("second locker: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatalf("second locker did not get the released lock within %v", waitLimit)
	}
	wantBlocked(t, s, name) // the second locker holds it now
	unlock(t, s, name)
	lockWithin(t, s, name)
	unlock(t, s, name)
}

// testCertLockDistinctNames: locks of different names do not block each
// other.
func testCertLockDistinct(t *testing.T, b Backend) {
	s := b.Certs
	lockWithin(t, s, "x")
	lockWithin(t, s, "y")
	lockWithin(t, s, "x2")
	wantBlocked(t, s, "x")
	unlock(t, s, "y")
	wantBlocked(t, s, "x") // releasing another name released nothing of x
	unlock(t, s, "x")
	unlock(t, s, "x2")
}

// testCertUnlockUnheld: certmagic's Locker allows Unlock only after Lock,
// so Unlock of a lock not held may fail or do nothing; either way it must
// not break the lock table: a held lock stays held, a free one can be
// taken.
func testCertUnlockUnheld(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Certs
	_ = s.Unlock(ctx, "never") // an error is allowed
	lockWithin(t, s, "never")
	unlock(t, s, "never")
	_ = s.Unlock(ctx, "never") // unlocked twice: an error is allowed

	lockWithin(t, s, "held")
	_ = s.Unlock(ctx, "other")
	wantBlocked(t, s, "held")
	lockWithin(t, s, "never")
	unlock(t, s, "never")
	unlock(t, s, "held")
	lockWithin(t, s, "held")
	unlock(t, s, "held")
}
