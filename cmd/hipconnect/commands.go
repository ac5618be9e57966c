package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/httpapi"
	lifecycle "github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/integration"
	"github.com/hipconnect/hipconnect/internal/store"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// defaultGCPercent is the garbage collector's target percentage serve sets
// when GOGC is not in the environment.
const defaultGCPercent = 200

func (e env) serve(ctx context.Context, args []string) error {
	var path *flag.Flag // read after parsing
	cfg, pos, err := e.flags("serve", args, func(fs *flag.FlagSet) { path = fs.Lookup("config") })
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: serve takes no arguments", errUsage)
	}
	logger, level := newLogger(cfg, e.stderr)
	// Everything the daemon creates (store, key, admin socket) is its own.
	syscall.Umask(0o077)
	// The daemon allocates mostly short-lived request garbage: letting the
	// heap grow to three times the live data between collections (GOGC=200)
	// costs some 5 MB and saves about a sixth of the CPU per command
	// (docs/performance.md). GOGC in the environment still decides.
	if e.getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	return daemon.Run(ctx, cfg, daemon.Options{
		Version: version, Logger: logger, LogLevel: level, Getenv: e.getenv, Reload: e.reload,
		LoadConfig: func() (*config.Config, error) { return config.Load(path.Value.String(), e.environ) },
	})
}

func (e env) descriptor(args []string) error {
	cfg, _, err := e.flags("descriptor", args, nil)
	if err != nil {
		return err
	}
	d, err := daemon.Descriptor(cfg)
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(d.JSON())
	return err
}

