package main

import (
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hipconnect/hipconnect/internal/httperr"
)

// Paths of the fake HipChat (PROTOCOL.md sections 2, 4 and 7).
const (
	pathCapabilities = "/v2/capabilities"
	pathToken        = "/v2/oauth/token"
	pathSearch       = "/byTag.php"
)

// sink receives the message of every notification the fake HipChat
// accepts, with the time it arrived.
type sink interface {
	notified(message string, at time.Time)
}

// fakeHipChat plays HipChat Server for the daemon under test: the
// capabilities document, the client-credentials token endpoint with HTTP
// basic auth, room notifications (204) and glance updates (204), all over
// HTTPS, checking every bearer token it is shown. It keeps no log of what
// it answered, only counters, so that it stays cheap under load.
type fakeHipChat struct {
	url  string // https://127.0.0.2:port
	srv  *http.Server
	caps []byte

	mu      sync.RWMutex
	clients map[string]string // oauthID -> secret
	tokens  map[string]string // access token -> oauthID

	sink atomic.Pointer[sink]

	capabilityRequests, tokenRequests, notifications, glances, refused atomic.Int64
}

// startFakeHipChat listens on addr (e.g. 127.0.0.2:0) with cert.
func startFakeHipChat(addr string, cert tls.Certificate) (*fakeHipChat, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake hipchat: %w", err)
	}
	f := &fakeHipChat{url: "https://" + ln.Addr().String(), clients: map[string]string{}, tokens: map[string]string{}}
	f.caps, _ = json.Marshal(map[string]any{
		"capabilities": map[string]any{
			"hipchatApiProvider": map[string]any{"url": f.url + "/v2/", "availableScopes": map[string]any{
				"send_notification": map[string]string{"id": "send_notification", "name": "Send Notification", "description": "Send room notifications"},
				"view_room":         map[string]string{"id": "view_room", "name": "View Room", "description": "View rooms"},
			}},
			"oauth2Provider": map[string]any{"authorizationUrl": f.url + "/users/authorize", "tokenUrl": f.url + pathToken},
		},
		"key": "hipchat", "name": "HipChat", "description": "Group chat and IM built for teams",
		"links":  map[string]string{"api": f.url + "/v2", "homepage": f.url, "self": f.url + pathCapabilities},
		"vendor": map[string]string{"name": "Atlassian", "url": "http://atlassian.com"},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathCapabilities, f.capabilities)
	mux.HandleFunc("POST "+pathToken, f.token)
	mux.HandleFunc("POST /v2/room/{id}/notification", f.notification)
	mux.HandleFunc("POST /v2/addon/ui/room/{id}", f.glance)
	f.srv = serveTLS(ln, mux, cert)
	return f, nil
}

// serveTLS serves h on ln over HTTPS (HTTP/2 by ALPN) with every timeout
// set, until the server returned is closed.
func serveTLS(ln net.Listener, h http.Handler, cert tls.Certificate) *http.Server {
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	return srv
}

func (f *fakeHipChat) close() { _ = f.srv.Close() }

// capabilitiesURL is what an install payload carries.
func (f *fakeHipChat) capabilitiesURL() string { return f.url + pathCapabilities }

// setSink directs notifications to s (nil: counted only).
func (f *fakeHipChat) setSink(s sink) {
	if s == nil {
		f.sink.Store(nil)
		return
	}
	f.sink.Store(&s)
}

// newClient registers an OAuth client with a fresh id and secret, as
// HipChat does before it POSTs the install.
func (f *fakeHipChat) newClient() installation {
	b := randomHex(16)
	inst := installation{id: b[0:8] + "-" + b[8:12] + "-" + b[12:16] + "-" + b[16:20] + "-" + b[20:32], secret: randomHex(20)}
	f.mu.Lock()
	f.clients[inst.id] = inst.secret
	f.mu.Unlock()
	return inst
}

// mint issues an access token without a request (for the baseline server).
func (f *fakeHipChat) mint(oauthID string) string {
	tok := randomHex(20)
	f.mu.Lock()
	f.tokens[tok] = oauthID
	f.mu.Unlock()
	return tok
}

