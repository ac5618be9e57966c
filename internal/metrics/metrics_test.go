package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStatsGauges(t *testing.T) {
	stats := Stats{Installations: 3, PendingJobs: 5, DeadLetters: 1}
	var fail error
	m := New("1.2.3", func(context.Context) (Stats, error) { return stats, fail })
	m.Deliveries.WithLabelValues("delivered").Add(2)
	m.RateLimited.Inc()

	want := `
# HELP hipconnect_installations Installations in the store.
# TYPE hipconnect_installations gauge
hipconnect_installations 3
# HELP hipconnect_outbox_jobs Acknowledged commands in the outbox, by state: pending (not yet delivered) or dead (undeliverable).
# TYPE hipconnect_outbox_jobs gauge
hipconnect_outbox_jobs{state="dead"} 1
hipconnect_outbox_jobs{state="pending"} 5
# HELP hipconnect_outbox_oldest_age_seconds Age of the oldest pending command; 0 when none is pending.
# TYPE hipconnect_outbox_oldest_age_seconds gauge
hipconnect_outbox_oldest_age_seconds 0
# HELP hipconnect_store_up Whether the store answered the last scrape.
# TYPE hipconnect_store_up gauge
hipconnect_store_up 1
# HELP hipconnect_deliveries_total Delivery attempts of acknowledged commands, by outcome (delivered, retry, dead, dropped).
# TYPE hipconnect_deliveries_total counter
hipconnect_deliveries_total{outcome="delivered"} 2
# HELP hipconnect_hipchat_rate_limited_total Requests HipChat answered with 429.
# TYPE hipconnect_hipchat_rate_limited_total counter
hipconnect_hipchat_rate_limited_total 1
`
	names := []string{"hipconnect_installations", "hipconnect_outbox_jobs", "hipconnect_outbox_oldest_age_seconds",
		"hipconnect_store_up", "hipconnect_deliveries_total", "hipconnect_hipchat_rate_limited_total"}
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	stats.OldestPending = time.Now().Add(-time.Minute)
	if n, err := testutil.GatherAndCount(m.Registry, "hipconnect_outbox_oldest_age_seconds"); err != nil || n != 1 {
		t.Fatalf("oldest age: %d series, %v", n, err)
	}

	fail = errors.New("store closed")
	down := "# HELP hipconnect_store_up Whether the store answered the last scrape.\n# TYPE hipconnect_store_up gauge\nhipconnect_store_up 0\n"
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(down), "hipconnect_store_up", "hipconnect_installations"); err != nil {
		t.Errorf("store down: %v", err)
	}
}

func TestBuildInfo(t *testing.T) {
	m := New("1.2.3", nil)
	if n, err := testutil.GatherAndCount(m.Registry, "hipconnect_build_info"); err != nil || n != 1 {
		t.Errorf("build_info series = %d, %v", n, err)
	}
	if got := testutil.ToFloat64(m.ReloadOK); got != 1 {
		t.Errorf("reload successful at start = %v, want 1", got)
	}
}
