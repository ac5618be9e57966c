package command

import (
	"slices"
	"testing"
)

// The values of Kind are the values of commands[].kind in operators' files:
// they must not change.
func TestKinds(t *testing.T) {
	want := []Kind{"search", "echo"}
	if got := Kinds(); !slices.Equal(got, want) {
		t.Errorf("Kinds() = %q, want %q", got, want)
	}
	for _, k := range want {
		if !k.Valid() {
			t.Errorf("Kind(%q).Valid() = false, want true", k)
		}
	}
	for _, k := range []Kind{"", "lookup", "Search", "echo "} {
		if k.Valid() {
			t.Errorf("Kind(%q).Valid() = true, want false", k)
		}
	}
	Kinds()[0] = "changed"
	if got := Kinds()[0]; got != KindSearch {
		t.Errorf("Kinds() shares its slice: Kinds()[0] = %q after a change", got)
	}
}
