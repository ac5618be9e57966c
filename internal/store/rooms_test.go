package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestHeadsOnePerRoomOldestFirst(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	for _, id := range []string{"noisy", "quiet"} {
		if err := d.PutInstallation(ctx, addon.Installation{OAuthID: id, OAuthSecret: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	enqueue := func(id string, room int64, msg string) uint64 {
		t.Helper()
		j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: id, RoomID: room, MessageID: msg})
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	first := enqueue("noisy", 1, "n0")
	for i := 1; i < 500; i++ {
		enqueue("noisy", 1, fmt.Sprint("n", i))
	}
	quiet := enqueue("quiet", 7, "q0")
	enqueue("quiet", 7, "q1")
	other := enqueue("noisy", 2, "m0")

	heads, err := d.Heads(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, j := range heads {
		got = append(got, j.ID)
	}
	if want := []uint64{first, quiet, other}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("heads = %v, want %v (the oldest job of each room, by ID)", got, want)
	}
	if h, _ := d.Heads(ctx, 2); len(h) != 2 {
		t.Errorf("Heads(2) returned %d jobs", len(h))
	}

	// The next head follows as jobs leave the queue, whichever way.
	if err := d.Complete(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := d.Bury(ctx, quiet, "gone for good"); err != nil {
		t.Fatal(err)
	}
	heads, _ = d.Heads(ctx, 0)
	if len(heads) != 3 || heads[0].ID != first+1 || heads[1].ID != quiet+1 {
		t.Errorf("after Complete and Bury, heads = %+v", heads)
	}
	if _, err := d.RetryDead(ctx, quiet); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteInstallation(ctx, "noisy"); err != nil {
		t.Fatal(err)
	}
	heads, _ = d.Heads(ctx, 0)
	if len(heads) != 1 || heads[0].OAuthID != "quiet" || heads[0].MessageID != "q1" {
		t.Errorf("after deleting noisy, heads = %+v", heads)
	}
}

func TestRoomIndexRebuiltForOlderFiles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d := openPath(t, path, Options{})
	if err := d.PutInstallation(ctx, addon.Installation{OAuthID: "a", OAuthSecret: "s"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", RoomID: int64(i % 2), MessageID: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// A file from before the index: drop it.
	if err := d.db.Update(func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte(bucketRoomQueue)) }); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = openPath(t, path, Options{})
	heads, err := d.Heads(ctx, 0)
	if err != nil || len(heads) != 2 {
		t.Fatalf("heads after rebuild = %+v, %v; want one per room", heads, err)
	}
}
