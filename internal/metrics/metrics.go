// Package metrics owns hipconnect's Prometheus registry and the collectors
// the other packages report to. Nothing here touches the global registry.
package metrics

import (
	"context"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of hipconnect's own metrics, registered in Registry.
type Metrics struct {
	Registry *prometheus.Registry

	Installs     *prometheus.CounterVec   // result
	Uninstalls   *prometheus.CounterVec   // result
	Webhooks     *prometheus.CounterVec   // result
	Commands     *prometheus.CounterVec   // command, result
	Deliveries   *prometheus.CounterVec   // outcome: delivered, retry, dead, dropped
	RateLimited  prometheus.Counter       // 429s HipChat answered
	HTTPDuration *prometheus.HistogramVec // route, code
	Delivery     prometheus.Histogram     // seconds from webhook acknowledged to notification sent
	ReloadOK     prometheus.Gauge         // 1 if the last configuration reload succeeded
	ReloadTime   prometheus.Gauge         // when the configuration was last loaded successfully
}

// Stats are gauges read at scrape time.
type Stats struct {
	Installations int
	PendingJobs   int
	DeadLetters   int
	OldestPending time.Time // zero when nothing is pending
	// PendingUninstalls counts the uninstalls requested and not yet
	// confirmed by HipChat.
	PendingUninstalls int
}

// New returns Metrics in a fresh registry with the Go and process
// collectors, hipconnect_build_info, and gauges read from stats at each
// scrape (stats may be nil). process_start_time_seconds is always there,
// also where /proc/stat is hidden (ProcSubset=pid): see processCollector.
func New(version string, stats func(context.Context) (Stats, error)) *Metrics {
	created := time.Now()
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Installs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_installs_total", Help: "Install callbacks by result.",
		}, []string{"result"}),
		Uninstalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_uninstalls_total", Help: "Uninstall requests by result.",
		}, []string{"result"}),
		Webhooks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_webhooks_total", Help: "Webhook deliveries from HipChat by result.",
		}, []string{"result"}),
		Commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_commands_total", Help: "Slash commands run, by command and result.",
		}, []string{"command", "result"}),
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hipconnect_deliveries_total", Help: "Delivery attempts of acknowledged commands, by outcome (delivered, retry, dead, dropped).",
		}, []string{"outcome"}),
		RateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hipconnect_hipchat_rate_limited_total", Help: "Requests HipChat answered with 429.",
		}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "hipconnect_http_request_duration_seconds", Help: "Inbound HTTP requests by route and status code.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "code"}),
		Delivery: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "hipconnect_delivery_latency_seconds", Help: "Time from webhook acknowledged to reply delivered.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
	}
	m.ReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hipconnect_config_last_reload_successful", Help: "Whether the last configuration reload (SIGHUP) succeeded.",
	})
	m.ReloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hipconnect_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully.",
	})
	m.ReloadOK.Set(1)
	m.ReloadTime.SetToCurrentTime()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "hipconnect_build_info", Help: "Build information; the value is always 1.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	buildInfo.Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		newProcessCollector(created),
		buildInfo, m.Installs, m.Uninstalls, m.Webhooks, m.Commands, m.Deliveries, m.RateLimited, m.HTTPDuration, m.Delivery, m.ReloadOK, m.ReloadTime,
	)
	if stats != nil {
		reg.MustRegister(&statsCollector{stats: stats,
			installations: prometheus.NewDesc("hipconnect_installations", "Installations in the store.", nil, nil),
			outbox: prometheus.NewDesc("hipconnect_outbox_jobs",
				"Acknowledged commands in the outbox, by state: pending (not yet delivered) or dead (undeliverable).", []string{"state"}, nil),
			oldest: prometheus.NewDesc("hipconnect_outbox_oldest_age_seconds",
				"Age of the oldest pending command; 0 when none is pending.", nil, nil),
			up: prometheus.NewDesc("hipconnect_store_up", "Whether the store answered the last scrape.", nil, nil),
			uninstalls: prometheus.NewDesc("hipconnect_uninstalls_pending",
				"Uninstalls requested and not yet confirmed by HipChat (re-checked on a schedule).", nil, nil),
		})
	}
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

type statsCollector struct {
	stats                                         func(context.Context) (Stats, error)
	installations, outbox, oldest, up, uninstalls *prometheus.Desc
}

func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.installations
	ch <- c.outbox
	ch <- c.oldest
	ch <- c.up
	ch <- c.uninstalls
}

func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.stats(context.Background())
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.installations, prometheus.GaugeValue, float64(s.Installations))
	ch <- prometheus.MustNewConstMetric(c.uninstalls, prometheus.GaugeValue, float64(s.PendingUninstalls))
	ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(s.PendingJobs), "pending")
	ch <- prometheus.MustNewConstMetric(c.outbox, prometheus.GaugeValue, float64(s.DeadLetters), "dead")
	age := 0.0
	if !s.OldestPending.IsZero() {
		age = max(time.Since(s.OldestPending).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age)
}
