// Package integration serves HipChat Server's "Build your own" integrations
// (PROTOCOL.md section 11): a room without a Connect install reaches the
// slash commands through a webhook URL whose path carries a secret, and
// gets its replies in the webhook's response or through the room's
// notification URL, whose auth_token is a room token.
//
// Each integration is kept in the store as an installation record
// (addon.Installation.Integration set, OAuthID "integration:NAME") so that
// its jobs, dead letters, pacing and dedupe work as for a Connect install;
// the record's OAuthSecret is the webhook path's secret, encrypted at rest
// like every OAuth secret. The room token is never stored: it stays in the
// operator's file and in memory.
package integration

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
)

// oauthPrefix starts the OAuthID of every integration's record; no HipChat
// OAuth id (a UUID) has a colon.
const oauthPrefix = "integration:"

// OAuthID is the OAuthID of integration name's record.
func OAuthID(name string) string { return oauthPrefix + name }

// secretBytes is the length of a webhook path secret before encoding.
const secretBytes = 32

// RoomURL is a room notification URL with its token, as HipChat Server
// shows it for a "Build your own" integration:
// https://host/v2/room/{id_or_name}/notification?auth_token={token}.
type RoomURL struct {
	APIURL string // https://host[:port]/v2/ (with any path prefix before /v2/)
	Room   string // the room id or name, unescaped
	Token  string // the room token: a secret
}

// Host is the URL's host (without the port).
func (u RoomURL) Host() string {
	p, err := url.Parse(u.APIURL)
	if err != nil {
		return ""
	}
	return p.Hostname()
}

// String is the URL with the token redacted.
func (u RoomURL) String() string {
	return u.APIURL + "room/" + url.PathEscape(u.Room) + "/notification?auth_token=REDACTED"
}

// ParseRoomURL reads a room notification URL. Its errors never contain the
// token.
func ParseRoomURL(raw string) (RoomURL, error) {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return RoomURL{}, errors.New("not a URL")
	}
	token := u.Query().Get("auth_token")
	base, rest, ok := strings.Cut(u.EscapedPath(), "/v2/room/")
	room, isNotification := strings.CutSuffix(rest, "/notification")
	switch {
	case u.Scheme != "https" || u.Hostname() == "":
		return RoomURL{}, fmt.Errorf("must be an https URL with a host, got %s", Redact(raw))
	case !ok || !isNotification || room == "" || strings.Contains(room, "/"):
		return RoomURL{}, fmt.Errorf("must have the path /v2/room/{id_or_name}/notification, got %s", Redact(u.EscapedPath()))
	case token == "":
		return RoomURL{}, errors.New("has no auth_token: copy the whole URL HipChat shows for the integration")
	}
	name, err := url.PathUnescape(room)
	if err != nil {
		return RoomURL{}, errors.New("the room in the path is not escaped properly")
	}
	return RoomURL{APIURL: u.Scheme + "://" + u.Host + base + "/v2/", Room: name, Token: token}, nil
}

// tokenRE finds the value of an auth_token parameter.
var tokenRE = regexp.MustCompile(`(?i)(auth_token=)[^&\s"'<>]*`)

// Redact replaces every auth_token value in s with REDACTED.
func Redact(s string) string { return tokenRE.ReplaceAllString(s, "${1}REDACTED") }

// ReadRoomURL reads and parses the room URL file at path, which must give
// no permission to group or others (it holds a token: mode 0600 or 0400).
func ReadRoomURL(path string) (RoomURL, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return RoomURL{}, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return RoomURL{}, fmt.Errorf("%s is readable by group or others (mode %v): it holds the room token, chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return RoomURL{}, err
	}
	u, err := ParseRoomURL(string(b))
	if err != nil {
		return RoomURL{}, fmt.Errorf("%s: the room URL %w", path, err)
	}
	return u, nil
}

// Integration is one configured integration, its room URL read.
type Integration struct {
	Name     string
	Room     RoomURL
	Commands []string
	Reply    command.Reply // ReplyResponse or ReplyAPI
	// TokenN requests per TokenPer is the room token's budget.
	TokenN   int
	TokenPer time.Duration
}

// OAuthID is the OAuthID of the integration's record.
func (in Integration) OAuthID() string { return OAuthID(in.Name) }

// Allows reports whether the integration may run the command name.
func (in Integration) Allows(name string) bool { return slices.Contains(in.Commands, name) }

// InRoom reports whether a webhook from room (id, name) comes from the
// integration's room: the room URL names it by id (a number) or by name.
func (in Integration) InRoom(id int64, name string) bool {
	if _, err := strconv.ParseInt(in.Room.Room, 10, 64); err == nil {
		return in.Room.Room == strconv.FormatInt(id, 10)
	}
	return name != "" && strings.EqualFold(in.Room.Room, name)
}

// QueueRoom is the RoomID of the integration's jobs. It keys their queue
// (one at a time, in order) and the room's flood budget; the replies go to
// the room URL whatever it is. The room's id when the URL names it by id,
// else 1: the integration has one room, and the id of a room named by name
// is not known without asking HipChat.
func (in Integration) QueueRoom() int64 {
	if id, err := strconv.ParseInt(in.Room.Room, 10, 64); err == nil && id > 0 {
		return id
	}
	return 1
}

// IsOAuthID reports whether oauthID is the OAuthID of an integration's
// record.
func IsOAuthID(oauthID string) bool { return strings.HasPrefix(oauthID, oauthPrefix) }

// Store is what the Service needs of the store.
type Store interface {
	addon.Installations
	addon.Remover
}

// Service keeps the integrations' records and answers for them. It is safe
// for concurrent use.
type Service struct {
	store Store
	now   func() time.Time

	mu     sync.RWMutex
	byName map[string]Integration
}

