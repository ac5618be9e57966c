package hipchat

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// DefaultTokenMargin is how long before its expiry a cached token is no
// longer handed out (the seed tutorial's 60 s).
const DefaultTokenMargin = 60 * time.Second

// fetchTimeout bounds one shared token request: it runs detached from the
// context of the Get that started it, so that one caller giving up does
// not fail the others waiting for the same token.
const fetchTimeout = time.Minute

// TokenStore is the part of addon.Store that Tokens uses; any addon.Store
// is one. Token returns an error of kind addon.NotFound when nothing is
// stored.
type TokenStore interface {
	PutToken(ctx context.Context, oauthID string, t addon.Token) error
	Token(ctx context.Context, oauthID string) (addon.Token, error)
	DeleteToken(ctx context.Context, oauthID string) error
}

var _ TokenStore = addon.Store(nil)

// Tokens hands out access tokens per installation, cached in a TokenStore
// (the daemon's addon.Store) so that they survive restarts (PROTOCOL.md
// section 4). A stored token is reused while addon.Token.Valid(now, margin)
// holds and it covers the requested scopes; otherwise HipChat is asked, and
// concurrent Gets for one installation share that one request. Tokens is
// safe for concurrent use.
type Tokens struct {
	c      *Client
	st     TokenStore
	scopes []string // sorted, without duplicates
	margin time.Duration

	mu      sync.Mutex
	flights map[string]*flight // by OAuthID

	// storeMu makes Invalidate's compare-and-delete atomic with respect to
	// the puts of this Tokens (the store itself offers no such operation).
	storeMu sync.Mutex
}

// flight is one token request shared by every Get waiting for it.
type flight struct {
	done  chan struct{} // closed when token and err are set
	token string
	err   error
}

// NewTokens returns a token cache that asks HipChat through c for tokens
// with the given scopes and keeps them in st. margin <= 0 means
// DefaultTokenMargin.
func NewTokens(c *Client, st TokenStore, scopes []string, margin time.Duration) *Tokens {
	if margin <= 0 {
		margin = DefaultTokenMargin
	}
	set := map[string]bool{}
	var sorted []string
	for _, s := range scopes {
		if s != "" && !set[s] {
			set[s] = true
			sorted = append(sorted, s)
		}
	}
	sort.Strings(sorted)
	return &Tokens{c: c, st: st, scopes: sorted, margin: margin, flights: map[string]*flight{}}
}

// Get returns an access token for inst that stays valid for at least the
// margin: the stored one if it is still good, else a new one from HipChat,
// stored before it is returned. A store error or a failed token request is
// returned as is (see [Client.RequestToken] for its kinds). Get returns
// early with ctx's error when ctx ends; the request it may have started
// goes on for the other callers.
func (t *Tokens) Get(ctx context.Context, inst addon.Installation) (string, error) {
	const op = "get token"
	if inst.OAuthID == "" {
		return "", opError(op, addon.Errorf(addon.Invalid, "installation has no oauth id"))
	}
	if tok, ok, err := t.stored(ctx, inst.OAuthID); err != nil {
		return "", opError(op, err)
	} else if ok {
		return tok, nil
	}

	t.mu.Lock()
	f := t.flights[inst.OAuthID]
	if f == nil {
		f = &flight{done: make(chan struct{})}
		t.flights[inst.OAuthID] = f
		go t.fetch(context.WithoutCancel(ctx), inst, f)
	}
	t.mu.Unlock()

	select {
	case <-f.done:
		return f.token, f.err // f.err already says "hipchat: ...:"
	case <-ctx.Done():
		return "", opError(op, ctx.Err())
	}
}

// fetch runs one shared token request and completes f.
func (t *Tokens) fetch(ctx context.Context, inst addon.Installation, f *flight) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	defer func() {
		// Leave the map before waking the waiters: a Get that arrives
		// afterwards finds the stored token instead of a finished flight.
		t.mu.Lock()
		delete(t.flights, inst.OAuthID)
		t.mu.Unlock()
		close(f.done)
	}()

	// A flight that ended just before this one started may have stored a
	// token since the caller looked.
	if tok, ok, err := t.stored(ctx, inst.OAuthID); err != nil {
		f.err = opError("get token", err)
		return
	} else if ok {
		f.token = tok
		return
	}
	tok, err := t.c.RequestToken(ctx, inst, t.scopes)
	if err != nil {
		f.err = err
		return
	}
	t.storeMu.Lock()
	err = t.st.PutToken(ctx, inst.OAuthID, tok)
	t.storeMu.Unlock()
	if err != nil {
		f.err = opError("store token", err)
		return
	}
	f.token = tok.AccessToken
}

// stored returns the stored token of oauthID if it can be handed out now.
func (t *Tokens) stored(ctx context.Context, oauthID string) (string, bool, error) {
	tok, err := t.st.Token(ctx, oauthID)
	if addon.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	// addon.Token.Valid is "now + margin is before ExpiresAt": a token is
	// refused margin before it expires, never reused after (a public
	// framework had this comparison inverted).
	if !tok.Valid(t.c.now(), t.margin) || !coversScopes(tok.Scope, t.scopes) {
		return "", false, nil
	}
	return tok.AccessToken, true, nil
}

// coversScopes reports whether the space-separated scope string has every
// one of want.
func coversScopes(scope string, want []string) bool {
	have := strings.Fields(scope)
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Invalidate forgets the stored token of inst if it is still token (one
// HipChat refused), so that the next Get asks for a new one; a token stored
// since by someone else is kept. Nothing stored is not an error.
func (t *Tokens) Invalidate(ctx context.Context, inst addon.Installation, token string) error {
	const op = "invalidate token"
	t.storeMu.Lock()
	defer t.storeMu.Unlock()
	tok, err := t.st.Token(ctx, inst.OAuthID)
	if addon.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return opError(op, err)
	}
	if tok.AccessToken != token {
		return nil
	}
	if err := t.st.DeleteToken(ctx, inst.OAuthID); err != nil && !addon.IsNotFound(err) {
		return opError(op, err)
	}
	return nil
}

// Do gets a token for inst and calls fn with it. If fn's error wraps
// [ErrTokenRejected], Do invalidates that token, gets a new one and calls
// fn exactly once more, returning that call's error. Any other error of fn
// is returned as is.
func (t *Tokens) Do(ctx context.Context, inst addon.Installation, fn func(token string) error) error {
	tok, err := t.Get(ctx, inst)
	if err != nil {
		return err
	}
	err = fn(tok)
	if !errors.Is(err, ErrTokenRejected) {
		return err
	}
	if ierr := t.Invalidate(ctx, inst, tok); ierr != nil {
		return errors.Join(err, ierr)
	}
	tok, err = t.Get(ctx, inst)
	if err != nil {
		return err
	}
	return fn(tok)
}
