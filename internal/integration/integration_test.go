package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/store"
)

const token = "Xq3tokenValue9Zz"

func TestParseRoomURL(t *testing.T) {
	for _, tc := range []struct {
		raw     string
		want    RoomURL
		wantErr string
	}{
		{raw: "https://hipchat.example/v2/room/1147/notification?auth_token=" + token,
			want: RoomURL{APIURL: "https://hipchat.example/v2/", Room: "1147", Token: token}},
		{raw: " https://hipchat.example:8443/chat/v2/room/Ops%20Room/notification?auth_token=" + token + "\n",
			want: RoomURL{APIURL: "https://hipchat.example:8443/chat/v2/", Room: "Ops Room", Token: token}},
		{raw: "http://hipchat.example/v2/room/1/notification?auth_token=" + token, wantErr: "must be an https URL"},
		{raw: "https://hipchat.example/v2/room/1/message?auth_token=" + token, wantErr: "/v2/room/{id_or_name}/notification"},
		{raw: "https://hipchat.example/v2/room//notification?auth_token=" + token, wantErr: "/v2/room/{id_or_name}/notification"},
		{raw: "https://hipchat.example/v2/room/1/notification", wantErr: "has no auth_token"},
		{raw: "https://hipchat.example/v2/room/1/notification?auth_token=", wantErr: "has no auth_token"},
		{raw: "::", wantErr: "not a URL"},
	} {
		got, err := ParseRoomURL(tc.raw)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRoomURL(%q) = %v, want an error with %q", tc.raw, err, tc.wantErr)
			} else if strings.Contains(err.Error(), token) {
				t.Errorf("ParseRoomURL(%q): the error shows the token: %v", tc.raw, err)
			}
		case err != nil || got != tc.want:
			t.Errorf("ParseRoomURL(%q) = %+v, %v; want %+v", tc.raw, got, err, tc.want)
		}
	}
	u, _ := ParseRoomURL("https://hipchat.example/v2/room/Ops%20Room/notification?auth_token=" + token)
	if got, want := u.String(), "https://hipchat.example/v2/room/Ops%20Room/notification?auth_token=REDACTED"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := Redact(`GET /x?a=1&auth_token=` + token + `&b=2 "AUTH_TOKEN=` + token + `"`); strings.Contains(got, token) ||
		got != `GET /x?a=1&auth_token=REDACTED&b=2 "AUTH_TOKEN=REDACTED"` {
		t.Errorf("Redact = %q", got)
	}
}

func TestReadRoomURL(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ops.url")
	raw := "https://hipchat.example/v2/room/7/notification?auth_token=" + token + "\n"
	if err := os.WriteFile(path, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadRoomURL(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("ReadRoomURL of a world-readable file = %v, want a refusal", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if u, err := ReadRoomURL(path); err != nil || u.Room != "7" || u.Token != token {
		t.Errorf("ReadRoomURL = %+v, %v", u, err)
	}
}

func TestSyncLookupRotate(t *testing.T) {
	ctx := context.Background()
	db, err := store.Open(filepath.Join(t.TempDir(), "hipconnect.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ops := Integration{Name: "ops", Room: RoomURL{APIURL: "https://hipchat.example/v2/", Room: "7", Token: token},
		Commands: []string{"echo"}, Reply: command.ReplyResponse}
	old := Integration{Name: "old", Room: ops.Room}
	if err := New(db, []Integration{ops, old}, nil).Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := db.Enqueue(ctx, addon.Job{OAuthID: old.OAuthID(), RoomID: 7, MessageID: "m"}); err != nil {
		t.Fatal(err)
	}

	// A restart with "old" no longer configured: its record and jobs go,
	// ops keeps its secret.
	first, err := Secret(ctx, db, "ops")
	if err != nil || len(first) < 43 {
		t.Fatalf("Secret = %q, %v; want 32 random bytes, encoded", first, err)
	}
	s := New(db, []Integration{ops}, nil)
	if err := s.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if again, _ := Secret(ctx, db, "ops"); again != first {
		t.Errorf("the secret changed across a restart")
	}
	if _, err := db.Installation(ctx, old.OAuthID()); !addon.IsNotFound(err) {
		t.Errorf("the record of an integration no longer configured = %v, want NotFound", err)
	}
	if jobs, _ := db.Pending(ctx, 0); len(jobs) != 0 {
		t.Errorf("%d jobs of the removed integration left", len(jobs))
	}
	if in, err := s.Lookup(ctx, "ops", first); err != nil || in.Name != "ops" {
		t.Errorf("Lookup with the secret = %v", err)
	}
	for _, bad := range []string{"", first[:len(first)-1], first + "x", strings.ToUpper(first)} {
		if _, err := s.Lookup(ctx, "ops", bad); !addon.IsNotFound(err) {
			t.Errorf("Lookup with %q succeeded", bad)
		}
	}
	if _, err := s.Lookup(ctx, "old", first); !addon.IsNotFound(err) {
		t.Error("Lookup of an integration not configured succeeded")
	}

	next, err := s.Rotate(ctx, "ops")
	if err != nil || next == first {
		t.Fatalf("Rotate = %q, %v", next, err)
	}
	if _, err := s.Lookup(ctx, "ops", first); !addon.IsNotFound(err) {
		t.Error("the old secret still works after Rotate")
	}
	if _, err := s.Lookup(ctx, "ops", next); err != nil {
		t.Error("the new secret does not work")
	}
	if stored, _ := Secret(ctx, db, "ops"); stored != next {
		t.Error("the new secret is not stored")
	}
	// Another node on the same store (PostgreSQL) takes the rotation at once.
	other := New(db, []Integration{ops}, nil)
	if _, err := other.Lookup(ctx, "ops", next); err != nil {
		t.Errorf("another node refuses the rotated secret: %v", err)
	}
	if _, err := other.Lookup(ctx, "ops", first); !addon.IsNotFound(err) {
		t.Errorf("another node still accepts the old secret: %v", err)
	}

	// notify goes through the outbox with the integration's queue room.
	j, err := Notify(ctx, db, ops, addon.Notification{Message: "deploy done", MessageFormat: "text"}, time.Now())
	if err != nil || j.OAuthID != ops.OAuthID() || j.RoomID != 7 || j.Reply == nil || j.Reply.Message != "deploy done" {
		t.Errorf("Notify = %+v, %v", j, err)
	}
	if got := (Integration{Room: RoomURL{Room: "Ops Room"}}).QueueRoom(); got != 1 {
		t.Errorf("QueueRoom of a room named by name = %d, want 1", got)
	}
	if !ops.InRoom(7, "") || ops.InRoom(8, "7") || !(Integration{Room: RoomURL{Room: "Ops Room"}}).InRoom(99, "ops room") {
		t.Error("InRoom does not match the room URL's id or name")
	}
}
