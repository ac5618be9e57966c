package hipchat_test

import (
	"context"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// BenchmarkVerify is the JWT check every webhook makes (docs/performance.md):
// decode, installation lookup (an in-memory store here), HS256, claims.
func BenchmarkVerify(b *testing.B) {
	inst := addon.Installation{OAuthID: "cba74fbc-1b26-407e-811d-b9e377e4c440", OAuthSecret: "NothWQ2HtSdsidQxxxkmMUzsACNzPSR"}
	v := &hipchat.Verifier{Store: newMemStore(inst)}
	now := time.Now()
	tok, err := hipchat.SignJWT(inst.OAuthID, inst.OAuthSecret, hipchat.Claims{Subject: "1661743", RoomID: 100,
		UserTZ: "Europe/Berlin", IssuedAt: now, ExpiresAt: now.Add(50 * time.Minute), ID: "5f0e6b6c1a2b3c4d"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
