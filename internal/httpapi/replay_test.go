package httpapi

import (
	"fmt"
	"testing"
	"time"
)

func TestReplayCache(t *testing.T) {
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	exp := now.Add(time.Minute)
	c := newReplayCache(3)
	if !c.admit("i1/a", []byte("body"), exp, now) {
		t.Fatal("first use refused")
	}
	if !c.admit("i1/a", []byte("body"), exp, now.Add(time.Second)) {
		t.Error("same JWT, same body (a redelivery) refused")
	}
	if c.admit("i1/a", []byte("other body"), exp, now.Add(time.Second)) {
		t.Error("same JWT with another body admitted")
	}
	if !c.admit("i2/a", []byte("other body"), exp, now) {
		t.Error("same jti of another issuer refused")
	}
	if !c.admit("i1/a", []byte("other body"), exp, exp) {
		t.Error("an expired entry still refuses (the JWT itself is refused by then)")
	}
	// Full: the oldest entries go first, and the newest stay.
	for i := range 10 {
		c.admit(fmt.Sprint("fill/", i), []byte("x"), exp.Add(time.Hour), exp)
	}
	if len(c.seen) > 3 {
		t.Errorf("cache holds %d entries, bound 3", len(c.seen))
	}
	if c.admit("fill/9", []byte("y"), exp.Add(time.Hour), exp) {
		t.Error("the newest entry was evicted")
	}
}
