package storetest

import (
	"cmp"
	"slices"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func pacingCases() []testCase {
	return []testCase{
		{"RoundTrip", testPacingRoundTrip},
		{"ReplaceAndDelete", testPacingReplace},
		{"SkipsUnknownInstallation", testPacingUnknown},
		{"RemovedWithInstallation", testPacingRemoved},
	}
}

// paceTimes returns n send times a second apart, with nanoseconds, from a
// fixed instant.
func paceTimes(n int) []time.Time {
	base := time.Date(2026, 12, 7, 10, 0, 0, 123456789, time.UTC)
	out := make([]time.Time, n)
	for i := range out {
		out[i] = base.Add(time.Duration(i) * time.Second)
	}
	return out
}

func loadPacing(t *testing.T, s addon.Store) []addon.PaceWindow {
	t.Helper()
	ws, err := s.LoadPacing(t.Context())
	if err != nil {
		t.Fatalf("LoadPacing: %v", err)
	}
	slices.SortFunc(ws, func(a, b addon.PaceWindow) int {
		return cmp.Or(cmp.Compare(a.OAuthID, b.OAuthID), cmp.Compare(a.Room, b.Room))
	})
	return ws
}

func samePacing(a, b []addon.PaceWindow) bool {
	return slices.EqualFunc(a, b, func(x, y addon.PaceWindow) bool {
		return x.OAuthID == y.OAuthID && x.Room == y.Room && slices.EqualFunc(x.Times, y.Times, time.Time.Equal)
	})
}

func savePacing(t *testing.T, s addon.Store, ws ...addon.PaceWindow) {
	t.Helper()
	if err := s.SavePacing(t.Context(), ws); err != nil {
		t.Fatalf("SavePacing: %v", err)
	}
}

// testPacingRoundTrip: windows come back as saved, to the nanosecond, with
// room 0 (the token) and rooms apart, for an oauthId that needs escaping.
func testPacingRoundTrip(t *testing.T, b Backend) {
	putInstallation(t, b.Store, "i/1")
	putInstallation(t, b.Store, "i2")
	want := []addon.PaceWindow{
		{OAuthID: "i/1", Room: 0, Times: paceTimes(500)},
		{OAuthID: "i/1", Room: 7, Times: paceTimes(30)},
		{OAuthID: "i/1", Room: 12, Times: paceTimes(1)},
		{OAuthID: "i2", Room: 7, Times: paceTimes(3)},
	}
	if got := loadPacing(t, b.Store); len(got) != 0 {
		t.Fatalf("empty store has windows %v", got)
	}
	savePacing(t, b.Store, want...)
	if got := loadPacing(t, b.Store); !samePacing(got, want) {
		t.Errorf("LoadPacing = %v, want %v", got, want)
	}
}

// testPacingReplace: a save replaces a window's times, an empty window
// deletes it, and windows not named are kept.
func testPacingReplace(t *testing.T, b Backend) {
	putInstallation(t, b.Store, "i1")
	savePacing(t, b.Store, addon.PaceWindow{OAuthID: "i1", Room: 1, Times: paceTimes(5)},
		addon.PaceWindow{OAuthID: "i1", Room: 2, Times: paceTimes(5)})
	savePacing(t, b.Store, addon.PaceWindow{OAuthID: "i1", Room: 1, Times: paceTimes(2)},
		addon.PaceWindow{OAuthID: "i1", Room: 3})
	want := []addon.PaceWindow{{OAuthID: "i1", Room: 1, Times: paceTimes(2)}, {OAuthID: "i1", Room: 2, Times: paceTimes(5)}}
	if got := loadPacing(t, b.Store); !samePacing(got, want) {
		t.Fatalf("after replace: %v, want %v", got, want)
	}
	savePacing(t, b.Store, addon.PaceWindow{OAuthID: "i1", Room: 2})
	if got := loadPacing(t, b.Store); !samePacing(got, want[:1]) {
		t.Errorf("after delete: %v, want %v", got, want[:1])
	}
}

// testPacingUnknown: a window of an installation not stored is skipped
// without failing the others.
func testPacingUnknown(t *testing.T, b Backend) {
	putInstallation(t, b.Store, "i1")
	savePacing(t, b.Store, addon.PaceWindow{OAuthID: "gone", Room: 1, Times: paceTimes(3)},
		addon.PaceWindow{OAuthID: "i1", Room: 1, Times: paceTimes(3)})
	want := []addon.PaceWindow{{OAuthID: "i1", Room: 1, Times: paceTimes(3)}}
	if got := loadPacing(t, b.Store); !samePacing(got, want) {
		t.Errorf("LoadPacing = %v, want %v", got, want)
	}
}

// testPacingRemoved: removing an installation removes its windows and no
// other's.
func testPacingRemoved(t *testing.T, b Backend) {
	putInstallation(t, b.Store, "i1")
	putInstallation(t, b.Store, "i10")
	savePacing(t, b.Store, addon.PaceWindow{OAuthID: "i1", Times: paceTimes(3)},
		addon.PaceWindow{OAuthID: "i1", Room: 4, Times: paceTimes(3)},
		addon.PaceWindow{OAuthID: "i10", Room: 4, Times: paceTimes(2)})
	if err := b.Store.DeleteInstallation(t.Context(), "i1"); err != nil {
		t.Fatal(err)
	}
	want := []addon.PaceWindow{{OAuthID: "i10", Room: 4, Times: paceTimes(2)}}
	if got := loadPacing(t, b.Store); !samePacing(got, want) {
		t.Errorf("after removal: %v, want %v", got, want)
	}
}
