package hipchat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// maxJWTLen bounds the JWTs ExtractToken and Verify accept; HipChat's are a
// few hundred bytes.
const maxJWTLen = 8 << 10

// Defaults of a zero Verifier.
const (
	DefaultLeeway = 60 * time.Second
	DefaultMaxAge = time.Hour
)

// ExtractToken returns the JWT HipChat put in r (PROTOCOL.md section 5), from
// exactly these places: "Authorization: JWT <token>", "Authorization: JWT
// token=<token>" (older clients; the value may be quoted), or the query
// parameter signed_request. The form body is not read. It fails
// (addon.Unauthorized) when there is none, when an Authorization header
// uses another scheme or is malformed, or when two places carry different
// tokens; the same token twice is fine. The error never contains the token.
func ExtractToken(r *http.Request) (string, error) {
	const op = "extract jwt"
	var found []string
	for _, h := range r.Header.Values("Authorization") {
		tok, err := parseJWTAuthorization(h)
		if err != nil {
			return "", opError(op, err)
		}
		found = append(found, tok)
	}
	if r.URL.RawQuery != "" { // Query would allocate even for none
		found = append(found, r.URL.Query()["signed_request"]...)
	}
	if len(found) == 0 {
		return "", opError(op, addon.Errorf(addon.Unauthorized, "no jwt in the request"))
	}
	tok := found[0]
	for _, t := range found {
		if t == "" {
			return "", opError(op, addon.Errorf(addon.Unauthorized, "empty jwt"))
		}
		if t != tok {
			return "", opError(op, addon.Errorf(addon.Unauthorized, "more than one jwt in the request"))
		}
	}
	if len(tok) > maxJWTLen {
		return "", opError(op, addon.Errorf(addon.Unauthorized, "jwt too long"))
	}
	return tok, nil
}

// parseJWTAuthorization reads "JWT <token>" or "JWT token=<token>"; the
// scheme is case-insensitive (RFC 9110 section 11.1).
func parseJWTAuthorization(h string) (string, error) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if !strings.EqualFold(scheme, "JWT") {
		return "", addon.Errorf(addon.Unauthorized, "authorization scheme is not JWT")
	}
	rest = strings.TrimSpace(rest)
	if len(rest) >= len("token=") && strings.EqualFold(rest[:len("token=")], "token=") {
		rest = rest[len("token="):]
		if len(rest) >= 2 && rest[0] == '"' && rest[len(rest)-1] == '"' {
			rest = rest[1 : len(rest)-1]
		}
	}
	if rest == "" || strings.ContainsAny(rest, " \t,\"") {
		return "", addon.Errorf(addon.Unauthorized, "malformed JWT authorization header")
	}
	return rest, nil
}

// Claims is what a verified HipChat JWT says (PROTOCOL.md section 5).
type Claims struct {
	Issuer    string    // iss: the installation's oauthId
	Subject   string    // sub, or prn in older tokens: the HipChat user id
	RoomID    int64     // context.room_id; 0 when the token names no room
	UserTZ    string    // context.user_tz, e.g. "Europe/Berlin"
	IssuedAt  time.Time // iat; zero when absent
	ExpiresAt time.Time // exp
	ID        string    // jti
}

// wireClaims is a HipChat JWT's payload.
type wireClaims struct {
	jwt.RegisteredClaims
	Prn     string       `json:"prn,omitempty"`
	Context *wireContext `json:"context,omitempty"`
}

type wireContext struct {
	RoomID roomID `json:"room_id,omitempty"`
	UserTZ string `json:"user_tz,omitempty"`
}

// roomID is context.room_id, a JSON number or a numeric string.
type roomID int64

func (r *roomID) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*r = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s = strings.TrimSpace(s); s == "" {
			*r = 0
			return nil
		}
		return r.parse(s)
	}
	return r.parse(string(b))
}

// parse sets r to s, which must be a non-negative integer.
func (r *roomID) parse(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return errors.New("context.room_id is not a room id")
	}
	*r = roomID(n)
	return nil
}

// InstallationLookup finds an installation by its OAuth ID, returning an
// error of kind addon.NotFound when there is none. addon.Store has it.
type InstallationLookup interface {
	Installation(ctx context.Context, oauthID string) (addon.Installation, error)
}

