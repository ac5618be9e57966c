// Package install is the installation lifecycle (PROTOCOL.md sections 3
// and 8): installing the add-on into a HipChat group or room, reading an
// installation's capabilities again when HipChat says the descriptor
// changed, uninstalling it when HipChat confirms it is gone, and removing
// it at the operator's word. The public HTTP handlers, the admin socket and
// the CLI (with the daemon stopped) all call it; it speaks HTTP to nobody
// but HipChat, through the HipChat interface.
package install

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// HipChat is what the lifecycle asks HipChat; a *hipchat.Client has it.
// Its errors carry their kind (Forbidden for a host off the allowlist,
// Unavailable for HipChat failing, ...), and RequestToken's carries
// hipchat.ErrInvalidClient when HipChat no longer knows the OAuth client.
type HipChat interface {
	Capabilities(ctx context.Context, capabilitiesURL string) (hipchat.Capabilities, error)
	RequestToken(ctx context.Context, inst addon.Installation, scopes []string) (addon.Token, error)
	InstallableInfo(ctx context.Context, installableURL string) (string, error)
}

// Store is what the lifecycle keeps installations in.
type Store interface {
	addon.Installations
	addon.Remover
	PutToken(ctx context.Context, oauthID string, t addon.Token) error
	Enqueue(ctx context.Context, j addon.Job) (addon.Job, bool, error)
	// KV keeps the requested uninstalls (PendingNamespace).
	KV(namespace string) addon.KV
}

// Service runs the lifecycle. Store is required; HipChat and Scopes are
// required by everything but Remove. It is safe for concurrent use.
type Service struct {
	Store   Store
	HipChat HipChat
	Scopes  []string // the API scopes the descriptor asks for
	// AddonName signs the greeting a room install gets.
	AddonName string
	// Removed, when set, is told the OAuthID of every installation removed
	// (after the removal committed): the dispatcher rereads the outbox.
	Removed func(oauthID string)
	// Rechecks is when a requested uninstall is checked again, counted
	// from the request (ascending; empty: DefaultRechecks).
	Rechecks []time.Duration
	Logger   *slog.Logger     // nil discards
	Now      func() time.Time // nil: time.Now
}

// Request is what HipChat POSTs to the descriptor's callbackUrl.
type Request struct {
	OAuthID         string `json:"oauthId"`
	OAuthSecret     string `json:"oauthSecret"`
	CapabilitiesURL string `json:"capabilitiesUrl"`
	RoomID          int64  `json:"roomId"`
	GroupID         int64  `json:"groupId"`
}

func (s *Service) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}

func (s *Service) log() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// Install stores the installation req describes, once it is proven: the
// capabilities document must come from an allowlisted host and name itself
// (HipChat.Capabilities checks both), and the credentials must be accepted
// at HipChat's token endpoint. A re-install with a stored OAuthID may renew
// the secret but not move to another HipChat server, group or room
// (Conflict). A room install gets a greeting queued in the outbox. Nothing
// is stored when an error is returned.
func (s *Service) Install(ctx context.Context, req Request) (addon.Installation, error) {
	if err := req.validate(); err != nil {
		return addon.Installation{}, err
	}
	inst, err := s.proveInstall(ctx, req)
	if err != nil {
		return addon.Installation{}, fmt.Errorf("install %s: %w", req.OAuthID, err)
	}
	s.log().Info("installed", slog.String("oauth_id", inst.OAuthID), slog.Int64("room", inst.RoomID),
		slog.Int64("group", inst.GroupID), slog.String("hipchat", inst.HipChatOrigin))
	return inst, nil
}

func (req Request) validate() error {
	if req.OAuthID == "" || req.OAuthSecret == "" || req.CapabilitiesURL == "" {
		return addon.Errorf(addon.Invalid, "oauthId, oauthSecret and capabilitiesUrl are required")
	}
	if len(req.OAuthID) > 200 || req.RoomID < 0 {
		return addon.Errorf(addon.Invalid, "invalid oauthId or roomId")
	}
	return nil
}

