package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/daemon"
	"github.com/hipconnect/hipconnect/internal/httpapi"
	"github.com/hipconnect/hipconnect/internal/integration"
)

// integrations prints or rotates a "Build your own" integration's webhook
// URL, through the running daemon if there is one, else on the file.
func (e env) integrations(ctx context.Context, args []string) error {
	cfg, pos, err := e.flags("integrations", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 2 || (pos[0] != "url" && pos[0] != "rotate") {
		return fmt.Errorf("%w: integrations url NAME | rotate NAME", errUsage)
	}
	name := pos[1]
	var u string
	if c, ok := admin(ctx, cfg); ok {
		var v httpapi.IntegrationView
		if pos[0] == "url" {
			err = c.Do(ctx, http.MethodGet, "/integrations/"+url.PathEscape(name)+"/url", &v, nil)
		} else {
			err = c.Do(ctx, http.MethodPost, "/integrations/"+url.PathEscape(name)+"/rotate", &v, nil)
		}
		u = v.URL
	} else {
		err = e.onFile(ctx, cfg, func(ops daemon.IntegrationOps) error {
			if pos[0] == "url" {
				u, err = ops.URL(ctx, name)
			} else {
				u, err = ops.RotateURL(ctx, name)
			}
			return err
		})
	}
	if err != nil {
		return err
	}
	if pos[0] == "rotate" {
		fmt.Fprintln(e.stderr, "new secret stored: the old URL no longer works; type this one into HipChat's integration page:")
	}
	fmt.Fprintln(e.stdout, u)
	return nil
}

// notify queues a notification for an integration's room through the
// outbox: durable, paced and retried like every reply.
func (e env) notify(ctx context.Context, args []string) error {
	var format, color string
	cfg, pos, err := e.flags("notify", args, func(fs *flag.FlagSet) {
		fs.StringVar(&format, "format", "text", "message_format: text or html")
		fs.StringVar(&color, "color", "", "yellow, green, red, purple, gray or random")
	})
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("%w: notify NAME TEXT", errUsage)
	}
	n := addon.Notification{Message: pos[1], MessageFormat: format, Color: color}
	var j addon.Job
	if c, ok := admin(ctx, cfg); ok {
		err = c.Post(ctx, "/notify", httpapi.NotifyRequest{Integration: pos[0], Notification: n}, &j)
	} else {
		err = e.onFile(ctx, cfg, func(ops daemon.IntegrationOps) error {
			j, err = ops.Notify(ctx, pos[0], n)
			return err
		})
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "queued as job %d for integration %s\n", j.ID, pos[0])
	return nil
}

// onFile runs fn with IntegrationOps on the stopped daemon's store.
func (e env) onFile(ctx context.Context, cfg *config.Config, fn func(daemon.IntegrationOps) error) error {
	clients, err := daemon.NewClients(cfg, "hipconnect/"+version, nil)
	if err != nil {
		return err
	}
	list, err := daemon.Integrations(cfg, clients.HipChatHosts.AllowHost)
	if err != nil {
		return err
	}
	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	byName := map[string]integration.Integration{}
	for _, in := range list {
		byName[in.Name] = in
	}
	return fn(daemon.IntegrationOps{Store: db, BaseURL: cfg.Server.BaseURL, Now: time.Now,
		Get: func(name string) (integration.Integration, bool) { in, ok := byName[name]; return in, ok },
		Rotate: func(ctx context.Context, name string) (string, error) {
			return integration.RotateIn(ctx, db, name, time.Now)
		}})
}
