package tlsmgr

import (
	"slices"
	"testing"
)

// The values of Mode are the values of tls.mode in operators' files: they
// must not change.
func TestModes(t *testing.T) {
	want := []Mode{"off", "self-signed", "files", "acme"}
	if got := Modes(); !slices.Equal(got, want) {
		t.Errorf("Modes() = %q, want %q", got, want)
	}
	for _, m := range want {
		if !m.Valid() {
			t.Errorf("Mode(%q).Valid() = false, want true", m)
		}
	}
	for _, m := range []Mode{"", "on", "OFF", "self_signed", " acme"} {
		if m.Valid() {
			t.Errorf("Mode(%q).Valid() = true, want false", m)
		}
	}
	Modes()[0] = "changed"
	if got := Modes()[0]; got != ModeOff {
		t.Errorf("Modes() shares its slice: Modes()[0] = %q after a change", got)
	}
}
