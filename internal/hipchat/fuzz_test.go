package hipchat

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// fuzzNow is the clock of the fuzz targets: a whole second, so that the
// claims' times survive the token's whole-second NumericDates unchanged.
var fuzzNow = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)

// oneInstallation is an InstallationLookup that knows one installation.
type oneInstallation addon.Installation

func (o oneInstallation) Installation(_ context.Context, oauthID string) (addon.Installation, error) {
	if oauthID != o.OAuthID {
		return addon.Installation{}, addon.Errorf(addon.NotFound, "no installation")
	}
	return addon.Installation(o), nil
}

// FuzzJWT drives ExtractToken and Verify with fuzzed requests, claims,
// secrets and tokens. Properties:
//   - ExtractToken never panics; what it returns is the one token the
//     request carries (the header's, parsed, or signed_request's), not
//     empty and at most maxJWTLen bytes; its errors are Unauthorized with
//     one of a few fixed messages, so they never carry the token; a valid
//     token sent as "JWT <t>", "JWT token=<t>", `JWT token="<t>"` or
//     signed_request is extracted unchanged;
//   - SignJWT fails exactly for an empty oauth id or secret or a negative
//     room;
//   - a token SignJWT made with the installation's secret verifies exactly
//     when its times are within the rules (exp required, now < exp+leeway,
//     iat <= now+leeway, exp-now <= maxAge+leeway, exp-iat <= maxAge), it
//     is at most maxJWTLen bytes and its room, if any, is covered (else
//     Forbidden); it then gives back the claims it was signed with;
//   - any one byte of such a token changed either fails verification or
//     gives the same installation and claims;
//   - a token signed with another secret always fails, unless the two
//     secrets are the same HMAC key (see sameHMACKey);
//   - only alg HS256 is accepted: the same claims under any other alg
//     (none, HS384, HS512, RS256, "hs256", ...) are refused;
//   - any payload signed with the right secret, and any token extracted
//     from the fuzzed request, when accepted, has the installation as
//     issuer and times and room within the rules;
//   - no error of Verify contains the token, and every refusal is
//     Unauthorized or Forbidden.
func FuzzJWT(f *testing.F) {
	payload := []byte(`{"iss":"inst-1","sub":"1661743","iat":1772618390,"exp":1772618700,"jti":"j","context":{"room_id":"100","user_tz":"UTC"}}`)
	f.Add("inst-1", "s3cret-0123456789", int64(100), "1661743", int64(100), "Europe/Berlin", "jti-1",
		int64(-10), int64(300), uint8(3), int64(0), int64(0), "other-secret", uint(17), byte('x'), "HS512",
		payload, "JWT abc.def.ghi", "signed_request=abc.def.ghi")
	f.Add("global", "g", int64(0), "", int64(7), "", "", int64(0), int64(-61), uint8(2), int64(-1), int64(60),
		"g\x00", uint(1<<20), byte('.'), "none", []byte(`{"iss":"global","exp":1772618400.5,"prn":"4242"}`),
		`jwt token="a.b.c"`, "signed_request=a.b.c&signed_request=a.b.c")
	f.Add("inst-1", "s3cret", int64(100), "sub", int64(200), "tz", "id", int64(30), int64(3660), uint8(3), int64(5), int64(3600),
		"S3CRET", uint(0), byte('e'), "HS256", []byte(`{"iss":"inst-1","exp":1e300,"iat":-1e300}`), "Bearer x", "signed_request=")
	f.Add("\xff", "k", int64(-1), "\xfe", int64(-5), "\xff", "\xfe", int64(0), int64(1), uint8(1), int64(0), int64(0),
		"", uint(3), byte('A'), "hs256", []byte(`{"iss":"\xff","exp":1772618460,"context":{"room_id":-3}}`), "JWT a b", "%zz")
	f.Add("inst-1", strings.Repeat("k", 65), int64(0), strings.Repeat("s", 9000), int64(1), "", "", int64(-3600), int64(0), uint8(3), int64(0), int64(0),
		strings.Repeat("k", 64), uint(5), byte('_'), "RS256", []byte(`{"iss":"inst-1","exp":"soon"}`), "JWT token=", "signed_request=%20")

	f.Fuzz(func(t *testing.T, oauthID, secret string, instRoom int64, sub string, room int64, tz, jti string,
		iatOff, expOff int64, flags uint8, leewaySec, maxAgeSec int64, wrongSecret string, pos uint, b byte, alg string,
		payload []byte, authorization, rawQuery string) {
		extracted := checkExtract(t, authorization, rawQuery)

		if instRoom < 0 {
			instRoom = 0
		}
		inst := addon.Installation{OAuthID: oauthID, OAuthSecret: secret, RoomID: instRoom}
		v := &Verifier{Store: oneInstallation(inst), Now: func() time.Time { return fuzzNow },
			Leeway: time.Duration(leewaySec%600) * time.Second, MaxAge: time.Duration(maxAgeSec%7200) * time.Second}
		lw, maxAge := v.Leeway, v.MaxAge
		switch {
		case lw == 0:
			lw = DefaultLeeway
		case lw < 0:
			lw = 0
		}
		if maxAge <= 0 {
			maxAge = DefaultMaxAge
		}

		if extracted != "" {
			checkVerified(t, v, inst, extracted, lw, maxAge)
		}
		if secret != "" {
			checkVerified(t, v, inst, hs256Token(`{"alg":"HS256","typ":"JWT"}`, payload, secret), lw, maxAge)
		}

		c := Claims{Subject: sub, RoomID: room, UserTZ: tz, ID: jti}
		if flags&1 != 0 {
			c.IssuedAt = fuzzNow.Add(time.Duration(iatOff%(3*3600)) * time.Second)
		}
		if flags&2 != 0 {
			c.ExpiresAt = fuzzNow.Add(time.Duration(expOff%(3*3600)) * time.Second)
		}
		tok, err := SignJWT(oauthID, secret, c)
		if wantErr := oauthID == "" || secret == "" || room < 0; (err != nil) != wantErr {
			t.Fatalf("SignJWT(%q, %q, %+v): err = %v, want an error: %v", oauthID, secret, c, err, wantErr)
		}
		if err != nil {
			return
		}
		if len(tok) <= maxJWTLen {
			for _, r := range []*http.Request{jwtRequest("JWT "+tok, ""), jwtRequest("jwt token="+tok, ""),
				jwtRequest(`JWT  token="`+tok+`" `, ""), jwtRequest("", "signed_request="+url.QueryEscape(tok)),
				jwtRequest("JWT "+tok, "a=b&signed_request="+tok)} {
				if got, err := ExtractToken(r); err != nil || got != tok {
					t.Fatalf("ExtractToken(%q, %q) = %q, %v, want the token", r.Header.Get("Authorization"), r.URL.RawQuery, got, err)
				}
			}
		}

		// What Verify must answer, from the rules alone.
		want := Claims{Issuer: oauthID, Subject: jsonString(sub), RoomID: room, UserTZ: jsonString(tz),
			IssuedAt: c.IssuedAt, ExpiresAt: c.ExpiresAt, ID: jsonString(jti)}
		exp, iat := c.ExpiresAt, c.IssuedAt
		timely := !exp.IsZero() && fuzzNow.Before(exp.Add(lw)) && exp.Sub(fuzzNow) <= maxAge+lw &&
			(iat.IsZero() || (!fuzzNow.Before(iat.Add(-lw)) && exp.Sub(iat) <= maxAge))
		wantKind := ""
		switch {
		case len(tok) > maxJWTLen || jsonString(oauthID) != oauthID || !timely:
			wantKind = addon.Unauthorized
		case room != 0 && !inst.CoversRoom(room):
			wantKind = addon.Forbidden
		}
		gotInst, got, err := v.Verify(context.Background(), tok)
		checkVerifyError(t, tok, err)
		if addon.KindOf(err) != wantKind && (err != nil || wantKind != "") {
			t.Fatalf("Verify of %+v (leeway %v, max age %v, %d bytes): err = %v, want kind %q", c, lw, maxAge, len(tok), err, wantKind)
		}
		if err == nil && (!sameClaims(got, want) || gotInst != inst) {
			t.Fatalf("Verify = %+v, %+v\nwant %+v, %+v", gotInst, got, inst, want)
		}

		checkMutation(t, v, tok, pos, b, err == nil, gotInst, got)
		checkWrongSecret(t, v, oauthID, secret, wrongSecret, c, err)
		checkAlg(t, v, tok, secret, alg, err)
	})
}

