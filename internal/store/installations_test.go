package store

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func TestInstallationsCRUD(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)

	if _, err := d.Installation(ctx, "nope"); !addon.IsNotFound(err) {
		t.Errorf("Installation(absent) err = %v, want NotFound", err)
	}
	all, err := d.Installations(ctx)
	if err != nil || len(all) != 0 {
		t.Errorf("Installations on empty store = %v, %v", all, err)
	}

	for _, id := range []string{"c", "a", "b"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatalf("PutInstallation(%s): %v", id, err)
		}
	}
	got, err := d.Installation(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if want := inst("b"); got != want {
		t.Errorf("Installation(b) = %+v, want %+v", got, want)
	}

	// Replace.
	up := inst("b")
	up.RoomID = 42
	up.UpdatedAt = time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := d.PutInstallation(ctx, up); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Installation(ctx, "b"); got != up {
		t.Errorf("after replace Installation(b) = %+v, want %+v", got, up)
	}

	all, err = d.Installations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, i := range all {
		ids = append(ids, i.OAuthID)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(ids, want) {
		t.Errorf("Installations order = %v, want %v", ids, want)
	}

	if err := d.DeleteInstallation(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Installation(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Installation after delete err = %v, want NotFound", err)
	}
	if err := d.DeleteInstallation(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("second DeleteInstallation err = %v, want NotFound", err)
	}
}

func TestPutInstallationInvalid(t *testing.T) {
	d := openTest(t)
	for name, id := range map[string]string{"empty": "", "nul": "a\x00b"} {
		t.Run(name, func(t *testing.T) {
			err := d.PutInstallation(context.Background(), inst(id))
			if got, want := addon.KindOf(err), addon.Invalid; got != want {
				t.Errorf("kind = %s (%v), want %s", got, err, want)
			}
		})
	}
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	tok := addon.Token{AccessToken: "abc", Scope: "send_notification", ExpiresAt: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}

	if err := d.PutToken(ctx, "a", tok); !addon.IsNotFound(err) {
		t.Errorf("PutToken for absent installation err = %v, want NotFound", err)
	}
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Token(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Token before put err = %v, want NotFound", err)
	}
	if err := d.PutToken(ctx, "a", tok); err != nil {
		t.Fatal(err)
	}
	got, err := d.Token(ctx, "a")
	if err != nil || got != tok {
		t.Errorf("Token = %+v, %v; want %+v", got, err, tok)
	}
	tok2 := tok
	tok2.AccessToken = "def"
	if err := d.PutToken(ctx, "a", tok2); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.Token(ctx, "a"); got != tok2 {
		t.Errorf("Token after replace = %+v, want %+v", got, tok2)
	}
	if err := d.DeleteToken(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Token(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Token after delete err = %v, want NotFound", err)
	}
	if err := d.DeleteToken(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("DeleteToken of absent token err = %v, want NotFound", err)
	}
}

func TestDeleteInstallationRemovesOnlyItsData(t *testing.T) {
	ctx := context.Background()
	d := openTest(t)
	// "a" is a prefix of "ab": the seen-key separator must keep them apart.
	for _, id := range []string{"a", "ab"} {
		if err := d.PutInstallation(ctx, inst(id)); err != nil {
			t.Fatal(err)
		}
		if err := d.PutToken(ctx, id, addon.Token{AccessToken: "t-" + id}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"m1", "m2"} {
			if _, _, err := d.Enqueue(ctx, addon.Job{OAuthID: id, MessageID: m}); err != nil {
				t.Fatal(err)
			}
		}
	}

	if err := d.DeleteInstallation(ctx, "a"); err != nil {
		t.Fatal(err)
	}

	if _, err := d.Token(ctx, "a"); !addon.IsNotFound(err) {
		t.Errorf("Token(a) err = %v, want NotFound", err)
	}
	if got, err := d.Token(ctx, "ab"); err != nil || got.AccessToken != "t-ab" {
		t.Errorf("Token(ab) = %+v, %v", got, err)
	}
	pend, err := d.Pending(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != 2 {
		t.Fatalf("Pending = %d jobs, want 2 of ab", len(pend))
	}
	for _, j := range pend {
		if j.OAuthID != "ab" {
			t.Errorf("job %d of %q survived", j.ID, j.OAuthID)
		}
	}
	s, err := d.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.SeenMessages, 2; got != want {
		t.Errorf("seen ids left = %d, want %d (of ab)", got, want)
	}

	// A re-install starts with a clean slate: its old message ids are new again.
	if err := d.PutInstallation(ctx, inst("a")); err != nil {
		t.Fatal(err)
	}
	if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "a", MessageID: "m1"}); err != nil || !isNew {
		t.Errorf("Enqueue after re-install: new=%v err=%v, want true", isNew, err)
	}
	if _, isNew, err := d.Enqueue(ctx, addon.Job{OAuthID: "ab", MessageID: "m1"}); err != nil || isNew {
		t.Errorf("Enqueue duplicate of ab: new=%v err=%v, want false", isNew, err)
	}
}
