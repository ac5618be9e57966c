// Package hipchattest is a fake HipChat Server for tests, following
// PROTOCOL.md: an HTTPS server with its own in-memory certificate authority
// that serves the capabilities document, issues access tokens to registered
// OAuth clients, and records the room notifications and glance updates the
// add-on posts. It also plays HipChat toward the add-on: install payloads,
// room_message webhooks and signed JWTs, and posting the notification an
// add-on answers a webhook with (PostWebhook). Besides add-on tokens it
// knows the room tokens of "Build your own" integrations (AddRoomToken,
// PROTOCOL.md sections 10 and 11), and it can refuse every connection, as a
// firewall between the add-on and HipChat would (BlockAPI).
//
// A typical end-to-end test:
//
//	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
//	id, secret := hc.NewClient()
//	// point the add-on's allowlist at 127.0.0.2 and its CA file at hc.CAPEM()
//	post(addonURL+"/installable", hc.InstallPayload(id, secret, 100))
//	post(addonURL+"/webhook/hascode?signed_request="+hc.JWT(id, secret, 100, time.Minute),
//		hipchattest.RoomMessage(id, 100, "m1", "/hascode java"))
//	got, err := hc.WaitNotifications(ctx, 1)
//
// The fake is stricter than HipChat where strictness finds add-on bugs,
// and says so where it is.
package hipchattest

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/httperr"
)

// Paths the fake serves. API calls are under PathRoom and PathGlance.
const (
	PathCapabilities = "/v2/capabilities"
	PathToken        = "/v2/oauth/token"
	PathRoom         = "/v2/room/"          // + {id_or_name}/notification, or {id_or_name} (get room)
	PathGlance       = "/v2/addon/ui/room/" // + {room_id}
	PathInstallable  = "/v2/installable/"   // + {oauthId}
)

// AllScopes are the scopes of PROTOCOL.md section 1, the default set a token
// may be asked for.
func AllScopes() []string {
	return []string{"admin_group", "admin_room", "import_data", "manage_rooms", "send_message",
		"send_notification", "view_group", "view_messages", "view_room"}
}

// Options configure a fake. The zero value is usable.
type Options struct {
	// Addr is where to listen, e.g. "127.0.0.2:0"; default "127.0.0.1:0".
	// Give the fake its own loopback address to tell it apart from other
	// hosts in allowlist tests.
	Addr string
	// TokenExpiresIn is the expires_in (seconds) of issued tokens; default
	// 3599. A token is refused on API calls once that time has passed.
	TokenExpiresIn int
	// Scopes are the scopes a token request may ask for (and what a request
	// without scope gets); default AllScopes().
	Scopes []string
	// GroupID is the HipChat group of every client; default 1.
	GroupID int64
	// Now is the fake's clock (token expiry, record times, JWTs, rate
	// limit windows); default time.Now.
	Now func() time.Time
	// Limits are the rate limits the fake enforces from the start (see
	// SetLimits); the zero value enforces none.
	Limits Limits
	// WebhookClient is the client PostWebhook calls the add-on with (see
	// SetWebhookClient); default a client that gives up after 10 s, follows
	// no redirect and trusts the system's roots.
	WebhookClient *http.Client
	// NoListen makes a fake without a listener, reached only through
	// Transport (or ServeHTTP): no network I/O at all, so it can live in a
	// testing/synctest bubble, where a goroutine blocked on the network
	// would keep the fake clock from moving. Addr is then only its URL's
	// host (default "hipchattest.invalid").
	NoListen bool
}

// Limits are rate limits the fake enforces as sliding windows: at most N
// in any span of Per. A zero N enforces nothing.
type Limits struct {
	// RoomNotifications per RoomPer: the flood control on notifications to
	// one room, whoever sends them, through the API or as webhook replies
	// (PostWebhook). A room is one room whether a path names it by id or by
	// name (see AddRoom); a name the fake does not know is a room of its
	// own. Refusals are 429 with X-FloodControl-Limit/Remaining/Reset and
	// Retry-After; a webhook reply over the limit is dropped (see
	// WebhookResult.Dropped).
	RoomNotifications int
	RoomPer           time.Duration
	// TokenRequests per TokenPer: the rate limit on API calls
	// (notifications, glance updates, room info) made with one add-on
	// access token. Refusals are 429 with X-Ratelimit-Limit/Remaining/Reset
	// and Retry-After.
	TokenRequests int
	TokenPer      time.Duration
	// UserTokenRequests per UserTokenPer: TokenRequests for a
	// user-generated token, i.e. a room token of AddRoomToken, with the
	// same refusals.
	UserTokenRequests int
	UserTokenPer      time.Duration
}

// HipChatLimits are HipChat's documented limits (PROTOCOL.md sections 9
// and 11): 30 notifications per minute per room, 500 API requests per 5
// minutes per add-on token, 100 per 5 minutes per user-generated token
// (HipChat Server's default).
var HipChatLimits = Limits{RoomNotifications: 30, RoomPer: time.Minute, TokenRequests: 500, TokenPer: 5 * time.Minute,
	UserTokenRequests: 100, UserTokenPer: 5 * time.Minute}

// Values of Notification.Via.
const (
	ViaAPI      = "api"      // posted through POST /v2/room/{id_or_name}/notification
	ViaResponse = "response" // the body of a 200 answer to a webhook (PostWebhook)
)

// Notification is a room notification the fake accepted.
type Notification struct {
	// RoomID is the room's id: the path's, or that of the room the path
	// names by name (AddRoom); 0 when the path named a room by a name the
	// fake does not know. For a webhook reply, the body's item.room.id.
	RoomID int64
	// Room is the path's {id_or_name} as sent (unescaped); for a webhook
	// reply, RoomID in decimal.
	Room string
	// OAuthID is the owner of the add-on access token used; "" for a post
	// with a room token. For a webhook reply, the webhook body's
	// oauth_client_id.
	OAuthID string
	// RoomToken is the room token (AddRoomToken) that posted it; "" for an
	// add-on token and for a webhook reply.
	RoomToken string
	// Via is ViaAPI or ViaResponse.
	Via  string
	Body addon.Notification
	Raw  json.RawMessage // the request (or reply) body as sent (card, attach_to, ...)
	At   time.Time
}