// checkExtract checks ExtractToken on a request with authorization (none
// when "") and rawQuery, and returns the token it extracted ("" for none).
func checkExtract(t *testing.T, authorization, rawQuery string) string {
	t.Helper()
	r := jwtRequest(authorization, rawQuery)
	tok, err := ExtractToken(r)
	if err != nil {
		const prefix = "hipchat: extract jwt: "
		msgs := []string{"no jwt in the request", "empty jwt", "more than one jwt in the request", "jwt too long",
			"authorization scheme is not JWT", "malformed JWT authorization header"}
		if addon.KindOf(err) != addon.Unauthorized || !strings.HasPrefix(err.Error(), prefix) ||
			!slices.Contains(msgs, strings.TrimPrefix(err.Error(), prefix)) {
			t.Fatalf("ExtractToken(%q, %q): unexpected error %v", authorization, rawQuery, err)
		}
		return ""
	}
	if tok == "" || len(tok) > maxJWTLen {
		t.Fatalf("ExtractToken(%q, %q) = %d bytes", authorization, rawQuery, len(tok))
	}
	if authorization != "" {
		fromHeader, err := parseJWTAuthorization(authorization)
		if err != nil || fromHeader != tok || strings.ContainsAny(tok, " \t,\"") {
			t.Fatalf("ExtractToken(%q, %q) = %q, but the header parses to %q, %v", authorization, rawQuery, tok, fromHeader, err)
		}
	}
	if q, _ := url.ParseQuery(rawQuery); q.Has("signed_request") { // as r.URL.Query() reads it
		for _, s := range q["signed_request"] {
			if s != tok {
				t.Fatalf("ExtractToken(%q, %q) = %q, but signed_request is also %q", authorization, rawQuery, tok, s)
			}
		}
	} else if authorization == "" {
		t.Fatalf("ExtractToken(%q, %q) = %q from no header and no signed_request", authorization, rawQuery, tok)
	}
	return tok
}

