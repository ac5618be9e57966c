package hipchat_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

var tokenScopes = []string{"send_notification", "view_room"}

func TestTokensCachedAndPersisted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	st := newMemStore(e.inst)
	tk := hipchat.NewTokens(e.c, st, tokenScopes, 0)

	t1, err := tk.Get(ctx, e.inst)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	t2, err := tk.Get(ctx, e.inst)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if t1 != t2 {
		t.Error("second Get returned a different token")
	}
	stored, err := st.Token(ctx, e.inst.OAuthID)
	if err != nil || stored.AccessToken != t1 {
		t.Fatalf("stored token = %+v, %v; want the token handed out", stored, err)
	}

	// A new Tokens on the same store, as after a restart.
	tk2 := hipchat.NewTokens(e.c, st, tokenScopes, 0)
	t3, err := tk2.Get(ctx, e.inst)
	if err != nil {
		t.Fatalf("Get after restart: %v", err)
	}
	if t3 != t1 {
		t.Error("Get after restart asked for a new token")
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

func TestTokensExpiry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	st := newMemStore(e.inst)
	tk := hipchat.NewTokens(e.c, st, tokenScopes, 0) // margin 60 s; tokens live 3599 s

	t1, err := tk.Get(ctx, e.inst)
	if err != nil {
		t.Fatal(err)
	}
	// One second before the margin starts: still the cached token.
	e.clock.Advance((3599 - 60 - 1) * time.Second)
	if got, err := tk.Get(ctx, e.inst); err != nil || got != t1 {
		t.Fatalf("Get 1 s before the margin = new token %v (err %v), want the cached one", got != t1, err)
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 1 {
		t.Fatalf("token requests = %d, want 1", got)
	}
	// Inside the margin: a new token.
	e.clock.Advance(time.Second)
	t2, err := tk.Get(ctx, e.inst)
	if err != nil {
		t.Fatal(err)
	}
	if t2 == t1 {
		t.Error("Get inside the margin returned the old token")
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 2 {
		t.Fatalf("token requests = %d, want 2", got)
	}
	// Long after expiry (the inverted check would reuse it): a new token.
	e.clock.Advance(5 * time.Hour)
	t3, err := tk.Get(ctx, e.inst)
	if err != nil {
		t.Fatal(err)
	}
	if t3 == t2 {
		t.Error("Get after expiry returned the expired token")
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 3 {
		t.Errorf("token requests = %d, want 3", got)
	}
}

func TestTokensScopes(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	st := newMemStore(e.inst)
	narrow := hipchat.NewTokens(e.c, st, []string{"send_notification"}, 0)
	if _, err := narrow.Get(ctx, e.inst); err != nil {
		t.Fatal(err)
	}
	// A token for fewer scopes does not serve a wider set.
	wide := hipchat.NewTokens(e.c, st, tokenScopes, 0)
	if _, err := wide.Get(ctx, e.inst); err != nil {
		t.Fatal(err)
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 2 {
		t.Errorf("token requests = %d, want 2", got)
	}
	// The wider token serves the narrower set.
	if _, err := narrow.Get(ctx, e.inst); err != nil {
		t.Fatal(err)
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 2 {
		t.Errorf("token requests = %d, want still 2", got)
	}
}

func TestTokensConcurrentGetsShareOneRequest(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	// Hold the token answer back so that every Get arrives while it is
	// under way.
	release := make(chan struct{})
	e.hc.SetFault(hipchattest.OnPath(hipchattest.PathToken, func(w http.ResponseWriter, r *http.Request) bool {
		<-release
		return false
	}))
	tk := hipchat.NewTokens(e.c, newMemStore(e.inst), tokenScopes, 0)

	const n = 50
	var wg sync.WaitGroup
	tokens := make([]string, n)
	errs := make([]error, n)
	var started sync.WaitGroup
	started.Add(n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Done()
			tokens[i], errs[i] = tk.Get(ctx, e.inst)
		}()
	}
	started.Wait()
	time.Sleep(50 * time.Millisecond) // let the Gets reach the shared request
	close(release)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Get %d: %v", i, errs[i])
		}
		if tokens[i] != tokens[0] {
			t.Fatalf("Get %d returned another token", i)
		}
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 1 {
		t.Errorf("token requests = %d, want exactly 1", got)
	}
}

func TestTokensGetGivesUpWithItsContext(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	e.hc.SetFault(hipchattest.OnPath(hipchattest.PathToken, func(w http.ResponseWriter, r *http.Request) bool {
		<-release
		return false
	}))
	st := newMemStore(e.inst)
	tk := hipchat.NewTokens(e.c, st, tokenScopes, 0)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := tk.Get(ctx, e.inst); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get = %v, want the context's deadline", err)
	}
	// The request it started goes on and serves the next caller.
	close(release)
	if _, err := tk.Get(context.Background(), e.inst); err != nil {
		t.Fatal(err)
	}
	if got := e.hc.TokenRequests(e.inst.OAuthID); got != 1 {
		t.Errorf("token requests = %d, want 1", got)
	}
}

func TestTokensRefusedCredentials(t *testing.T) {
	e := newEnv(t)
	st := newMemStore(e.inst)
	tk := hipchat.NewTokens(e.c, st, tokenScopes, 0)
	inst := e.inst
	inst.OAuthSecret = "forged-secret-123"
	_, err := tk.Get(context.Background(), inst)
	wantKind(t, err, addon.Unauthorized, "refused the credentials")
	mustNotLeak(t, err, inst.OAuthSecret, e.inst.OAuthSecret)
	if _, err := st.Token(context.Background(), inst.OAuthID); !addon.IsNotFound(err) {
		t.Errorf("a token was stored after a refusal: %v", err)
	}
}

func TestTokensDo(t *testing.T) {
	ctx := context.Background()
	n := addon.Notification{Message: "hello", MessageFormat: "text"}

	t.Run("revoked token: one refresh, one retry", func(t *testing.T) {
		e := newEnv(t)
		st := newMemStore(e.inst)
		tk := hipchat.NewTokens(e.c, st, tokenScopes, 0)
		first, err := tk.Get(ctx, e.inst)
		if err != nil {
			t.Fatal(err)
		}
		e.hc.RevokeTokens(e.inst.OAuthID)

		var used []string
		err = tk.Do(ctx, e.inst, func(tok string) error {
			used = append(used, tok)
			return e.c.SendNotification(ctx, e.inst, tok, 100, n)
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		if len(used) != 2 || used[0] != first || used[1] == first {
			t.Errorf("fn called %d times (first token reused: %v), want twice with a new token the second time",
				len(used), len(used) == 2 && used[1] == first)
		}
		if got := e.hc.TokenRequests(e.inst.OAuthID); got != 2 {
			t.Errorf("token requests = %d, want 2", got)
		}
		if got := len(e.hc.Notifications()); got != 1 {
			t.Errorf("notifications = %d, want 1", got)
		}
		stored, _ := st.Token(ctx, e.inst.OAuthID)
		if stored.AccessToken != used[1] {
			t.Error("the new token was not stored")
		}
	})

	t.Run("still rejected: gives up after one retry", func(t *testing.T) {
		e := newEnv(t)
		tk := hipchat.NewTokens(e.c, newMemStore(e.inst), tokenScopes, 0)
		calls := 0
		err := tk.Do(ctx, e.inst, func(tok string) error {
			calls++
			return fmt.Errorf("send: %w", addon.Wrap(addon.Unauthorized, hipchat.ErrTokenRejected, "rejected"))
		})
		if !errors.Is(err, hipchat.ErrTokenRejected) {
			t.Errorf("err = %v, want ErrTokenRejected", err)
		}
		if calls != 2 {
			t.Errorf("fn called %d times, want 2", calls)
		}
		if got := e.hc.TokenRequests(e.inst.OAuthID); got != 2 {
			t.Errorf("token requests = %d, want 2", got)
		}
	})

	t.Run("other errors are not retried", func(t *testing.T) {
		e := newEnv(t)
		tk := hipchat.NewTokens(e.c, newMemStore(e.inst), tokenScopes, 0)
		boom := errors.New("boom")
		calls := 0
		err := tk.Do(ctx, e.inst, func(string) error { calls++; return boom })
		if !errors.Is(err, boom) || calls != 1 {
			t.Errorf("Do = %v after %d calls, want boom after 1", err, calls)
		}
	})
}

func TestTokensInvalidate(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	st := newMemStore(e.inst)
	tk := hipchat.NewTokens(e.c, st, tokenScopes, 0)
	if err := st.PutToken(ctx, e.inst.OAuthID, addon.Token{AccessToken: "newer", ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := tk.Invalidate(ctx, e.inst, "older"); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Token(ctx, e.inst.OAuthID); err != nil || got.AccessToken != "newer" {
		t.Fatalf("Invalidate of an older token removed the newer one: %+v, %v", got, err)
	}
	if err := tk.Invalidate(ctx, e.inst, "newer"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Token(ctx, e.inst.OAuthID); !addon.IsNotFound(err) {
		t.Fatalf("token still stored after Invalidate: %v", err)
	}
	if err := tk.Invalidate(ctx, e.inst, "newer"); err != nil {
		t.Errorf("Invalidate with nothing stored = %v, want nil", err)
	}
}
