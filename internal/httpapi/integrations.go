package httpapi

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/integration"
)

// Integrations finds a "Build your own" integration by the name and secret
// in its webhook path; an *integration.Service has it.
type Integrations interface {
	Lookup(ctx context.Context, name, secret string) (integration.Integration, error)
}

// byoWebhook is the slash command of a "Build your own" integration: the
// room_message webhook body as for a Connect install, without a JWT (see
// PROTOCOL.md section 11), so the secret in the path is the credential. An
// unknown name or a wrong secret is 404 and runs nothing; the body's room
// must be the integration's room (403) and its command one the integration
// lists (403). The reply goes in the response or through the room URL, as
// the integration's reply mode says.
func (s *server) byoWebhook(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	in, err := s.Integrations.Lookup(r.Context(), name, r.PathValue("secret"))
	r = redactedRequest(r)
	if addon.IsNotFound(err) {
		s.Logger.Warn("integration webhook refused: unknown integration or wrong secret", slog.String("integration", addon.Clip(name, 40)),
			slog.String("remote", r.RemoteAddr))
		s.refuse(w, r, addon.Errorf(addon.NotFound, "not found"))
		return
	}
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	body, err := readBody(r)
	var p webhookPayload
	if err == nil {
		p, err = decodeWebhook(body)
	}
	if err == nil && !in.InRoom(p.Item.Room.ID, p.Item.Room.Name) {
		err = addon.Errorf(addon.Forbidden, "room %d is not the room of integration %s", p.Item.Room.ID, in.Name)
	}
	var (
		spec command.Spec
		args string
	)
	if err == nil {
		spec, args, err = s.command(p, "")
		if err == nil && !in.Allows(spec.Name) {
			err = addon.Errorf(addon.Forbidden, "integration %s does not run /%s", in.Name, spec.Name)
		}
	}
	if err != nil {
		s.refuse(w, r, err)
		return
	}
	spec.Reply = in.Reply
	job := s.job(in.OAuthID(), p, spec, args)
	job.RoomID = in.QueueRoom()
	s.answer(w, r, job, spec)
}

// redactedRequest returns r with its path's {secret} segment replaced by
// REDACTED, for logs and error reports: r itself is left as it is.
func redactedRequest(r *http.Request) *http.Request {
	secret := r.PathValue("secret")
	if secret == "" {
		return r
	}
	r2 := *r
	u := *r.URL
	u.Path = strings.Replace(u.Path, secret, "REDACTED", 1)
	u.RawPath = ""
	r2.URL = &u
	return &r2
}