func jwtRequest(authorization, rawQuery string) *http.Request {
	r := &http.Request{Method: http.MethodPost, URL: &url.URL{Scheme: "https", Host: "addon.example", Path: "/webhook/echo", RawQuery: rawQuery},
		Header: http.Header{}}
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	return r
}

// checkVerifyError checks that a refusal of tok is Unauthorized or
// Forbidden and, when tok looks like a JWT (three parts, not a few letters
// an error message may hold by chance), does not contain it.
func checkVerifyError(t *testing.T, tok string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if k := addon.KindOf(err); k != addon.Unauthorized && k != addon.Forbidden {
		t.Fatalf("Verify: err = %v of kind %q", err, k)
	}
	if !strings.HasPrefix(err.Error(), "hipchat: verify jwt: ") {
		t.Fatalf("Verify: err = %q, without the prefix", err)
	}
	if strings.Count(tok, ".") == 2 && len(tok) >= 24 && strings.Contains(err.Error(), tok) {
		t.Fatalf("Verify: err = %q contains the token", err)
	}
}

// checkVerified verifies tok, a token made up or signed with the
// installation's secret over made-up claims, and checks that what Verify
// accepts of it has the installation as issuer, and times and room within
// the rules.
func checkVerified(t *testing.T, v *Verifier, inst addon.Installation, tok string, lw, maxAge time.Duration) {
	t.Helper()
	gotInst, c, err := v.Verify(context.Background(), tok)
	checkVerifyError(t, tok, err)
	if err != nil {
		return
	}
	exp, iat := c.ExpiresAt, c.IssuedAt
	switch {
	case gotInst != inst || c.Issuer != inst.OAuthID:
		t.Fatalf("Verify(%q) = %+v with issuer %q, want installation %q", tok, gotInst, c.Issuer, inst.OAuthID)
	case exp.IsZero() || !fuzzNow.Before(exp.Add(lw)) || exp.Sub(fuzzNow) > maxAge+lw:
		t.Fatalf("Verify(%q) accepted exp %v (now %v, leeway %v, max age %v)", tok, exp, fuzzNow, lw, maxAge)
	case !iat.IsZero() && (fuzzNow.Before(iat.Add(-lw)) || exp.Sub(iat) > maxAge):
		t.Fatalf("Verify(%q) accepted iat %v, exp %v (now %v, leeway %v, max age %v)", tok, iat, exp, fuzzNow, lw, maxAge)
	case c.RoomID < 0 || (c.RoomID != 0 && !inst.CoversRoom(c.RoomID)):
		t.Fatalf("Verify(%q) accepted room %d for an installation of room %d", tok, c.RoomID, inst.RoomID)
	}
}

