package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/storecopy"
)

// store runs `hipconnect store copy`: everything the store of one
// configuration holds into the (empty) store of another, the daemons
// stopped. It is the way from one bbolt host to PostgreSQL
// (docs/operations.md).
func (e env) store(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "copy" {
		return fmt.Errorf("%w: store copy --from-config OLD --to-config NEW [--force]", errUsage)
	}
	fs := flag.NewFlagSet("store copy", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	from := fs.String("from-config", "", "configuration `file` of the store to copy from")
	to := fs.String("to-config", "", "configuration `file` of the store to copy into")
	force := fs.Bool("force", false, "copy into a store that is not empty")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: store copy: %v", errUsage, err)
	}
	if *from == "" || *to == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: store copy --from-config OLD --to-config NEW [--force]", errUsage)
	}
	fromCfg, err := config.Load(*from, nil)
	if err != nil {
		return fmt.Errorf("--from-config: %w", err)
	}
	toCfg, err := config.Load(*to, nil)
	if err != nil {
		return fmt.Errorf("--to-config: %w", err)
	}
	if f, t := fromCfg.Storage, toCfg.Storage; f.Backend == t.Backend &&
		(f.Backend == config.BackendBolt && f.Path == t.Path || f.Backend == config.BackendPostgres && f.Postgres.DSN == t.Postgres.DSN) {
		return errors.New("store copy: both configurations name the same store")
	}
	src, err := openStore(ctx, fromCfg)
	if err != nil {
		return fmt.Errorf("store copy: open the source: %w", err)
	}
	defer src.Close()
	// The target is made as the daemon would make it (its key included),
	// so that the daemon of NEW starts on it.
	dst, err := daemon.OpenStore(ctx, toCfg, true, nil)
	if err != nil {
		return fmt.Errorf("store copy: open the target: %w", err)
	}
	r, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Namespaces: daemon.KVNamespaces, Force: *force})
	err = errors.Join(err, dst.Close())
	fmt.Fprintf(e.stdout, "copied %d installations, %d tokens, %d pending jobs, %d dead letters, %d key/value entries, %d pacing windows, %d certificate files; %d jobs skipped as already in the target\n",
		r.Installations, r.Tokens, r.Jobs, r.DeadLetters, r.KV, r.PaceWindows, r.CertFiles, r.Duplicates)
	if errors.Is(err, storecopy.ErrTargetNotEmpty) {
		return fmt.Errorf("store copy: %w (--force copies into it anyway)", err)
	}
	return err
}