// Verifier checks the JWTs HipChat signs for its calls to the add-on. Its
// fields are set once before use; it is then safe for concurrent use, and
// must not be copied.
type Verifier struct {
	Store InstallationLookup
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Leeway is the clock skew allowed on exp and iat; 0 means
	// DefaultLeeway, negative means none.
	Leeway time.Duration
	// MaxAge is the longest lifetime accepted, both exp-iat and exp-now
	// (the latter plus Leeway): a token has no qsh binding it to a request,
	// so it must be short-lived. 0 means DefaultMaxAge.
	MaxAge time.Duration

	setup    sync.Once
	resolved verifierSettings // see settings
}

// verifierSettings are a Verifier's fields with their defaults applied, and
// the parser built from them, which parsing only reads (it sets up its
// validator itself, so ParseWithClaims has nothing left to fill in).
type verifierSettings struct {
	parser *jwt.Parser
	now    func() time.Time
	leeway time.Duration
	maxAge time.Duration
}

// settings returns v's settings, resolved on first use.
func (v *Verifier) settings() *verifierSettings {
	v.setup.Do(func() {
		s := verifierSettings{leeway: v.Leeway, maxAge: v.MaxAge, now: v.Now}
		switch {
		case s.leeway == 0:
			s.leeway = DefaultLeeway
		case s.leeway < 0:
			s.leeway = 0
		}
		if s.maxAge <= 0 {
			s.maxAge = DefaultMaxAge
		}
		if s.now == nil {
			s.now = time.Now
		}
		s.parser = jwt.NewParser(
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(s.leeway),
			jwt.WithTimeFunc(s.now),
		)
		v.resolved = s
	})
	return &v.resolved
}

// Verify checks token as PROTOCOL.md section 5 asks: it reads iss without
// verifying, looks the installation up, then verifies the signature with
// the installation's oauthSecret, accepting only HS256, and requires an
// unexpired exp (with Leeway), an iat not in the future, and a lifetime
// within MaxAge. A token naming a room the installation does not cover is
// refused too.
//
// Errors: addon.Unauthorized with a short reason ("unknown issuer", "bad
// signature", "token expired", ...) for a token that fails; addon.Forbidden
// for a room not covered; the store's own error when the lookup fails for
// another reason than NotFound. No error contains the token.
func (v *Verifier) Verify(ctx context.Context, token string) (addon.Installation, Claims, error) {
	const op = "verify jwt"
	if v.Store == nil {
		return addon.Installation{}, Claims{}, opError(op, addon.Errorf(addon.Internal, "verifier has no store"))
	}
	set := v.settings()
	wc, inst, err := v.parse(ctx, set, token)
	if err == nil {
		err = set.checkLifetime(wc)
	}
	if err != nil {
		return addon.Installation{}, Claims{}, opError(op, err)
	}
	c := claimsOf(wc)
	if c.RoomID != 0 && !inst.CoversRoom(c.RoomID) {
		return addon.Installation{}, Claims{}, opError(op, addon.Errorf(addon.Forbidden, "the token's room is not covered by the installation"))
	}
	return inst, c, nil
}

// refuse is an Unauthorized error with reason as its message.
func refuse(reason string, err error) error {
	return &addon.Error{Kind: addon.Unauthorized, Msg: reason, Err: err}
}