// New returns a Service for list; call Sync before use.
func New(store Store, list []Integration, now func() time.Time) *Service {
	if now == nil {
		now = time.Now
	}
	s := &Service{store: store, now: now, byName: map[string]Integration{}}
	for _, in := range list {
		s.byName[in.Name] = in
	}
	return s
}

// Get returns the integration name.
func (s *Service) Get(name string) (Integration, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	in, ok := s.byName[name]
	return in, ok
}

// Sync makes the store's records match the configured integrations: a
// record (with a new secret) for each new one, the API base of the others
// updated when their room URL moved (their secret kept), and the records of
// integrations no longer configured removed with everything stored for
// them. It loads the secrets for Lookup.
func (s *Service) Sync(ctx context.Context) error {
	all, err := s.store.Installations(ctx)
	if err != nil {
		return fmt.Errorf("integration: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	stored := map[string]addon.Installation{}
	for _, inst := range all {
		if inst.Integration == "" {
			continue
		}
		if _, ok := s.byName[inst.Integration]; !ok {
			if err := s.store.DeleteInstallation(ctx, inst.OAuthID); err != nil && !addon.IsNotFound(err) {
				return fmt.Errorf("integration: remove %s: %w", inst.Integration, err)
			}
			continue
		}
		stored[inst.Integration] = inst
	}
	for name, in := range s.byName {
		inst, ok := stored[name]
		now := s.now().UTC()
		if !ok {
			secret, err := newSecret()
			if err != nil {
				return err
			}
			inst = addon.Installation{OAuthID: in.OAuthID(), OAuthSecret: secret, Integration: name, InstalledAt: now}
		}
		if !ok || inst.APIURL != in.Room.APIURL {
			inst.APIURL, inst.HipChatOrigin, inst.UpdatedAt = in.Room.APIURL, origin(in.Room.APIURL), now
			if err := s.store.PutInstallation(ctx, inst); err != nil {
				return fmt.Errorf("integration: store %s: %w", name, err)
			}
		}
	}
	return nil
}

// Lookup returns the integration whose name and webhook secret the path of
// a request carried, compared in constant time with the secret in the
// store (read each time: on PostgreSQL another node may have rotated it,
// or made it at the first start). An unknown name or a wrong secret is a
// NotFound error; a store failure is returned as it is.
func (s *Service) Lookup(ctx context.Context, name, secret string) (Integration, error) {
	in, ok := s.Get(name)
	if !ok {
		return Integration{}, addon.Errorf(addon.NotFound, "no integration %q", addon.Clip(name, 40))
	}
	want, err := Secret(ctx, s.store, name)
	if err != nil {
		return Integration{}, err
	}
	if subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		return Integration{}, addon.Errorf(addon.NotFound, "wrong secret for integration %q", name)
	}
	return in, nil
}

// Rotate gives integration name a new webhook secret: the old path stops
// working at once, on every node. It returns the new secret.
func (s *Service) Rotate(ctx context.Context, name string) (string, error) {
	return RotateIn(ctx, s.store, name, s.now)
}

// Secret returns integration name's webhook secret from store, or NotFound
// when it has none yet (the daemon makes it at its first start).
func Secret(ctx context.Context, store addon.Installations, name string) (string, error) {
	inst, err := store.Installation(ctx, OAuthID(name))
	if addon.IsNotFound(err) {
		return "", addon.Errorf(addon.NotFound, "integration %q has no webhook secret yet: start the daemon once with it configured", name)
	}
	if err != nil {
		return "", err
	}
	return inst.OAuthSecret, nil
}

// RotateIn stores a new webhook secret for integration name in store and
// returns it (for the CLI on a stopped daemon's file; a running daemon
// has Service.Rotate).
func RotateIn(ctx context.Context, store addon.Installations, name string, now func() time.Time) (string, error) {
	inst, err := store.Installation(ctx, OAuthID(name))
	if addon.IsNotFound(err) {
		return "", addon.Errorf(addon.NotFound, "integration %q has no webhook secret yet: start the daemon once with it configured", name)
	}
	if err != nil {
		return "", err
	}
	if inst.OAuthSecret, err = newSecret(); err != nil {
		return "", err
	}
	inst.UpdatedAt = now().UTC()
	if err := store.PutInstallation(ctx, inst); err != nil {
		return "", fmt.Errorf("integration: rotate %s: %w", name, err)
	}
	return inst.OAuthSecret, nil
}

// WebhookURL is the URL HipChat posts integration name's slash command to.
func WebhookURL(baseURL, name, secret string) string {
	return strings.TrimSuffix(baseURL, "/") + "/integrations/" + name + "/" + secret
}

func newSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("integration: make a secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func origin(apiURL string) string {
	u, err := url.Parse(apiURL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// Enqueuer stores a job in the outbox (addon.Outbox's Enqueue).
type Enqueuer interface {
	Enqueue(ctx context.Context, j addon.Job) (addon.Job, bool, error)
}

// Notify queues n for the room of integration in through the outbox: it
// is posted through the room URL, paced, retried and kept as a dead letter
// if HipChat refuses it for good. n must be a valid notification (see
// hipchat.ValidateNotification): checking it is the caller's.
func Notify(ctx context.Context, outbox Enqueuer, in Integration, n addon.Notification, now time.Time) (addon.Job, error) {
	j, _, err := outbox.Enqueue(ctx, addon.Job{OAuthID: in.OAuthID(), RoomID: in.QueueRoom(), Reply: &n, Received: now.UTC()})
	if err != nil {
		return addon.Job{}, fmt.Errorf("integration: notify %s: %w", in.Name, err)
	}
	return j, nil
}
