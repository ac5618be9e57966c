// Package addon holds hipconnect's domain: installations, access tokens,
// commands waiting for delivery, the notifications sent to rooms, the error
// kinds every adapter speaks, and the interfaces the adapters implement.
//
// It imports only the standard library; every other package points at it.
package addon

import (
	"context"
	"net/url"
	"time"
)

// Installation is one install of the add-on into a HipChat group or room,
// keyed by the OAuthID HipChat generated for it.
type Installation struct {
	OAuthID         string `json:"oauthId"`
	OAuthSecret     string `json:"oauthSecret"`
	CapabilitiesURL string `json:"capabilitiesUrl"`
	GroupID         int64  `json:"groupId"`
	RoomID          int64  `json:"roomId,omitempty"` // 0 for a global (group-wide) install
	APIURL          string `json:"apiUrl"`           // hipchatApiProvider.url, always ending in "/"
	TokenURL        string `json:"tokenUrl"`         // oauth2Provider.tokenUrl
	HipChatOrigin   string `json:"hipchatOrigin"`    // scheme://host[:port] of the HipChat server
	// Integration names the "Build your own" integration this record
	// stands for (package integration); "" for a Connect install. Its
	// OAuthSecret is then the secret of the integration's webhook path,
	// and it has no OAuth client, token or JWTs.
	Integration string    `json:"integration,omitempty"`
	InstalledAt time.Time `json:"installedAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Global reports whether the installation covers the whole group.
func (i Installation) Global() bool { return i.RoomID == 0 }

// CoversRoom reports whether a request about roomID may act for i:
// a room install covers its own room only, a global install every room.
func (i Installation) CoversRoom(roomID int64) bool {
	return i.Global() || i.RoomID == roomID
}

// Token is an OAuth access token HipChat issued to an installation.
type Token struct {
	AccessToken string    `json:"accessToken"`
	Scope       string    `json:"scope"`
	ExpiresAt   time.Time `json:"expiresAt"`
}

// Valid reports whether t can still be used at now, keeping margin in hand.
func (t Token) Valid(now time.Time, margin time.Duration) bool {
	return t.AccessToken != "" && now.Add(margin).Before(t.ExpiresAt)
}

// Notification is a room notification (HipChat API v2 "send room
// notification"). Message is at most 10,000 characters.
type Notification struct {
	Message       string `json:"message"`
	MessageFormat string `json:"message_format,omitempty"` // "html" or "text"
	Color         string `json:"color,omitempty"`
	Notify        bool   `json:"notify"`
	From          string `json:"from,omitempty"`
}

// Job is a slash command HipChat delivered and hipconnect acknowledged: it
// stays in the store until its reply has reached the room.
type Job struct {
	ID        uint64 `json:"id"` // assigned by the store, increasing
	OAuthID   string `json:"oauthId"`
	RoomID    int64  `json:"roomId"`
	MessageID string `json:"messageId"` // item.message.id, for duplicate detection
	// MessageDate is item.message.date as HipChat sent it (zero if it sent
	// none): a delivery of the same message again carries the same one.
	MessageDate time.Time `json:"messageDate,omitzero"`
	Command     string    `json:"command"` // configured command name, e.g. "hascode"
	Args        string    `json:"args"`    // text after "/name "
	From        string    `json:"from"`    // sender's display name
	Received    time.Time `json:"received"`
	// Reply, when set, is sent as it is instead of running Command (used for
	// the "installed in this room" greeting).
	Reply *Notification `json:"reply,omitempty"`
	// ResponseOnly says the reply may go only in the webhook's HTTP
	// response, never through the REST API (the command's reply mode is
	// "response": no outbound connection to HipChat, or no token).
	ResponseOnly bool   `json:"responseOnly,omitempty"`
	Attempts     int    `json:"attempts"`
	LastError    string `json:"lastError,omitempty"`
}

// The store contract. A backend (the embedded bbolt file, PostgreSQL)
// implements Store; consumers declare the few methods they need. Every
// method is safe for concurrent use; a nil error from a write means it is
// durable. Lookups of something absent return an *Error of kind NotFound.
// The contract is checked by one test suite (internal/storetest) that
// every backend runs.

// Installations keeps the installations.
type Installations interface {
	// PutInstallation creates or replaces the installation with inst.OAuthID.
	PutInstallation(ctx context.Context, inst Installation) error
	// Installation returns the installation with the given OAuthID.
	Installation(ctx context.Context, oauthID string) (Installation, error)
	// Installations returns every installation, ordered by OAuthID.
	Installations(ctx context.Context) ([]Installation, error)
}

// Remover removes an installation with everything stored for it.
type Remover interface {
	// DeleteInstallation removes, in one transaction, the installation,
	// its token, its pending jobs, its dead letters, its seen message ids
	// and every key/value entry under KeyPrefix(oauthID) in every
	// namespace. Deleting an absent installation returns NotFound and
	// changes nothing.
	DeleteInstallation(ctx context.Context, oauthID string) error
}

// Tokens caches the access tokens of installations.
type Tokens interface {
	// PutToken stores the access token of an installation; NotFound if the
	// installation does not exist, so no token outlives its installation.
	PutToken(ctx context.Context, oauthID string, t Token) error
	// Token returns the stored access token of an installation.
	Token(ctx context.Context, oauthID string) (Token, error)
	// DeleteToken forgets the stored token (after HipChat refused it).
	DeleteToken(ctx context.Context, oauthID string) error
}

// Outbox keeps the jobs acknowledged and not yet delivered.
type Outbox interface {
	// Enqueue stores j unless a job with the same (OAuthID, MessageDate,
	// MessageID) was enqueued before (a job without MessageID is always
	// new); it reports whether j was new. The ID of a new job is assigned
	// by the store, greater than every ID before it, and returned.
	Enqueue(ctx context.Context, j Job) (Job, bool, error)
	// Pending returns up to limit stored jobs in ID order (limit <= 0: all).
	Pending(ctx context.Context, limit int) ([]Job, error)
	// Complete removes a delivered job; NotFound if there is none.
	Complete(ctx context.Context, id uint64) error
	// CompleteAll removes the delivered jobs in one write; jobs already
	// gone are skipped.
	CompleteAll(ctx context.Context, jobs []Job) error
	// RecordAttempt stores a failed attempt at job id: Attempts is
	// incremented and LastError set to reason.
	RecordAttempt(ctx context.Context, id uint64, reason string) error
	// Bury moves job id out of the outbox into the dead letters, with the
	// reason it cannot be delivered. It no longer blocks its room.
	Bury(ctx context.Context, id uint64, reason string) error
	// PruneSeen forgets the seen message ids dated before olderThan and
	// reports how many it forgot; a message seen again after that is new.
	PruneSeen(ctx context.Context, olderThan time.Time) (int, error)
}

// DeadLetters keeps the jobs that could not be delivered for good.
type DeadLetters interface {
	// DeadLetters returns every dead letter, in job ID order.
	DeadLetters(ctx context.Context) ([]DeadLetter, error)
	// RetryDead moves dead letter id back into the outbox as a new job
	// (new ID, attempts reset) and returns it.
	RetryDead(ctx context.Context, id uint64) (Job, error)
	// DropDead deletes dead letter id; NotFound if there is none.
	DropDead(ctx context.Context, id uint64) error
	// PruneDead deletes the dead letters buried before olderThan and
	// reports how many.
	PruneDead(ctx context.Context, olderThan time.Time) (int, error)
}

// Pacing keeps the delivery pacer's recent sends across restarts, so that
// a restart does not forget how much of HipChat's budgets is spent.
type Pacing interface {
	// SavePacing stores each window in place of what was stored for it;
	// a window without times deletes it. Windows of an installation not
	// stored are skipped, so a save that races the installation's removal
	// leaves nothing behind. Removing an installation removes its windows.
	SavePacing(ctx context.Context, windows []PaceWindow) error
	// LoadPacing returns every stored window.
	LoadPacing(ctx context.Context) ([]PaceWindow, error)
}

// PaceWindow is the recent send times under one of HipChat's limits: a
// room's flood control, or (Room 0) the installation's token budget.
type PaceWindow struct {
	OAuthID string
	Room    int64
	Times   []time.Time
}

// KV is one namespace of key/value data. Get and Delete of an absent key
// return NotFound.
//
// Update stores what fn makes of the value at key (old is nil and found
// false when there is none) as one atomic step: no other write to key
// comes between. fn may run more than once, on the value then stored, so
// it must be a pure function of old, quick, must not retain or modify old,
// and must not call the KV; an error from fn stores nothing and is
// returned, as it is or wrapped. Concurrent Updates may share one commit.
//
// Data that belongs to an installation is kept under KeyPrefix of its
// OAuthID, so that removing the installation removes it too.
type KV interface {
	Get(ctx context.Context, key string) ([]byte, error)
	Put(ctx context.Context, key string, val []byte) error
	Update(ctx context.Context, key string, fn func(old []byte, found bool) ([]byte, error)) error
	Delete(ctx context.Context, key string) error
	// List returns the keys starting with prefix, in byte order.
	List(ctx context.Context, prefix string) ([]string, error)
}

// KeyPrefix is the prefix of every key/value key that belongs to the
// installation oauthID (see Remover).
func KeyPrefix(oauthID string) string { return "installation/" + url.PathEscape(oauthID) + "/" }

// CertMagicNamespace is the key/value namespace every store keeps
// certmagic's storage in (its CertStorage); the daemon's own namespaces are
// other ones.
const CertMagicNamespace = "certmagic"

// StoreStats are counts of what a store holds, each backend's in one
// snapshot, for the metrics and the operator.
type StoreStats struct {
	Installations int
	Tokens        int
	// PendingJobs counts the outbox, DeadLetters the jobs buried for good:
	// the counts per state of a job.
	PendingJobs int
	DeadLetters int
	// SeenMessages counts the remembered message ids (see Outbox).
	SeenMessages int
	// OldestPending is the Received time of the lowest-ID pending job, zero
	// if none is pending.
	OldestPending time.Time
	// SecretsEncrypted reports whether secrets are stored encrypted.
	SecretsEncrypted bool
}

// Store is everything a storage backend keeps.
type Store interface {
	Installations
	Remover
	Tokens
	Outbox
	DeadLetters
	Pacing
	// KV returns the key/value namespace with the given name.
	KV(namespace string) KV
}

// DeadLetter is a job that could not be delivered for good.
type DeadLetter struct {
	Job    Job       `json:"job"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Clock is the time source; tests inject their own.
type Clock func() time.Time