// GlanceUpdate is a glance update the fake accepted.
type GlanceUpdate struct {
	RoomID  int64
	OAuthID string
	Glances []hipchat.Glance
	Raw     json.RawMessage
	At      time.Time
}

// Request is one request the fake answered, in order of completion.
// Connections BlockAPI refuses carry no request and are not logged.
type Request struct {
	Method string
	Path   string
	At     time.Time
	Status int // 0: no answer, the connection was dropped (see Drop)
	// AuthTokenInQuery: the URL had an auth_token query parameter. The fake
	// accepts a token there as HipChat does, but PROTOCOL.md section 7 says
	// to send it in the header (a query string ends up in logs): tests look
	// here to hold the add-on to that.
	AuthTokenInQuery bool
}

// Fault is run first on every request; returning true means it answered
// and the fake does nothing more (the request is still logged).
type Fault func(w http.ResponseWriter, r *http.Request) bool

// CapabilitiesDoc is HipChat's capabilities document (PROTOCOL.md section
// 2). Empty fields are left out of the JSON, so a test removes a field by
// zeroing it.
type CapabilitiesDoc struct {
	Capabilities DocCapabilities `json:"capabilities"`
	Key          string          `json:"key,omitempty"`
	Name         string          `json:"name,omitempty"`
	Description  string          `json:"description,omitempty"`
	Links        DocLinks        `json:"links"`
	Vendor       *DocVendor      `json:"vendor,omitempty"`
}

// DocCapabilities is the document's "capabilities" object.
type DocCapabilities struct {
	HipchatAPIProvider *DocAPIProvider    `json:"hipchatApiProvider,omitempty"`
	OAuth2Provider     *DocOAuth2Provider `json:"oauth2Provider,omitempty"`
}

// DocAPIProvider is capabilities.hipchatApiProvider.
type DocAPIProvider struct {
	AvailableScopes map[string]DocScope `json:"availableScopes,omitempty"`
	URL             string              `json:"url,omitempty"`
}

// DocScope is one entry of availableScopes.
type DocScope struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
}

// DocOAuth2Provider is capabilities.oauth2Provider.
type DocOAuth2Provider struct {
	AuthorizationURL string `json:"authorizationUrl,omitempty"`
	TokenURL         string `json:"tokenUrl,omitempty"`
}

// DocLinks is the document's "links".
type DocLinks struct {
	API      string `json:"api,omitempty"`
	Homepage string `json:"homepage,omitempty"`
	Self     string `json:"self,omitempty"`
}

// DocVendor is the document's "vendor".
type DocVendor struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// grant is an issued access token.
type grant struct {
	oauthID   string
	scopes    []string
	expiresAt time.Time
}

// Server is a running fake HipChat Server. Its methods are safe for
// concurrent use.
type Server struct {
	t       testing.TB
	now     func() time.Time
	groupID int64
	scopes  []string
	url     string
	certs   certs
	srv     *http.Server
	mux     *http.ServeMux
	addr    string         // the listener's address, to listen again after BlockAPI
	serving sync.WaitGroup // the goroutines running Serve

	closeOnce sync.Once
	closed    chan struct{}

	conns    atomic.Int64 // connections open on the listener
	handling atomic.Int64 // requests being handled
	blocked  atomic.Bool  // BlockAPI(true) is in force

	lnMu    sync.Mutex // guards ln, open and stopped (BlockAPI against Close)
	ln      net.Listener
	open    map[net.Conn]struct{} // connections the server has not closed
	stopped bool                  // Close has begun: listen no more

	mu            sync.Mutex
	expiresIn     int
	clients       map[string]string // oauthID -> secret
	uninstalled   map[string]bool   // clients removed: their installable still answers
	tokenRequests map[string]int
	tokens        map[string]grant // access token -> grant
	editCaps      func(*CapabilitiesDoc)
	fault         Fault
	limits        Limits
	roomWindows   map[string][]time.Time // notification times per room (roomRef.key), within limits.RoomPer
	tokenWindows  map[string][]time.Time // API call times per access or room token, within its limit's Per
	rooms         map[int64]string       // room id -> name, from AddRoom
	roomTokens    map[string]*roomToken  // room token -> its room
	webhookClient *http.Client
	notifications []Notification
	dropped       []Notification // webhook replies over the flood control
	glances       []GlanceUpdate
	requests      []Request
	changed       chan struct{} // closed and replaced when something is recorded
}

// New starts a fake on opts.Addr and stops it when the test ends. It fails
// the test if it cannot start.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var (
		ln   net.Listener
		host string
		ip   = net.IPv4(127, 0, 0, 1)
	)
	if opts.NoListen {
		host = cmp.Or(opts.Addr, "hipchattest.invalid")
	} else {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			t.Fatalf("hipchattest: listen on %s: %v", addr, err)
		}
		tcp := ln.Addr().(*net.TCPAddr)
		if !tcp.IP.IsUnspecified() {
			ip = tcp.IP
		}
		host = net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
	}
	cs, err := newCerts(ip)
	if err != nil {
		if ln != nil {
			_ = ln.Close()
		}
		t.Fatalf("hipchattest: %v", err)
	}

	s := &Server{
		t:             t,
		now:           opts.Now,
		groupID:       opts.GroupID,
		scopes:        slices.Clone(opts.Scopes),
		url:           "https://" + host,
		certs:         cs,
		mux:           http.NewServeMux(),
		closed:        make(chan struct{}),
		open:          map[net.Conn]struct{}{},
		expiresIn:     opts.TokenExpiresIn,
		clients:       map[string]string{},
		tokenRequests: map[string]int{},
		tokens:        map[string]grant{},
		limits:        opts.Limits,
		roomWindows:   map[string][]time.Time{},
		tokenWindows:  map[string][]time.Time{},
		rooms:         map[int64]string{},
		roomTokens:    map[string]*roomToken{},
		webhookClient: opts.WebhookClient,
		changed:       make(chan struct{}),
	}
	if s.webhookClient == nil {
		s.webhookClient = defaultWebhookClient()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.groupID == 0 {
		s.groupID = 1
	}
	if len(s.scopes) == 0 {
		s.scopes = AllScopes()
	}
	if s.expiresIn <= 0 {
		s.expiresIn = 3599
	}
	if ln != nil {
		s.addr = ln.Addr().String()
	}
	s.routes()
	t.Cleanup(s.Close)
	if ln == nil {
		return s
	}
	s.srv = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cs.leaf}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		// Handshake errors from clients that do not trust the CA are
		// expected in tests; t.Logf could run after the test ended.
		ErrorLog:  log.New(io.Discard, "", 0),
		ConnState: s.connState,
	}
	s.lnMu.Lock()
	s.serveLocked(ln)
	s.lnMu.Unlock()
	return s
}