// admin returns a client for the running daemon's admin socket, or false
// when no daemon answers there (then the CLI opens the store itself: bbolt
// allows one process at a time).
func admin(ctx context.Context, cfg *config.Config) (httpapi.AdminClient, bool) {
	path := daemon.AdminSocket(cfg)
	c := httpapi.AdminClient{HTTP: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
	if _, err := os.Stat(path); err != nil {
		return c, false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var list []addon.Installation
	return c, c.Do(ctx, http.MethodGet, "/installations", &list, nil) == nil
}

// openStore opens the store of a stopped daemon (or the shared database
// of storage.backend postgres). It never creates one.
func openStore(ctx context.Context, cfg *config.Config) (daemon.Store, error) {
	if cfg.Storage.Backend == config.BackendBolt {
		if _, err := os.Stat(cfg.Storage.Path); err != nil {
			return nil, fmt.Errorf("no store at %s (storage.path): %w", cfg.Storage.Path, err)
		}
	}
	return daemon.OpenStore(ctx, cfg, false, nil)
}

// openBolt opens the bbolt store of a stopped daemon, for what only a file
// has: backups and the consistency check.
func openBolt(cfg *config.Config) (*store.DB, error) {
	if cfg.Storage.Backend != config.BackendBolt {
		return nil, daemon.ErrNoHotBackup
	}
	db, err := openStore(context.Background(), cfg) // a file: nothing to wait for
	if err != nil {
		return nil, err
	}
	return db.(*store.DB), nil
}

// chownLikeDir gives path the owner of its directory, so that a file root
// wrote in the daemon's state directory stays the daemon's. Only root can
// and needs to.
func chownLikeDir(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(filepath.Dir(path))
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return os.Chown(path, int(st.Uid), int(st.Gid))
}

func (e env) installations(ctx context.Context, args []string) error {
	cfg, pos, err := e.flags("installations", args, nil)
	if err != nil {
		return err
	}
	if len(pos) == 0 || (pos[0] == "list") != (len(pos) == 1) || len(pos) > 2 ||
		(pos[0] != "list" && pos[0] != "show" && pos[0] != "remove") {
		return fmt.Errorf("%w: installations list | show OAUTH_ID | remove OAUTH_ID", errUsage)
	}
	// Through the running daemon if there is one, else on the file.
	var (
		list    func() ([]addon.Installation, error)
		show    func(id string) (addon.Installation, error)
		remove  func(id string) error
		pending func() ([]lifecycle.PendingUninstall, error)
	)
	if c, ok := admin(ctx, cfg); ok {
		list = func() (all []addon.Installation, err error) {
			return all, c.Do(ctx, http.MethodGet, "/installations", &all, nil)
		}
		show = func(id string) (i addon.Installation, err error) {
			return i, c.Do(ctx, http.MethodGet, "/installations/"+url.PathEscape(id), &i, nil)
		}
		remove = func(id string) error {
			return c.Do(ctx, http.MethodDelete, "/installations/"+url.PathEscape(id), nil, nil)
		}
		pending = func() (p []lifecycle.PendingUninstall, err error) {
			return p, c.Do(ctx, http.MethodGet, "/uninstalls", &p, nil)
		}
	} else {
		db, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer db.Close()
		list = func() ([]addon.Installation, error) { return db.Installations(ctx) }
		show = func(id string) (addon.Installation, error) { return db.Installation(ctx, id) }
		// The same removal as the daemon's: everything of the
		// installation, in one transaction.
		svc := &lifecycle.Service{Store: db}
		remove = func(id string) error { return svc.Remove(ctx, id) }
		pending = func() ([]lifecycle.PendingUninstall, error) { return svc.PendingUninstalls(ctx) }
	}
	switch pos[0] {
	case "list":
		all, err := list()
		if err != nil {
			return err
		}
		p, err := pending()
		if err != nil {
			return err
		}
		return e.printInstallations(all, p)
	case "show":
		i, err := show(pos[1])
		if err != nil {
			return err
		}
		i.OAuthSecret = "" // never printed
		b, _ := json.MarshalIndent(i, "", "  ")
		fmt.Fprintln(e.stdout, string(b))
		return nil
	default:
		if integration.IsOAuthID(pos[1]) {
			return fmt.Errorf("%s is a \"Build your own\" integration: remove it from integrations in the configuration and restart", pos[1])
		}
		if err := remove(pos[1]); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed installation %s and everything stored for it\n", pos[1])
		return nil
	}
}

// printInstallations writes the installations as a table; an uninstall
// HipChat has not confirmed yet shows when it was requested and when
// HipChat is asked again.
func (e env) printInstallations(all []addon.Installation, pending []lifecycle.PendingUninstall) error {
	requested := make(map[string]lifecycle.PendingUninstall, len(pending))
	for _, p := range pending {
		requested[p.OAuthID] = p
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OAUTH ID\tGROUP\tROOM\tHIPCHAT\tINSTALLED\tUNINSTALL")
	for _, i := range all {
		room := fmt.Sprint(i.RoomID)
		switch {
		case i.Integration != "":
			room = "(build your own)"
		case i.Global():
			room = "(global)"
		}
		uninstall := "-"
		if p, ok := requested[i.OAuthID]; ok {
			uninstall = fmt.Sprintf("requested %s, next check %s", p.RequestedAt.Format(time.RFC3339), p.Next.Format(time.RFC3339))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", i.OAuthID, i.GroupID, room, i.HipChatOrigin, i.InstalledAt.Format(time.RFC3339), uninstall)
	}
	return tw.Flush()
}

// backup writes a consistent copy of the store to OUTFILE: through the
// running daemon (hot backup) or from the file when no daemon runs. The copy
// is written 0600, fsynced, and checked before it takes OUTFILE's name.
func (e env) backup(ctx context.Context, args []string) error {
	cfg, pos, err := e.flags("backup", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: backup --config FILE OUTFILE", errUsage)
	}
	out := pos[0]
	if cfg.Storage.Backend != config.BackendBolt {
		return daemon.ErrNoHotBackup
	}
	c, ok := admin(ctx, cfg)
	if !ok {
		db, err := openBolt(cfg)
		if err != nil {
			return err
		}
		defer db.Close()
		if err := db.BackupFile(out); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "backup written to %s\n", out)
		return nil
	}
	tmp := out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	err = c.Do(ctx, http.MethodGet, "/backup", nil, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = verifyBackup(cfg, tmp)
	}
	if err == nil {
		err = os.Rename(tmp, out)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("backup: %w", err)
	}
	if d, err := os.Open(filepath.Dir(out)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	fmt.Fprintf(e.stdout, "backup written to %s\n", out)
	return nil
}

// verifyBackup opens a copy (with the store's key) and runs the
// consistency check on it.
func verifyBackup(cfg *config.Config, path string) error {
	c := *cfg
	c.Storage.KeyFile, c.Storage.Path = daemon.KeyFile(cfg), path
	db, err := openBolt(&c)
	if err != nil {
		return err
	}
	return errors.Join(db.Check(), db.Close())
}

func (e env) restore(args []string) error {
	cfg, pos, err := e.flags("restore", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: restore --config FILE BACKUPFILE", errUsage)
	}
	if cfg.Storage.Backend != config.BackendBolt {
		return fmt.Errorf("restore: storage.backend is %q: restore the database with pg_restore (docs/operations.md)", cfg.Storage.Backend)
	}
	if err := store.Restore(pos[0], cfg.Storage.Path); err != nil {
		return err
	}
	if err := chownLikeDir(cfg.Storage.Path); err != nil {
		return fmt.Errorf("restore: give the store to the daemon's user: %w", err)
	}
	fmt.Fprintf(e.stdout, "restored %s from %s\n", cfg.Storage.Path, pos[0])
	return nil
}

func (e env) tls(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "export-ca" {
		return fmt.Errorf("%w: tls export-ca --config FILE", errUsage)
	}
	cfg, _, err := e.flags("tls export-ca", args[1:], nil)
	if err != nil {
		return err
	}
	if cfg.TLS.Mode != "self-signed" {
		return fmt.Errorf("tls export-ca: tls.mode is %q; only self-signed mode has a local CA", cfg.TLS.Mode)
	}
	if c, ok := admin(ctx, cfg); ok {
		return c.Do(ctx, http.MethodGet, "/tls/ca", nil, e.stdout)
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	base, err := url.Parse(cfg.Server.BaseURL)
	if err != nil {
		return err
	}
	m, err := tlsmgr.New(ctx, tlsmgr.Options{Mode: cfg.TLS.Mode, Host: base.Hostname(), Storage: db.CertStorage()})
	if err != nil {
		return err
	}
	defer m.Stop()
	if err := m.Start(ctx); err != nil {
		return err
	}
	pem, err := m.CAPEM()
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(pem)
	return err
}

// outbox shows the commands waiting for delivery and the dead letters,
// and moves a dead letter back into the outbox or drops it.
func (e env) outbox(ctx context.Context, args []string) error {
	cfg, pos, err := e.flags("outbox", args, nil)
	if err != nil {
		return err
	}
	usageErr := fmt.Errorf("%w: outbox list | retry JOB_ID | drop JOB_ID", errUsage)
	if len(pos) == 0 || (pos[0] == "list") != (len(pos) == 1) || len(pos) > 2 {
		return usageErr
	}
	var id uint64
	if len(pos) == 2 {
		if id, err = strconv.ParseUint(pos[1], 10, 64); err != nil {
			return usageErr
		}
	}
	var (
		view  func() (httpapi.OutboxView, error)
		retry func() (addon.Job, error)
		drop  func() error
	)
	if c, ok := admin(ctx, cfg); ok {
		path := "/outbox/dead/" + strconv.FormatUint(id, 10)
		view = func() (v httpapi.OutboxView, err error) { return v, c.Do(ctx, http.MethodGet, "/outbox", &v, nil) }
		retry = func() (j addon.Job, err error) { return j, c.Do(ctx, http.MethodPost, path, &j, nil) }
		drop = func() error { return c.Do(ctx, http.MethodDelete, path, nil, nil) }
	} else {
		db, err := openStore(ctx, cfg)
		if err != nil {
			return err
		}
		defer db.Close()
		view = func() (v httpapi.OutboxView, err error) {
			if v.Pending, err = db.Pending(ctx, 0); err == nil {
				v.Dead, err = db.DeadLetters(ctx)
			}
			return v, err
		}
		retry = func() (addon.Job, error) { return db.RetryDead(ctx, id) }
		drop = func() error { return db.DropDead(ctx, id) }
	}
	switch pos[0] {
	case "list":
		v, err := view()
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STATE\tJOB\tOAUTH ID\tROOM\tCOMMAND\tRECEIVED\tATTEMPTS\tREASON")
		for _, j := range v.Pending {
			fmt.Fprintf(tw, "pending\t%d\t%s\t%d\t%s\t%s\t%d\t%s\n", j.ID, j.OAuthID, j.RoomID, jobName(j),
				j.Received.Format(time.RFC3339), j.Attempts, j.LastError)
		}
		for _, d := range v.Dead {
			fmt.Fprintf(tw, "dead\t%d\t%s\t%d\t%s\t%s\t%d\t%s\n", d.Job.ID, d.Job.OAuthID, d.Job.RoomID, jobName(d.Job),
				d.Job.Received.Format(time.RFC3339), d.Job.Attempts, d.Reason)
		}
		return tw.Flush()
	case "retry":
		j, err := retry()
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "dead letter %d is back in the outbox as job %d\n", id, j.ID)
		return nil
	case "drop":
		if err := drop(); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "dead letter %d dropped\n", id)
		return nil
	}
	return usageErr
}

func jobName(j addon.Job) string {
	if j.Reply != nil {
		return "(message)"
	}
	return "/" + j.Command
}
