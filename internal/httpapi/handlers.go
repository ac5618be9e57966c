package httpapi

import (
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/httperr"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

func (s *server) descriptor(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*") // public by design: HipChat's admin UI reads it
	_, _ = w.Write(s.descriptorJSON)
}

var homePage = template.Must(template.New("home").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Name}}</title></head>
<body><h1>{{.Name}}</h1><p>{{.Description}}</p>
<p>To install, give HipChat Server this descriptor URL: <code>{{.Self}}</code></p></body></html>
`))

func (s *server) home(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = homePage.Execute(w, map[string]string{
		"Name": s.Descriptor.Name, "Description": s.Descriptor.Description, "Self": s.Descriptor.Links.Self,
	})
}

// installPayload is what HipChat POSTs to callbackUrl (PROTOCOL.md section 3).
type installPayload struct {
	OAuthID         string `json:"oauthId"`
	OAuthSecret     string `json:"oauthSecret"`
	CapabilitiesURL string `json:"capabilitiesUrl"`
	RoomID          int64  `json:"roomId"`
	GroupID         int64  `json:"groupId"`
}

// install handles an installation: the capabilities document must come from
// an allowlisted host and name itself, the credentials must be proven at
// HipChat's token endpoint, and only then is the installation stored (a
// re-install with the same oauthId replaces the secret only once the new
// one is proven). It answers exactly 200, as HipChat requires.
func (s *server) install(w http.ResponseWriter, r *http.Request) {
	var p installPayload
	err := decodeJSON(r, &p)
	if err == nil && (p.OAuthID == "" || p.OAuthSecret == "" || p.CapabilitiesURL == "") {
		err = httperr.Errorf(http.StatusBadRequest, "oauthId, oauthSecret and capabilitiesUrl are required")
	}
	if err == nil && (len(p.OAuthID) > 200 || p.RoomID < 0) {
		err = httperr.Errorf(http.StatusBadRequest, "invalid oauthId or roomId")
	}
	if err != nil {
		s.Metrics.Installs.WithLabelValues("invalid").Inc()
		s.fail(w, r, err)
		return
	}
	inst, err := s.verifyInstall(r, p)
	if err != nil {
		s.Metrics.Installs.WithLabelValues(addon.KindOf(err)).Inc()
		s.fail(w, r, fmt.Errorf("install %s: %w", p.OAuthID, err))
		return
	}
	s.Metrics.Installs.WithLabelValues("ok").Inc()
	s.Logger.Info("installed", slog.String("oauth_id", inst.OAuthID), slog.Int64("room", inst.RoomID),
		slog.Int64("group", inst.GroupID), slog.String("hipchat", inst.HipChatOrigin))
	w.WriteHeader(http.StatusOK)
}

func (s *server) verifyInstall(r *http.Request, p installPayload) (addon.Installation, error) {
	ctx := r.Context()
	caps, err := s.HipChat.Capabilities(ctx, p.CapabilitiesURL)
	if err != nil {
		return addon.Installation{}, err
	}
	origin, err := originOf(p.CapabilitiesURL)
	if err != nil {
		return addon.Installation{}, addon.Wrap(addon.Invalid, err, "capabilitiesUrl is not a URL")
	}
	now := s.Now().UTC()
	inst := addon.Installation{
		OAuthID: p.OAuthID, OAuthSecret: p.OAuthSecret, CapabilitiesURL: p.CapabilitiesURL,
		GroupID: p.GroupID, RoomID: p.RoomID, APIURL: caps.APIURL, TokenURL: caps.TokenURL,
		HipChatOrigin: origin, InstalledAt: now, UpdatedAt: now,
	}
	if old, err := s.Store.Installation(ctx, p.OAuthID); err == nil {
		// A re-install may renew the secret, proven below, but not move the
		// installation to another server, group or room.
		if old.HipChatOrigin != origin || old.GroupID != p.GroupID || old.RoomID != p.RoomID {
			return addon.Installation{}, addon.Errorf(addon.Conflict,
				"installation %s exists for another HipChat server, group or room", truncate(p.OAuthID, 100))
		}
		inst.InstalledAt = old.InstalledAt
	} else if !addon.IsNotFound(err) {
		return addon.Installation{}, err
	}
	tok, err := s.HipChat.RequestToken(ctx, inst, s.scopes)
	if err != nil {
		return addon.Installation{}, err
	}
	if err := s.Store.PutInstallation(ctx, inst); err != nil {
		return addon.Installation{}, err
	}
	if err := s.Store.PutToken(ctx, inst.OAuthID, tok); err != nil {
		s.Logger.Warn("install: token not cached", slog.String("oauth_id", inst.OAuthID), slog.Any("err", err))
	}
	if !inst.Global() {
		greeting := addon.Notification{
			Message:       fmt.Sprintf("The %s add-on has been installed in this room", s.Descriptor.Name),
			MessageFormat: "text", Color: "green", From: s.Descriptor.Name,
		}
		_, _, err := s.Store.Enqueue(ctx, addon.Job{OAuthID: inst.OAuthID, RoomID: inst.RoomID, Reply: &greeting, Received: now})
		if err != nil {
			s.Logger.Warn("install: greeting not queued", slog.String("oauth_id", inst.OAuthID), slog.Any("err", err))
		}
	}
	return inst, nil
}

// update handles HipChat's updateCallbackUrl (PROTOCOL.md section 3): the
// add-on's descriptor changed, so what was derived from the capabilities
// document is read again. Nothing secret changes, so the request needs no
// signature: the capabilities URL must be on the installation's own HipChat
// server, and the stored credentials must still work there.
func (s *server) update(w http.ResponseWriter, r *http.Request) {
	var p installPayload
	err := decodeJSON(r, &p)
	if err == nil && (p.OAuthID == "" || p.CapabilitiesURL == "") {
		err = httperr.Errorf(http.StatusBadRequest, "oauthId and capabilitiesUrl are required")
	}
	var inst addon.Installation
	if err == nil {
		inst, err = s.Store.Installation(r.Context(), p.OAuthID)
	}
	if err == nil {
		if o, _ := originOf(p.CapabilitiesURL); o != inst.HipChatOrigin {
			err = httperr.Errorf(http.StatusForbidden, "capabilitiesUrl is not on the installation's HipChat server")
		}
	}
	var caps hipchat.Capabilities
	if err == nil {
		caps, err = s.HipChat.Capabilities(r.Context(), p.CapabilitiesURL)
	}
	if err == nil {
		inst.CapabilitiesURL, inst.APIURL, inst.TokenURL = p.CapabilitiesURL, caps.APIURL, caps.TokenURL
		inst.UpdatedAt = s.Now().UTC()
		var tok addon.Token
		if tok, err = s.HipChat.RequestToken(r.Context(), inst, s.scopes); err == nil {
			if err = s.Store.PutInstallation(r.Context(), inst); err == nil {
				err = s.Store.PutToken(r.Context(), inst.OAuthID, tok)
			}
		}
	}
	if err != nil {
		s.Metrics.Installs.WithLabelValues("update_" + addon.KindOf(err)).Inc()
		s.fail(w, r, fmt.Errorf("update %s: %w", truncate(p.OAuthID, 100), err))
		return
	}
	s.Metrics.Installs.WithLabelValues("update_ok").Inc()
	s.Logger.Info("installation updated", slog.String("oauth_id", inst.OAuthID), slog.String("api", inst.APIURL))
	w.WriteHeader(http.StatusOK)
}

func originOf(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	return u.Scheme + "://" + u.Host, nil
}

// uninstall handles HipChat's DELETE {callbackUrl}/{oauthId}; the JWT must be
// the installation's own.
func (s *server) uninstall(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	if id := r.PathValue("oauthId"); id != a.inst.OAuthID {
		s.Metrics.Uninstalls.WithLabelValues("forbidden").Inc()
		s.fail(w, r, httperr.Errorf(http.StatusForbidden, "JWT does not belong to installation %q", truncate(id, 100)))
		return
	}
	// Any user's page JWT of the installation would pass requireJWT: only
	// HipChat's word that the client is gone makes this an uninstall.
	if err := s.confirmUninstalled(r, a.inst); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.remove(r, a.inst.OAuthID); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// confirmUninstalled asks HipChat whether inst was uninstalled: HipChat
// revokes an uninstalled add-on's OAuth client, so its credentials must be
// refused with 401. Credentials that still work mean the installation is
// alive and the request is not HipChat's (409).
func (s *server) confirmUninstalled(r *http.Request, inst addon.Installation) error {
	_, err := s.HipChat.RequestToken(r.Context(), inst, s.scopes)
	switch {
	case err == nil:
		s.Metrics.Uninstalls.WithLabelValues("conflict").Inc()
		return httperr.Errorf(http.StatusConflict, "HipChat still accepts the installation's credentials; not removed")
	case errors.Is(err, hipchat.ErrInvalidClient):
		return nil
	default:
		s.Metrics.Uninstalls.WithLabelValues(addon.KindOf(err)).Inc()
		return fmt.Errorf("uninstall: confirm with HipChat: %w", err)
	}
}

// remove deletes an installation and everything stored for it.
func (s *server) remove(r *http.Request, oauthID string) error {
	if err := s.Store.DeleteInstallation(r.Context(), oauthID); err != nil && !addon.IsNotFound(err) {
		s.Metrics.Uninstalls.WithLabelValues("error").Inc()
		return err
	}
	s.Metrics.Uninstalls.WithLabelValues("ok").Inc()
	s.Logger.Info("uninstalled", slog.String("oauth_id", oauthID))
	return nil
}

// uninstalled handles the browser redirect flow (PROTOCOL.md section 8):
// installable_url tells which installation went, HipChat confirms it by no
// longer accepting its credentials, then the admin is sent to redirect_url.
// Both URLs must be on allowlisted hosts.
func (s *server) uninstalled(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_url"))
	if err != nil || (redirect.Scheme != "https" && redirect.Scheme != "http") || !s.AllowHost(redirect.Hostname()) {
		s.Metrics.Uninstalls.WithLabelValues("invalid").Inc()
		s.fail(w, r, httperr.Errorf(http.StatusBadRequest, "redirect_url must be an http(s) URL on an allowed host"))
		return
	}
	oauthID, err := s.HipChat.InstallableInfo(r.Context(), q.Get("installable_url"))
	if err != nil {
		s.Metrics.Uninstalls.WithLabelValues(addon.KindOf(err)).Inc()
		s.fail(w, r, fmt.Errorf("uninstall: %w", err))
		return
	}
	inst, err := s.Store.Installation(r.Context(), oauthID)
	switch {
	case addon.IsNotFound(err):
		// already gone
	case err != nil:
		s.fail(w, r, err)
		return
	default:
		if o, _ := originOf(q.Get("installable_url")); o != inst.HipChatOrigin {
			s.Metrics.Uninstalls.WithLabelValues("forbidden").Inc()
			s.fail(w, r, httperr.Errorf(http.StatusForbidden, "installable_url is not on the installation's HipChat server"))
			return
		}
		if err := s.confirmUninstalled(r, inst); err != nil {
			s.fail(w, r, err)
			return
		}
		if err := s.remove(r, oauthID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	http.Redirect(w, r, redirect.String(), http.StatusSeeOther)
}

// webhookPayload is the part of a room_message webhook (PROTOCOL.md
// section 6) hipconnect reads.
type webhookPayload struct {
	Event string `json:"event"`
	Item  struct {
		Message struct {
			ID      string `json:"id"`
			Date    string `json:"date"`
			Message string `json:"message"`
			From    struct {
				Name string `json:"name"`
			} `json:"from"`
		} `json:"message"`
		Room struct {
			ID int64 `json:"id"`
		} `json:"room"`
	} `json:"item"`
	OAuthClientID string `json:"oauth_client_id"`
}

// webhook acknowledges a slash command once it is committed to the outbox;
// the dispatcher runs it and replies through the REST API. A message id
// seen before is acknowledged without a second job.
func (s *server) webhook(w http.ResponseWriter, r *http.Request) {
	a := authFrom(r.Context())
	name := r.PathValue("command")
	var p webhookPayload
	err := decodeJSON(r, &p)
	switch {
	case err != nil:
	case p.Event != "room_message":
		err = httperr.Errorf(http.StatusBadRequest, "unsupported event %q", truncate(p.Event, 40))
	case p.Item.Room.ID <= 0 || p.Item.Message.ID == "":
		err = httperr.Errorf(http.StatusBadRequest, "item.room.id and item.message.id are required")
	case p.OAuthClientID != "" && p.OAuthClientID != a.inst.OAuthID:
		err = httperr.Errorf(http.StatusForbidden, "oauth_client_id does not match the JWT issuer")
	case !a.inst.CoversRoom(p.Item.Room.ID) || (a.claims.RoomID != 0 && a.claims.RoomID != p.Item.Room.ID):
		err = httperr.Errorf(http.StatusForbidden, "room %d is not covered by installation %s", p.Item.Room.ID, a.inst.OAuthID)
	}
	cmd, args, ok := s.Commands.Parse(p.Item.Message.Message)
	if err == nil && (!ok || cmd != name) {
		err = httperr.Errorf(http.StatusBadRequest, "message is not a /%s command", truncate(name, 40))
	}
	if err != nil {
		code, _ := httperr.Status(err)
		s.Metrics.Webhooks.WithLabelValues(strings.ToLower(http.StatusText(code))).Inc()
		s.fail(w, r, err)
		return
	}
	// A delivery of the same message again carries the same date, which
	// the store keys the seen messages by; without one (or an unreadable
	// one) the message id alone tells.
	date, _ := time.Parse(time.RFC3339Nano, p.Item.Message.Date)
	job := addon.Job{OAuthID: a.inst.OAuthID, RoomID: p.Item.Room.ID, MessageID: p.Item.Message.ID, MessageDate: date.UTC(),
		Command: cmd, Args: args, From: p.Item.Message.From.Name, Received: s.Now().UTC()}
	if _, isNew, err := s.Store.Enqueue(r.Context(), job); err != nil {
		s.Metrics.Webhooks.WithLabelValues("error").Inc()
		s.fail(w, r, &httperr.Error{Code: http.StatusServiceUnavailable, Msg: "could not store the command", Err: err})
		return
	} else if !isNew {
		s.Metrics.Webhooks.WithLabelValues("duplicate").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.Metrics.Webhooks.WithLabelValues("accepted").Inc()
	w.WriteHeader(http.StatusNoContent)
}
