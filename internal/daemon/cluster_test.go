package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/pgstore"
	"github.com/hipconnect/hipconnect/internal/pgstore/pgtest"
	"github.com/prometheus/client_golang/prometheus"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// steps is a clock that reads each of its times once, then the last.
type steps struct {
	mu    sync.Mutex
	times []time.Time
}

func (s *steps) now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.times[0]
	if len(s.times) > 1 {
		s.times = s.times[1:]
	}
	return t
}

// TestRoundAfterLapse: a round that started while the leases held but
// ended after their local end tells the dispatcher of all of them again
// (jobs told meanwhile were dropped as another node's), and a node owns
// nothing between the local end and that round.
func TestRoundAfterLapse(t *testing.T) {
	ctx := t.Context()
	db, err := pgstore.Open(ctx, pgstore.Options{DSN: pgtest.Start(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	if err := db.PutInstallation(ctx, addon.Installation{OAuthID: "a"}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	clock := &steps{times: []time.Time{
		t0, t0, // round 1: start, end
		t0.Add(leaseTTL - leaseMargin),                    // Owns, at the local end
		t0.Add(3 * time.Second), t0.Add(12 * time.Second), // round 2 starts in time, ends late
	}}
	var logs bytes.Buffer
	c := newCluster(db, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(&logs, nil)), clock.now)
	c.disp = delivery.New(delivery.Options{Store: db, Owns: c.Owns})
	c.round(ctx)
	if c.Owns("a") {
		t.Error(`"a" owned at the local end of its lease`)
	}
	c.round(ctx)
	if n := strings.Count(logs.String(), "gained=1"); n != 2 {
		t.Errorf("%d rounds told the dispatcher of the installation, want 2 (the second after the lapse):\n%s", n, logs.String())
	}
}
