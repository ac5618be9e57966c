package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// stats summarizes durations, in milliseconds.
type stats struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// summarize sorts d and takes nearest-rank percentiles.
func summarize(d []time.Duration) stats {
	if len(d) == 0 {
		return stats{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	pct := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(d)))) - 1
		return ms(d[min(max(i, 0), len(d)-1)])
	}
	return stats{N: len(d), Mean: ms(sum / time.Duration(len(d))), P50: pct(50), P90: pct(90), P99: pct(99), Max: ms(d[len(d)-1])}
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func mb(kb int64) float64 { return math.Round(float64(kb)/1024*10) / 10 }

// phase is everything measured about one server: hipconnect or the
// baseline.
type phase struct {
	Name    string  `json:"name"`
	PID     int     `json:"pid,omitempty"`
	ReadyMS float64 `json:"ready_ms,omitempty"` // process start to the first 200 from /readyz
	// ReadyAfterRestartMS is the same after a restart with every
	// installation stored (-restart).
	ReadyAfterRestartMS float64        `json:"ready_after_restart_ms,omitempty"`
	Installs            int            `json:"installs,omitempty"`
	InstallSeconds      float64        `json:"install_seconds,omitempty"`
	InstallsPerSecond   float64        `json:"installs_per_second,omitempty"`
	InstallErrors       map[string]int `json:"install_errors,omitempty"`
	RSSReadyMB          float64        `json:"rss_ready_mb,omitempty"` // VmRSS right after ready
	RSSIdleMB           float64        `json:"rss_idle_mb,omitempty"`  // VmRSS idle, installations done, before load
	RSSLoadMB           float64        `json:"rss_load_mb,omitempty"`  // largest VmRSS sampled under load
	HWMMB               float64        `json:"vmhwm_mb,omitempty"`     // VmHWM at the end: peak RSS since start
	CPUCores            float64        `json:"cpu_cores,omitempty"`    // CPU time under load / wall time
	CPUPerCommandUS     float64        `json:"cpu_us_per_command,omitempty"`
	// The CPU of the target with the -cpu-pid processes and their
	// descendants (CountedProcesses of them at the end).
	CountedCPUCores        float64        `json:"counted_cpu_cores,omitempty"`
	CountedCPUPerCommandUS float64        `json:"counted_cpu_us_per_command,omitempty"`
	CountedProcesses       int            `json:"counted_processes,omitempty"`
	ToolCPUCores           float64        `json:"tool_cpu_cores,omitempty"` // the load tool and fakes, same window
	ShutdownMS             float64        `json:"shutdown_ms,omitempty"`
	Load                   loadResult     `json:"load"`
	Fake                   map[string]int `json:"fake_hipchat"`
	LogFile                string         `json:"log_file,omitempty"`
}

// report is the whole output.
type report struct {
	Setup      setup              `json:"setup"`
	Hipconnect *phase             `json:"hipconnect,omitempty"`
	Baseline   *phase             `json:"baseline,omitempty"`
	Ratios     map[string]float64 `json:"ratios,omitempty"` // hipconnect / baseline
	Warnings   []string           `json:"warnings,omitempty"`
}

// setup is what was asked and where it ran.
type setup struct {
	Command     string    `json:"command"`
	Commands    int       `json:"commands"`
	Installs    int       `json:"installs"`
	Rooms       int       `json:"rooms_per_install"`
	Concurrency int       `json:"concurrency,omitempty"`
	Rate        float64   `json:"rate,omitempty"`
	Duration    string    `json:"duration_cap"`
	TLS         string    `json:"tls,omitempty"` // the started daemon's tls.mode (-tls): off or files; empty with -target
	CPUs        int       `json:"cpus"`
	GoVersion   string    `json:"go"`
	Kernel      string    `json:"kernel"`
	LoadBefore  string    `json:"loadavg_before"`
	LoadAfter   string    `json:"loadavg_after"`
	Started     time.Time `json:"started"`
}

// ratios compares hipconnect to the baseline: throughput and its share
// (the target is at least 0.6), latency, CPU per command, memory.
func ratios(h, b *phase) map[string]float64 {
	r := map[string]float64{}
	div := func(name string, x, y float64) {
		if y > 0 {
			r[name] = math.Round(x/y*1000) / 1000
		}
	}
	div("throughput", h.Load.Throughput, b.Load.Throughput)
	div("latency_p50", h.Load.Latency.P50, b.Load.Latency.P50)
	div("latency_p99", h.Load.Latency.P99, b.Load.Latency.P99)
	div("cpu_per_command", h.CPUPerCommandUS, b.CPUPerCommandUS)
	div("rss_load", h.RSSLoadMB, b.RSSLoadMB)
	div("ready", h.ReadyMS, b.ReadyMS)
	return r
}

