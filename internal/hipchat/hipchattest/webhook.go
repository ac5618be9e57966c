package hipchattest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// maxReply is the most PostWebhook reads of an answer: as much as the fake
// takes in a request.
const maxReply = 1 << 20

// WebhookResult is what became of a webhook PostWebhook delivered.
type WebhookResult struct {
	// Status, Header and Body are the add-on's answer (Body cut at 1 MiB).
	Status int
	Header http.Header
	Body   []byte
	// Reply is the notification a 200 answer carried, as recorded, with
	// Via ViaResponse: in Notifications, or in DroppedReplies when
	// Dropped. nil for any other answer.
	Reply *Notification
	// Dropped: the reply was a valid notification, but the room's flood
	// control (Limits.RoomNotifications) was used up, so HipChat would not
	// post it. It is in DroppedReplies and counted nowhere.
	Dropped bool
	// Err says what is wrong with a 200 answer that is not a notification
	// in the format of PROTOCOL.md section 7 (no JSON Content-Type, no or
	// empty message, a message over 10000 characters, a color or format
	// HipChat does not know, a body over 1 MiB, ...); nothing was
	// recorded then. nil for every other answer.
	Err error
}

// defaultWebhookClient is Options.WebhookClient's default.
func defaultWebhookClient() *http.Client {
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// SetWebhookClient makes PostWebhook use c from now on (e.g. one that
// trusts the add-on's test certificate); nil restores the default (see
// Options.WebhookClient).
func (s *Server) SetWebhookClient(c *http.Client) {
	if c == nil {
		c = defaultWebhookClient()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.webhookClient = c
}

// PostWebhook plays HipChat delivering a room_message webhook (PROTOCOL.md
// sections 6 and 11): it POSTs body to url with header (e.g. an
// Authorization: JWT from JWT or Signer for a Connect add-on; nothing for
// a "Build your own" slash command, whose url carries its credential) and
// Content-Type application/json unless header sets one, with the client of
// SetWebhookClient, and handles the answer as HipChat does:
//
//   - 200 with a notification body (PROTOCOL.md section 7): posted to the
//     room of the webhook, item.room.id. It is recorded in Notifications
//     exactly as a notification posted through the API to that room by id
//     would be (RoomID and Room the webhook's room, OAuthID the webhook's
//     oauth_client_id, RoomToken "", Via ViaResponse), waking
//     WaitNotifications, and counted against that room's flood control
//     like one; over the limit it is dropped instead (Dropped).
//   - 200 with any other body: Err says what is wrong; nothing is recorded.
//     Stricter than HipChat may have been: the answer must say
//     Content-Type application/json.
//   - 204, or any other status: nothing is recorded; Status says which.
//
// The error is for a webhook that could not be delivered (ctx, the
// connection, a redirect the client followed failing) and for a body that
// is not a room_message webhook with a positive item.room.id (build it with
// RoomMessage); the result is then the zero value. PostWebhook is not
// affected by BlockAPI or SetFault: they stand between the add-on and
// HipChat, this is HipChat calling the add-on.
func (s *Server) PostWebhook(ctx context.Context, url string, header http.Header, body []byte) (WebhookResult, error) {
	var hook struct {
		Event string `json:"event"`
		Item  struct {
			Room struct {
				ID int64 `json:"id"`
			} `json:"room"`
		} `json:"item"`
		OAuthClientID string `json:"oauth_client_id"`
	}
	if err := json.Unmarshal(body, &hook); err != nil || hook.Event != "room_message" || hook.Item.Room.ID <= 0 {
		return WebhookResult{}, errors.New("hipchattest: PostWebhook: body is not a room_message webhook with a positive item.room.id")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return WebhookResult{}, fmt.Errorf("hipchattest: PostWebhook: %w", err)
	}
	if header != nil {
		req.Header = header.Clone()
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	s.mu.Lock()
	client := s.webhookClient
	s.mu.Unlock()
	resp, err := client.Do(req)
	if err != nil {
		return WebhookResult{}, fmt.Errorf("hipchattest: PostWebhook: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReply+1))
	res := WebhookResult{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if len(raw) > maxReply {
		res.Body = raw[:maxReply]
	}
	if resp.StatusCode != http.StatusOK {
		return res, nil
	}
	n, bad := replyNotification(resp.Header, raw, err)
	if bad != nil {
		res.Err = fmt.Errorf("hipchattest: the 200 answer to the webhook is not a notification: %w", bad)
		return res, nil
	}
	ref := roomRef{path: strconv.FormatInt(hook.Item.Room.ID, 10), id: hook.Item.Room.ID}
	rec := Notification{RoomID: ref.id, Room: ref.path, OAuthID: hook.OAuthClientID, Via: ViaResponse,
		Body: n, Raw: slices.Clone(raw)}
	s.mu.Lock()
	rec.At = s.now()
	if takeLocked(s.windowsLocked(nil, ref.key()), rec.At, nil) != nil {
		s.dropped = append(s.dropped, rec)
		res.Dropped = true
	} else {
		s.notifications = append(s.notifications, rec)
	}
	s.wakeLocked()
	s.mu.Unlock()
	res.Reply = &rec
	return res, nil
}

// replyNotification checks the body of a 200 answer to a webhook, read
// with readErr.
func replyNotification(h http.Header, raw []byte, readErr error) (addon.Notification, error) {
	if readErr != nil {
		return addon.Notification{}, fmt.Errorf("reading it: %w", readErr)
	}
	if len(raw) > maxReply {
		return addon.Notification{}, errors.New("body over 1 MiB")
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return addon.Notification{}, errors.New("empty body (answer 204 to post nothing)")
	}
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt != "application/json" {
		return addon.Notification{}, fmt.Errorf("Content-Type %q, want application/json", h.Get("Content-Type"))
	}
	n, err := parseNotification(raw)
	if errors.Is(err, errNotJSON) {
		err = errors.New("body is not a JSON object with the notification's field types")
	}
	return n, err
}

// DroppedReplies returns the webhook replies the flood control dropped
// (WebhookResult.Dropped), in order.
func (s *Server) DroppedReplies() []Notification {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dropped)
}
