package hipchat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// maxTokenLife bounds the lifetime RequestToken believes expires_in.
const maxTokenLife = 24 * time.Hour

// ErrInvalidClient is in the chain of RequestToken's error when HipChat
// answered 401: it does not know the OAuth client (any more). It is how an
// uninstall is confirmed, as opposed to a 400 for a bad request.
var ErrInvalidClient = errors.New("hipchat does not know the oauth client")

// RequestToken asks HipChat for an access token for inst with the client
// credentials grant (PROTOCOL.md section 4): POST inst.TokenURL with HTTP
// basic auth oauthId:oauthSecret and the form
// grant_type=client_credentials&scope=<scopes, space separated> (scope is
// left out when scopes is empty).
//
// inst.TokenURL's host must be allowed (else Forbidden, no request made).
// HipChat answering 400 or 401 means the credentials were refused
// (Unauthorized, "hipchat refused the credentials"); any other failure is
// Unavailable. The token's ExpiresAt is the time the request was sent plus
// expires_in; its Scope is HipChat's answer, or the requested scopes when
// HipChat does not say. Neither the secret nor the token appears in an error.
func (c *Client) RequestToken(ctx context.Context, inst addon.Installation, scopes []string) (addon.Token, error) {
	const op = "request token"
	if inst.OAuthID == "" || inst.OAuthSecret == "" {
		return addon.Token{}, opError(op, addon.Errorf(addon.Invalid, "installation has no oauth credentials"))
	}
	u, err := c.checkURL("token url", inst.TokenURL)
	if err != nil {
		return addon.Token{}, opError(op, err)
	}
	scope := strings.Join(scopes, " ")
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return addon.Token{}, opError(op, addon.Wrap(addon.Invalid, err, "bad token url"))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// The frameworks send the credentials as they are (node's request "auth"
	// option), not form-encoded first as RFC 6749 section 2.3.1 suggests.
	req.SetBasicAuth(inst.OAuthID, inst.OAuthSecret)

	sent := c.now()
	resp, err := c.do(req)
	if err != nil {
		return addon.Token{}, opError(op, err)
	}
	defer drain(resp)
	body, readErr := readBody(resp)

	switch {
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusUnauthorized:
		err := peerError(resp.StatusCode, body, inst.OAuthSecret)
		if resp.StatusCode == http.StatusUnauthorized {
			err = fmt.Errorf("%w: %w", ErrInvalidClient, err)
		}
		return addon.Token{}, opError(op, &addon.Error{
			Kind: addon.Unauthorized,
			Msg:  "hipchat refused the credentials",
			Err:  err,
		})
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return addon.Token{}, opError(op, &addon.Error{
			Kind: addon.Unavailable,
			Msg:  "hipchat's token endpoint failed",
			Err:  peerError(resp.StatusCode, body, inst.OAuthSecret),
		})
	case readErr != nil:
		return addon.Token{}, opError(op, readErr)
	}

	var tr struct {
		AccessToken string  `json:"access_token"`
		ExpiresIn   float64 `json:"expires_in"`
		Scope       string  `json:"scope"`
		TokenType   string  `json:"token_type"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		// The json error may quote the body, which holds the token: drop it.
		return addon.Token{}, opError(op, addon.Errorf(addon.Unavailable, "hipchat's token answer is not valid json"))
	}
	if tr.AccessToken == "" {
		return addon.Token{}, opError(op, addon.Errorf(addon.Unavailable, "hipchat's token answer has no access_token"))
	}
	if tr.ExpiresIn <= 0 {
		return addon.Token{}, opError(op, addon.Errorf(addon.Unavailable, "hipchat's token answer has no positive expires_in"))
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer") {
		return addon.Token{}, opError(op, addon.Errorf(addon.Unavailable, "hipchat issued a %q token, not a bearer token", tr.TokenType))
	}
	if tr.Scope == "" {
		tr.Scope = scope
	}
	// Tokens live about an hour; a longer claim is cut to maxTokenLife so a
	// wild value cannot overflow or pin a token in the cache for ever.
	life := maxTokenLife
	if tr.ExpiresIn < maxTokenLife.Seconds() {
		life = time.Duration(tr.ExpiresIn * float64(time.Second))
	}
	return addon.Token{
		AccessToken: tr.AccessToken,
		Scope:       tr.Scope,
		ExpiresAt:   sent.Add(life),
	}, nil
}
