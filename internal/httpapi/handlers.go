package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/delivery"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/httperr"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
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

// install handles an installation (see install.Service.Install). It
// answers exactly 200, as HipChat requires.
func (s *server) install(w http.ResponseWriter, r *http.Request) {
	var req install.Request
	err := decodeJSON(r, &req)
	if err == nil {
		_, err = s.Installs.Install(r.Context(), req)
	}
	s.Metrics.Installs.WithLabelValues(result("", err)).Inc()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// update handles HipChat's updateCallbackUrl (see install.Service.Update).
func (s *server) update(w http.ResponseWriter, r *http.Request) {
	var req install.Request
	err := decodeJSON(r, &req)
	if err == nil {
		_, err = s.Installs.Update(r.Context(), req.OAuthID, req.CapabilitiesURL)
	}
	s.Metrics.Installs.WithLabelValues(result("update_", err)).Inc()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// result is a metric's result label: prefix "ok", or prefix and the kind
// of err.
func result(prefix string, err error) string {
	if err == nil {
		return prefix + "ok"
	}
	return prefix + addon.KindOf(err)
}

// uninstall handles HipChat's DELETE {callbackUrl}/{oauthId}; the JWT must
// be the installation's own (any user's page JWT would pass the
// middleware), and only HipChat refusing the credentials removes (see
// install.Service.Uninstall): 204 when removed, 202 when recorded for
// re-checking.
func (s *server) uninstall(w http.ResponseWriter, r *http.Request) {
	sess, _ := jwtauth.From(r.Context())
	var (
		out install.Outcome
		err error
	)
	if id := r.PathValue("oauthId"); id != sess.Inst.OAuthID {
		err = addon.Errorf(addon.Forbidden, "JWT does not belong to installation %q", addon.Clip(id, 100))
	} else {
		out, err = s.Installs.Uninstall(r.Context(), sess.Inst)
	}
	if !s.uninstallFailed(w, r, out, err) {
		w.WriteHeader(uninstallStatus(out))
	}
}

// uninstallStatus is the answer to an uninstall that came to out.
func uninstallStatus(out install.Outcome) int {
	if out == install.Requested {
		return http.StatusAccepted
	}
	return http.StatusNoContent
}

// uninstallFailed counts an uninstall by its outcome, or answers its error
// and reports true.
func (s *server) uninstallFailed(w http.ResponseWriter, r *http.Request, out install.Outcome, err error) bool {
	if err != nil {
		s.Metrics.Uninstalls.WithLabelValues(addon.KindOf(err)).Inc()
		s.fail(w, r, err)
		return true
	}
	s.Metrics.Uninstalls.WithLabelValues(string(out)).Inc()
	return false
}

// unknownUninstall answers 204 to a DELETE for an installation that is not
// stored (HipChat retrying, or a second node's uninstall): the request is
// idempotent, and there is no secret to verify its JWT with. Known ones go
// on to next.
func (s *server) unknownUninstall(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		known, err := s.Installs.Known(r.Context(), r.PathValue("oauthId"))
		if err != nil {
			s.uninstallFailed(w, r, "", addon.Wrap(addon.Busy, err, "could not read the installation"))
			return
		}
		if !known {
			s.uninstallFailed(w, r, install.Absent, nil)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next(w, r)
	}
}

// uninstalled handles the browser redirect flow (PROTOCOL.md section 8):
// installable_url tells which installation went (see
// install.Service.UninstallFrom), then the admin is sent to redirect_url,
// which must be on an allowlisted host.
func (s *server) uninstalled(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var out install.Outcome
	redirect, err := url.Parse(q.Get("redirect_url"))
	if err != nil || (redirect.Scheme != "https" && redirect.Scheme != "http") || !s.AllowHost(redirect.Hostname()) {
		err = addon.Errorf(addon.Invalid, "redirect_url must be an http(s) URL on an allowed host")
	} else {
		out, err = s.Installs.UninstallFrom(r.Context(), q.Get("installable_url"))
	}
	if !s.uninstallFailed(w, r, out, err) {
		http.Redirect(w, r, redirect.String(), http.StatusSeeOther)
	}
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
			ID   int64  `json:"id"`
			Name string `json:"name"`
		} `json:"room"`
	} `json:"item"`
	OAuthClientID string `json:"oauth_client_id"`
}