// serveLocked serves ln until it is closed; s.lnMu is held.
func (s *Server) serveLocked(ln net.Listener) {
	s.ln = ln
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		_ = s.srv.ServeTLS(ln, "", "")
	}()
}

// connState counts and tracks the connections the server holds, and closes
// at once one that was accepted just before BlockAPI closed the listener.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.conns.Add(1)
		s.lnMu.Lock()
		s.open[c] = struct{}{}
		s.lnMu.Unlock()
		if s.blocked.Load() {
			_ = c.Close()
		}
	case http.StateClosed, http.StateHijacked:
		s.conns.Add(-1)
		s.lnMu.Lock()
		delete(s.open, c)
		s.lnMu.Unlock()
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET "+PathCapabilities, s.handleCapabilities)
	s.mux.HandleFunc("POST "+PathToken, s.handleToken)
	s.mux.HandleFunc("POST "+PathRoom+"{id}/notification", s.handleNotification)
	s.mux.HandleFunc("GET "+PathRoom+"{id}", s.handleRoom)
	s.mux.HandleFunc("POST "+PathGlance+"{room_id}", s.handleGlance)
	s.mux.HandleFunc("GET "+PathInstallable+"{oauthId}", s.handleInstallable)
	// The same paths with any other method: 405 (a method pattern is more
	// specific, so it wins for its method).
	for _, p := range []string{PathCapabilities, PathToken, PathRoom + "{id}/notification", PathRoom + "{id}",
		PathGlance + "{room_id}", PathInstallable + "{oauthId}"} {
		s.mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			writeAPIError(w, http.StatusMethodNotAllowed, "Method not allowed")
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusNotFound, "No such resource")
	})
}

// URL is the fake's base URL, https://ip:port (no trailing slash); with
// Options.NoListen, https://host from Options.Addr.
func (s *Server) URL() string { return s.url }

// CapabilitiesURL is URL()+"/v2/capabilities", the capabilitiesUrl of
// InstallPayload.
func (s *Server) CapabilitiesURL() string { return s.url + PathCapabilities }

// CAPEM is the PEM of the fake's CA certificate, for a ca_file.
func (s *Server) CAPEM() []byte { return slices.Clone(s.certs.caPEM) }

// CertPool holds the fake's CA certificate.
func (s *Server) CertPool() *x509.CertPool { return s.certs.pool.Clone() }

// Client returns an HTTP client that trusts the fake's CA (and nothing
// else) and gives up after 10 s. With Options.NoListen it uses Transport.
func (s *Server) Client() *http.Client {
	if s.srv == nil {
		return &http.Client{Timeout: 10 * time.Second, Transport: s.Transport()}
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: s.CertPool(), MinVersion: tls.VersionTLS12},
			ForceAttemptHTTP2: true,
		},
	}
}

// Transport returns an http.RoundTripper that hands each request straight
// to the fake's handler in the calling goroutine, whatever its URL's host:
// no connection, no TLS. A request Drop answers fails with an error, as a
// dropped connection does.
func (s *Server) Transport() http.RoundTripper { return transport{s} }

type transport struct{ s *Server }

// errDropped is what Transport returns for a request Drop answered.
var errDropped = errors.New("hipchattest: connection dropped without an answer")

func (t transport) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	if t.s.blocked.Load() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, errRefused
	}
	// The server's view of the request: a clone with the fields a server
	// sets (the client's is left as it is, as RoundTrip requires).
	sr := req.Clone(req.Context())
	sr.RequestURI = req.URL.RequestURI()
	sr.RemoteAddr = "192.0.2.1:1234"
	sr.Host = cmp.Or(req.Host, req.URL.Host)
	if req.Body == nil {
		sr.Body = http.NoBody
	}
	defer func() {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				panic(p)
			}
			resp, err = nil, errDropped
		}
	}()
	rec := httptest.NewRecorder()
	t.s.ServeHTTP(rec, sr)
	resp = rec.Result()
	resp.Request = req
	return resp, nil
}

// WaitIdle waits up to timeout until no connection to the fake is open and
// no request is being handled, and reports whether that happened: after a
// client process is killed, what it sent before it died has then been
// recorded, or dropped with its connection.
func (s *Server) WaitIdle(timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(5 * time.Millisecond) {
		if s.conns.Load() == 0 && s.handling.Load() == 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// Close stops the fake and wakes anyone waiting on it. It runs by itself
// when the test ends; calling it more than once is fine.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.lnMu.Lock()
		s.stopped = true
		s.lnMu.Unlock()
		if s.srv != nil {
			_ = s.srv.Close()
		}
		s.serving.Wait()
	})
}