// checkMutation changes byte pos of tok to b and checks that the token
// then fails or gives what tok gave.
func checkMutation(t *testing.T, v *Verifier, tok string, pos uint, b byte, valid bool, inst addon.Installation, c Claims) {
	t.Helper()
	m := []byte(tok)
	i := pos % uint(len(m))
	if m[i] == b {
		return
	}
	m[i] = b
	gotInst, got, err := v.Verify(context.Background(), string(m))
	checkVerifyError(t, string(m), err)
	if err == nil && (!valid || gotInst != inst || !sameClaims(got, c)) {
		t.Fatalf("token with byte %d changed to %q verifies to %+v, %+v; the original to %+v, %+v (valid %v)",
			i, b, gotInst, got, inst, c, valid)
	}
}

// checkWrongSecret signs c with wrong instead of the installation's secret:
// refused, unless wrong is the same HMAC key, which gives what the right
// secret gave (rightErr).
func checkWrongSecret(t *testing.T, v *Verifier, oauthID, secret, wrong string, c Claims, rightErr error) {
	t.Helper()
	tok, err := SignJWT(oauthID, wrong, c)
	if wrong == "" {
		if err == nil {
			t.Fatalf("SignJWT with no secret = %q", tok)
		}
		return
	}
	if err != nil {
		t.Fatalf("SignJWT with secret %q: %v", wrong, err)
	}
	_, _, err = v.Verify(context.Background(), tok)
	checkVerifyError(t, tok, err)
	if sameHMACKey(secret, wrong) {
		if addon.KindOf(err) != addon.KindOf(rightErr) {
			t.Fatalf("secret %q, the same HMAC key as %q: err = %v, the right one's %v", wrong, secret, err, rightErr)
		}
		return
	}
	if err == nil {
		t.Fatalf("token signed with %q verifies for secret %q", wrong, secret)
	}
	if rightErr == nil && !strings.Contains(err.Error(), "bad signature") {
		t.Fatalf("token signed with the wrong secret: err = %v, want bad signature", err)
	}
}

