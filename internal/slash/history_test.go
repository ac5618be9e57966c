package slash

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// termKey carries a search's term in its context to the test's PushGlance.
type termKey struct{}

// pushLog records, per room, the glance count each search's push carried
// and whether it had the NEW lozenge.
type pushLog struct {
	mu    sync.Mutex
	count map[int64]map[string]int // room, term: the count pushed
	isNew map[string]bool
}

func (l *pushLog) push(ctx context.Context, _ addon.Installation, roomID int64, g hipchat.Glance) error {
	term, _ := ctx.Value(termKey{}).(string)
	var n int
	if _, err := fmt.Sscanf(g.Content.Label.Value, "<b>%d</b>", &n); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[roomID] == nil {
		l.count[roomID] = map[string]int{}
	}
	l.count[roomID][term] = n
	l.isNew[term] = g.Content.Status != nil
	return nil
}

// TestAfterSearchConcurrent records searches from many goroutines at once,
// in one room and in several, on a real bbolt file: every search is
// counted once, each push carries a count of its own, and the history
// keeps the newest HistoryLimit, newest first, in the order of those
// counts.
func TestAfterSearchConcurrent(t *testing.T) {
	for _, tt := range []struct {
		name                   string
		rooms, workers, rounds int
	}{
		{"one room, fewer than the limit", 1, HistoryLimit - 4, 1},
		{"one room", 1, 48, 2},
		{"several rooms", 6, 24, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := &pushLog{count: map[int64]map[string]int{}, isNew: map[string]bool{}}
			f := newFixture(t, fixtureOpts{push: log.push})
			inst := f.inst
			inst.RoomID = 0 // covers every room
			var wg sync.WaitGroup
			for w := range tt.workers {
				wg.Go(func() {
					for r := range tt.rounds {
						room := int64(1 + (w+r)%tt.rooms)
						term := fmt.Sprintf("w%d-r%d", w, r)
						var hits []command.Hit
						if w%2 == 0 {
							hits = []command.Hit{{Title: term, URL: "https://blog.example/" + term}}
						}
						ctx := context.WithValue(context.Background(), termKey{}, term)
						if err := f.sv.AfterSearch(ctx, inst, room, "hascode", term, hits); err != nil {
							t.Errorf("AfterSearch(%s): %v", term, err)
						}
					}
				})
			}
			wg.Wait()

			perRoom := tt.workers * tt.rounds / tt.rooms
			for room := int64(1); room <= int64(tt.rooms); room++ {
				counts := log.count[room]
				if len(counts) != perRoom {
					t.Fatalf("room %d: %d pushes, want %d", room, len(counts), perRoom)
				}
				byCount := map[int]string{}
				for term, n := range counts {
					if other, dup := byCount[n]; dup || n < 1 || n > perRoom {
						t.Errorf("room %d: count %d pushed for %s (and %q)", room, n, term, other)
					}
					byCount[n] = term
				}
				h, err := f.sv.History(context.Background(), testOAuthID, room)
				if err != nil {
					t.Fatal(err)
				}
				if len(h) != min(perRoom, HistoryLimit) {
					t.Fatalf("room %d: history of %d, want %d", room, len(h), min(perRoom, HistoryLimit))
				}
				for i, s := range h {
					if want := byCount[perRoom-i]; s.Term != want {
						t.Errorf("room %d: history[%d] = %s, want %s (count %d)", room, i, s.Term, want, perRoom-i)
					}
					if (len(s.Hits) == 1) != log.isNew[s.Term] || s.Total != len(s.Hits) {
						t.Errorf("room %d: %s has %d hits of %d, pushed NEW %v", room, s.Term, len(s.Hits), s.Total, log.isNew[s.Term])
					}
				}
				rec, err := f.sv.Room(context.Background(), testOAuthID, room)
				if err != nil || rec.Count != perRoom || rec.Week != isoWeek(f.clock()) {
					t.Errorf("room %d: record counts %d in %s, %v; want %d", room, rec.Count, rec.Week, err, perRoom)
				}
			}
		})
	}
}

