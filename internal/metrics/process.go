package metrics

import (
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const (
	startTimeName = "process_start_time_seconds"
	// startTimeHelp is client_golang's help string, so that the series
	// looks exactly like the stock one to dashboards and to the registry.
	startTimeHelp = "Start time of the process since unix epoch in seconds."
)

// processCollector is client_golang's process collector with its
// process_start_time_seconds replaced by one that does not need /proc/stat.
//
// On Linux the stock collector computes the start time as btime from
// /proc/stat plus starttime from /proc/self/stat, and silently drops the
// series when /proc/stat cannot be read, which is always the case under the
// unit's ProcSubset=pid (systemd mounts /proc with subset=pid). Here the
// boot time is derived from CLOCK_BOOTTIME instead (see processStartTime),
// computed once, and the stock series, when /proc/stat is readable after
// all, is filtered out so the registry never sees it twice.
type processCollector struct {
	stock      prometheus.Collector
	stockStart *prometheus.Desc // the stock collector's start time, nil when it has none
	start      prometheus.Metric
}

// newProcessCollector returns the process collector of New. fallback is
// the start time used when the real one cannot be determined (no readable
// /proc/self/stat, or no CLOCK_BOOTTIME), so that the series is always
// present.
func newProcessCollector(fallback time.Time) prometheus.Collector {
	stock := collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
	if runtime.GOOS != "linux" {
		// Elsewhere client_golang does not read /proc/stat for it.
		return stock
	}
	start, err := processStartTime()
	if err != nil {
		start = fallback
	}
	return &processCollector{
		stock:      stock,
		stockStart: findDesc(stock, startTimeName),
		start: prometheus.MustNewConstMetric(
			prometheus.NewDesc(startTimeName, startTimeHelp, nil, nil),
			prometheus.GaugeValue, float64(start.UnixNano())/1e9),
	}
}

// findDesc returns the Desc named name that c describes, or nil. Desc has
// no accessor for its name, only String, which quotes it as fqName.
func findDesc(c prometheus.Collector, name string) *prometheus.Desc {
	want := `fqName: "` + name + `"`
	var found *prometheus.Desc
	for d := range describe(c) {
		if found == nil && strings.Contains(d.String(), want) {
			found = d
		}
	}
	return found
}

func describe(c prometheus.Collector) <-chan *prometheus.Desc {
	ch := make(chan *prometheus.Desc)
	go func() {
		defer close(ch)
		c.Describe(ch)
	}()
	return ch
}

func (c *processCollector) Describe(ch chan<- *prometheus.Desc) {
	for d := range describe(c.stock) {
		if d != c.stockStart {
			ch <- d
		}
	}
	ch <- c.start.Desc()
}

// Collect passes on the stock collector's metrics but its start time (a
// metric's Desc is the very pointer its collector describes), then its own.
func (c *processCollector) Collect(ch chan<- prometheus.Metric) {
	stock := make(chan prometheus.Metric)
	go func() {
		defer close(stock)
		c.stock.Collect(stock)
	}()
	for m := range stock {
		if c.stockStart == nil || m.Desc() != c.stockStart {
			ch <- m
		}
	}
	ch <- c.start
}
