package sdnotify_test

import (
	"context"
	"os"
	"time"

	"github.com/hipconnect/hipconnect/internal/sdnotify"
)

// A daemon reports ready once it serves, then pets the watchdog only while
// its store answers, so systemd restarts a daemon that hangs.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	storeAnswers := func(context.Context) error { return nil } // e.g. a read transaction

	sdnotify.Notify(os.Getenv, sdnotify.Ready)
	if every, ok := sdnotify.WatchdogInterval(os.Getenv, os.Getpid()); ok {
		go func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if storeAnswers(ctx) == nil {
						sdnotify.Notify(os.Getenv, sdnotify.Watchdog)
					}
				}
			}
		}()
	}
	// ... serve until SIGTERM, then:
	sdnotify.Notify(os.Getenv, sdnotify.Stopping)
}
