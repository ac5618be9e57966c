package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"github.com/hipconnect/hipconnect/internal/httperr"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Outbox is the operator's view of the outbox and its dead letters.
type Outbox interface {
	Pending(ctx context.Context, limit int) ([]addon.Job, error)
	DeadLetters(ctx context.Context) ([]addon.DeadLetter, error)
	RetryDead(ctx context.Context, id uint64) (addon.Job, error)
	DropDead(ctx context.Context, id uint64) error
}

// AdminDeps are what the admin handler needs.
type AdminDeps struct {
	Store  addon.Store
	Outbox Outbox
	Backup func(w io.Writer) (int64, error) // hot backup of the whole store
	CAPEM  func() ([]byte, error)           // the self-signed CA, if any
}

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
func NewAdmin(d AdminDeps) http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, err error) {
		code, msg := httperr.Status(err)
		httperr.WriteJSON(w, code, map[string]string{"error": msg})
	}
	mux.HandleFunc("GET /installations", func(w http.ResponseWriter, r *http.Request) {
		all, err := d.Store.Installations(r.Context())
		if err != nil {
			fail(w, err)
			return
		}
		for i := range all {
			all[i].OAuthSecret = ""
		}
		httperr.WriteJSON(w, http.StatusOK, all)
	})
	mux.HandleFunc("GET /installations/{id}", func(w http.ResponseWriter, r *http.Request) {
		inst, err := d.Store.Installation(r.Context(), r.PathValue("id"))
		if err != nil {
			fail(w, err)
			return
		}
		inst.OAuthSecret = ""
		httperr.WriteJSON(w, http.StatusOK, inst)
	})
	mux.HandleFunc("DELETE /installations/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Store.DeleteInstallation(r.Context(), r.PathValue("id")); err != nil {
			fail(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /outbox", func(w http.ResponseWriter, r *http.Request) {
		pending, err := d.Outbox.Pending(r.Context(), 0)
		if err != nil {
			fail(w, err)
			return
		}
		dead, err := d.Outbox.DeadLetters(r.Context())
		if err != nil {
			fail(w, err)
			return
		}
		httperr.WriteJSON(w, http.StatusOK, OutboxView{Pending: pending, Dead: dead})
	})
	deadID := func(w http.ResponseWriter, r *http.Request) (uint64, bool) {
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
		if err != nil {
			fail(w, httperr.Errorf(http.StatusBadRequest, "job id must be a number"))
		}
		return id, err == nil
	}
	mux.HandleFunc("POST /outbox/dead/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := deadID(w, r); ok {
			j, err := d.Outbox.RetryDead(r.Context(), id)
			if err != nil {
				fail(w, err)
				return
			}
			httperr.WriteJSON(w, http.StatusOK, j)
		}
	})
	mux.HandleFunc("DELETE /outbox/dead/{id}", func(w http.ResponseWriter, r *http.Request) {
		if id, ok := deadID(w, r); ok {
			if err := d.Outbox.DropDead(r.Context(), id); err != nil {
				fail(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	})
	mux.HandleFunc("GET /backup", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = d.Backup(w) // a failure cuts the stream short; the client checks the copy
	})
	mux.HandleFunc("GET /tls/ca", func(w http.ResponseWriter, r *http.Request) {
		pem, err := d.CAPEM()
		if err != nil {
			fail(w, addon.Wrap(addon.NotFound, err, "no local CA: tls.mode is not self-signed"))
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(pem)
	})
	return mux
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