// BlockAPI(true) makes the fake refuse every connection, as a firewall
// between the add-on and HipChat that rejects them would (PROTOCOL.md
// section 10: the add-on's outbound path blocked): it closes its listener,
// so that a connect fails with ECONNREFUSED, and closes every connection
// open to it (HTTP/1 and HTTP/2 alike, pooled ones included). Every path
// is covered: capabilities, token and installable as much as the API. No
// request reaches the fake, so none is logged (Requests) or recorded; a
// request being handled when BlockAPI(true) runs completes (it may be
// recorded) but its answer is lost, and one the server had already read
// is dropped as by Drop (logged with Status 0). With Options.NoListen,
// Transport fails every request with an error that wraps
// syscall.ECONNREFUSED instead.
//
// BlockAPI(false) listens again on the same address (URL is unchanged);
// it fails the test if the port was taken in between. What tests call
// directly (the methods, PostWebhook toward the add-on) is not affected.
// Compare Drop, a HipChat that accepts the connection and then goes away
// mid-request.
func (s *Server) BlockAPI(blocked bool) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.blocked.Load() == blocked {
		return
	}
	if s.srv == nil { // NoListen: Transport looks at the flag
		s.blocked.Store(blocked)
		return
	}
	if blocked {
		s.blocked.Store(true)
		_ = s.ln.Close()
		s.ln = nil
		for c := range s.open {
			_ = c.Close() // connState forgets it when the server sees it closed
		}
		return
	}
	if s.stopped {
		return
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Errorf("hipchattest: BlockAPI(false): listen again on %s: %v", s.addr, err)
		return
	}
	s.blocked.Store(false)
	s.serveLocked(ln)
}

// errRefused is what Transport returns while BlockAPI is in force.
var errRefused = &net.OpError{Op: "dial", Net: "tcp",
	Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}

// AddClient registers (or replaces) the OAuth client oauthID with secret,
// as HipChat does when the add-on is installed.
func (s *Server) AddClient(oauthID, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[oauthID] = secret
}

// NewClient registers an OAuth client with a fresh random id and secret.
func (s *Server) NewClient() (oauthID, secret string) {
	b := randomHex(16)
	oauthID = b[0:8] + "-" + b[8:12] + "-" + b[12:16] + "-" + b[16:20] + "-" + b[20:32]
	secret = randomHex(20)
	s.AddClient(oauthID, secret)
	return oauthID, secret
}

// RemoveClient forgets oauthID and its tokens, as HipChat does on
// uninstall; its installable URL keeps answering, since HipChat redirects
// the admin to the add-on's uninstalledUrl after removing the client.
func (s *Server) RemoveClient(oauthID string) {
	s.mu.Lock()
	if _, ok := s.clients[oauthID]; ok {
		if s.uninstalled == nil {
			s.uninstalled = map[string]bool{}
		}
		s.uninstalled[oauthID] = true
	}
	delete(s.clients, oauthID)
	s.mu.Unlock()
	s.RevokeTokens(oauthID)
}

// RevokeTokens makes every token issued so far to oauthID fail with 401 on
// API calls. Tokens issued later work.
func (s *Server) RevokeTokens(oauthID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for tok, g := range s.tokens {
		if g.oauthID == oauthID {
			delete(s.tokens, tok)
		}
	}
}

// SetTokenExpiresIn sets the expires_in (seconds) of tokens issued from now
// on; n <= 0 means 3599.
func (s *Server) SetTokenExpiresIn(n int) {
	if n <= 0 {
		n = 3599
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiresIn = n
}

// TokenRequests counts the POSTs to the token endpoint that named oauthID
// in their basic auth, whether granted or not.
func (s *Server) TokenRequests(oauthID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenRequests[oauthID]
}

// IssuedTokens returns every access token issued to oauthID so far, for
// tests that look for them where they must not be (logs, files).
func (s *Server) IssuedTokens(oauthID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for tok, g := range s.tokens {
		if g.oauthID == oauthID {
			out = append(out, tok)
		}
	}
	return out
}

// SetCapabilities makes every later capabilities request answer the
// default document as edited by edit (e.g. to poison tokenUrl or
// links.self); nil restores the default.
func (s *Server) SetCapabilities(edit func(*CapabilitiesDoc)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.editCaps = edit
}

// SetLimits makes the fake enforce l from now on (see Limits); the zero
// value stops enforcing. Calls counted before stay counted.
func (s *Server) SetLimits(l Limits) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limits = l
}

// SetFault installs f to run first on every request; nil removes it.
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Notifications returns the notifications accepted so far, in order.
func (s *Server) Notifications() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.notifications)
}

// GlanceUpdates returns the glance updates accepted so far, in order.
func (s *Server) GlanceUpdates() []GlanceUpdate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.glances)
}

// Requests returns the log of answered requests, in order of completion.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// WaitNotifications waits until at least n notifications were accepted and
// returns all of them; it fails when ctx ends or the fake is closed first.
func (s *Server) WaitNotifications(ctx context.Context, n int) ([]Notification, error) {
	return wait(ctx, s, n, func() []Notification { return s.notifications })
}

// WaitGlanceUpdates is WaitNotifications for glance updates.
func (s *Server) WaitGlanceUpdates(ctx context.Context, n int) ([]GlanceUpdate, error) {
	return wait(ctx, s, n, func() []GlanceUpdate { return s.glances })
}

// wait blocks until list (read under s.mu) has n entries: every record
// closes s.changed, waking the waiters to look again.
func wait[T any](ctx context.Context, s *Server, n int, list func() []T) ([]T, error) {
	for {
		s.mu.Lock()
		got := list()
		if len(got) >= n {
			got = slices.Clone(got)
			s.mu.Unlock()
			return got, nil
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case <-changed:
		case <-s.closed:
			return nil, fmt.Errorf("hipchattest: closed with %d of %d recorded", len(got), n)
		case <-ctx.Done():
			return nil, fmt.Errorf("hipchattest: %d of %d recorded: %w", len(got), n, ctx.Err())
		}
	}
}

