package sdnotify

import (
	"strconv"
	"syscall"
	"unsafe"
)

// Reloading returns the state that tells systemd a configuration reload has
// begun: "RELOADING=1" with MONOTONIC_USEC, the CLOCK_MONOTONIC time systemd
// (253 and later) uses to match the reload with the READY=1 that must follow
// once the reload is done, successful or not.
func Reloading() string {
	var ts syscall.Timespec
	const clockMonotonic = 1 // CLOCK_MONOTONIC in <time.h>
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return "RELOADING=1"
	}
	usec := ts.Nano() / 1000
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10)
}
