package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func installationCases() []testCase {
	return []testCase{
		{"PutGetReplace", testInstallationPutGetReplace},
		{"ListOrderedByOAuthID", testInstallationList},
		{"AbsentNotFound", testInstallationAbsent},
	}
}

// testInstallationPutGetReplace: Installation returns what was put, and
// PutInstallation of the same OAuthID replaces it.
func testInstallationPutGetReplace(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	want := putInstallation(t, s, "a/b c")
	putInstallation(t, s, "other")
	got, err := s.Installation(ctx, "a/b c")
	if err != nil || !sameInstallation(got, want) {
		t.Fatalf("Installation = %+v, %v; want %+v", got, err, want)
	}

	up := want
	up.RoomID = 99
	up.OAuthSecret = "rotated"
	up.APIURL = "https://hipchat2.example/v2/"
	up.UpdatedAt = want.UpdatedAt.Add(48 * time.Hour)
	if err := s.PutInstallation(ctx, up); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Installation(ctx, "a/b c"); err != nil || !sameInstallation(got, up) {
		t.Errorf("Installation after replace = %+v, %v; want %+v", got, err, up)
	}
	all, err := s.Installations(ctx)
	if err != nil || len(all) != 2 {
		t.Fatalf("Installations after replace = %d, %v; want 2 (replace must not add)", len(all), err)
	}
	if got, err := s.Installation(ctx, "other"); err != nil || !sameInstallation(got, installation("other")) {
		t.Errorf("the other installation changed: %+v, %v", got, err)
	}
}

// testInstallationList: Installations returns every installation in byte
// order of OAuthID, whatever order they were put in.
func testInstallationList(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	if all, err := s.Installations(ctx); err != nil || len(all) != 0 {
		t.Fatalf("Installations of an empty store = %+v, %v; want none", all, err)
	}
	put := []string{"c", "ab", "B", "a/b c", "a", "a%2F"}
	for _, id := range put {
		putInstallation(t, s, id)
	}
	all, err := s.Installations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, inst := range all {
		got = append(got, inst.OAuthID)
		if !sameInstallation(inst, installation(inst.OAuthID)) {
			t.Errorf("Installations[%d] = %+v, want %+v", i, inst, installation(inst.OAuthID))
		}
	}
	if want := sortedCopy(put); !slices.Equal(got, want) {
		t.Errorf("Installations order = %q, want %q (byte order)", got, want)
	}
}

// testInstallationAbsent: a lookup of an absent installation is NotFound.
func testInstallationAbsent(t *testing.T, b Backend) {
	_, err := b.Store.Installation(t.Context(), "nope")
	wantNotFound(t, "Installation of an empty store", err)
	putInstallation(t, b.Store, "nope2")
	_, err = b.Store.Installation(t.Context(), "nope")
	wantNotFound(t, "Installation of an absent id", err)
}

func tokenCases() []testCase {
	return []testCase{
		{"PutGetDelete", testTokenPutGetDelete},
		{"AbsentInstallationNotFound", testTokenAbsentInstallation},
	}
}

// testTokenPutGetDelete: Token returns what was put last; DeleteToken
// forgets it; tokens of installations are apart.
func testTokenPutGetDelete(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	putInstallation(t, s, "a")
	putInstallation(t, s, "b")
	_, err := s.Token(ctx, "a")
	wantNotFound(t, "Token before PutToken", err)

	tok := addon.Token{AccessToken: "tok-a", Scope: "send_notification", ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	other := addon.Token{AccessToken: "tok-b", Scope: "admin_room", ExpiresAt: time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)}
	for id, tk := range map[string]addon.Token{"a": tok, "b": other} {
		if err := s.PutToken(ctx, id, tk); err != nil {
			t.Fatalf("PutToken(%s): %v", id, err)
		}
	}
	if got, err := s.Token(ctx, "a"); err != nil || !sameToken(got, tok) {
		t.Errorf("Token(a) = %+v, %v; want %+v", got, err, tok)
	}
	tok2 := tok
	tok2.AccessToken, tok2.ExpiresAt = "tok-a-2", tok.ExpiresAt.Add(time.Hour)
	if err := s.PutToken(ctx, "a", tok2); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Token(ctx, "a"); err != nil || !sameToken(got, tok2) {
		t.Errorf("Token(a) after replace = %+v, %v; want %+v", got, err, tok2)
	}
	if err := s.DeleteToken(ctx, "a"); err != nil {
		t.Fatalf("DeleteToken: %v", err)
	}
	_, err = s.Token(ctx, "a")
	wantNotFound(t, "Token after DeleteToken", err)
	if got, err := s.Token(ctx, "b"); err != nil || !sameToken(got, other) {
		t.Errorf("Token(b) after deleting a's = %+v, %v; want %+v", got, err, other)
	}
	if _, err := s.Installation(ctx, "a"); err != nil {
		t.Errorf("DeleteToken took the installation along: %v", err)
	}
}

// testTokenAbsentInstallation: PutToken for an absent installation is
// NotFound and stores nothing.
func testTokenAbsentInstallation(t *testing.T, b Backend) {
	ctx := t.Context()
	err := b.Store.PutToken(ctx, "ghost", addon.Token{AccessToken: "x", ExpiresAt: time.Now().Add(time.Hour)})
	wantNotFound(t, "PutToken for an absent installation", err)
	_, err = b.Store.Token(ctx, "ghost")
	wantNotFound(t, "Token after a refused PutToken", err)
	putInstallation(t, b.Store, "ghost")
	_, err = b.Store.Token(ctx, "ghost")
	wantNotFound(t, "Token of a new installation after a refused PutToken", err)
}