func (s *Service) proveInstall(ctx context.Context, req Request) (addon.Installation, error) {
	caps, err := s.HipChat.Capabilities(ctx, req.CapabilitiesURL)
	if err != nil {
		return addon.Installation{}, err
	}
	origin, err := originOf(req.CapabilitiesURL)
	if err != nil {
		return addon.Installation{}, addon.Wrap(addon.Invalid, err, "capabilitiesUrl is not a URL")
	}
	now := s.now()
	inst := addon.Installation{
		OAuthID: req.OAuthID, OAuthSecret: req.OAuthSecret, CapabilitiesURL: req.CapabilitiesURL,
		GroupID: req.GroupID, RoomID: req.RoomID, APIURL: caps.APIURL, TokenURL: caps.TokenURL,
		HipChatOrigin: origin, InstalledAt: now, UpdatedAt: now,
	}
	if old, err := s.Store.Installation(ctx, req.OAuthID); err == nil {
		if old.HipChatOrigin != origin || old.GroupID != req.GroupID || old.RoomID != req.RoomID {
			return addon.Installation{}, addon.Errorf(addon.Conflict,
				"installation %s exists for another HipChat server, group or room", addon.Clip(req.OAuthID, 100))
		}
		inst.InstalledAt = old.InstalledAt
	} else if !addon.IsNotFound(err) {
		return addon.Installation{}, err
	}
	tok, err := s.HipChat.RequestToken(ctx, inst, s.Scopes)
	if err != nil {
		return addon.Installation{}, err
	}
	if err := s.Store.PutInstallation(ctx, inst); err != nil {
		return addon.Installation{}, err
	}
	if err := s.Store.PutToken(ctx, inst.OAuthID, tok); err != nil {
		s.log().Warn("install: token not cached", slog.String("oauth_id", inst.OAuthID), slog.Any("err", err))
	}
	if !inst.Global() {
		s.greet(ctx, inst, now)
	}
	return inst, nil
}

// greet queues the "installed in this room" notice; a failure only loses
// the notice, so it is logged.
func (s *Service) greet(ctx context.Context, inst addon.Installation, now time.Time) {
	greeting := addon.Notification{
		Message:       fmt.Sprintf("The %s add-on has been installed in this room", s.AddonName),
		MessageFormat: "text", Color: "green", From: s.AddonName,
	}
	if _, _, err := s.Store.Enqueue(ctx, addon.Job{OAuthID: inst.OAuthID, RoomID: inst.RoomID, Reply: &greeting, Received: now}); err != nil {
		s.log().Warn("install: greeting not queued", slog.String("oauth_id", inst.OAuthID), slog.Any("err", err))
	}
}

// Update handles HipChat's updateCallbackUrl: the add-on's descriptor
// changed, so what was derived from the capabilities document is read
// again. Nothing secret changes, so the call needs no signature: the
// capabilities URL must be on the installation's own HipChat server
// (Forbidden), and the stored credentials must still work there.
func (s *Service) Update(ctx context.Context, oauthID, capabilitiesURL string) (addon.Installation, error) {
	inst, err := s.update(ctx, oauthID, capabilitiesURL)
	if err != nil {
		return addon.Installation{}, fmt.Errorf("update %s: %w", addon.Clip(oauthID, 100), err)
	}
	s.log().Info("installation updated", slog.String("oauth_id", inst.OAuthID), slog.String("api", inst.APIURL))
	return inst, nil
}

func (s *Service) update(ctx context.Context, oauthID, capabilitiesURL string) (addon.Installation, error) {
	if oauthID == "" || capabilitiesURL == "" {
		return addon.Installation{}, addon.Errorf(addon.Invalid, "oauthId and capabilitiesUrl are required")
	}
	inst, err := s.Store.Installation(ctx, oauthID)
	if err != nil {
		return addon.Installation{}, err
	}
	if o, _ := originOf(capabilitiesURL); o != inst.HipChatOrigin {
		return addon.Installation{}, addon.Errorf(addon.Forbidden, "capabilitiesUrl is not on the installation's HipChat server")
	}
	caps, err := s.HipChat.Capabilities(ctx, capabilitiesURL)
	if err != nil {
		return addon.Installation{}, err
	}
	inst.CapabilitiesURL, inst.APIURL, inst.TokenURL = capabilitiesURL, caps.APIURL, caps.TokenURL
	inst.UpdatedAt = s.now()
	tok, err := s.HipChat.RequestToken(ctx, inst, s.Scopes)
	if err != nil {
		return addon.Installation{}, err
	}
	if err := s.Store.PutInstallation(ctx, inst); err != nil {
		return addon.Installation{}, err
	}
	return inst, s.Store.PutToken(ctx, inst.OAuthID, tok)
}

// Remove deletes the installation oauthID and everything stored for it
// (token, jobs, dead letters, seen message ids, settings and history) in
// one transaction, without asking HipChat: the operator's removal. An
// absent installation is NotFound.
func (s *Service) Remove(ctx context.Context, oauthID string) error {
	if err := s.Store.DeleteInstallation(ctx, oauthID); err != nil {
		return err
	}
	if s.Removed != nil {
		s.Removed(oauthID)
	}
	return nil
}

func originOf(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	return u.Scheme + "://" + u.Host, nil
}
