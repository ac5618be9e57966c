package hipchat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// ErrTokenRejected is in the chain of the error of an API call HipChat
// answered 401: the access token is dead (expired early, revoked, or the
// installation is gone). The error is also an addon.Unauthorized. Refresh
// the token once and retry, as [Tokens.Do] does.
var ErrTokenRejected = errors.New("hipchat rejected the access token")

// RateLimitError is in the chain of the error of an API call HipChat
// answered 429 (PROTOCOL.md section 9). Its kind is addon.Unavailable.
type RateLimitError struct {
	// RetryAfter is how long to wait: Retry-After when HipChat sent it,
	// else the time until Reset; 0 when HipChat said neither.
	RetryAfter time.Duration
	// Reset is when the limit resets: the later of X-Ratelimit-Reset and
	// X-FloodControl-Reset (Unix seconds), else now + Retry-After; zero when
	// HipChat said neither.
	Reset time.Time
}

// Wait is how long from now HipChat asked to wait: RetryAfter, else the
// time until Reset; 0 when it said neither (delivery.Throttled).
func (e *RateLimitError) Wait(now time.Time) time.Duration {
	if e.RetryAfter > 0 {
		return e.RetryAfter
	}
	if !e.Reset.IsZero() {
		return e.Reset.Sub(now)
	}
	return 0
}

func (e *RateLimitError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("hipchat rate limit reached, retry after %s", e.RetryAfter)
	}
	return "hipchat rate limit reached"
}

// Unwrap gives the error its kind, addon.Unavailable.
func (e *RateLimitError) Unwrap() error {
	return addon.Errorf(addon.Unavailable, "hipchat rate limit reached")
}

// Retryable reports whether a later attempt of the call that returned err
// may succeed without anything else changing: HipChat rate-limited it
// ([*RateLimitError]), failed (5xx), timed out or could not be reached
// (kind addon.Unavailable). A rejected token ([ErrTokenRejected]) is not
// retryable by this definition: refresh the token first ([Tokens.Do]). Nor
// is the caller's own context ending.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var rl *RateLimitError
	if errors.As(err, &rl) {
		return true
	}
	return addon.KindOf(err) == addon.Unavailable
}

// validColor reports whether HipChat accepts c as a notification color
// (PROTOCOL.md section 7).
func validColor(c string) bool {
	switch c {
	case "yellow", "green", "red", "purple", "gray", "random":
		return true
	}
	return false
}

// maxMessageChars is the longest notification message HipChat takes.
const maxMessageChars = 10000

// ValidateNotification reports (as addon.Invalid) what HipChat would refuse
// in n: a message that is empty or over 10,000 characters, a message_format
// other than html or text, a color outside yellow, green, red, purple, gray,
// random. Empty format and color are fine: HipChat defaults them.
func ValidateNotification(n addon.Notification) error {
	switch c := utf8.RuneCountInString(n.Message); {
	case c == 0:
		return addon.Errorf(addon.Invalid, "the notification message is empty")
	case c > maxMessageChars:
		return addon.Errorf(addon.Invalid, "the notification message is over %d characters", maxMessageChars)
	}
	if n.MessageFormat != "" && n.MessageFormat != "html" && n.MessageFormat != "text" {
		return addon.Errorf(addon.Invalid, "message_format %q is not html or text", n.MessageFormat)
	}
	if n.Color != "" && !validColor(n.Color) {
		return addon.Errorf(addon.Invalid, "color %q is not one hipchat accepts", n.Color)
	}
	return nil
}

// SendNotification posts n to room roomID with the access token token:
// POST {inst.APIURL}room/{roomID}/notification, "Authorization: Bearer",
// JSON body (PROTOCOL.md section 7). It checks n with
// [ValidateNotification] first and makes no request if that fails.
//
// The answer maps to errors as follows: 2xx is success; 401 is
// addon.Unauthorized wrapping [ErrTokenRejected]; 429 is a
// [*RateLimitError]; 408, 5xx and connection failures are addon.Unavailable;
// any other 4xx is addon.Invalid carrying HipChat's error message. The
// API URL's host must be allowed (else Forbidden, no request made).
func (c *Client) SendNotification(ctx context.Context, inst addon.Installation, token string, roomID int64, n addon.Notification) error {
	if roomID <= 0 {
		return opError("send notification", addon.Errorf(addon.Invalid, "room id %d is not a room", roomID))
	}
	return c.SendRoomNotification(ctx, inst, token, strconv.FormatInt(roomID, 10), n)
}

// SendRoomNotification is SendNotification to the room idOrName, a room id
// or a room name as in a "Build your own" integration's room URL (PROTOCOL.md
// section 11); the name is escaped in the path.
func (c *Client) SendRoomNotification(ctx context.Context, inst addon.Installation, token, idOrName string, n addon.Notification) error {
	const op = "send notification"
	if err := ValidateNotification(n); err != nil {
		return opError(op, err)
	}
	if idOrName == "" {
		return opError(op, addon.Errorf(addon.Invalid, "no room"))
	}
	return c.postAPI(ctx, op, inst, token, "room/"+url.PathEscape(idOrName)+"/notification", n)
}

