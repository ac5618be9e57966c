// Package hipchat speaks the HipChat Connect protocol (API v2) from the
// add-on's side, as written down in PROTOCOL.md: it reads a HipChat
// Server's capabilities document, obtains and caches access tokens, sends
// room notifications and glance updates, and verifies the JWTs HipChat signs
// for the calls it makes to the add-on.
//
// Every outbound call goes through a [Client], which refuses a URL whose
// host is not on the allowlist before any request is made (also for the
// target of a redirect). Errors are *addon.Error values (kinds Invalid,
// Unauthorized, Forbidden, TooLarge, Unavailable) wrapped with a
// "hipchat: op:" prefix; [ErrTokenRejected] and [*RateLimitError] can be
// found in them with errors.Is and errors.As, and [Retryable] says whether a
// later attempt may succeed. No error message ever contains an OAuth secret,
// an access token or a JWT, and the package logs nothing.
//
// Where PROTOCOL.md is silent, the package decides as follows (each
// decision is repeated next to the code that depends on it):
//   - availableScopes is an object keyed by scope in PROTOCOL.md section 2
//     but a list in Atlassian's "own technology stack" guide (seeds/002):
//     both are read.
//   - Retry-After is either delay-seconds or an HTTP-date (RFC 9110
//     section 10.2.3); both are read.
//   - The scope HipChat requires for a glance update is not documented in
//     what we have; the client does not check scopes itself.
package hipchat
