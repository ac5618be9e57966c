package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/integration"
)

// Integrations reads the configured "Build your own" integrations: each
// room URL file (see integration.ReadRoomURL), whose host must be on
// hipchat.allowed_hosts (allow). Every problem is reported, naming its key.
func Integrations(cfg *config.Config, allow func(host string) bool) ([]integration.Integration, error) {
	var (
		list []integration.Integration
		errs []error
	)
	for i, c := range cfg.Integrations {
		key := fmt.Sprintf("integrations[%d].room_url_file", i)
		u, err := integration.ReadRoomURL(c.RoomURLFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("config: %s: %w", key, err))
			continue
		}
		if !allow(u.Host()) {
			errs = append(errs, fmt.Errorf("config: %s: the room URL's host %q is not on hipchat.allowed_hosts", key, u.Host()))
			continue
		}
		n, per, _ := config.ParseRate(c.TokenRate) // validated
		list = append(list, integration.Integration{Name: c.Name, Room: u, Commands: c.Commands, Reply: c.Reply, TokenN: n, TokenPer: per})
	}
	return list, errors.Join(errs...)
}

// buildIntegrations reads the integrations and brings their records in the
// store in line with them.
func (a *App) buildIntegrations(ctx context.Context) error {
	list, err := Integrations(a.Config, a.Clients.HipChatHosts.AllowHost)
	if err != nil {
		return err
	}
	a.Integrations = integration.New(a.DB, list, a.Options.Now)
	return a.Integrations.Sync(ctx)
}

// tokenLimits are the dispatcher's budgets of the integrations' room tokens.
func (a *App) tokenLimits() map[string]delivery.Limit {
	m := map[string]delivery.Limit{}
	for _, c := range a.Config.Integrations {
		if in, ok := a.Integrations.Get(c.Name); ok {
			m[in.OAuthID()] = delivery.Limit{N: in.TokenN, Per: in.TokenPer}
		}
	}
	return m
}

// sendIntegration posts n to the room of integration inst through its room
// URL, with the room token.
func (a *App) sendIntegration(ctx context.Context, inst addon.Installation, n addon.Notification) error {
	in, ok := a.Integrations.Get(inst.Integration)
	if !ok {
		return addon.Errorf(addon.NotFound, "integration %q is no longer configured", inst.Integration)
	}
	return a.Clients.HipChat.SendRoomNotification(ctx, inst, in.Room.Token, in.Room.Room, n)
}

// requests is the dispatcher's Requests: an integration's reply is one
// post through its room URL (no glance to update), none in the response.
func (a *App) requests(j addon.Job) int {
	switch {
	case !integration.IsOAuthID(j.OAuthID):
		return a.Slash.Requests(j)
	case j.ResponseOnly:
		return 0
	}
	return 1
}

// IntegrationOps are what the admin socket and the CLI (on a stopped
// daemon's file) do for integrations.
type IntegrationOps struct {
	Store interface {
		addon.Installations
		integration.Enqueuer
	}
	BaseURL string
	Get     func(name string) (integration.Integration, bool)
	// Rotate stores a new webhook secret for an integration and returns it.
	Rotate func(ctx context.Context, name string) (string, error)
	Now    func() time.Time
}

func (o IntegrationOps) get(name string) (integration.Integration, error) {
	in, ok := o.Get(name)
	if !ok {
		return in, addon.Errorf(addon.NotFound, "no integration %q in the configuration", addon.Clip(name, 40))
	}
	return in, nil
}

// URL is integration name's webhook URL, the one to type into HipChat's
// integration page as the slash command's URL.
func (o IntegrationOps) URL(ctx context.Context, name string) (string, error) {
	if _, err := o.get(name); err != nil {
		return "", err
	}
	secret, err := integration.Secret(ctx, o.Store, name)
	if err != nil {
		return "", err
	}
	return integration.WebhookURL(o.BaseURL, name, secret), nil
}

// RotateURL gives integration name a new secret and returns its new URL.
func (o IntegrationOps) RotateURL(ctx context.Context, name string) (string, error) {
	if _, err := o.get(name); err != nil {
		return "", err
	}
	secret, err := o.Rotate(ctx, name)
	if err != nil {
		return "", err
	}
	return integration.WebhookURL(o.BaseURL, name, secret), nil
}

// Notify queues n (text unless it says html) for integration name's room.
func (o IntegrationOps) Notify(ctx context.Context, name string, n addon.Notification) (addon.Job, error) {
	in, err := o.get(name)
	if err != nil {
		return addon.Job{}, err
	}
	if n.MessageFormat == "" {
		n.MessageFormat = "text"
	}
	if err := hipchat.ValidateNotification(n); err != nil {
		return addon.Job{}, err
	}
	return integration.Notify(ctx, o.Store, in, n, o.Now())
}

// integrationOps are the running daemon's IntegrationOps.
func (a *App) integrationOps() IntegrationOps {
	return IntegrationOps{Store: a.DB, BaseURL: a.Config.Server.BaseURL, Get: a.Integrations.Get, Rotate: a.Integrations.Rotate, Now: a.Options.Now}
}