func writeJSONReport(w io.Writer, r *report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func writeText(w io.Writer, r *report) {
	s := r.Setup
	mode := fmt.Sprintf("concurrency %d (closed loop)", s.Concurrency)
	if s.Rate > 0 {
		mode = fmt.Sprintf("rate %.0f/s (open loop)", s.Rate)
	}
	fmt.Fprintf(w, "hipconnect-load: /%s x %d commands, %d installations x %d rooms, %s, cap %s\n",
		s.Command, s.Commands, s.Installs, s.Rooms, mode, s.Duration)
	switch s.TLS {
	case tlsOff:
		fmt.Fprintln(w, "tls: off (public listener plain HTTP)")
	case tlsFiles:
		fmt.Fprintln(w, "tls: files (public listener HTTPS, certificate for 127.0.0.1 from the tool's CA; /readyz plain HTTP on the ops listener)")
	}
	fmt.Fprintf(w, "machine: %d CPUs, %s, %s; load average before %s, after %s\n",
		s.CPUs, s.Kernel, s.GoVersion, s.LoadBefore, s.LoadAfter)
	for _, p := range []*phase{r.Hipconnect, r.Baseline} {
		if p != nil {
			writePhase(w, p)
		}
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w, "\nhipconnect / baseline:")
		for _, k := range slices.Sorted(maps.Keys(r.Ratios)) {
			fmt.Fprintf(w, "  %-16s %.3f\n", k, r.Ratios[k])
		}
	}
	for _, m := range r.Warnings {
		fmt.Fprintln(w, "warning:", m)
	}
}

func writePhase(w io.Writer, p *phase) {
	fmt.Fprintf(w, "\n== %s (pid %d)\n", p.Name, p.PID)
	if p.ReadyMS > 0 {
		fmt.Fprintf(w, "  startup to ready     %.1f ms", p.ReadyMS)
		if p.ReadyAfterRestartMS > 0 {
			fmt.Fprintf(w, " (after restart with %d installations: %.1f ms)", p.Installs, p.ReadyAfterRestartMS)
		}
		fmt.Fprintln(w)
	}
	if p.Installs > 0 {
		fmt.Fprintf(w, "  installs             %d in %.2f s = %.1f/s, errors %s\n", p.Installs, p.InstallSeconds,
			p.InstallsPerSecond, errText(p.InstallErrors))
	}
	l := p.Load
	fmt.Fprintf(w, "  commands             sent %d, accepted %d, notified %d, missing %d, duplicates %d, errors %s\n",
		l.Sent, l.Accepted, l.Notified, l.Missing, l.Duplicates, errText(l.Errors))
	fmt.Fprintf(w, "  throughput           %.1f commands/s over %.2f s (webhooks sent at %.1f/s)\n", l.Throughput, l.Seconds, l.SendRate)
	fmt.Fprintf(w, "  latency webhook->notification  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms (mean %.2f)\n",
		l.Latency.P50, l.Latency.P90, l.Latency.P99, l.Latency.Max, l.Latency.Mean)
	fmt.Fprintf(w, "  webhook answered in            p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms\n",
		l.Ack.P50, l.Ack.P90, l.Ack.P99, l.Ack.Max)
	if p.PID > 0 {
		fmt.Fprintf(w, "  RSS                  ready %.1f MB, idle %.1f MB, under load %.1f MB, VmHWM %.1f MB\n",
			p.RSSReadyMB, p.RSSIdleMB, p.RSSLoadMB, p.HWMMB)
		fmt.Fprintf(w, "  CPU under load       %.2f cores, %.0f us/command (load tool and fakes: %.2f cores)\n",
			p.CPUCores, p.CPUPerCommandUS, p.ToolCPUCores)
		if p.CountedProcesses > 0 {
			fmt.Fprintf(w, "  with -cpu-pid        %.2f cores, %.0f us/command over %d processes\n",
				p.CountedCPUCores, p.CountedCPUPerCommandUS, p.CountedProcesses)
		}
	}
	if p.ShutdownMS > 0 {
		fmt.Fprintf(w, "  shutdown (SIGTERM)   %.0f ms\n", p.ShutdownMS)
	}
	var fk []string
	for _, k := range slices.Sorted(maps.Keys(p.Fake)) {
		fk = append(fk, fmt.Sprintf("%s %d", k, p.Fake[k]))
	}
	fmt.Fprintf(w, "  fake HipChat         %s\n", strings.Join(fk, ", "))
	if p.LogFile != "" {
		fmt.Fprintf(w, "  log                  %s\n", p.LogFile)
	}
}

func errText(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s x%d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