// wakeLocked wakes the waiters after a record; s.mu is held.
func (s *Server) wakeLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// ServeHTTP runs the fault, then the fake's routes, and logs the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handling.Add(1)
	defer s.handling.Add(-1)
	rec := &statusRecorder{ResponseWriter: w}
	r.Body = http.MaxBytesReader(rec, r.Body, 1<<20)
	defer func() { // also when Drop panics with http.ErrAbortHandler
		status := rec.status
		if status == 0 && !rec.dropped {
			status = http.StatusOK
		}
		s.mu.Lock()
		s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, At: s.now(), Status: status,
			AuthTokenInQuery: r.URL.Query().Has("auth_token")})
		s.mu.Unlock()
	}()
	if s.srv != nil && s.blocked.Load() {
		// A request read off a connection BlockAPI closed (it was
		// buffered): answer nothing, as Drop.
		Drop()(rec, r)
		return
	}
	s.mu.Lock()
	fault := s.fault
	s.mu.Unlock()
	if fault != nil && fault(rec, r) {
		return
	}
	s.mux.ServeHTTP(rec, r)
}

type statusRecorder struct {
	http.ResponseWriter
	status  int
	dropped bool // Drop answered: nothing was sent
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// defaultCapabilities is the document of PROTOCOL.md section 2 for this
// fake.
func (s *Server) defaultCapabilities() CapabilitiesDoc {
	scopes := map[string]DocScope{}
	for _, sc := range s.scopes {
		scopes[sc] = DocScope{ID: sc, Name: sc, Description: "Scope " + sc}
	}
	return CapabilitiesDoc{
		Capabilities: DocCapabilities{
			HipchatAPIProvider: &DocAPIProvider{AvailableScopes: scopes, URL: s.url + "/v2/"},
			OAuth2Provider: &DocOAuth2Provider{
				AuthorizationURL: s.url + "/users/authorize",
				TokenURL:         s.url + PathToken,
			},
		},
		Key:         "hipchat",
		Name:        "HipChat",
		Description: "Group chat and IM built for teams",
		Links:       DocLinks{API: s.url + "/v2", Homepage: s.url, Self: s.url + PathCapabilities},
		Vendor:      &DocVendor{Name: "Atlassian", URL: "http://atlassian.com"},
	}
}

func (s *Server) handleCapabilities(w http.ResponseWriter, r *http.Request) {
	doc := s.defaultCapabilities()
	s.mu.Lock()
	edit := s.editCaps
	s.mu.Unlock()
	if edit != nil {
		edit(&doc)
	}
	httperr.WriteJSON(w, http.StatusOK, doc)
}

// handleToken is the client credentials grant of PROTOCOL.md section 4.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	id, secret, hasAuth := r.BasicAuth()
	if hasAuth {
		s.mu.Lock()
		s.tokenRequests[id]++
		s.mu.Unlock()
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
		return
	}
	s.mu.Lock()
	want, known := s.clients[id]
	s.mu.Unlock()
	if !hasAuth || !known || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="hipchat"`)
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "The form cannot be parsed")
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "Only client_credentials is supported")
		return
	}
	scopes := strings.Fields(r.PostForm.Get("scope"))
	if len(scopes) == 0 {
		scopes = slices.Clone(s.scopes)
	}
	for _, sc := range scopes {
		if !slices.Contains(s.scopes, sc) {
			writeOAuthError(w, http.StatusBadRequest, "invalid_scope", "Scope not allowed: "+sc)
			return
		}
	}
	tok := randomHex(20)
	s.mu.Lock()
	expiresIn := s.expiresIn
	s.tokens[tok] = grant{oauthID: id, scopes: scopes, expiresAt: s.now().Add(time.Duration(expiresIn) * time.Second)}
	s.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	httperr.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"expires_in":   expiresIn,
		"group_id":     s.groupID,
		"group_name":   "hipchattest",
		"scope":        strings.Join(scopes, " "),
		"token_type":   "bearer",
	})
}

// caller is who made an API call: an add-on, with an access token, or a
// "Build your own" integration, with a room token.
type caller struct {
	token   string
	oauthID string     // owner of an add-on token; "" for a room token
	room    *roomToken // nil for an add-on token
	ref     roomRef    // the room the path names (room endpoints only)
	refOK   bool       // ref is a room that may exist (not id 0 or negative)
}

// apiToken returns the token of an API call: the Authorization: Bearer
// header's, or else the auth_token query parameter's. HipChat takes both,
// for every kind of token (PROTOCOL.md section 7); the header wins when both
// are there.
func apiToken(r *http.Request) string {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if tok = strings.TrimSpace(tok); strings.EqualFold(scheme, "Bearer") && tok != "" {
		return tok
	}
	return r.URL.Query().Get("auth_token")
}

// authorize checks the token of an API call and returns who made it; it
// answers the refusal itself:
//   - 401 when the token is missing, unknown, expired or revoked, and when
//     an add-on token lacks every one of scopes (none given: any token);
//   - 403 when a room token is used for another room than its own
//     (room is the path's {id_or_name}), on an endpoint that is not about
//     a room (room ""), or lacks every one of scopes. HipChat answers a
//     token without the scope with 403 "This action requires one of the
//     following scopes: [...]" (public reports of it:
//     RidersDiscountCom/HypChat#34, invernizzi/hiplogging#14); the 401 for
//     add-on tokens is this fake's older choice, kept.
//
// An add-on token may be sent in the query as well: the fake logs it in
// Request.AuthTokenInQuery rather than refusing it.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, room string, scopes ...string) (caller, bool) {
	tok := apiToken(r)
	if tok == "" {
		writeAPIError(w, http.StatusUnauthorized, "Authorization: Bearer <token> or auth_token=<token> required")
		return caller{}, false
	}
	c := caller{token: tok}
	if room != "" {
		c.ref, c.refOK = s.resolveRoom(room)
	}
	hasScope := func(have []string) bool {
		return len(scopes) == 0 || slices.ContainsFunc(scopes, func(sc string) bool { return slices.Contains(have, sc) })
	}
	s.mu.Lock()
	g, isGrant := s.tokens[tok]
	rt := s.roomTokens[tok]
	s.mu.Unlock()
	switch {
	case isGrant && s.now().Before(g.expiresAt):
		if !hasScope(g.scopes) {
			writeAPIError(w, http.StatusUnauthorized, "This endpoint requires the scope "+strings.Join(scopes, " or "))
			return caller{}, false
		}
		c.oauthID = g.oauthID
		return c, true
	case rt != nil && !rt.revoked():
		switch {
		case room == "":
			writeAPIError(w, http.StatusForbidden, "A room token can only be used on its own room")
			return caller{}, false
		case !c.refOK || c.ref.id != rt.roomID:
			writeAPIError(w, http.StatusForbidden, "This token is not valid for the room "+room)
			return caller{}, false
		case !hasScope(rt.scopes):
			writeAPIError(w, http.StatusForbidden, "This action requires one of the following scopes: ["+strings.Join(scopes, ", ")+"]")
			return caller{}, false
		}
		c.room = rt
		return c, true
	}
	writeAPIError(w, http.StatusUnauthorized, "Invalid OAuth session")
	return caller{}, false
}

// limitWindow is one sliding-window limit (Limits) that applies to a call.
type limitWindow struct {
	prefix  string // of the headers: X-Ratelimit or X-FloodControl
	n       int    // 0: not enforced
	per     time.Duration
	windows map[string][]time.Time
	key     string
}

// windowsLocked lists the limits a call applies to: the token's of c (nil:
// no token, as for a webhook reply), and, for a notification (floodKey not
// ""), the room's. s.mu is held.
func (s *Server) windowsLocked(c *caller, floodKey string) []limitWindow {
	l := s.limits
	var ws []limitWindow
	switch {
	case c == nil:
	case c.room != nil:
		ws = append(ws, limitWindow{"X-Ratelimit", l.UserTokenRequests, l.UserTokenPer, s.tokenWindows, c.token})
	default:
		ws = append(ws, limitWindow{"X-Ratelimit", l.TokenRequests, l.TokenPer, s.tokenWindows, c.token})
	}
	if floodKey != "" {
		ws = append(ws, limitWindow{"X-FloodControl", l.RoomNotifications, l.RoomPer, s.roomWindows, floodKey})
	}
	return ws
}

// takeLocked counts a call made at now against ws. If one of them is used
// up it counts nothing and returns the Fault answering its 429; otherwise
// it counts the call, sets the headers of ws on h (if not nil) and returns
// nil. s.mu is held.
func takeLocked(ws []limitWindow, now time.Time, h http.Header) Fault {
	for _, c := range ws {
		if c.n <= 0 {
			continue
		}
		win := slide(c.windows[c.key], now, c.per)
		c.windows[c.key] = win
		if len(win) >= c.n {
			// The call may go once enough calls have left the window.
			reset := ceilSecond(win[len(win)-c.n].Add(c.per))
			return limited(c.prefix, strconv.Itoa(c.n), reset.Sub(now), reset)
		}
	}
	for _, c := range ws {
		if c.n <= 0 {
			continue
		}
		win := append(c.windows[c.key], now)
		c.windows[c.key] = win
		if h != nil {
			h.Set(c.prefix+"-Limit", strconv.Itoa(c.n))
			h.Set(c.prefix+"-Remaining", strconv.Itoa(c.n-len(win)))
			h.Set(c.prefix+"-Reset", strconv.FormatInt(ceilSecond(win[0].Add(c.per)).Unix(), 10))
		}
	}
	return nil
}

// overLimit counts an authorized API call by c against the limits
// (Limits): its token's, and for a notification (floodKey != "") the
// room's. If one is used up it answers 429 itself and counts nothing;
// otherwise it sets the headers of the limits that apply and counts the
// call.
func (s *Server) overLimit(w http.ResponseWriter, r *http.Request, c caller, floodKey string) bool {
	s.mu.Lock()
	refuse := takeLocked(s.windowsLocked(&c, floodKey), s.now(), w.Header())
	s.mu.Unlock()
	if refuse != nil {
		refuse(w, r)
		return true
	}
	return false
}

// slide returns the times of win (oldest first) still within per of now:
// a call made at t counts until t+per.
func slide(win []time.Time, now time.Time, per time.Duration) []time.Time {
	i := 0
	for i < len(win) && !win[i].After(now.Add(-per)) {
		i++
	}
	return win[i:]
}

// ceilSecond rounds t up to a whole second, the resolution of the Reset
// headers, so that a client waiting until Reset waits long enough.
func ceilSecond(t time.Time) time.Time {
	if f := t.Truncate(time.Second); !f.Equal(t) {
		return f.Add(time.Second)
	}
	return t
}

func isJSON(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/json"
}

// handleNotification is "send room notification" (PROTOCOL.md section 7),
// for add-on tokens and room tokens.
func (s *Server) handleNotification(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, r.PathValue("id"), "send_notification")
	if !ok || s.overLimit(w, r, c, c.ref.key()) {
		return
	}
	if !c.refOK {
		writeAPIError(w, http.StatusNotFound, "Room not found")
		return
	}
	var raw json.RawMessage
	if _, ok := readJSON(w, r, &raw); !ok {
		return
	}
	n, err := parseNotification(raw)
	if err != nil {
		writeAPIError(w, http.StatusBadRequest, err.Error())
		return
	}
	rec := Notification{RoomID: c.ref.id, Room: c.ref.path, OAuthID: c.oauthID, Via: ViaAPI, Body: n, Raw: raw}
	if c.room != nil {
		rec.RoomToken = c.token
	}
	s.mu.Lock()
	rec.At = s.now()
	s.notifications = append(s.notifications, rec)
	s.wakeLocked()
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// errNotJSON is parseNotification's error for a body that is not JSON, or
// not a JSON object with the fields' types.
var errNotJSON = errors.New("Request body is not valid JSON")

// parseNotification reads a send-notification body (PROTOCOL.md section 7)
// as HipChat's API checks it: message 1 to 10000 characters, message_format
// html or text, color one of HipChat's, notify a boolean, from a string;
// other fields (card, attach_to, ...) pass. The error is the message of
// HipChat's 400.
func parseNotification(raw []byte) (addon.Notification, error) {
	var body struct {
		Message       *string `json:"message"`
		MessageFormat *string `json:"message_format"`
		Color         *string `json:"color"`
		Notify        *bool   `json:"notify"`
		From          *string `json:"from"`
	}
	var n addon.Notification
	if err := json.Unmarshal(raw, &body); err != nil {
		return n, errNotJSON
	}
	if body.Message == nil {
		return n, errors.New("message is required")
	}
	n.Message = *body.Message
	if c := utf8.RuneCountInString(n.Message); c < 1 || c > 10000 {
		return n, errors.New("message must be between 1 and 10000 characters")
	}
	if body.MessageFormat != nil {
		n.MessageFormat = *body.MessageFormat
		if n.MessageFormat != "html" && n.MessageFormat != "text" {
			return n, errors.New("message_format must be html or text")
		}
	}
	if body.Color != nil {
		n.Color = *body.Color
		if !slices.Contains([]string{"yellow", "green", "red", "purple", "gray", "random"}, n.Color) {
			return n, errors.New("color must be one of yellow, green, red, purple, gray, random")
		}
	}
	if body.Notify != nil {
		n.Notify = *body.Notify
	}
	if body.From != nil {
		n.From = *body.From
	}
	return n, nil
}

// handleGlance is "room addon ui update" (PROTOCOL.md section 7). The
// scope HipChat required for it is not in what we have: any valid add-on
// token is accepted; a room token is refused with 403.
func (s *Server) handleGlance(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, "")
	if !ok || s.overLimit(w, r, c, "") {
		return
	}
	owner := c.oauthID
	roomID, err := strconv.ParseInt(r.PathValue("room_id"), 10, 64)
	if err != nil || roomID <= 0 {
		writeAPIError(w, http.StatusNotFound, "Room not found")
		return
	}
	var body struct {
		Glance []struct {
			Key     string          `json:"key"`
			Content json.RawMessage `json:"content"`
		} `json:"glance"`
	}
	raw, ok := readJSON(w, r, &body)
	if !ok {
		return
	}
	if len(body.Glance) == 0 {
		writeAPIError(w, http.StatusBadRequest, "glance must be a non-empty list")
		return
	}
	var glances []hipchat.Glance
	for _, g := range body.Glance {
		var content hipchat.GlanceContent
		if g.Key == "" || len(g.Content) == 0 || json.Unmarshal(g.Content, &content) != nil {
			writeAPIError(w, http.StatusBadRequest, "every glance needs a key and a content object")
			return
		}
		glances = append(glances, hipchat.Glance{Key: g.Key, Content: content})
	}
	s.mu.Lock()
	s.glances = append(s.glances, GlanceUpdate{RoomID: roomID, OAuthID: owner, Glances: glances, Raw: raw, At: s.now()})
	s.wakeLocked()
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// handleInstallable serves what the add-on reads from installable_url in
// the browser uninstall flow (PROTOCOL.md section 8).
func (s *Server) handleInstallable(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("oauthId")
	s.mu.Lock()
	_, ok := s.clients[id]
	ok = ok || s.uninstalled[id] // HipChat sends the uninstalled redirect after removing the client
	s.mu.Unlock()
	if !ok {
		writeAPIError(w, http.StatusNotFound, "Installable not found")
		return
	}
	httperr.WriteJSON(w, http.StatusOK, map[string]any{
		"oauthId":         id,
		"capabilitiesUrl": s.CapabilitiesURL(),
		"groupId":         s.groupID,
	})
}

// InstallableURL is the installable_url HipChat would pass for oauthID.
func (s *Server) InstallableURL(oauthID string) string {
	return s.url + PathInstallable + url.PathEscape(oauthID)
}

// InstallPayload is the body HipChat POSTs to the add-on's callbackUrl
// (PROTOCOL.md section 3), with this fake's capabilitiesUrl and group;
// roomID 0 makes a global install (roomId left out). It does not register
// the client: call AddClient for credentials that should work.
func (s *Server) InstallPayload(oauthID, secret string, roomID int64) []byte {
	p := struct {
		OAuthID         string `json:"oauthId"`
		OAuthSecret     string `json:"oauthSecret"`
		CapabilitiesURL string `json:"capabilitiesUrl"`
		RoomID          int64  `json:"roomId,omitempty"`
		GroupID         int64  `json:"groupId"`
	}{oauthID, secret, s.CapabilitiesURL(), roomID, s.groupID}
	b, _ := json.Marshal(p) // plain strings and numbers: cannot fail
	return b
}

// JWT signs a token as HipChat does for its calls to the add-on
// (PROTOCOL.md section 5): iss oauthID, sub a fixed user id, iat now, exp
// now+ttl, a random jti, context {room_id, user_tz}. roomID 0 leaves the
// room out. It reports a failure with t.Errorf and returns "".
func (s *Server) JWT(oauthID, secret string, roomID int64, ttl time.Duration) string {
	now := s.now()
	tok, err := hipchat.SignJWT(oauthID, secret, hipchat.Claims{
		Subject:   strconv.Itoa(userID),
		RoomID:    roomID,
		UserTZ:    "Europe/Berlin",
		IssuedAt:  now,
		ExpiresAt: now.Add(ttl),
		ID:        randomHex(8),
	})
	if err != nil {
		s.t.Errorf("hipchattest: %v", err)
		return ""
	}
	return tok
}

// Signer returns a function that signs a new JWT at each call, as HipChat
// does for each request it makes (a new jti each time): what a webhook
// needs, since a JWT id seen before is refused with another body.
func (s *Server) Signer(oauthID, secret string, roomID int64, ttl time.Duration) func() string {
	return func() string { return s.JWT(oauthID, secret, roomID, ttl) }
}

// userID is the HipChat user the fake's webhooks and JWTs come from.
const userID = 1661743

// RoomMessage is a room_message webhook body (PROTOCOL.md section 6) for a
// message text sent in roomID, identified by messageID. Its links point at
// hipchat.example.com: nothing should follow them. Every message has the
// same date, so that the body of a message sent twice is the same twice, as
// when HipChat delivers a message again.
func RoomMessage(oauthID string, roomID int64, messageID, text string) []byte {
	type links struct {
		Self string `json:"self"`
	}
	type user struct {
		ID          int64  `json:"id"`
		MentionName string `json:"mention_name"`
		Name        string `json:"name"`
		Links       links  `json:"links"`
	}
	type message struct {
		Date     string   `json:"date"`
		From     user     `json:"from"`
		ID       string   `json:"id"`
		Mentions []string `json:"mentions"`
		Message  string   `json:"message"`
		Type     string   `json:"type"`
	}
	type room struct {
		ID    int64  `json:"id"`
		Name  string `json:"name"`
		Links links  `json:"links"`
	}
	body := struct {
		Event string `json:"event"`
		Item  struct {
			Message message `json:"message"`
			Room    room    `json:"room"`
		} `json:"item"`
		OAuthClientID string `json:"oauth_client_id"`
		WebhookID     int64  `json:"webhook_id"`
	}{Event: "room_message", OAuthClientID: oauthID, WebhookID: 578829}
	body.Item.Message = message{
		Date: "2026-11-25T17:00:00.000000+00:00",
		From: user{ID: userID, MentionName: "Blinky", Name: "Blinky the Three Eyed Fish",
			Links: links{Self: "https://hipchat.example.com/v2/user/" + strconv.Itoa(userID)}},
		ID:       messageID,
		Mentions: []string{},
		Message:  text,
		Type:     "message",
	}
	body.Item.Room = room{ID: roomID, Name: "Room " + strconv.FormatInt(roomID, 10),
		Links: links{Self: "https://hipchat.example.com/v2/room/" + strconv.FormatInt(roomID, 10)}}
	b, _ := json.Marshal(body) // plain strings and numbers: cannot fail
	return b
}

// RateLimited is a Fault answering 429 as HipChat's rate limit does
// (PROTOCOL.md section 9): X-Ratelimit-Limit/Remaining/Reset (Reset left
// out when zero) and Retry-After in seconds (left out when 0).
func RateLimited(retryAfter time.Duration, reset time.Time) Fault {
	return limited("X-Ratelimit", "500", retryAfter, reset)
}

// FloodControlled is RateLimited with the X-FloodControl-* headers of the
// per-room notification limit.
func FloodControlled(retryAfter time.Duration, reset time.Time) Fault {
	return limited("X-FloodControl", "30", retryAfter, reset)
}

func limited(prefix, limit string, retryAfter time.Duration, reset time.Time) Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		h := w.Header()
		h.Set(prefix+"-Limit", limit)
		h.Set(prefix+"-Remaining", "0")
		if !reset.IsZero() {
			h.Set(prefix+"-Reset", strconv.FormatInt(reset.Unix(), 10))
		}
		if retryAfter > 0 {
			h.Set("Retry-After", strconv.FormatInt(int64((retryAfter+time.Second-1)/time.Second), 10))
		}
		writeAPIError(w, http.StatusTooManyRequests, "You have exceeded the rate limit")
		return true
	}
}

// Drop is a Fault that answers nothing: it closes the connection (HTTP/1),
// resets the stream (HTTP/2), or makes Transport fail, as a HipChat that
// went away mid-request would. The request log records it with Status 0.
func Drop() Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if rec, ok := w.(*statusRecorder); ok {
			rec.dropped = true
		}
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
			return true
		}
		panic(http.ErrAbortHandler) // net/http drops the stream quietly
	}
}

// Unavailable is a Fault answering 503.
func Unavailable() Fault {
	return Status(http.StatusServiceUnavailable, "Service Unavailable")
}

// Status is a Fault answering code with the error body of PROTOCOL.md
// section 9 carrying message.
func Status(code int, message string) Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		writeAPIError(w, code, message)
		return true
	}
}

// OnPath limits f to requests whose path starts with prefix (e.g.
// PathRoom).
func OnPath(prefix string, f Fault) Fault {
	return func(w http.ResponseWriter, r *http.Request) bool {
		return strings.HasPrefix(r.URL.Path, prefix) && f(w, r)
	}
}

// Times limits f to the first n requests it answers. Requests go through
// f one at a time.
func Times(n int, f Fault) Fault {
	var mu sync.Mutex
	left := n
	return func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if left <= 0 {
			return false
		}
		if f(w, r) {
			left--
			return true
		}
		return false
	}
}

// writeAPIError writes the error body of PROTOCOL.md section 9.
func writeAPIError(w http.ResponseWriter, code int, message string) {
	httperr.WriteJSON(w, code, map[string]any{"error": map[string]any{
		"code": code, "message": message, "type": http.StatusText(code),
	}})
}

// writeOAuthError writes the token endpoint's error body (section 4).
func writeOAuthError(w http.ResponseWriter, code int, kind, description string) {
	httperr.WriteJSON(w, code, map[string]string{"error": kind, "error_description": description})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error
	return hex.EncodeToString(b)
}

// readJSON reads a JSON request body into v as HipChat's API does, and
// returns it raw; on failure it has answered with HipChat's error.
func readJSON(w http.ResponseWriter, r *http.Request, v any) ([]byte, bool) {
	if !isJSON(r) {
		writeAPIError(w, http.StatusBadRequest, "Content-Type must be application/json")
		return nil, false
	}
	raw, err := io.ReadAll(r.Body)
	if err != nil {
		writeAPIError(w, http.StatusRequestEntityTooLarge, "Request body too large")
		return nil, false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		writeAPIError(w, http.StatusBadRequest, "Request body is not valid JSON")
		return nil, false
	}
	return raw, true
}