// checkAlg re-signs tok's claims under a header naming alg: only HS256
// (what tok has) may be accepted, and then just as tok is.
func checkAlg(t *testing.T, v *Verifier, tok, secret, alg string, tokErr error) {
	t.Helper()
	header, err := json.Marshal(map[string]string{"alg": alg, "typ": "JWT"})
	if err != nil {
		t.Fatal(err)
	}
	_, payload, _ := strings.Cut(tok, ".")
	payload, _, _ = strings.Cut(payload, ".")
	claims, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	for _, signed := range []string{
		hs256Token(string(header), claims, secret),
		base64.RawURLEncoding.EncodeToString(header) + "." + payload + ".", // no signature, as alg none has
	} {
		_, _, err := v.Verify(context.Background(), signed)
		checkVerifyError(t, signed, err)
		switch {
		case alg != "HS256" && err == nil:
			t.Fatalf("alg %q accepted", alg)
		case alg != "HS256" && tokErr == nil && len(signed) <= maxJWTLen &&
			!strings.Contains(err.Error(), "algorithm not allowed") && !strings.Contains(err.Error(), "malformed token"):
			t.Fatalf("alg %q: err = %v, want algorithm not allowed or malformed token", alg, err)
		}
	}
	if alg == "HS256" {
		signed := hs256Token(string(header), claims, secret)
		if _, _, err := v.Verify(context.Background(), signed); addon.KindOf(err) != addon.KindOf(tokErr) {
			t.Fatalf("the claims under header %s: err = %v, under SignJWT's %v", header, err, tokErr)
		}
	}
}

// hs256Token is a JWT of header and payload, signed with HMAC-SHA256 under
// secret whatever the header says.
func hs256Token(header string, payload []byte, secret string) string {
	s := base64.RawURLEncoding.EncodeToString([]byte(header)) + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(s))
	return s + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// sameHMACKey reports whether a and b are the same HMAC-SHA256 key: HMAC
// hashes a key longer than the hash's block and pads a shorter one with
// zeros, so "k" and "k\x00" sign alike (RFC 2104 section 2). HipChat's
// secrets are random; this is HMAC's, not the add-on's, to mind.
func sameHMACKey(a, b string) bool {
	pad := func(k string) []byte {
		key := []byte(k)
		if len(key) > sha256.BlockSize {
			sum := sha256.Sum256(key)
			key = sum[:]
		}
		out := make([]byte, sha256.BlockSize)
		copy(out, key)
		return out
	}
	return bytes.Equal(pad(a), pad(b))
}

// jsonString is s after a trip through JSON, which replaces invalid UTF-8.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// sameClaims compares claims, their times as instants.
func sameClaims(a, b Claims) bool {
	if !a.IssuedAt.Equal(b.IssuedAt) || !a.ExpiresAt.Equal(b.ExpiresAt) {
		return false
	}
	a.IssuedAt, a.ExpiresAt = b.IssuedAt, b.ExpiresAt
	return a == b
}

