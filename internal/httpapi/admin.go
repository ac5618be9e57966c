package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/httperr"
	"github.com/hipconnect/hipconnect/internal/install"
	"github.com/hipconnect/hipconnect/internal/integration"
)

// Operator is the operator's view of the store: installations (secrets
// are blanked before they are answered), the outbox and its dead letters.
type Operator interface {
	addon.Installations
	Pending(ctx context.Context, limit int) ([]addon.Job, error)
	DeadLetters(ctx context.Context) ([]addon.DeadLetter, error)
	RetryDead(ctx context.Context, id uint64) (addon.Job, error)
	DropDead(ctx context.Context, id uint64) error
}

// AdminDeps are what the admin handler needs.
type AdminDeps struct {
	Store Operator
	// Remove deletes an installation and everything stored for it
	// (install.Service.Remove).
	Remove func(ctx context.Context, oauthID string) error
	// Pending lists the uninstalls requested and not yet confirmed
	// (install.Service.PendingUninstalls).
	Pending func(ctx context.Context) ([]install.PendingUninstall, error)
	Backup  func(w io.Writer) (int64, error) // hot backup of the whole store
	CAPEM   func() ([]byte, error)           // the self-signed CA, if any
	// IntegrationURL and RotateIntegration return the webhook URL of a
	// "Build your own" integration, the second after giving it a new
	// secret; Notify queues a notification for an integration's room.
	IntegrationURL    func(ctx context.Context, name string) (string, error)
	RotateIntegration func(ctx context.Context, name string) (string, error)
	Notify            func(ctx context.Context, name string, n addon.Notification) (addon.Job, error)
	Logger            *slog.Logger
}

// IntegrationView is the answer of the integration routes.
type IntegrationView struct {
	URL string `json:"url"`
}

// NotifyRequest is the body of POST /notify.
type NotifyRequest struct {
	Integration  string             `json:"integration"`
	Notification addon.Notification `json:"notification"`
}

type admin struct{ AdminDeps }

// NewAdmin returns the handler of the admin socket, a unix socket only the
// daemon's user (and root) can open, through which the CLI reaches a
// running daemon: the bbolt file is locked by the daemon while it runs.
//
//	GET    /installations        list (secrets never included)
//	GET    /installations/{id}   one
//	DELETE /installations/{id}   remove it and everything stored for it
//	GET    /outbox               pending jobs and dead letters
//	POST   /outbox/dead/{id}     move a dead letter back into the outbox
//	DELETE /outbox/dead/{id}     drop a dead letter
//	GET    /backup               a consistent copy of the store
//	GET    /tls/ca               the self-signed CA certificate (PEM)
//	GET    /integrations/{name}/url     an integration's webhook URL
//	POST   /integrations/{name}/rotate  a new webhook secret; the new URL
//	POST   /notify               queue a notification for an integration's room
func NewAdmin(d AdminDeps) http.Handler { return admin{d}.routes() }

func (a admin) fail(w http.ResponseWriter, r *http.Request, err error) {
	httperr.Write(a.Logger, w, r, err, nil)
}

func (a admin) listInstallations(w http.ResponseWriter, r *http.Request) {
	all, err := a.Store.Installations(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	for i := range all {
		all[i].OAuthSecret = ""
	}
	httperr.WriteJSON(w, http.StatusOK, all)
}

func (a admin) pendingUninstalls(w http.ResponseWriter, r *http.Request) {
	p, err := a.Pending(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, p)
}

func (a admin) showInstallation(w http.ResponseWriter, r *http.Request) {
	inst, err := a.Store.Installation(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	inst.OAuthSecret = ""
	httperr.WriteJSON(w, http.StatusOK, inst)
}

func (a admin) removeInstallation(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if integration.IsOAuthID(id) {
		a.fail(w, r, addon.Errorf(addon.Invalid, "%s is a \"Build your own\" integration: remove it from integrations in the configuration and restart", addon.Clip(id, 60)))
		return
	}
	if err := a.Remove(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a admin) outbox(w http.ResponseWriter, r *http.Request) {
	pending, err := a.Store.Pending(r.Context(), 0)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	dead, err := a.Store.DeadLetters(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, OutboxView{Pending: pending, Dead: dead})
}

// deadID reads the {id} of a dead letter route, answering 400 when it is
// not a number.
func (a admin) deadID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		a.fail(w, r, addon.Errorf(addon.Invalid, "job id must be a number"))
	}
	return id, err == nil
}

func (a admin) retryDead(w http.ResponseWriter, r *http.Request) {
	id, ok := a.deadID(w, r)
	if !ok {
		return
	}
	j, err := a.Store.RetryDead(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, j)
}

func (a admin) dropDead(w http.ResponseWriter, r *http.Request) {
	id, ok := a.deadID(w, r)
	if !ok {
		return
	}
	if err := a.Store.DropDead(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a admin) backup(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = a.Backup(w) // a failure cuts the stream short; the client checks the copy
}

func (a admin) tlsCA(w http.ResponseWriter, r *http.Request) {
	pem, err := a.CAPEM()
	if err != nil {
		a.fail(w, r, addon.Wrap(addon.NotFound, err, "no local CA: tls.mode is not self-signed"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(pem)
}

// OutboxView is what GET /outbox answers.
type OutboxView struct {
	Pending []addon.Job        `json:"pending"`
	Dead    []addon.DeadLetter `json:"dead"`
}

// AdminClient talks to a running daemon's admin socket.
type AdminClient struct {
	HTTP *http.Client // dials the socket
}

// Do sends method path and decodes a JSON answer into v, or, with v nil,
// copies the body to w (if not nil).
func (c AdminClient) Do(ctx context.Context, method, path string, v any, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://hipconnect"+path, nil)
	if err != nil {
		return err
	}
	return c.do(req, v, w)
}

// Post sends body as JSON to path and decodes the JSON answer into v.
func (c AdminClient) Post(ctx context.Context, path string, body, v any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://hipconnect"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, v, nil)
}

func (c AdminClient) do(req *http.Request, v any, w io.Writer) error {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e)
		kind := addon.Internal
		if resp.StatusCode == http.StatusNotFound {
			kind = addon.NotFound
		}
		return addon.Errorf(kind, "daemon answered %d: %s", resp.StatusCode, e.Error)
	}
	if v != nil {
		return json.NewDecoder(resp.Body).Decode(v)
	}
	if w != nil {
		_, err = io.Copy(w, resp.Body)
	}
	return err
}

func (a admin) integrationURL(w http.ResponseWriter, r *http.Request) {
	a.answerURL(w, r, a.IntegrationURL)
}

func (a admin) rotateIntegration(w http.ResponseWriter, r *http.Request) {
	a.answerURL(w, r, a.RotateIntegration)
}

func (a admin) answerURL(w http.ResponseWriter, r *http.Request, fn func(context.Context, string) (string, error)) {
	u, err := fn(r.Context(), r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusOK, IntegrationView{URL: u})
}

func (a admin) notify(w http.ResponseWriter, r *http.Request) {
	var req NotifyRequest
	if err := decodeJSON(r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	j, err := a.Notify(r.Context(), req.Integration, req.Notification)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httperr.WriteJSON(w, http.StatusAccepted, j)
}
