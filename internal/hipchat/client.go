package hipchat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/outbound"
)

// maxResponseBytes caps every response body the client reads from HipChat.
const maxResponseBytes = 1 << 20

// maxRedirects is how many redirects one call follows (as net/http's default).
const maxRedirects = 10

// Client makes the calls the add-on sends to a HipChat Server. Its fields are
// set once before use; a Client is then safe for concurrent use.
type Client struct {
	// HTTP performs the requests. The daemon supplies one that also enforces
	// the allowlist at dial time and sets timeouts. Nil means a client with a
	// 30 s timeout.
	HTTP *http.Client
	// Allowed reports whether a host (a name or an IP, lowercase, without a
	// port) may be contacted. Every URL that came from a peer is checked
	// with it before any request is made, redirect targets included. Nil
	// allows nothing.
	Allowed func(host string) bool
	// UserAgent is sent with every request when not empty.
	UserAgent string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// checkURL parses raw, which names what it is in error messages, and
// refuses it unless it is an absolute http(s) URL without credentials whose
// host is allowed.
func (c *Client) checkURL(what, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, addon.Errorf(addon.Invalid, "%s is not an absolute http(s) url", what)
	}
	if u.User != nil {
		return nil, addon.Errorf(addon.Invalid, "%s carries credentials", what)
	}
	if err := c.checkHost(what, u); err != nil {
		return nil, err
	}
	return u, nil
}

func (c *Client) checkHost(what string, u *url.URL) error {
	host := strings.ToLower(u.Hostname())
	if c.Allowed == nil || !c.Allowed(host) {
		return addon.Errorf(addon.Forbidden, "%s: host %q is not on the allowlist", what, host)
	}
	return nil
}

// do sends req with c's HTTP client, refusing redirects to hosts that are
// not allowed. The caller closes the response body.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	base := c.HTTP
	if base == nil {
		base = &http.Client{Timeout: 30 * time.Second}
	}
	hc := *base // shallow copy: same Transport, own redirect policy
	next := base.CheckRedirect
	hc.CheckRedirect = func(r *http.Request, via []*http.Request) error {
		if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
			return addon.Errorf(addon.Forbidden, "redirect to a non-http(s) url")
		}
		if err := c.checkHost("redirect", r.URL); err != nil {
			return err
		}
		if next != nil {
			return next(r, via)
		}
		if len(via) >= maxRedirects {
			return errors.New("too many redirects")
		}
		return nil
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, transportError(req.Context(), err)
	}
	return resp, nil
}

// transportError classifies an error from http.Client.Do: the caller's
// context ending is passed through (not retryable), a refused redirect keeps
// its kind, anything else means HipChat could not be reached.
func transportError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ae *addon.Error
	if errors.As(err, &ae) {
		return ae
	}
	err = outbound.Redact(err) // the URL's query may carry a token
	switch {
	case errors.Is(err, outbound.ErrForbiddenHost):
		return addon.Wrap(addon.Forbidden, err, "hipchat host refused by the allowlist at connection time")
	case errors.Is(err, outbound.ErrResponseTooLarge):
		return addon.Wrap(addon.TooLarge, err, "hipchat's answer is too large")
	}
	return addon.Wrap(addon.Unavailable, err, "hipchat is unreachable")
}

// readBody reads at most maxResponseBytes of resp's body.
func readBody(resp *http.Response) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, addon.Wrap(addon.Unavailable, err, "reading hipchat's answer failed")
	}
	if len(b) > maxResponseBytes {
		return nil, addon.Errorf(addon.TooLarge, "hipchat's answer is over %d bytes", maxResponseBytes)
	}
	return b, nil
}

// drain discards what is left of a body (bounded) so the connection can be
// reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
	_ = resp.Body.Close()
}

func opError(op string, err error) error {
	return fmt.Errorf("hipchat: %s: %w", op, err)
}
