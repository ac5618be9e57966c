//go:build !linux

package metrics

import (
	"errors"
	"time"
)

// processStartTime is only needed on Linux; see newProcessCollector.
func processStartTime() (time.Time, error) {
	return time.Time{}, errors.New("metrics: process start time: not supported on this platform")
}