func (f *fakeHipChat) capabilities(w http.ResponseWriter, r *http.Request) {
	f.capabilityRequests.Add(1)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(f.caps)
}

// token is the client-credentials grant (PROTOCOL.md section 4).
func (f *fakeHipChat) token(w http.ResponseWriter, r *http.Request) {
	f.tokenRequests.Add(1)
	id, secret, ok := r.BasicAuth()
	f.mu.RLock()
	want, known := f.clients[id]
	f.mu.RUnlock()
	if !ok || !known || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		f.refused.Add(1)
		httperr.WriteJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "Client authentication failed"})
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		f.refused.Add(1)
		httperr.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "client_credentials" {
		f.refused.Add(1)
		httperr.WriteJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	scope := r.PostForm.Get("scope")
	if scope == "" {
		scope = "send_notification view_room"
	}
	tok := f.mint(id)
	w.Header().Set("Cache-Control", "no-store")
	httperr.WriteJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": 3599, "group_id": 1,
		"group_name": "hipconnect-load", "scope": scope, "token_type": "bearer"})
}

// authorized checks "Authorization: Bearer <token>" (PROTOCOL.md section 7)
// and answers 401 itself when it fails.
func (f *fakeHipChat) authorized(w http.ResponseWriter, r *http.Request) bool {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	f.mu.RLock()
	_, ok := f.tokens[tok]
	f.mu.RUnlock()
	if !strings.EqualFold(scheme, "Bearer") || !ok {
		f.refused.Add(1)
		httperr.WriteJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]any{"code": 401, "message": "Invalid OAuth session", "type": "Unauthorized"}})
		return false
	}
	return true
}

// notification is "send room notification": a JSON body with a message of
// 1 to 10,000 characters, answered 204.
func (f *fakeHipChat) notification(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	if !f.authorized(w, r) {
		return
	}
	var body struct {
		Message string `json:"message"`
	}
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" ||
		json.NewDecoder(r.Body).Decode(&body) != nil || body.Message == "" || len(body.Message) > 40000 {
		f.refused.Add(1)
		httperr.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]any{"code": 400, "message": "bad notification", "type": "Bad Request"}})
		return
	}
	if _, err := strconv.ParseInt(r.PathValue("id"), 10, 64); err != nil {
		f.refused.Add(1)
		httperr.WriteJSON(w, http.StatusNotFound, map[string]any{"error": map[string]any{"code": 404, "message": "Room not found", "type": "Not Found"}})
		return
	}
	f.notifications.Add(1)
	if s := f.sink.Load(); s != nil {
		(*s).notified(body.Message, at)
	}
	w.WriteHeader(http.StatusNoContent)
}

// glance is "room addon ui update", answered 204.
func (f *fakeHipChat) glance(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	f.glances.Add(1)
	w.WriteHeader(http.StatusNoContent)
}

// fakeSearch is the blog's search backend: /byTag.php?tag=T answers three
// hits about T, as JSON, over HTTPS.
type fakeSearch struct {
	url      string // https://127.0.0.4:port
	srv      *http.Server
	requests atomic.Int64
}

func startFakeSearch(addr string, cert tls.Certificate) (*fakeSearch, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fake search backend: %w", err)
	}
	s := &fakeSearch{url: "https://" + ln.Addr().String()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathSearch, func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		tag := r.URL.Query().Get("tag")
		hits := make([]map[string]string, 3)
		for i := range hits {
			hits[i] = map[string]string{"title": fmt.Sprintf("Article %d about %s", i+1, tag),
				"url": fmt.Sprintf("https://blog.example/%s/%d", tag, i+1)}
		}
		httperr.WriteJSON(w, http.StatusOK, hits)
	})
	s.srv = serveTLS(ln, mux, cert)
	return s, nil
}

// searchURL is the search_url template of the daemon's hascode command.
func (s *fakeSearch) searchURL() string { return s.url + pathSearch + "?tag={term}" }

func (s *fakeSearch) close() { _ = s.srv.Close() }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
