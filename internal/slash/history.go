package slash

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
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
	MaxTermChars  = 100 // a longer term is cut when stored or searched
	MaxTitleChars = 200
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

// Record is what is stored per installation and room: the history and
// the glance's counters.
type Record struct {
	Week     string   `json:"week"`  // ISO week (UTC) Count belongs to, e.g. "2026-W48"
	Count    int      `json:"count"` // searches in Week
	New      bool     `json:"new"`   // the last search found results
	Searches []Search `json:"searches"`
}

// prependSearch returns the encoded Record old (absent when !found)
// with entry, an encoded Search made in ISO week week, as its newest
// search, the oldest dropped beyond HistoryLimit; the week's count
// counting it and New set to isNew. It also returns that count. The
// searches it keeps are copied as they are, not decoded and encoded again
// (see splitRoom); the rest is laid out as json.Marshal lays out a
// Record, so that the next search reads it fast. It is a pure
// function of its arguments, as [KV.Update] needs; an old record it cannot
// read is an Internal error.
func prependSearch(old []byte, found bool, week string, isNew bool, entry []byte) ([]byte, int, error) {
	var prevWeek string
	var prevCount int
	var keep []json.RawMessage
	if found {
		var err error
		if prevWeek, prevCount, keep, err = splitRoom(old, HistoryLimit-1); err != nil {
			return nil, 0, err
		}
	}
	count := 1
	if prevWeek == week {
		count = prevCount + 1
	}
	size := len(week) + len(entry) + 64
	for _, s := range keep {
		size += len(s) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, `{"week":"`...)
	b = append(b, week...) // isoWeek's digits, '-' and 'W' need no escaping
	b = append(b, `","count":`...)
	b = strconv.AppendInt(b, int64(count), 10)
	b = append(b, `,"new":`...)
	b = strconv.AppendBool(b, isNew)
	b = append(b, `,"searches":[`...)
	b = append(b, entry...)
	for _, s := range keep {
		b = append(b, ',')
		b = append(b, s...)
	}
	b = append(b, "]}"...)
	return b, count, nil
}

// splitRoom reads what prependSearch needs of the encoded Record rec:
// its week, its count and its first n searches, still encoded (slices of
// rec, or copies). A record laid out as prependSearch and json.Marshal
// lay it out is read without the cost of decoding it (see splitMarshaled);
// any other is decoded with json.Unmarshal. A record neither can read is
// an Internal error.
func splitRoom(rec []byte, n int) (week string, count int, searches []json.RawMessage, err error) {
	if week, count, searches, ok := splitMarshaled(rec, n); ok {
		return week, count, searches, nil
	}
	var r struct {
		Week     string            `json:"week"`
		Count    int               `json:"count"`
		Searches []json.RawMessage `json:"searches"`
	}
	if err := json.Unmarshal(rec, &r); err != nil {
		return "", 0, nil, addon.Wrap(addon.Internal, err, "slash: stored room history is corrupt")
	}
	return r.Week, r.Count, r.Searches[:min(len(r.Searches), n)], nil
}

