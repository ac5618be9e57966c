package slash

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// BenchmarkAfterSearch records searches from 64 concurrent goroutines on a
// real bbolt file, spread over one room (all contending for one record) or
// many, each room's history already full so every search also drops the
// oldest. The glance push is a no-op: what is measured is the bookkeeping.
func BenchmarkAfterSearch(b *testing.B) {
	for _, rooms := range []int{1, 64} {
		b.Run(fmt.Sprintf("rooms=%d", rooms), func(b *testing.B) {
			var pushes atomic.Int64
			f := newFixture(b, fixtureOpts{push: func(context.Context, addon.Installation, int64, hipchat.Glance) error {
				pushes.Add(1)
				return nil
			}})
			inst := f.inst
			inst.RoomID = 0 // the installation covers every room
			ctx := context.Background()
			hits := benchHits(5)
			for r := range rooms {
				for range HistoryLimit {
					if err := f.sv.AfterSearch(ctx, inst, int64(r+1), "hascode", "warm-up", hits); err != nil {
						b.Fatal(err)
					}
				}
			}
			var next atomic.Int64
			b.SetParallelism(32) // 64 goroutines on 2 cores, as under load
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					room := next.Add(1)%int64(rooms) + 1
					if err := f.sv.AfterSearch(ctx, inst, room, "hascode", "java generics", hits); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// benchHits returns n hits shaped like the blog's.
func benchHits(n int) []command.Hit {
	hits := make([]command.Hit, n)
	for i := range hits {
		hits[i] = command.Hit{
			Title: fmt.Sprintf("Java Generics %d: %s", i, strings.Repeat("bounded wildcards ", 4)),
			URL:   fmt.Sprintf("https://www.hascode.com/2026/11/java-generics-part-%d/", i),
		}
	}
	return hits
}

// BenchmarkPrependSearch is the part of recording a search that runs in
// the store's write transaction, on a full history.
func BenchmarkPrependSearch(b *testing.B) {
	s := Search{Command: "hascode", Term: "java generics", Total: 5}
	for _, h := range benchHits(HitsPerSearch) {
		s.Hits = append(s.Hits, Hit(h))
	}
	entry, err := json.Marshal(s)
	if err != nil {
		b.Fatal(err)
	}
	var rec []byte
	found := false
	for range HistoryLimit {
		if rec, _, err = prependSearch(rec, found, "2026-W48", true, entry); err != nil {
			b.Fatal(err)
		}
		found = true
	}
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := prependSearch(rec, true, "2026-W48", true, entry); err != nil {
			b.Fatal(err)
		}
	}
}