// CheckRoom asks HipChat for the room idOrName with token (GET
// {inst.APIURL}room/{idOrName}), posting nothing, and reports whether the
// token may read the room. A 403 means HipChat accepted the token but its
// scopes do not include reading rooms (a room notification token's
// usually do not): false and no error. Other failures are errors as for
// SendNotification (401: the token is not valid).
func (c *Client) CheckRoom(ctx context.Context, inst addon.Installation, token, idOrName string) (readable bool, err error) {
	const op = "check room"
	resp, err := c.callAPI(ctx, op, http.MethodGet, inst, token, "room/"+url.PathEscape(idOrName), nil)
	if err != nil {
		return false, err
	}
	defer drain(resp)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		return true, nil
	case resp.StatusCode == http.StatusForbidden:
		return false, nil
	}
	body, _ := readBody(resp)
	return false, opError(op, c.apiError(resp, body, token))
}

// Glance is one glance's new content in a glance update (PROTOCOL.md
// section 7); Key is the glance's key in the add-on's descriptor.
type Glance struct {
	Key     string        `json:"key"`
	Content GlanceContent `json:"content"`
}

// GlanceContent is what a glance shows. It is also the body the add-on
// answers a glance queryUrl with.
type GlanceContent struct {
	Label    GlanceLabel     `json:"label"`
	Status   *GlanceStatus   `json:"status,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// GlanceLabel is the glance's text; Type is "html" or "text".
type GlanceLabel struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// GlanceStatus is the badge next to a glance's label: Type "lozenge" with
// Value.Label and Value.Type (e.g. "success", "current", "new"), or Type
// "icon" with Value.URL and Value.URL2x.
type GlanceStatus struct {
	Type  string            `json:"type"`
	Value GlanceStatusValue `json:"value"`
}

// GlanceStatusValue holds the fields of either kind of GlanceStatus.
type GlanceStatusValue struct {
	Label string `json:"label,omitempty"`
	Type  string `json:"type,omitempty"`
	URL   string `json:"url,omitempty"`
	URL2x string `json:"url@2x,omitempty"`
}

// UpdateGlance pushes new content for glances to every client showing room
// roomID: POST {inst.APIURL}addon/ui/room/{roomID} with {"glance": [...]}
// (PROTOCOL.md section 7). It needs at least one glance, each with a key.
// Errors map as for [Client.SendNotification].
func (c *Client) UpdateGlance(ctx context.Context, inst addon.Installation, token string, roomID int64, glances []Glance) error {
	const op = "update glance"
	if len(glances) == 0 {
		return opError(op, addon.Errorf(addon.Invalid, "no glance to update"))
	}
	for _, g := range glances {
		if g.Key == "" {
			return opError(op, addon.Errorf(addon.Invalid, "a glance has no key"))
		}
	}
	if roomID <= 0 {
		return opError(op, addon.Errorf(addon.Invalid, "room id %d is not a room", roomID))
	}
	body := struct {
		Glance []Glance `json:"glance"`
	}{glances}
	return c.postAPI(ctx, op, inst, token, "addon/ui/room/"+strconv.FormatInt(roomID, 10), body)
}

// postAPI posts v as JSON to inst.APIURL+path with the bearer token and maps
// the answer (see SendNotification).
func (c *Client) postAPI(ctx context.Context, op string, inst addon.Installation, token, path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return opError(op, addon.Wrap(addon.Internal, err, "encoding the request failed"))
	}
	resp, err := c.callAPI(ctx, op, http.MethodPost, inst, token, path, b)
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		return nil
	}
	body, _ := readBody(resp) // an unreadable error body still has its status
	return opError(op, c.apiError(resp, body, token))
}

// callAPI makes a request to {inst.APIURL}path with token as the Bearer
// credential and body (if any) as JSON, and returns HipChat's answer for
// the caller to read and drain. The URL's host must be allowed. Its errors
// are op's.
func (c *Client) callAPI(ctx context.Context, op, method string, inst addon.Installation, token, path string, body []byte) (*http.Response, error) {
	if token == "" {
		return nil, opError(op, addon.Errorf(addon.Invalid, "no access token"))
	}
	base := inst.APIURL
	if base == "" {
		return nil, opError(op, addon.Errorf(addon.Invalid, "installation has no api url"))
	}
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	u, err := c.checkURL("api url", base+path)
	if err != nil {
		return nil, opError(op, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, opError(op, addon.Wrap(addon.Invalid, err, "bad api url"))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.do(req)
	if err != nil {
		return nil, opError(op, err)
	}
	return resp, nil
}

// apiError maps a non-2xx API answer to an error (see SendNotification).
func (c *Client) apiError(resp *http.Response, body []byte, token string) error {
	code := resp.StatusCode
	switch {
	case code == http.StatusUnauthorized:
		return &addon.Error{Kind: addon.Unauthorized, Msg: "hipchat rejected the access token",
			Err: fmt.Errorf("%w: %w", ErrTokenRejected, peerError(code, body, token))}
	case code == http.StatusTooManyRequests:
		return parseRateLimit(resp.Header, c.now())
	case code == http.StatusRequestTimeout || code >= 500:
		return &addon.Error{Kind: addon.Unavailable, Msg: fmt.Sprintf("hipchat answered %d", code),
			Err: peerError(code, body, token)}
	case code >= 400:
		msg := fmt.Sprintf("hipchat refused the request (%d)", code)
		if m := peerMessage(body, token); m != "" {
			msg += ": " + m
		}
		return addon.Errorf(addon.Invalid, "%s", msg)
	default: // 1xx, 3xx left over
		return addon.Errorf(addon.Unavailable, "hipchat answered %d", code)
	}
}

// parseRateLimit reads a 429's headers (PROTOCOL.md section 9).
func parseRateLimit(h http.Header, now time.Time) *RateLimitError {
	e := &RateLimitError{}
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" {
		// Retry-After is delay-seconds or an HTTP-date (RFC 9110 10.2.3).
		if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(min(s, int64(24*time.Hour/time.Second))) * time.Second
		} else if t, err := http.ParseTime(v); err == nil && t.After(now) {
			e.RetryAfter = t.Sub(now)
		}
	}
	for _, name := range []string{"X-Ratelimit-Reset", "X-FloodControl-Reset"} {
		v := strings.TrimSpace(h.Get(name))
		if v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 1e11 {
			continue
		}
		t := time.Unix(int64(f), 0)
		if t.After(e.Reset) {
			e.Reset = t
		}
	}
	switch {
	case e.RetryAfter == 0 && !e.Reset.IsZero() && e.Reset.After(now):
		e.RetryAfter = e.Reset.Sub(now)
	case e.Reset.IsZero() && e.RetryAfter > 0:
		e.Reset = now.Add(e.RetryAfter)
	}
	return e
}

// peerMessage extracts HipChat's error message from an error body, either
// {"error": {"message": ...}} (PROTOCOL.md section 9) or the OAuth shape
// {"error": "invalid_client", "error_description": ...} (section 4), and
// makes it safe to show: secrets removed, control characters dropped,
// at most 200 characters.
func peerMessage(body []byte, secrets ...string) string {
	var e struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) == 0 {
		return ""
	}
	var msg string
	var obj struct {
		Message string `json:"message"`
	}
	var code string
	switch {
	case json.Unmarshal(e.Error, &obj) == nil && obj.Message != "":
		msg = obj.Message
	case json.Unmarshal(e.Error, &code) == nil && code != "":
		msg = code
		if e.Description != "" {
			msg += ": " + e.Description
		}
	}
	return sanitize(msg, secrets...)
}

// peerError describes a failed answer for the log: its status and HipChat's
// message, sanitised like peerMessage.
func peerError(code int, body []byte, secrets ...string) error {
	if m := peerMessage(body, secrets...); m != "" {
		return fmt.Errorf("status %d: %s", code, m)
	}
	return fmt.Errorf("status %d", code)
}

func sanitize(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if utf8.RuneCountInString(s) > 200 {
		s = string([]rune(s)[:200]) + "…"
	}
	return s
}

// InstallableInfo reads the installable resource HipChat names in the
// browser uninstall flow (the installable_url parameter, PROTOCOL.md
// section 8) and returns its oauthId. The URL's host must be allowed (else
// Forbidden, no request made); a non-2xx answer is Unavailable; a body
// without an oauthId is Invalid.
func (c *Client) InstallableInfo(ctx context.Context, installableURL string) (string, error) {
	const op = "installable info"
	u, err := c.checkURL("installable url", installableURL)
	if err != nil {
		return "", opError(op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", opError(op, addon.Wrap(addon.Invalid, err, "bad installable url"))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return "", opError(op, err)
	}
	defer drain(resp)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", opError(op, addon.Errorf(addon.Unavailable, "hipchat answered %d for the installable", resp.StatusCode))
	}
	body, err := readBody(resp)
	if err != nil {
		return "", opError(op, err)
	}
	var doc struct {
		OAuthID string `json:"oauthId"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", opError(op, addon.Wrap(addon.Invalid, err, "the installable is not valid json"))
	}
	if doc.OAuthID == "" {
		return "", opError(op, addon.Errorf(addon.Invalid, "the installable has no oauthId"))
	}
	return doc.OAuthID, nil
}
