// Package addon holds hipconnect's domain: installations, access tokens,
// commands waiting for delivery, the notifications sent to rooms, the error
// kinds every adapter speaks, and the interfaces the adapters implement.
//
// It imports only the standard library; every other package points at it.
package addon

import (
	"context"
	"time"
)

// Installation is one install of the add-on into a HipChat group or room,
// keyed by the OAuthID HipChat generated for it.
type Installation struct {
	OAuthID         string    `json:"oauthId"`
	OAuthSecret     string    `json:"oauthSecret"`
	CapabilitiesURL string    `json:"capabilitiesUrl"`
	GroupID         int64     `json:"groupId"`
	RoomID          int64     `json:"roomId,omitempty"` // 0 for a global (group-wide) install
	APIURL          string    `json:"apiUrl"`           // hipchatApiProvider.url, always ending in "/"
	TokenURL        string    `json:"tokenUrl"`         // oauth2Provider.tokenUrl
	HipChatOrigin   string    `json:"hipchatOrigin"`    // scheme://host[:port] of the HipChat server
	InstalledAt     time.Time `json:"installedAt"`
	UpdatedAt       time.Time `json:"updatedAt"`
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
	Reply     *Notification `json:"reply,omitempty"`
	Attempts  int           `json:"attempts"`
	LastError string        `json:"lastError,omitempty"`
}

// Store keeps installations, tokens and pending jobs durably. Every method is
// safe for concurrent use; a nil error from a write means it is on disk.
// Lookups of something absent return an *Error of kind NotFound.
type Store interface {
	// PutInstallation creates or replaces the installation with inst.OAuthID.
	PutInstallation(ctx context.Context, inst Installation) error
	// Installation returns the installation with the given OAuthID.
	Installation(ctx context.Context, oauthID string) (Installation, error)
	// Installations returns every installation, ordered by OAuthID.
	Installations(ctx context.Context) ([]Installation, error)
	// DeleteInstallation removes the installation and everything stored for
	// it (token, pending jobs, seen message ids). Deleting an absent
	// installation returns NotFound.
	DeleteInstallation(ctx context.Context, oauthID string) error

	// PutToken stores the access token of an installation.
	PutToken(ctx context.Context, oauthID string, t Token) error
	// Token returns the stored access token of an installation.
	Token(ctx context.Context, oauthID string) (Token, error)
	// DeleteToken forgets the stored token (after HipChat refused it).
	DeleteToken(ctx context.Context, oauthID string) error

	// Enqueue stores j unless a job with the same (OAuthID, MessageID) was
	// enqueued before; it reports whether j was new. The ID of a new job is
	// assigned by the store and returned in the Job.
	Enqueue(ctx context.Context, j Job) (Job, bool, error)
	// Pending returns up to limit stored jobs in ID order (limit <= 0: all).
	Pending(ctx context.Context, limit int) ([]Job, error)
	// Complete removes a delivered job.
	Complete(ctx context.Context, id uint64) error
	// RecordAttempt stores a failed attempt at job id: Attempts is
	// incremented and LastError set to reason.
	RecordAttempt(ctx context.Context, id uint64, reason string) error
	// Bury moves job id out of the outbox into the dead letters, with the
	// reason it cannot be delivered. It no longer blocks its room.
	Bury(ctx context.Context, id uint64, reason string) error
}

// DeadLetter is a job that could not be delivered for good.
type DeadLetter struct {
	Job    Job       `json:"job"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Clock is the time source; tests inject their own.
type Clock func() time.Time
