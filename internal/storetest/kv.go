package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func kvCases() []testCase {
	return []testCase{
		{"GetPutDelete", testKVGetPutDelete},
		{"ListByPrefixInByteOrder", testKVList},
		{"NamespacesIsolated", testKVNamespaces},
		{"UpdateAbsentAndPresent", testKVUpdate},
		{"UpdateErrorStoresNothing", testKVUpdateError},
		{"UpdateConcurrentLosesNone", testKVUpdateConcurrent},
	}
}

// testKVGetPutDelete: Get returns what Put stored last; Get and Delete of
// an absent key are NotFound.
func testKVGetPutDelete(t *testing.T, b Backend) {
	ctx := t.Context()
	kv := b.Store.KV("storetest")
	_, err := kv.Get(ctx, "k")
	wantNotFound(t, "Get in an untouched namespace", err)
	wantNotFound(t, "Delete in an untouched namespace", kv.Delete(ctx, "k"))

	put(t, kv, "k", "one")
	wantValue(t, kv, "k", "one")
	put(t, kv, "k", "two")
	wantValue(t, kv, "k", "two")
	bin := string([]byte{0, 1, 0xff, '\n'})
	put(t, kv, "bin", bin)
	wantValue(t, kv, "bin", bin)
	put(t, kv, "empty", "")
	if got, err := kv.Get(ctx, "empty"); err != nil || len(got) != 0 {
		t.Errorf("Get of an empty value = %q, %v; want empty, nil", got, err)
	}
	_, err = kv.Get(ctx, "k2")
	wantNotFound(t, "Get of an absent key", err)

	if err := kv.Delete(ctx, "k"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err = kv.Get(ctx, "k")
	wantNotFound(t, "Get after Delete", err)
	wantNotFound(t, "second Delete", kv.Delete(ctx, "k"))
	wantValue(t, kv, "bin", bin)
}

// testKVList: List returns the keys starting with a prefix, in byte order.
func testKVList(t *testing.T, b Backend) {
	kv := b.Store.KV("storetest")
	if got := keys(t, kv, ""); len(got) != 0 {
		t.Errorf("List of an untouched namespace = %q, want none", got)
	}
	stored := []string{"p/b", "p/B", "p/10", "p/2", "p/é", "p/a/x", "p", "p0", "q/1", "o", "P/1"}
	for _, k := range stored {
		put(t, kv, k, "v-"+k)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", sortedCopy(stored)},
		{"p/", []string{"p/10", "p/2", "p/B", "p/a/x", "p/b", "p/é"}},
		{"p", []string{"p", "p/10", "p/2", "p/B", "p/a/x", "p/b", "p/é", "p0"}},
		{"p/a", []string{"p/a/x"}},
		{"P", []string{"P/1"}},
		{"p/é", []string{"p/é"}},
		{"zzz", nil},
	}
	for _, tt := range tests {
		if got := keys(t, kv, tt.prefix); !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

// testKVNamespaces: the same key in two namespaces is two entries.
func testKVNamespaces(t *testing.T, b Backend) {
	ctx := t.Context()
	one, two := b.Store.KV("storetest-one"), b.Store.KV("storetest-two")
	put(t, one, "k", "in one")
	_, err := two.Get(ctx, "k")
	wantNotFound(t, "Get in another namespace", err)
	if got := keys(t, two, ""); len(got) != 0 {
		t.Errorf("List of another namespace = %q, want none", got)
	}
	wantNotFound(t, "Delete in another namespace", two.Delete(ctx, "k"))
	put(t, two, "k", "in two")
	wantValue(t, one, "k", "in one")
	wantValue(t, two, "k", "in two")
	if err := one.Delete(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	wantValue(t, two, "k", "in two")
	wantValue(t, b.Store.KV("storetest-two"), "k", "in two")
}

// testKVUpdate: Update passes nil, false for an absent key and the stored
// value, true for a present one, and stores what fn returns.
func testKVUpdate(t *testing.T, b Backend) {
	ctx := t.Context()
	kv := b.Store.KV("storetest")
	err := kv.Update(ctx, "k", func(old []byte, found bool) ([]byte, error) {
		if old != nil || found {
			return nil, fmt.Errorf("fn of an absent key got %q, %v; want nil, false", old, found)
		}
		return []byte("one"), nil
	})
	if err != nil {
		t.Fatalf("Update of an absent key: %v", err)
	}
	wantValue(t, kv, "k", "one")
	err = kv.Update(ctx, "k", func(old []byte, found bool) ([]byte, error) {
		if string(old) != "one" || !found {
			return nil, fmt.Errorf("fn got %q, %v; want one, true", old, found)
		}
		return append(slices.Clone(old), "+two"...), nil
	})
	if err != nil {
		t.Fatalf("Update of a present key: %v", err)
	}
	wantValue(t, kv, "k", "one+two")
	if got := keys(t, kv, ""); !slices.Equal(got, []string{"k"}) {
		t.Errorf("List after Updates = %q, want [k]", got)
	}
}

// errRefused is what the failing fn of the Update cases returns.
var errRefused = errors.New("storetest: refused")

// testKVUpdateError: an error from fn is returned and nothing is stored,
// whether the key was absent or present.
func testKVUpdateError(t *testing.T, b Backend) {
	ctx := t.Context()
	kv := b.Store.KV("storetest")
	refuse := func([]byte, bool) ([]byte, error) { return []byte("lost"), errRefused }
	if err := kv.Update(ctx, "absent", refuse); !errors.Is(err, errRefused) {
		t.Errorf("Update of an absent key with fn failing = %v, want %v", err, errRefused)
	}
	_, err := kv.Get(ctx, "absent")
	wantNotFound(t, "Get after a failed Update", err)
	if got := keys(t, kv, ""); len(got) != 0 {
		t.Errorf("List after a failed Update = %q, want none", got)
	}

	put(t, kv, "present", "kept")
	domain := addon.Errorf(addon.Conflict, "storetest: conflict")
	for _, want := range []error{errRefused, domain} {
		err := kv.Update(ctx, "present", func([]byte, bool) ([]byte, error) { return []byte("lost"), want })
		if !errors.Is(err, want) {
			t.Errorf("Update of a present key with fn failing = %v, want %v", err, want)
		}
	}
	wantValue(t, kv, "present", "kept")
}

// testKVUpdateConcurrent: increments by many goroutines at once, with
// failing Updates among them (which make a backend that shares commits
// run the others' fn again), lose none and apply none twice: each
// increment's last run saw the value then stored, so the runs that counted
// saw 0, 1, 2, ... each once.
func testKVUpdateConcurrent(t *testing.T, b Backend) {
	kv := b.Store.KV("storetest")
	const goroutines, rounds, counters = 50, 4, 3
	var mu sync.Mutex
	saw := make(map[string][]int) // counter -> the value each increment's last run saw
	start := make(chan struct{})
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			<-start
			for r := range rounds {
				key := fmt.Sprint("counter/", (g+r)%counters)
				if r%2 == 1 {
					fail := func([]byte, bool) ([]byte, error) { return nil, errRefused }
					if err := kv.Update(t.Context(), key, fail); !errors.Is(err, errRefused) {
						t.Errorf("failing Update(%s) = %v", key, err)
					}
				}
				n, err := increment(t, kv, key)
				if err != nil {
					t.Errorf("Update(%s): %v", key, err)
					continue
				}
				mu.Lock()
				saw[key] = append(saw[key], n)
				mu.Unlock()
			}
		})
	}
	close(start)
	waitGroup(t, &wg)

	total := 0
	for c := range counters {
		key := fmt.Sprint("counter/", c)
		got := slices.Sorted(slices.Values(saw[key]))
		for i, n := range got {
			if n != i {
				t.Errorf("%s: the increments saw %v, want 0..%d each once", key, got, len(got)-1)
				break
			}
		}
		wantValue(t, kv, key, strconv.Itoa(len(got)))
		total += len(got)
	}
	if total != goroutines*rounds {
		t.Errorf("%d increments succeeded, want %d", total, goroutines*rounds)
	}
}

// increment adds one to the decimal counter at key (absent: 0) and returns
// the value its last run of fn saw.
func increment(t *testing.T, kv addon.KV, key string) (int, error) {
	t.Helper()
	var last int
	err := kv.Update(t.Context(), key, func(old []byte, found bool) ([]byte, error) {
		n := 0
		if found {
			var err error
			if n, err = strconv.Atoi(string(old)); err != nil {
				return nil, fmt.Errorf("counter %q: %w", old, err)
			}
		}
		last = n
		return strconv.AppendInt(nil, int64(n+1), 10), nil
	})
	return last, err
}