// TestAfterSearchRecord checks what is stored: exactly what json.Marshal
// of the record gives (the searches are copied, not re-encoded), a new
// week's count starting again, and a corrupt record refused and left as
// it is.
func TestAfterSearchRecord(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := context.Background()
	key := roomKey(testOAuthID, testRoom)

	// A record as the previous version wrote it: json.Marshal of
	// Record, last week.
	lastWeek := Record{Week: isoWeek(f.clock().AddDate(0, 0, -7)), Count: 7, New: true}
	for i := range HistoryLimit {
		lastWeek.Searches = append(lastWeek.Searches, Search{Command: "hascode", Term: fmt.Sprint("old ", i),
			At: f.clock().Add(-time.Duration(i+1) * time.Hour), Total: 1, Hits: []Hit{{Title: `<"Old" & \ é>`, URL: "https://blog.example/old"}}})
	}
	b, err := json.Marshal(lastWeek)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, s, ok := splitMarshaled(b, HistoryLimit); !ok || len(s) != HistoryLimit {
		t.Errorf("json.Marshal's record not read by the fast path: %v, %d searches", ok, len(s))
	}
	if err := f.kv.Put(ctx, key, b); err != nil {
		t.Fatal(err)
	}

	hits := []command.Hit{{Title: "Java <b>generics</b> \u2028 \"quoted\"", URL: "https://blog.example/a?x=1&y=2"}}
	for i := range 3 {
		if err := f.sv.AfterSearch(ctx, f.inst, testRoom, "hascode", "new "+strconv.Itoa(i), hits[:i%2]); err != nil {
			t.Fatal(err)
		}
		f.advance(time.Minute)
	}
	stored, err := f.kv.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	var rec Record
	if err := json.Unmarshal(stored, &rec); err != nil {
		t.Fatal(err)
	}
	if want, _ := json.Marshal(rec); !bytes.Equal(stored, want) {
		t.Errorf("stored\n%s\nwant json.Marshal's\n%s", stored, want)
	}
	if _, _, s, ok := splitMarshaled(stored, HistoryLimit-1); !ok || len(s) != HistoryLimit-1 {
		t.Errorf("stored record not read by the fast path: %v, %d searches", ok, len(s))
	}
	if rec.Week != isoWeek(f.clock()) || rec.Count != 3 || rec.New || len(rec.Searches) != HistoryLimit {
		t.Errorf("record: week %s count %d new %v, %d searches; want this week's 3, not new, %d",
			rec.Week, rec.Count, rec.New, len(rec.Searches), HistoryLimit)
	}
	var terms []string
	for _, s := range rec.Searches[:5] {
		terms = append(terms, s.Term)
	}
	if got := strings.Join(terms, ","); got != "new 2,new 1,new 0,old 0,old 1" {
		t.Errorf("history starts %s", got)
	}
	if s := rec.Searches[1]; len(s.Hits) != 1 || s.Hits[0].Title != hits[0].Title || s.Hits[0].URL != hits[0].URL {
		t.Errorf("search with a hit stored as %+v", s)
	}
	if s := rec.Searches[3]; !s.At.Equal(lastWeek.Searches[0].At) || s.Hits[0] != lastWeek.Searches[0].Hits[0] {
		t.Errorf("old search stored as %+v, want %+v", s, lastWeek.Searches[0])
	}

	corrupt := []byte(`{"week":"2026-W48","count":1,"searches":[{"term":`)
	if err := f.kv.Put(ctx, key, corrupt); err != nil {
		t.Fatal(err)
	}
	pushes := len(f.Glances())
	if err := f.sv.AfterSearch(ctx, f.inst, testRoom, "hascode", "java", nil); addon.KindOf(err) != addon.Internal {
		t.Errorf("AfterSearch on a corrupt record = %v, want an internal error", err)
	}
	if got, _ := f.kv.Get(ctx, key); !bytes.Equal(got, corrupt) {
		t.Errorf("corrupt record became %s", got)
	}
	if len(f.Glances()) != pushes {
		t.Error("glance pushed although the search was not recorded")
	}
}

// FuzzSplitRoom checks splitRoom's fast path against json.Unmarshal: on
// any valid JSON it reads (all of it, n being large), it must find what
// json.Unmarshal finds.
func FuzzSplitRoom(f *testing.F) {
	rec := Record{Week: "2026-W48", Count: 3, New: true, Searches: []Search{
		{Command: "hascode", Term: `a "quoted" \ term {[`, Total: 1, Hits: []Hit{{Title: "}]<b>é\u2028", URL: "https://blog.example/?a=1&b=2"}}},
		{Command: "hascode", Term: "b", Hits: []Hit{}},
	}}
	b, _ := json.Marshal(rec)
	f.Add(b)
	rec.Searches = nil
	b, _ = json.Marshal(rec)
	f.Add(b) // "searches":null
	f.Add([]byte(`{"week":"2026-W48","count":2,"new":false,"searches":[]}`))
	f.Add([]byte(`{"week":"2026-W48","count":2,"new":false,"searches":[{"term":"a"},{"term":"b"}]}`))
	f.Add([]byte(`{"week":"2026-W48","count":2,"new":false,"searches":[{"term":"a"},]}`))
	f.Add([]byte(`{"week":"2026-W48","count":2,"new":false,"searches":[{"term":"a\"}"}]} `))
	f.Add([]byte(` {"count":2, "week":"2026-W48", "searches":[ {"term":"a"} ]}`))
	f.Fuzz(func(t *testing.T, rec []byte) {
		week, count, searches, ok := splitMarshaled(rec, 1000)
		if !ok || !json.Valid(rec) || !utf8.Valid(rec) { // json.Unmarshal replaces invalid UTF-8
			return
		}
		var want struct {
			Week     string
			Count    int
			Searches []json.RawMessage
		}
		if err := json.Unmarshal(rec, &want); err != nil {
			t.Fatalf("fast path read %q, json.Unmarshal fails: %v", rec, err)
		}
		if week != want.Week || count != want.Count || len(searches) != len(want.Searches) {
			t.Fatalf("%q: fast path read %q, %d, %d searches; json.Unmarshal %q, %d, %d",
				rec, week, count, len(searches), want.Week, want.Count, len(want.Searches))
		}
		for i := range searches {
			if !bytes.Equal(searches[i], want.Searches[i]) {
				t.Fatalf("%q: search %d is %q, want %q", rec, i, searches[i], want.Searches[i])
			}
		}
	})
}
