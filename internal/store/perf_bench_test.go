package store

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// Benchmarks behind docs/performance.md; run with
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/store/

// batchDelays are the Options.BatchDelay values compared (-1: none).
var batchDelays = []time.Duration{-1, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond}

// BenchmarkBatchDelay enqueues and completes jobs, alone (what a lone
// command waits: its latency) and from 16 goroutines per CPU (how many
// commits the batching saves: throughput), for each batch delay.
func BenchmarkBatchDelay(b *testing.B) {
	for _, delay := range batchDelays {
		for _, par := range []int{0, 16} {
			name := fmt.Sprintf("delay=%s/serial", delay)
			if par > 0 {
				name = fmt.Sprintf("delay=%s/parallel=%d", delay, par)
			}
			if delay < 0 {
				name = "delay=none" + name[len(fmt.Sprintf("delay=%s", delay)):]
			}
			b.Run(name, func(b *testing.B) {
				ctx := context.Background()
				d := openPath(b, filepath.Join(b.TempDir(), "hipconnect.db"), Options{BatchDelay: delay})
				if err := d.PutInstallation(ctx, inst("a")); err != nil {
					b.Fatal(err)
				}
				var seq atomic.Int64
				txBefore := txID(d)
				op := func() error {
					j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: fmt.Sprint("m", seq.Add(1)), Command: "echo", Args: "x"})
					if err != nil {
						return err
					}
					return d.Complete(ctx, j.ID)
				}
				b.ResetTimer()
				if par == 0 {
					for b.Loop() {
						if err := op(); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.SetParallelism(par)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := op(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				b.StopTimer()
				if commits := txID(d) - txBefore; commits > 0 {
					b.ReportMetric(float64(2*b.N)/float64(commits), "writes/commit")
				}
			})
		}
	}
}

// BenchmarkWritesByInstallations enqueues and completes jobs from 32
// goroutines spread over n installations: the cost of a command's writes
// should not grow with n (docs/performance.md).
func BenchmarkWritesByInstallations(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("installs=%d", n), func(b *testing.B) {
			ctx := context.Background()
			d := openPath(b, filepath.Join(b.TempDir(), "hipconnect.db"), Options{})
			for i := range n {
				if err := d.PutInstallation(ctx, inst(fmt.Sprintf("%08x-1b26-407e-811d-b9e377e4c440", i*2654435761%(1<<32)))); err != nil {
					b.Fatal(err)
				}
			}
			var seq atomic.Int64
			b.SetParallelism(16)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := seq.Add(1)
					id := fmt.Sprintf("%08x-1b26-407e-811d-b9e377e4c440", int(k)%n*2654435761%(1<<32))
					j, _, err := d.Enqueue(ctx, addon.Job{OAuthID: id, RoomID: 1000 + k%10, MessageID: fmt.Sprint("m", k), Command: "echo", Args: "x"})
					if err == nil {
						err = d.Complete(ctx, j.ID)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func txID(d *DB) int {
	var id int
	_ = d.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

// fillOutbox opens a test store with installations inst-0..inst-9 and
// enqueues n jobs round-robin over the given number of rooms (room r
// belongs to inst-(r%10)).
func fillOutbox(b *testing.B, n, rooms int) *DB {
	ctx := context.Background()
	d := openTest(b)
	for i := range 10 {
		if err := d.PutInstallation(ctx, inst(fmt.Sprint("inst-", i))); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		room := i % rooms
		_, _, err := d.Enqueue(ctx, addon.Job{OAuthID: fmt.Sprint("inst-", room%10), RoomID: int64(1000 + room),
			MessageID: fmt.Sprintf("224628c2-c7b5-4aea-a0bd-%012d", i), Command: "hascode", Args: "java",
			From: "Blinky the Three Eyed Fish"})
		if err != nil {
			b.Fatal(err)
		}
	}
	return d
}

// BenchmarkPending reads the whole outbox in ID order (what the dispatcher
// reads at start): Pending(ctx, 1000) with n jobs waiting.
func BenchmarkPending(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("jobs=%d", n), func(b *testing.B) {
			ctx := context.Background()
			d := fillOutbox(b, n, 50)
			b.ReportAllocs()
			for b.Loop() {
				jobs, err := d.Pending(ctx, 1000)
				if err != nil || len(jobs) != n {
					b.Fatalf("Pending = %d jobs, %v", len(jobs), err)
				}
			}
		})
	}
}

// BenchmarkInstallation is the lookup every webhook (JWT verification) and
// every delivery makes, with the secret encrypted at rest as the daemon
// stores it.
func BenchmarkInstallation(b *testing.B) {
	ctx := context.Background()
	d := openPath(b, filepath.Join(b.TempDir(), "hipconnect.db"), Options{Key: testKey(1)})
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Installation(ctx, "a"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookups is what a command costs the store besides its writes:
// one Installation and one Token lookup per op (a command makes 2-3 of the
// former and one of the latter), cycling over n installations stored with
// their secrets encrypted, as the daemon stores them. Every installation
// is looked up once before the timing starts, as in a daemon that has been
// running a while (see lookupCache). The cost per op should not grow with n.
func BenchmarkLookups(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("installs=%d", n), func(b *testing.B) {
			ctx := context.Background()
			d := openPath(b, filepath.Join(b.TempDir(), "hipconnect.db"), Options{Key: testKey(1)})
			ids := make([]string, n)
			for i := range ids {
				ids[i] = fmt.Sprintf("%08x-1b26-407e-811d-b9e377e4c440", i*2654435761%(1<<32))
				if err := d.PutInstallation(ctx, inst(ids[i])); err != nil {
					b.Fatal(err)
				}
				tok := addon.Token{AccessToken: "token-" + ids[i], Scope: "send_notification", ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
				if err := d.PutToken(ctx, ids[i], tok); err != nil {
					b.Fatal(err)
				}
			}
			lookup := func(id string) {
				if _, err := d.Installation(ctx, id); err != nil {
					b.Fatal(err)
				}
				if _, err := d.Token(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			for _, id := range ids {
				lookup(id)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				lookup(ids[i%n])
				i++
			}
		})
	}
}
