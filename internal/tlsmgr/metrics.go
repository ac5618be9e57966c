package tlsmgr

import "github.com/prometheus/client_golang/prometheus"

// Collector returns the Manager's metrics, to be registered in the daemon's
// own registry (never the global one):
//
//   - hipconnect_tls_certificate_expiry_timestamp_seconds{host}: NotAfter of
//     the certificate being served, read at scrape time; absent while there
//     is none (off mode, or before the first certificate).
//   - hipconnect_tls_renewals_total{result="success|failure"}: certificate
//     issuances, first ones included (acme and self-signed modes); an acme
//     failure is counted per attempt, retries included.
//   - hipconnect_tls_reloads_total{result="success|failure"}: Reload in
//     files mode.
//
// It returns the same collector on every call.
func (m *Manager) Collector() prometheus.Collector { return (*collector)(m) }

type collector Manager

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	c.renewals.Describe(ch)
	c.reloads.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	if leaf := (*Manager)(c).Leaf(); leaf != nil {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue,
			float64(leaf.NotAfter.Unix()), c.host)
	}
	c.renewals.Collect(ch)
	c.reloads.Collect(ch)
}