// FuzzCapabilities feeds capabilities documents to parseCapabilities, the
// part of Client.Capabilities after the fetch, both as fuzzed bodies and as
// documents built from fuzzed URLs and scopes. Properties:
//   - it never panics, and refuses with Invalid or Forbidden only;
//   - what it accepts has links.self equal to the capabilities URL but for
//     a trailing slash, the capabilities URL's origin, and a token URL and
//     an API URL that are absolute http(s) URLs without credentials on an
//     allowed host, on the very server (host and port) the document came
//     from; the API URL ends in "/", and the scopes are sorted;
//   - a document built from URLs is accepted exactly when both URLs pass
//     those rules, and gives back the URLs and scopes it was built from;
//   - Client.Capabilities, fetching the same body, answers the same.
func FuzzCapabilities(f *testing.F) {
	doc := `{"capabilities":{"hipchatApiProvider":{"url":"https://chat.example/v2","availableScopes":` +
		`{"send_notification":{"id":"send_notification"},"view_room":{}}},` +
		`"oauth2Provider":{"tokenUrl":"https://chat.example/v2/oauth/token","authorizationUrl":"https://chat.example/users/authorize"}},` +
		`"links":{"self":"https://chat.example/v2/capabilities","homepage":"https://chat.example"}}`
	f.Add([]byte(doc), "https://chat.example/v2/capabilities", "https://chat.example/v2/oauth/token", "https://chat.example/v2/",
		"send_notification,view_room", uint8(0))
	f.Add([]byte(`{"links":{"self":"http://10.0.0.5:8080/v2/capabilities/"},"capabilities":{"oauth2Provider":{"tokenUrl":"http://10.0.0.5:8080/t"},`+
		`"hipchatApiProvider":{"url":"http://10.0.0.5:8080/v2","availableScopes":["a",{"id":"b"},3,null]}}}`),
		"http://10.0.0.5:8080/v2/capabilities", "http://10.0.0.5:8080/t", "http://10.0.0.5/v2", "b,a,a", uint8(1))
	f.Add([]byte(`{"links":{"self":"https://chat.example/c"},"capabilities":{"oauth2Provider":{"tokenUrl":"https://evil.example/t"},`+
		`"hipchatApiProvider":{"url":"https://chat.example/v2/"}}}`),
		"https://chat.example/c", "https://user:pw@chat.example/t", "https://CHAT.example/v2", "", uint8(2))
	f.Add([]byte(`{"Links":{"Self":"https://chat.example/c"},"capabilities":{"oauth2Provider":{"tokenUrl":"//chat.example/t"},`+
		`"hipchatApiProvider":{"url":"ftp://chat.example/"}}}`), "https://chat.example/c", "chat.example/t", "https://chat.example:443/v2", ",x,", uint8(3))
	f.Add([]byte(`[]`), "https://[fd00::1]:8443/cap", "https://[fd00::1]:8443/t", "https://[fd00::1]:8443/%zz", "\xff", uint8(0))

	c := &Client{Allowed: func(h string) bool { return !strings.Contains(h, "evil") }}
	f.Fuzz(func(t *testing.T, body []byte, capURL, tokenURL, apiURL, scopes string, flags uint8) {
		u, err := c.checkURL("capabilities url", capURL)
		if err != nil {
			return // Capabilities refuses it before any request
		}
		caps, err := c.parseCapabilities(body, capURL, u)
		checkCaps(t, c, capURL, u, caps, err)
		checkFetch(t, c, body, capURL, caps, err)

		// A document built from the fuzzed URLs and scopes.
		self := capURL
		if flags&2 != 0 {
			self = strings.TrimSuffix(self, "/") + "/"
		}
		var list []string
		if scopes != "" {
			list = strings.Split(scopes, ",")
		}
		var available any = list
		if flags&1 != 0 {
			obj := map[string]any{}
			for _, s := range list {
				obj[s] = map[string]string{"id": s}
			}
			available = obj
		}
		built, err := json.Marshal(map[string]any{
			"links": map[string]string{"self": self, "homepage": "https://home.example"},
			"capabilities": map[string]any{
				"oauth2Provider":     map[string]string{"tokenUrl": tokenURL},
				"hipchatApiProvider": map[string]any{"url": apiURL, "availableScopes": available},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		caps, err = c.parseCapabilities(built, capURL, u)
		checkCaps(t, c, capURL, u, caps, err)
		tokenURL, apiURL, self = jsonString(tokenURL), jsonString(apiURL), jsonString(self)
		wantErr := ""
		for _, raw := range []string{tokenURL, apiURL} {
			if k := wantURLKind(c, raw, u); k != "" && wantErr == "" {
				wantErr = k
			}
		}
		if strings.TrimSuffix(self, "/") != strings.TrimSuffix(capURL, "/") {
			wantErr = addon.Invalid // links.self is checked first
		}
		if addon.KindOf(err) != wantErr && (err != nil || wantErr != "") {
			t.Fatalf("document with self %q, token url %q, api url %q: err = %v, want kind %q", self, tokenURL, apiURL, err, wantErr)
		}
		if err != nil {
			return
		}
		var wantScopes []string
		for _, s := range list {
			if s = jsonString(s); (s != "" || flags&1 != 0) && (flags&1 == 0 || !slices.Contains(wantScopes, s)) {
				wantScopes = append(wantScopes, s)
			}
		}
		slices.Sort(wantScopes)
		want := Capabilities{APIURL: apiURL, TokenURL: tokenURL, Self: self, Homepage: "https://home.example",
			Origin: u.Scheme + "://" + u.Host, Scopes: wantScopes}
		if !strings.HasSuffix(want.APIURL, "/") {
			want.APIURL += "/"
		}
		if !reflect.DeepEqual(caps, want) {
			t.Fatalf("parseCapabilities(%s) = %+v\nwant %+v", built, caps, want)
		}
	})
}

// checkCaps checks what parseCapabilities answered for a document read
// from capURL (u parsed).
func checkCaps(t *testing.T, c *Client, capURL string, u *url.URL, caps Capabilities, err error) {
	t.Helper()
	if err != nil {
		if k := addon.KindOf(err); k != addon.Invalid && k != addon.Forbidden {
			t.Fatalf("parseCapabilities: err = %v of kind %q", err, k)
		}
		if !reflect.DeepEqual(caps, Capabilities{}) {
			t.Fatalf("parseCapabilities failed (%v) but returned %+v", err, caps)
		}
		return
	}
	if strings.TrimSuffix(caps.Self, "/") != strings.TrimSuffix(capURL, "/") {
		t.Fatalf("accepted links.self %q for capabilities url %q", caps.Self, capURL)
	}
	if caps.Origin != u.Scheme+"://"+u.Host {
		t.Fatalf("Origin = %q for capabilities url %q", caps.Origin, capURL)
	}
	for what, raw := range map[string]string{"token url": caps.TokenURL, "api url": caps.APIURL} {
		p, err := url.Parse(raw)
		switch {
		case err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Hostname() == "" || !p.IsAbs():
			t.Fatalf("accepted %s %q: not an absolute http(s) url (%v)", what, raw, err)
		case p.User != nil:
			t.Fatalf("accepted %s %q with credentials", what, raw)
		case !c.Allowed(strings.ToLower(p.Hostname())):
			t.Fatalf("accepted %s %q on a host not allowed", what, raw)
		case p.Scheme != u.Scheme || !strings.EqualFold(p.Hostname(), u.Hostname()) || port(p) != port(u):
			t.Fatalf("accepted %s %q, not on the server of %q", what, raw, capURL)
		}
	}
	if !strings.HasSuffix(caps.APIURL, "/") {
		t.Fatalf("APIURL %q does not end in /", caps.APIURL)
	}
	if !slices.IsSorted(caps.Scopes) {
		t.Fatalf("Scopes %q not sorted", caps.Scopes)
	}
}

// port is u's port, or its scheme's.
func port(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// wantURLKind is the kind of error a document's token or API URL raw must
// get when the document was read from u, "" for none: Invalid unless an
// absolute http(s) URL with a host and no credentials, Forbidden unless on
// an allowed host and on u's scheme and host (as written).
func wantURLKind(c *Client, raw string, u *url.URL) string {
	p, err := url.Parse(raw)
	switch {
	case raw == "" || err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Hostname() == "" || p.User != nil:
		return addon.Invalid
	case !c.Allowed(strings.ToLower(p.Hostname())) || p.Scheme != u.Scheme || p.Host != u.Host:
		return addon.Forbidden
	}
	return ""
}

// checkFetch has Client.Capabilities fetch body from capURL through a fake
// transport and checks that it answers what parseCapabilities did.
func checkFetch(t *testing.T, c *Client, body []byte, capURL string, caps Capabilities, err error) {
	t.Helper()
	fc := *c
	fc.HTTP = &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(bytes.NewReader(body)), Request: r}, nil
	})}
	got, gotErr := fc.Capabilities(context.Background(), capURL)
	if gotErr != nil && (addon.MessageOf(gotErr) == "bad capabilities url" || addon.KindOf(gotErr) == addon.Unavailable) {
		return // refused before the document was read
	}
	switch {
	case (gotErr == nil) != (err == nil):
		t.Fatalf("Capabilities: err = %v, parseCapabilities: %v", gotErr, err)
	case err != nil && gotErr.Error() != "hipchat: capabilities: "+err.Error():
		t.Fatalf("Capabilities: err = %q, parseCapabilities: %q", gotErr, err)
	case !reflect.DeepEqual(got, caps):
		t.Fatalf("Capabilities = %+v, parseCapabilities = %+v", got, caps)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
