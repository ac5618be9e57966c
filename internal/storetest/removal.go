package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

func removalCases() []testCase {
	return []testCase{
		{"RemovesOnlyItsData", func(t *testing.T, b Backend) { testRemoval(t, b, "inst", "inst2") }},
		{"RemovesOnlyItsDataOfLongerID", func(t *testing.T, b Backend) { testRemoval(t, b, "inst2", "inst") }},
		{"AbsentNotFound", testRemovalAbsent},
	}
}

// The namespaces the removal cases keep installation data in.
const (
	nsUI    = "ui"
	nsOther = "storetest"
)

// installed is what the removal cases store for one installation.
type installed struct {
	oauthID string
	token   addon.Token
	jobs    []addon.Job // pending
	dead    addon.Job   // buried
	kv      map[string]map[string]string
}

// install stores an installation with a token, two pending jobs, a dead
// letter, their seen message ids, and keys under addon.KeyPrefix in two
// namespaces.
func install(t *testing.T, s addon.Store, oauthID string) installed {
	t.Helper()
	ctx := t.Context()
	in := installed{oauthID: oauthID}
	putInstallation(t, s, oauthID)
	in.token = addon.Token{AccessToken: "token-of-" + oauthID, ExpiresAt: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := s.PutToken(ctx, oauthID, in.token); err != nil {
		t.Fatal(err)
	}
	date := msgDate()
	for _, m := range []string{"m1", "m2"} {
		in.jobs = append(in.jobs, enqueue(t, s, job(oauthID, m, date)))
	}
	in.dead = enqueue(t, s, job(oauthID, "m3", date))
	if err := s.Bury(ctx, in.dead.ID, "room gone"); err != nil {
		t.Fatal(err)
	}
	p := addon.KeyPrefix(oauthID)
	in.kv = map[string]map[string]string{
		nsUI:    {p + "settings": `{"of":"` + oauthID + `"}`, p + "room/7": "history of " + oauthID},
		nsOther: {p + "data": "data of " + oauthID},
	}
	for ns, kvs := range in.kv {
		for k, v := range kvs {
			put(t, s.KV(ns), k, v)
		}
	}
	return in
}

// testRemoval: DeleteInstallation of gone takes its installation, token,
// jobs, dead letters, seen message ids and key/value entries along, and
// leaves everything of kept (whose OAuthID one of the two is a prefix of)
// and the keys of no installation as they were.
func testRemoval(t *testing.T, b Backend, gone, kept string) {
	ctx := t.Context()
	s := b.Store
	// The installation that sorts first is installed first either way.
	var g, k installed
	if gone < kept {
		g, k = install(t, s, gone), install(t, s, kept)
	} else {
		k, g = install(t, s, kept), install(t, s, gone)
	}
	put(t, s.KV(nsUI), "global/x", "of nobody")
	put(t, s.KV(nsOther), "installation", "of nobody")

	if err := s.DeleteInstallation(ctx, gone); err != nil {
		t.Fatalf("DeleteInstallation(%s): %v", gone, err)
	}

	wantGone(t, s, g)
	wantKept(t, s, k)
	wantValue(t, s.KV(nsUI), "global/x", "of nobody")
	wantValue(t, s.KV(nsOther), "installation", "of nobody")
	all, err := s.Installations(ctx)
	if err != nil || len(all) != 1 || all[0].OAuthID != kept {
		t.Errorf("Installations = %+v, %v; want only %s", all, err, kept)
	}
	wantNotFound(t, "second DeleteInstallation", s.DeleteInstallation(ctx, gone))

	// Installed again, it starts afresh: its messages are new again.
	putInstallation(t, s, gone)
	_, err = s.Token(ctx, gone)
	wantNotFound(t, "Token of the installation installed again", err)
	for _, j := range append(slices.Clone(g.jobs), g.dead) {
		if !isNew(t, s, job(gone, j.MessageID, j.MessageDate)) {
			t.Errorf("message %s of the removed installation still counts as seen", j.MessageID)
		}
	}
	for _, j := range append(slices.Clone(k.jobs), k.dead) {
		if isNew(t, s, job(kept, j.MessageID, j.MessageDate)) {
			t.Errorf("message %s of the kept installation %s no longer counts as seen", j.MessageID, kept)
		}
	}
}

// wantGone fails t unless nothing of in is stored.
func wantGone(t *testing.T, s addon.Store, in installed) {
	t.Helper()
	ctx := t.Context()
	_, err := s.Installation(ctx, in.oauthID)
	wantNotFound(t, "Installation of the removed installation", err)
	_, err = s.Token(ctx, in.oauthID)
	wantNotFound(t, "Token of the removed installation", err)
	for _, j := range pending(t, s) {
		if j.OAuthID == in.oauthID {
			t.Errorf("job %d of the removed installation still pending", j.ID)
		}
	}
	dead, err := s.DeadLetters(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, dl := range dead {
		if dl.Job.OAuthID == in.oauthID {
			t.Errorf("dead letter %d of the removed installation kept", dl.Job.ID)
		}
	}
	for ns, kvs := range in.kv {
		if got := keys(t, s.KV(ns), addon.KeyPrefix(in.oauthID)); len(got) != 0 {
			t.Errorf("%s keys of the removed installation kept: %q", ns, got)
		}
		for key := range kvs {
			_, err := s.KV(ns).Get(ctx, key)
			wantNotFound(t, "Get "+ns+" "+key+" of the removed installation", err)
		}
	}
}

// wantKept fails t unless everything of in is stored as it was.
func wantKept(t *testing.T, s addon.Store, in installed) {
	t.Helper()
	ctx := t.Context()
	if got, err := s.Installation(ctx, in.oauthID); err != nil || !sameInstallation(got, installation(in.oauthID)) {
		t.Errorf("Installation(%s) = %+v, %v; want it kept", in.oauthID, got, err)
	}
	if got, err := s.Token(ctx, in.oauthID); err != nil || !sameToken(got, in.token) {
		t.Errorf("Token(%s) = %+v, %v; want %+v", in.oauthID, got, err, in.token)
	}
	if got, want := ids(pending(t, s)), ids(in.jobs); !slices.Equal(got, want) {
		t.Errorf("Pending = %v, want the jobs of %s %v", got, in.oauthID, want)
	}
	if got, want := deadIDs(t, s), []uint64{in.dead.ID}; !slices.Equal(got, want) {
		t.Errorf("DeadLetters = %v, want the dead letter of %s %v", got, in.oauthID, want)
	}
	for ns, kvs := range in.kv {
		var want []string
		for key, v := range kvs {
			wantValue(t, s.KV(ns), key, v)
			want = append(want, key)
		}
		if got := keys(t, s.KV(ns), addon.KeyPrefix(in.oauthID)); !slices.Equal(got, sortedCopy(want)) {
			t.Errorf("%s keys of %s = %q, want %q", ns, in.oauthID, got, sortedCopy(want))
		}
	}
}

// testRemovalAbsent: DeleteInstallation of an absent installation is
// NotFound and changes nothing, not even keys under its KeyPrefix.
func testRemovalAbsent(t *testing.T, b Backend) {
	ctx := t.Context()
	s := b.Store
	wantNotFound(t, "DeleteInstallation on an empty store", s.DeleteInstallation(ctx, "ghost"))
	k := install(t, s, "kept")
	stray := addon.KeyPrefix("ghost") + "settings"
	put(t, s.KV(nsUI), stray, "stray")
	wantNotFound(t, "DeleteInstallation of an absent installation", s.DeleteInstallation(ctx, "ghost"))
	wantKept(t, s, k)
	wantValue(t, s.KV(nsUI), stray, "stray")
}