// webhook acknowledges a slash command once it is committed to the outbox;
// the dispatcher runs it and replies, in the response or through the REST
// API (see answer). A message id seen before is acknowledged without a
// second job.
//
// The request must look like HipChat's webhook, not like a page JWT reused
// (any room member can read one in the browser): the body's
// oauth_client_id must be the JWT's issuer, the JWT's context.room_id
// (when present) the body's room, and a JWT seen before (by its jti) must
// come with the same body (see replayCache); else 401.
func (s *server) webhook(w http.ResponseWriter, r *http.Request) {
	a, _ := jwtauth.From(r.Context())
	name := r.PathValue("command")
	body, err := readBody(r)
	var p webhookPayload
	if err == nil {
		p, err = decodeWebhook(body)
	}
	switch {
	case err != nil:
	case p.OAuthClientID != a.Inst.OAuthID:
		err = addon.Errorf(addon.Unauthorized, "oauth_client_id does not match the JWT issuer")
	case a.Claims.RoomID != 0 && a.Claims.RoomID != p.Item.Room.ID:
		err = addon.Errorf(addon.Unauthorized, "the JWT's room is not the webhook's room")
	case !a.Inst.CoversRoom(p.Item.Room.ID):
		err = addon.Errorf(addon.Forbidden, "room %d is not covered by installation %s", p.Item.Room.ID, a.Inst.OAuthID)
	case !s.replays.admit(replayKey(a), body, a.Claims.ExpiresAt, s.Now()):
		err = addon.Errorf(addon.Unauthorized, "JWT replayed with another body")
	}
	var (
		spec command.Spec
		args string
	)
	if err == nil {
		spec, args, err = s.command(p, name)
	}
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	s.answer(w, r, s.job(a.Inst.OAuthID, p, spec, args), spec)
}

// decodeWebhook reads a room_message webhook body: an Invalid error unless
// it is one, with a room id and a message id.
func decodeWebhook(body []byte) (webhookPayload, error) {
	var p webhookPayload
	err := httperr.DecodeJSON(json.NewDecoder(bytes.NewReader(body)), &p)
	switch {
	case err != nil:
	case p.Event != "room_message":
		err = addon.Errorf(addon.Invalid, "unsupported event %q", addon.Clip(p.Event, 40))
	case p.Item.Room.ID <= 0 || p.Item.Message.ID == "":
		err = addon.Errorf(addon.Invalid, "item.room.id and item.message.id are required")
	}
	return p, err
}

// command returns the spec of the command p's message calls, which must be
// name (the command of the webhook's URL; "" takes any configured
// command), and the command's arguments.
func (s *server) command(p webhookPayload, name string) (command.Spec, string, error) {
	cmd, args, ok := s.Commands.Parse(p.Item.Message.Message)
	spec, known := s.Commands.Spec(cmd)
	switch {
	case name == "" && (!ok || !known):
		return command.Spec{}, "", addon.Errorf(addon.Invalid, "message is not a configured slash command")
	case name != "" && (!ok || cmd != name || !known):
		return command.Spec{}, "", addon.Errorf(addon.Invalid, "message is not a /%s command", addon.Clip(name, 40))
	}
	return spec, args, nil
}

// refuse answers a webhook refused with err, counted by its status.
func (s *server) refuse(w http.ResponseWriter, r *http.Request, err error) {
	code, _ := httperr.Status(err)
	s.Metrics.Webhooks.WithLabelValues(strings.ToLower(http.StatusText(code))).Inc()
	s.fail(w, r, err)
}

