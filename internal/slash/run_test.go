package slash

import (
	"context"
	"strings"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestRunCommand(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	ctx := context.Background()

	n, err := f.sv.Run(ctx, f.inst, addon.Job{RoomID: testRoom, Command: "hascode", Args: "java"})
	if err != nil || strings.Count(n.Message, "<li>") != 5 {
		t.Errorf("default run: %d items, %v; want the command's 5", strings.Count(n.Message, "<li>"), err)
	}
	if _, err := f.sv.SaveSettings(ctx, testOAuthID, Settings{Disabled: map[string]bool{"echo": true}, MaxResults: 2}); err != nil {
		t.Fatal(err)
	}
	n, err = f.sv.Run(ctx, f.inst, addon.Job{RoomID: testRoom, Command: "hascode", Args: "java"})
	if err != nil || strings.Count(n.Message, "<li>") != 2 {
		t.Errorf("run with 2 results: %q, %v", n.Message, err)
	}
	n, err = f.sv.Run(ctx, f.inst, addon.Job{RoomID: testRoom, Command: "echo", Args: "hello"})
	if err != nil || !strings.Contains(n.Message, "turned off") {
		t.Errorf("disabled echo = %q, %v", n.Message, err)
	}
	if h, _ := f.sv.History(ctx, testOAuthID, testRoom); len(h) != 2 {
		t.Errorf("history = %d searches, want 2", len(h))
	}
	if len(f.Glances()) != 2 {
		t.Errorf("glance pushes = %d, want 2", len(f.Glances()))
	}
	f.blog.Close()
	n, err = f.sv.Run(ctx, f.inst, addon.Job{RoomID: testRoom, Command: "hascode", Args: "java"})
	if err == nil || n.Color != "red" {
		t.Errorf("failed search = %+v, %v; want a red notice and an error", n, err)
	}
}

// TestRequests: a search that Run records (and follows with a glance push)
// counts two requests under the token; echo, a search without a term, a
// set reply or an unknown command one.
func TestRequests(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, tt := range []struct {
		j    addon.Job
		want int
	}{
		{addon.Job{Command: "hascode", Args: "java"}, 2},
		{addon.Job{Command: "hascode"}, 1},
		{addon.Job{Command: "echo", Args: "hi"}, 1},
		{addon.Job{Command: "nope", Args: "x"}, 1},
		{addon.Job{Command: "hascode", Args: "java", Reply: &addon.Notification{Message: "hi"}}, 1},
	} {
		if got := f.sv.Requests(tt.j); got != tt.want {
			t.Errorf("Requests(%+v) = %d, want %d", tt.j, got, tt.want)
		}
	}
	// Run agrees: one glance push for the search, none for echo.
	ctx := context.Background()
	for _, j := range []addon.Job{{RoomID: testRoom, Command: "hascode", Args: "java"}, {RoomID: testRoom, Command: "echo", Args: "hi"}} {
		if _, err := f.sv.Run(ctx, f.inst, j); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.Glances()); n != 1 {
		t.Errorf("%d glance pushes, want 1", n)
	}
}
