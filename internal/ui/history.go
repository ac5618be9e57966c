package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// What a room's history keeps.
const (
	HistoryLimit  = 20  // searches per room, the newest
	HitsPerSearch = 3   // top hits kept per search
	maxTermChars  = 100 // a longer term is cut when stored or searched
	maxTitleChars = 200
)

// Search is one search in a room's history.
type Search struct {
	Command string    `json:"command"`
	Term    string    `json:"term"`
	At      time.Time `json:"at"`
	Total   int       `json:"total"` // hits found
	Hits    []Hit     `json:"hits"`  // the first HitsPerSearch
}

// Hit is a search result as the pages show it.
type Hit struct {
	Title string `json:"title"`
	URL   string `json:"url"`
}

// roomRecord is what is stored per installation and room: the history and
// the glance's counters.
type roomRecord struct {
	Week     string   `json:"week"`  // ISO week (UTC) Count belongs to, e.g. "2026-W48"
	Count    int      `json:"count"` // searches in Week
	New      bool     `json:"new"`   // the last search found results
	Searches []Search `json:"searches"`
}

func roomKey(oauthID string, roomID int64) string {
	return roomPrefix(oauthID) + strconv.FormatInt(roomID, 10)
}

func roomPrefix(oauthID string) string { return "room/" + url.PathEscape(oauthID) + "/" }

// isoWeek names t's ISO 8601 week in UTC.
func isoWeek(t time.Time) string {
	y, w := t.UTC().ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}

// room reads the record of a room; an absent one is empty.
func (u *UI) room(ctx context.Context, oauthID string, roomID int64) (roomRecord, error) {
	b, err := u.d.KV.Get(ctx, roomKey(oauthID, roomID))
	if addon.IsNotFound(err) {
		return roomRecord{}, nil
	}
	if err != nil {
		return roomRecord{}, fmt.Errorf("ui: read room history: %w", err)
	}
	var rec roomRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return roomRecord{}, addon.Wrap(addon.Internal, err, "ui: stored room history is corrupt")
	}
	return rec, nil
}

// History returns the room's recorded searches, newest first.
func (u *UI) History(ctx context.Context, oauthID string, roomID int64) ([]Search, error) {
	rec, err := u.room(ctx, oauthID, roomID)
	return rec.Searches, err
}

// AfterSearch records a search of command name for term in the room's history
// (the newest HistoryLimit per room, with their first HitsPerSearch hits)
// and pushes the new glance content to the room: "N searches this week"
// and a NEW lozenge when this search found results. The daemon calls it
// after each search a room sees; the dialog's "Post to room" does too.
//
// A failed push is returned (wrapped) after the history was stored: the
// caller logs it, the search itself stands.
func (u *UI) AfterSearch(ctx context.Context, inst addon.Installation, roomID int64, name, term string, hits []command.Hit) error {
	if roomID <= 0 || !inst.CoversRoom(roomID) {
		return addon.Errorf(addon.Invalid, "ui: room %d is not a room of installation %s", roomID, inst.OAuthID)
	}
	now := u.d.Now().UTC()
	s := Search{Command: name, Term: command.Truncate(term, maxTermChars), At: now, Total: len(hits), Hits: []Hit{}}
	for _, h := range hits[:min(len(hits), HitsPerSearch)] {
		s.Hits = append(s.Hits, Hit{Title: command.Truncate(h.Title, maxTitleChars), URL: h.URL})
	}

	u.mu.Lock()
	rec, err := u.room(ctx, inst.OAuthID, roomID)
	if err == nil {
		if week := isoWeek(now); rec.Week != week {
			rec.Week, rec.Count = week, 0
		}
		rec.Count++
		rec.New = len(hits) > 0
		rec.Searches = append([]Search{s}, rec.Searches...)
		rec.Searches = rec.Searches[:min(len(rec.Searches), HistoryLimit)]
		var b []byte
		if b, err = json.Marshal(rec); err == nil {
			err = u.d.KV.Put(ctx, roomKey(inst.OAuthID, roomID), b)
		}
	}
	u.mu.Unlock()
	if err != nil {
		return fmt.Errorf("ui: record search: %w", err)
	}

	if u.d.PushGlance == nil || u.d.GlanceKey == "" {
		return nil
	}
	g := hipchat.Glance{Key: u.d.GlanceKey, Content: glanceContent(rec, now)}
	if err := u.d.PushGlance(ctx, inst, roomID, g); err != nil {
		return fmt.Errorf("ui: push glance to room %d: %w", roomID, err)
	}
	return nil
}

// Forget deletes everything the UI stored for installation oauthID (its
// settings and every room's history); the daemon calls it on uninstall.
func (u *UI) Forget(ctx context.Context, oauthID string) error {
	keys, err := u.d.KV.List(ctx, roomPrefix(oauthID))
	if err != nil {
		return fmt.Errorf("ui: forget %s: %w", oauthID, err)
	}
	keys = append(keys, settingsKey(oauthID))
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, k := range keys {
		if err := u.d.KV.Delete(ctx, k); err != nil && !addon.IsNotFound(err) {
			return fmt.Errorf("ui: forget %s: %w", oauthID, err)
		}
	}
	return nil
}

// thisWeek returns the searches of now's week and whether the last of
// them found results.
func (rec roomRecord) thisWeek(now time.Time) (count int, isNew bool) {
	if rec.Week != isoWeek(now) {
		return 0, false
	}
	return rec.Count, rec.New
}

// glanceContent is what the glance shows for rec at now.
func glanceContent(rec roomRecord, now time.Time) hipchat.GlanceContent {
	n, isNew := rec.thisWeek(now)
	noun := "searches"
	if n == 1 {
		noun = "search"
	}
	c := hipchat.GlanceContent{Label: hipchat.GlanceLabel{Type: "html", Value: fmt.Sprintf("<b>%d</b> %s this week", n, noun)}}
	if isNew {
		c.Status = &hipchat.GlanceStatus{Type: "lozenge", Value: hipchat.GlanceStatusValue{Label: "NEW", Type: "success"}}
	}
	return c
}