// parse checks token's size, algorithm, issuer and signature in one parse:
// the key function sees the claims decoded but not yet verified, refuses
// any algorithm but HS256, looks the installation up by iss and hands over
// its secret; then the signature is checked, and only then the claims the
// library checks (exp required, iat not in the future, with Leeway).
func (v *Verifier) parse(ctx context.Context, set *verifierSettings, token string) (wireClaims, addon.Installation, error) {
	var (
		wc        wireClaims
		inst      addon.Installation
		refused   string // why the key function gave no key
		lookupErr error  // the store's own failure, returned as it is
	)
	switch {
	case token == "":
		return wc, inst, refuse("no token", nil)
	case len(token) > maxJWTLen:
		return wc, inst, refuse("token too long", nil)
	}
	_, err := set.parser.ParseWithClaims(token, &wc, func(t *jwt.Token) (any, error) {
		switch {
		case t.Method == nil || t.Method.Alg() != jwt.SigningMethodHS256.Alg():
			refused = "algorithm not allowed"
		case wc.Issuer == "":
			refused = "token has no issuer"
		default:
			var err error
			inst, err = v.Store.Installation(ctx, wc.Issuer)
			switch {
			case addon.IsNotFound(err):
				refused = "unknown issuer"
			case err != nil:
				lookupErr = err
				return nil, err
			case inst.Integration != "":
				// A "Build your own" integration's secret is its webhook
				// path's, not an OAuth secret: HipChat signs nothing with it.
				refused = "unknown issuer"
			case inst.OAuthSecret == "":
				refused = "installation has no secret"
			default:
				return []byte(inst.OAuthSecret), nil
			}
		}
		return nil, errNoKey
	})
	switch {
	case lookupErr != nil:
		return wc, inst, lookupErr
	case refused != "":
		return wc, inst, refuse(refused, nil)
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return wc, inst, refuse("malformed token", err) // an algorithm the library does not know
	case err != nil:
		return wc, inst, refuse(jwtReason(err), err)
	}
	return wc, inst, nil
}

// checkLifetime refuses a token living longer than MaxAge: from now
// (plus Leeway) or from its iat.
func (set *verifierSettings) checkLifetime(wc wireClaims) error {
	exp := wc.ExpiresAt.Time
	if exp.Sub(set.now()) > set.maxAge+set.leeway {
		return refuse("token expires too far in the future", nil)
	}
	if wc.IssuedAt != nil && exp.Sub(wc.IssuedAt.Time) > set.maxAge {
		return refuse("token lifetime too long", nil)
	}
	return nil
}

// claimsOf is what Verify reports of a verified token's claims: prn stands
// in for a missing sub (older HipChat Server versions).
func claimsOf(wc wireClaims) Claims {
	c := Claims{Issuer: wc.Issuer, Subject: wc.Subject, ExpiresAt: wc.ExpiresAt.Time, ID: wc.ID}
	if wc.IssuedAt != nil {
		c.IssuedAt = wc.IssuedAt.Time
	}
	if c.Subject == "" {
		c.Subject = wc.Prn
	}
	if wc.Context != nil {
		c.RoomID = int64(wc.Context.RoomID)
		c.UserTZ = wc.Context.UserTZ
	}
	return c
}

// errNoKey is what Verify's key function returns when it refuses a token.
var errNoKey = errors.New("no key for this token")

// jwtReason names why the jwt library refused a token, in a few words.
func jwtReason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no expiry"
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "token issued in the future"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	default:
		return "invalid token"
	}
}

// SignJWT signs claims as HipChat does (HS256 with the installation's
// secret, iss = oauthID) for tests, the fake HipChat and the load tool.
// Zero IssuedAt and ExpiresAt are left out of the token, as are an empty
// Subject and ID, and the context when RoomID and UserTZ are both zero.
// claims.Issuer must be empty or oauthID.
func SignJWT(oauthID, secret string, claims Claims) (string, error) {
	const op = "sign jwt"
	if oauthID == "" || secret == "" {
		return "", opError(op, addon.Errorf(addon.Invalid, "oauth id and secret are required"))
	}
	if claims.Issuer != "" && claims.Issuer != oauthID {
		return "", opError(op, addon.Errorf(addon.Invalid, "issuer is not the oauth id"))
	}
	if claims.RoomID < 0 {
		return "", opError(op, addon.Errorf(addon.Invalid, "negative room id"))
	}
	wc := wireClaims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:  oauthID,
		Subject: claims.Subject,
		ID:      claims.ID,
	}}
	if !claims.IssuedAt.IsZero() {
		wc.IssuedAt = jwt.NewNumericDate(claims.IssuedAt)
	}
	if !claims.ExpiresAt.IsZero() {
		wc.ExpiresAt = jwt.NewNumericDate(claims.ExpiresAt)
	}
	if claims.RoomID != 0 || claims.UserTZ != "" {
		wc.Context = &wireContext{RoomID: roomID(claims.RoomID), UserTZ: claims.UserTZ}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, &wc).SignedString([]byte(secret))
	if err != nil {
		return "", opError(op, fmt.Errorf("signing failed: %w", err))
	}
	return s, nil
}