// job is the job of webhook p for installation oauthID, calling spec with
// args.
func (s *server) job(oauthID string, p webhookPayload, spec command.Spec, args string) addon.Job {
	// A delivery of the same message again carries the same date, which
	// the store keys the seen messages by; without one (or an unreadable
	// one) the message id alone tells.
	date, _ := time.Parse(time.RFC3339Nano, p.Item.Message.Date)
	return addon.Job{OAuthID: oauthID, RoomID: p.Item.Room.ID, MessageID: p.Item.Message.ID, MessageDate: date.UTC(),
		Command: spec.Name, Args: args, From: p.Item.Message.From.Name, Received: s.Now().UTC(),
		ResponseOnly: spec.Reply == command.ReplyResponse}
}

// answer stores job and answers its webhook. With reply mode api (or no
// Replies) that is 204 once the job is committed. Otherwise the request
// waits up to spec.ReplyBudget for the dispatcher to offer the reply and
// answers 200 with it, in the send-notification format (PROTOCOL.md
// section 6): the same JSON the REST API would have been sent. A reply not
// ready in time is acknowledged with 204 and goes through the outbox
// (auto), or to the dead letters (response). Either way the job was
// committed first: a 2xx always means it is stored.
func (s *server) answer(w http.ResponseWriter, r *http.Request, job addon.Job, spec command.Spec) {
	var aw *delivery.Awaiting
	if spec.Reply != command.ReplyAPI && s.Replies != nil {
		aw = s.Replies.Await(job.OAuthID, job.MessageID)
	}
	_, isNew, err := s.Outbox.Enqueue(r.Context(), job)
	if aw != nil && (err != nil || !isNew) {
		aw.Cancel()
	}
	switch {
	case err != nil:
		s.Metrics.Webhooks.WithLabelValues("error").Inc()
		s.fail(w, r, addon.Wrap(addon.Busy, err, "could not store the command"))
		return
	case !isNew:
		s.Metrics.Webhooks.WithLabelValues("duplicate").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	case aw == nil:
		s.Metrics.Webhooks.WithLabelValues("accepted").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), spec.ReplyBudget)
	reply, written, ok := aw.Wait(ctx)
	cancel()
	if !ok {
		s.Metrics.Webhooks.WithLabelValues("accepted").Inc()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	err = writeReply(w, reply)
	written(err)
	if err == nil {
		s.Metrics.Webhooks.WithLabelValues("answered").Inc()
	}
}

// writeReply answers 200 with n as HipChat's send-notification JSON, after
// the checks the REST API's client makes; what fails them is not written.
func writeReply(w http.ResponseWriter, n addon.Notification) error {
	if err := hipchat.ValidateNotification(n); err != nil {
		return err
	}
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("httpapi: encode the reply: %w", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("httpapi: write the reply: %w", err)
	}
	return http.NewResponseController(w).Flush()
}

// fail answers r with err through the one error adapter (a JSON body).
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	httperr.Write(s.Logger, w, r, err, nil)
}

// replayKey names a webhook's JWT in the replay cache: its issuer and jti,
// or the token itself when it has no jti.
func replayKey(a jwtauth.Session) string {
	if a.Claims.ID == "" {
		return "token\x00" + a.Token
	}
	return "jti\x00" + a.Inst.OAuthID + "\x00" + a.Claims.ID
}

// readBody reads r's body (already capped by the middleware): a body over
// the cap is the *http.MaxBytesError (413), any other failure Invalid.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if err != nil && !errors.As(err, &mbe) {
		err = addon.Wrap(addon.Invalid, err, "could not read the request body")
	}
	return b, err
}

// decodeJSON reads r's body (already capped by the middleware) into v.
func decodeJSON(r *http.Request, v any) error {
	return httperr.DecodeJSON(json.NewDecoder(r.Body), v)
}
