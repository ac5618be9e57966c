//go:build !linux

package sdnotify

// Reloading returns the state that tells systemd a configuration reload has
// begun. Outside Linux there is no systemd, and no monotonic clock to report.
func Reloading() string { return "RELOADING=1" }