// splitMarshaled is splitRoom's fast path, for a record laid out exactly as
// {"week":"…","count":N,"new":B,"searches":[{…},…]} with no escape in the
// week. It reads the record only up to the n-th search, finding where each
// search ends by its braces and brackets outside strings, and does not
// check the JSON within (it was checked when encoded). ok is false when
// the record is laid out otherwise, or is cut short.
func splitMarshaled(rec []byte, n int) (week string, count int, searches []json.RawMessage, ok bool) {
	rest, ok := bytes.CutPrefix(rec, []byte(`{"week":"`))
	i := bytes.IndexByte(rest, '"')
	if !ok || i < 0 || bytes.IndexByte(rest[:i], '\\') >= 0 {
		return "", 0, nil, false
	}
	week, rest = string(rest[:i]), rest[i+1:]
	rest, ok = bytes.CutPrefix(rest, []byte(`,"count":`))
	i = bytes.IndexByte(rest, ',')
	if !ok || i < 0 {
		return "", 0, nil, false
	}
	count, err := strconv.Atoi(string(rest[:i]))
	if err != nil {
		return "", 0, nil, false
	}
	rest = rest[i:]
	if r, ok := bytes.CutPrefix(rest, []byte(`,"new":true`)); ok {
		rest = r
	} else if rest, ok = bytes.CutPrefix(rest, []byte(`,"new":false`)); !ok {
		return "", 0, nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"searches":[`)); !ok {
		return "", 0, nil, false
	}
	searches = make([]json.RawMessage, 0, n)
	for len(searches) < n {
		if bytes.Equal(rest, []byte("]}")) {
			return week, count, searches, true
		}
		if len(searches) > 0 {
			if rest, ok = bytes.CutPrefix(rest, []byte(",")); !ok {
				return "", 0, nil, false
			}
		}
		end := objectEnd(rest)
		if end < 0 {
			return "", 0, nil, false
		}
		searches, rest = append(searches, rest[:end]), rest[end:]
	}
	return week, count, searches, true
}

// objectEnd returns the length of the JSON object at the start of b, found
// by matching braces and brackets outside strings; -1 if b does not start
// with '{' or ends first.
func objectEnd(b []byte) int {
	if len(b) == 0 || b[0] != '{' {
		return -1
	}
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth--; depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// roomKey is where the Record of a room is kept: under the installation's
// addon.KeyPrefix, so that removing the installation removes it.
func roomKey(oauthID string, roomID int64) string {
	return addon.KeyPrefix(oauthID) + "room/" + strconv.FormatInt(roomID, 10)
}

// isoWeek names t's ISO 8601 week in UTC.
func isoWeek(t time.Time) string {
	y, w := t.UTC().ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}

// Room reads the record of a room; an absent one is empty.
func (sv *Service) Room(ctx context.Context, oauthID string, roomID int64) (Record, error) {
	b, err := sv.d.KV.Get(ctx, roomKey(oauthID, roomID))
	if addon.IsNotFound(err) {
		return Record{}, nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("slash: read room history: %w", err)
	}
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return Record{}, addon.Wrap(addon.Internal, err, "slash: stored room history is corrupt")
	}
	return rec, nil
}

// History returns the room's recorded searches, newest first.
func (sv *Service) History(ctx context.Context, oauthID string, roomID int64) ([]Search, error) {
	rec, err := sv.Room(ctx, oauthID, roomID)
	return rec.Searches, err
}

// AfterSearch records a search of command name for term in the room's history
// (the newest HistoryLimit per room, with their first HitsPerSearch hits)
// and pushes the new glance content to the room: "N searches this week"
// and a NEW lozenge when this search found results. The daemon calls it
// after each search a room sees; the dialog's "Post to room" does too.
//
// It is safe to call concurrently, for one room or many: the search is
// recorded in one atomic read-modify-write of the room's record
// ([KV.Update], which shares its commit with concurrent writers), so none
// is lost and the count pushed is the one stored with this search. The
// pushes of concurrent searches in one room are not ordered, though.
//
// A failed push is returned (wrapped) after the history was stored: the
// caller logs it, the search itself stands.
func (sv *Service) AfterSearch(ctx context.Context, inst addon.Installation, roomID int64, name, term string, hits []command.Hit) error {
	rec, now, err := sv.record(ctx, inst, roomID, name, term, hits)
	if err != nil {
		return err
	}
	return sv.pushGlance(ctx, inst, roomID, rec, now)
}

// record stores a search in the room's history (see AfterSearch) and
// returns the room's record and the time it was stored at.
func (sv *Service) record(ctx context.Context, inst addon.Installation, roomID int64, name, term string, hits []command.Hit) (Record, time.Time, error) {
	if roomID <= 0 || !inst.CoversRoom(roomID) {
		return Record{}, time.Time{}, addon.Errorf(addon.Invalid, "slash: room %d is not a room of installation %s", roomID, inst.OAuthID)
	}
	now := sv.d.Now().UTC()
	s := Search{Command: name, Term: command.Truncate(term, MaxTermChars), At: now, Total: len(hits), Hits: []Hit{}}
	for _, h := range hits[:min(len(hits), HitsPerSearch)] {
		s.Hits = append(s.Hits, Hit{Title: command.Truncate(h.Title, MaxTitleChars), URL: h.URL})
	}

	entry, err := json.Marshal(s)
	if err != nil {
		return Record{}, now, addon.Wrap(addon.Internal, err, "slash: encode search")
	}
	week, isNew := isoWeek(now), len(hits) > 0
	var count int
	err = sv.d.KV.Update(ctx, roomKey(inst.OAuthID, roomID), func(old []byte, found bool) (b []byte, err error) {
		b, count, err = prependSearch(old, found, week, isNew, entry)
		return b, err
	})
	if err != nil {
		return Record{}, now, fmt.Errorf("slash: record search: %w", err)
	}
	return Record{Week: week, Count: count, New: isNew}, now, nil
}

// pushGlance sends the room's glance for rec to HipChat.
func (sv *Service) pushGlance(ctx context.Context, inst addon.Installation, roomID int64, rec Record, now time.Time) error {
	if sv.d.PushGlance == nil || sv.d.GlanceKey == "" {
		return nil
	}
	g := hipchat.Glance{Key: sv.d.GlanceKey, Content: GlanceContent(rec, now)}
	if err := sv.d.PushGlance(ctx, inst, roomID, g); err != nil {
		return fmt.Errorf("slash: push glance to room %d: %w", roomID, err)
	}
	return nil
}

// ThisWeek returns the searches of now's week and whether the last of
// them found results.
func (rec Record) ThisWeek(now time.Time) (count int, isNew bool) {
	if rec.Week != isoWeek(now) {
		return 0, false
	}
	return rec.Count, rec.New
}

// GlanceContent is what the glance shows for rec at now.
func GlanceContent(rec Record, now time.Time) hipchat.GlanceContent {
	n, isNew := rec.ThisWeek(now)
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
