package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of /proc/<pid>/stat's times: USER_HZ, which the
// kernel fixes at 100 on every architecture Go supports, whatever its
// internal HZ (procfs assumes the same).
const userHZ = 100

// processStartTime returns when this process started: field 22 of
// /proc/self/stat (starttime, in clock ticks since boot) after the boot
// time. The stock collector takes the boot time from /proc/stat's btime,
// which ProcSubset=pid hides; the kernel computes btime as the real time
// minus CLOCK_BOOTTIME (the clock starttime is measured on), so that is
// what is done here, from the two clocks read back to back. (btime is
// truncated to whole seconds, so the stock value can be up to a second
// earlier than this one.)
func processStartTime() (time.Time, error) {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return time.Time{}, err
	}
	ticks, err := parseStartTicks(stat)
	if err != nil {
		return time.Time{}, err
	}
	var wall, boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &wall); err != nil {
		return time.Time{}, fmt.Errorf("metrics: CLOCK_REALTIME: %w", err)
	}
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err != nil {
		return time.Time{}, fmt.Errorf("metrics: CLOCK_BOOTTIME: %w", err)
	}
	booted := time.Unix(wall.Unix()).Add(-time.Duration(boot.Nano()))
	return booted.Add(time.Duration(ticks) * (time.Second / userHZ)), nil
}

// parseStartTicks returns the starttime field of a /proc/<pid>/stat line.
// The command name (field 2) is in parentheses and may itself contain
// spaces and parentheses, so fields are counted from the last ')'.
func parseStartTicks(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("metrics: /proc/self/stat: no command name")
	}
	// After the name come field 3 (state) onwards; starttime is field 22.
	fields := bytes.Fields(stat[i+1:])
	const starttime = 22 - 3
	if len(fields) <= starttime {
		return 0, fmt.Errorf("metrics: /proc/self/stat: %d fields after the command name", len(fields))
	}
	ticks, err := strconv.ParseUint(string(fields[starttime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("metrics: /proc/self/stat: starttime: %w", err)
	}
	return ticks, nil
}
