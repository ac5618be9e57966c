package hipchat_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

func TestExtractAndVerify(t *testing.T) {
	now := t0
	roomInst := addon.Installation{OAuthID: "room-inst", OAuthSecret: "room-secret-0123456789", RoomID: 100}
	globalInst := addon.Installation{OAuthID: "global-inst", OAuthSecret: "global-secret-0123456789"}
	v := &hipchat.Verifier{Store: newMemStore(roomInst, globalInst), Now: func() time.Time { return now }}

	sign := func(inst addon.Installation, c hipchat.Claims) string {
		t.Helper()
		tok, err := hipchat.SignJWT(inst.OAuthID, inst.OAuthSecret, c)
		if err != nil {
			t.Fatalf("SignJWT: %v", err)
		}
		return tok
	}
	// raw signs arbitrary claims with any method, for what SignJWT refuses
	// to make.
	raw := func(m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		t.Helper()
		tok, err := jwt.NewWithClaims(m, claims).SignedString(key)
		if err != nil {
			t.Fatalf("sign %s: %v", m.Alg(), err)
		}
		return tok
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	std := hipchat.Claims{
		Subject: "1661743", RoomID: 100, UserTZ: "Europe/Berlin",
		IssuedAt: now.Add(-10 * time.Second), ExpiresAt: now.Add(5 * time.Minute), ID: "jti-1",
	}
	good := sign(roomInst, std)
	with := func(f func(*hipchat.Claims)) hipchat.Claims {
		c := std
		f(&c)
		return c
	}
	mapClaims := func(extra jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{
			"iss": roomInst.OAuthID, "sub": "1661743", "jti": "jti-raw",
			"iat": now.Add(-10 * time.Second).Unix(), "exp": now.Add(5 * time.Minute).Unix(),
			"context": map[string]any{"room_id": 100, "user_tz": "Europe/Berlin"},
		}
		for k, v := range extra {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	header := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Add("Authorization", v) }
	}
	query := func(v string) func(*http.Request) {
		return func(r *http.Request) { r.URL.RawQuery = "signed_request=" + url.QueryEscape(v) }
	}

	tests := []struct {
		name     string
		req      []func(*http.Request)
		wantKind string // "" = accepted
		wantMsg  string
		check    func(t *testing.T, inst addon.Installation, c hipchat.Claims)
	}{
		{
			name: "valid header",
			req:  []func(*http.Request){header("JWT " + good)},
			check: func(t *testing.T, inst addon.Installation, c hipchat.Claims) {
				want := hipchat.Claims{Issuer: "room-inst", Subject: "1661743", RoomID: 100, UserTZ: "Europe/Berlin",
					IssuedAt: now.Add(-10 * time.Second), ExpiresAt: now.Add(5 * time.Minute), ID: "jti-1"}
				if !c.IssuedAt.Equal(want.IssuedAt) || !c.ExpiresAt.Equal(want.ExpiresAt) {
					t.Errorf("times = %v, %v; want %v, %v", c.IssuedAt, c.ExpiresAt, want.IssuedAt, want.ExpiresAt)
				}
				c.IssuedAt, c.ExpiresAt = want.IssuedAt, want.ExpiresAt
				if c != want {
					t.Errorf("claims = %+v, want %+v", c, want)
				}
				if inst.OAuthID != "room-inst" {
					t.Errorf("installation = %q, want room-inst", inst.OAuthID)
				}
			},
		},
		{name: "JWT token=", req: []func(*http.Request){header("JWT token=" + good)}},
		{name: "JWT token= quoted", req: []func(*http.Request){header(`JWT token="` + good + `"`)}},
		{name: "lowercase scheme", req: []func(*http.Request){header("jwt " + good)}},
		{name: "signed_request", req: []func(*http.Request){query(good)}},
		{name: "header and query with the same token", req: []func(*http.Request){header("JWT " + good), query(good)}},
		{name: "none", wantKind: addon.Unauthorized, wantMsg: "no jwt"},
		{
			name:     "two different",
			req:      []func(*http.Request){header("JWT " + good), query(sign(roomInst, with(func(c *hipchat.Claims) { c.ID = "jti-2" })))},
			wantKind: addon.Unauthorized, wantMsg: "more than one",
		},
		{name: "bearer scheme", req: []func(*http.Request){header("Bearer " + good)}, wantKind: addon.Unauthorized, wantMsg: "not JWT"},
		{name: "empty JWT header", req: []func(*http.Request){header("JWT ")}, wantKind: addon.Unauthorized, wantMsg: "malformed"},
		{
			name:     "alg none",
			req:      []func(*http.Request){header("JWT " + raw(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, mapClaims(nil)))},
			wantKind: addon.Unauthorized, wantMsg: "algorithm not allowed",
		},
		{
			name:     "HS512",
			req:      []func(*http.Request){header("JWT " + raw(jwt.SigningMethodHS512, []byte(roomInst.OAuthSecret), mapClaims(nil)))},
			wantKind: addon.Unauthorized, wantMsg: "algorithm not allowed",
		},
		{
			name:     "RS256",
			req:      []func(*http.Request){header("JWT " + raw(jwt.SigningMethodRS256, rsaKey, mapClaims(nil)))},
			wantKind: addon.Unauthorized, wantMsg: "algorithm not allowed",
		},
		{
			name:     "wrong secret",
			req:      []func(*http.Request){header("JWT " + sign(addon.Installation{OAuthID: "room-inst", OAuthSecret: "not-the-secret"}, std))},
			wantKind: addon.Unauthorized, wantMsg: "bad signature",
		},
		{
			name:     "expired",
			req:      []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) { c.ExpiresAt = now.Add(-2 * time.Minute) })))},
			wantKind: addon.Unauthorized, wantMsg: "token expired",
		},
		{
			name: "within leeway",
			req:  []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) { c.ExpiresAt = now.Add(-30 * time.Second) })))},
		},
		{
			name:     "missing exp",
			req:      []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) { c.ExpiresAt = time.Time{} })))},
			wantKind: addon.Unauthorized, wantMsg: "no expiry",
		},
		{
			name:     "exp beyond max age",
			req:      []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) { c.ExpiresAt = now.Add(2 * time.Hour) })))},
			wantKind: addon.Unauthorized, wantMsg: "too far in the future",
		},
		{
			name: "lifetime beyond max age",
			req: []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) {
				c.IssuedAt, c.ExpiresAt = now.Add(-50*time.Minute), now.Add(20*time.Minute)
			})))},
			wantKind: addon.Unauthorized, wantMsg: "lifetime too long",
		},
		{
			name:     "issued in the future",
			req:      []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) { c.IssuedAt = now.Add(5 * time.Minute) })))},
			wantKind: addon.Unauthorized, wantMsg: "issued in the future",
		},
		{
			name:     "unknown issuer",
			req:      []func(*http.Request){header("JWT " + sign(addon.Installation{OAuthID: "stranger", OAuthSecret: "whatever"}, std))},
			wantKind: addon.Unauthorized, wantMsg: "unknown issuer",
		},
		{
			name:     "no issuer",
			req:      []func(*http.Request){header("JWT " + raw(jwt.SigningMethodHS256, []byte(roomInst.OAuthSecret), mapClaims(jwt.MapClaims{"iss": nil})))},
			wantKind: addon.Unauthorized, wantMsg: "no issuer",
		},
		{
			name: "prn instead of sub",
			req: []func(*http.Request){header("JWT " + raw(jwt.SigningMethodHS256, []byte(roomInst.OAuthSecret),
				mapClaims(jwt.MapClaims{"sub": nil, "prn": "4242"})))},
			check: func(t *testing.T, _ addon.Installation, c hipchat.Claims) {
				if c.Subject != "4242" {
					t.Errorf("Subject = %q, want 4242 from prn", c.Subject)
				}
			},
		},
		{
			name: "string room_id",
			req: []func(*http.Request){header("JWT " + raw(jwt.SigningMethodHS256, []byte(roomInst.OAuthSecret),
				mapClaims(jwt.MapClaims{"context": map[string]any{"room_id": "100", "user_tz": "UTC"}})))},
			check: func(t *testing.T, _ addon.Installation, c hipchat.Claims) {
				if c.RoomID != 100 || c.UserTZ != "UTC" {
					t.Errorf("RoomID, UserTZ = %d, %q, want 100, UTC", c.RoomID, c.UserTZ)
				}
			},
		},
		{
			name: "room_id not a number",
			req: []func(*http.Request){header("JWT " + raw(jwt.SigningMethodHS256, []byte(roomInst.OAuthSecret),
				mapClaims(jwt.MapClaims{"context": map[string]any{"room_id": "lobby"}})))},
			wantKind: addon.Unauthorized, wantMsg: "malformed",
		},
		{
			name:     "room not covered by a room install",
			req:      []func(*http.Request){header("JWT " + sign(roomInst, with(func(c *hipchat.Claims) { c.RoomID = 200 })))},
			wantKind: addon.Forbidden, wantMsg: "not covered",
		},
		{
			name: "any room for a global install",
			req:  []func(*http.Request){header("JWT " + sign(globalInst, with(func(c *hipchat.Claims) { c.RoomID = 200 })))},
			check: func(t *testing.T, inst addon.Installation, c hipchat.Claims) {
				if inst.OAuthID != "global-inst" || c.RoomID != 200 {
					t.Errorf("got %q room %d, want global-inst room 200", inst.OAuthID, c.RoomID)
				}
			},
		},
		{name: "garbage", req: []func(*http.Request){header("JWT not.a.jwt")}, wantKind: addon.Unauthorized, wantMsg: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := http.NewRequest(http.MethodGet, "https://addon.example/sidebar", nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range tt.req {
				f(r)
			}
			tok, err := hipchat.ExtractToken(r)
			var inst addon.Installation
			var c hipchat.Claims
			if err == nil {
				inst, c, err = v.Verify(context.Background(), tok)
			}
			if tt.wantKind == "" {
				if err != nil {
					t.Fatalf("err = %v, want the token accepted", err)
				}
				if tt.check != nil {
					tt.check(t, inst, c)
				}
				return
			}
			wantKind(t, err, tt.wantKind, tt.wantMsg)
			if tok != "" && strings.Contains(err.Error(), tok) {
				t.Errorf("error %q contains the token", err)
			}
			for _, s := range []string{roomInst.OAuthSecret, globalInst.OAuthSecret} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains a secret", err)
				}
			}
		})
	}
}

func TestVerifierOptions(t *testing.T) {
	inst := addon.Installation{OAuthID: "i", OAuthSecret: "secret-secret-secret"}
	tok, err := hipchat.SignJWT(inst.OAuthID, inst.OAuthSecret, hipchat.Claims{
		IssuedAt: t0, ExpiresAt: t0.Add(2 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) func() time.Time { return func() time.Time { return t0.Add(d) } }
	tests := []struct {
		name string
		v    *hipchat.Verifier
		ok   bool
	}{
		{name: "default max age refuses 2h", v: &hipchat.Verifier{Now: at(0)}},
		{name: "max age 3h accepts 2h", v: &hipchat.Verifier{Now: at(0), MaxAge: 3 * time.Hour}, ok: true},
		{name: "default leeway accepts 59s late", v: &hipchat.Verifier{Now: at(2*time.Hour + 59*time.Second), MaxAge: 3 * time.Hour}, ok: true},
		{name: "no leeway refuses 1s late", v: &hipchat.Verifier{Now: at(2*time.Hour + time.Second), MaxAge: 3 * time.Hour, Leeway: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.v.Store = newMemStore(inst)
			_, _, err := tt.v.Verify(context.Background(), tok)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestSignJWTRefuses(t *testing.T) {
	tests := []struct {
		name, id, secret string
		c                hipchat.Claims
	}{
		{name: "no secret", id: "i"},
		{name: "no oauth id", secret: "s"},
		{name: "other issuer", id: "i", secret: "s", c: hipchat.Claims{Issuer: "j"}},
		{name: "negative room", id: "i", secret: "s", c: hipchat.Claims{RoomID: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := hipchat.SignJWT(tt.id, tt.secret, tt.c); addon.KindOf(err) != addon.Invalid {
				t.Fatalf("err = %v, want kind invalid", err)
			}
		})
	}
}

// signRaw signs payload, a JSON text taken as it is (duplicate keys, nulls
// and odd number forms included), as HipChat would with inst's secret.
func signRaw(t *testing.T, inst addon.Installation, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString([]byte(payload))
	sig, err := jwt.SigningMethodHS256.Sign(signing, []byte(inst.OAuthSecret))
	if err != nil {
		t.Fatal(err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// TestVerifyClaimForms pins how the payload's claims are read: the number
// forms of a NumericDate, null standing for an absent claim (the last of
// duplicate keys winning), and claims of the wrong type.
func TestVerifyClaimForms(t *testing.T) {
	inst := addon.Installation{OAuthID: "room-inst", OAuthSecret: "room-secret-0123456789", RoomID: 100}
	v := &hipchat.Verifier{Store: newMemStore(inst), Now: func() time.Time { return t0 }}
	exp, iat := t0.Add(5*time.Minute), t0.Add(-10*time.Second)
	e, i := strconv.FormatInt(exp.Unix(), 10), strconv.FormatInt(iat.Unix(), 10)
	tests := []struct {
		name    string
		claims  string // between the braces, after iss
		wantMsg string // "" = accepted
		exp     time.Time
		iat     time.Time
		roomID  int64
	}{
		{name: "integers", claims: `"exp":` + e + `,"iat":` + i, exp: exp, iat: iat},
		{name: "fraction truncated", claims: `"exp":` + e + `.75,"iat":` + i + `.5`, exp: exp, iat: iat},
		{name: "exponent form", claims: `"exp":` + strconv.FormatFloat(float64(exp.Unix()), 'e', -1, 64), exp: exp},
		{name: "negative zero iat", claims: `"exp":` + e + `,"iat":-0`, wantMsg: "lifetime too long"},
		{name: "quoted number", claims: `"exp":"` + e + `"`, exp: exp},
		{name: "quoted word", claims: `"exp":"soon"`, wantMsg: "malformed"},
		{name: "empty string", claims: `"exp":""`, wantMsg: "malformed"},
		{name: "bool", claims: `"exp":true`, wantMsg: "malformed"},
		{name: "object", claims: `"exp":{}`, wantMsg: "malformed"},
		{name: "exp null", claims: `"exp":null`, wantMsg: "no expiry"},
		{name: "exp then null", claims: `"exp":` + e + `,"exp":null`, wantMsg: "no expiry"},
		{name: "null then exp", claims: `"exp":null,"exp":` + e, exp: exp},
		{name: "later exp wins", claims: `"exp":1,"exp":` + e, exp: exp},
		{name: "key case ignored", claims: `"EXP":` + e, exp: exp},
		{name: "iat null", claims: `"exp":` + e + `,"iat":null`, exp: exp},
		{name: "expired", claims: `"exp":-1`, wantMsg: "token expired"},
		{name: "beyond 2^53", claims: `"exp":9007199254740993`, wantMsg: "too far in the future"},
		{name: "out of range", claims: `"exp":1e999`, wantMsg: "malformed"},
		{name: "nbf in the future", claims: `"exp":` + e + `,"nbf":` + strconv.FormatInt(t0.Add(2*time.Minute).Unix(), 10), wantMsg: "not valid yet"},
		{name: "nbf past", claims: `"exp":` + e + `,"nbf":` + i, exp: exp},
		{name: "nbf null", claims: `"exp":` + e + `,"nbf":null`, exp: exp},
		{name: "nbf word", claims: `"exp":` + e + `,"nbf":"x"`, wantMsg: "malformed"},
		{name: "aud string", claims: `"exp":` + e + `,"aud":"x"`, exp: exp},
		{name: "aud list", claims: `"exp":` + e + `,"aud":["x","y"]`, exp: exp},
		{name: "aud number", claims: `"exp":` + e + `,"aud":5`, wantMsg: "malformed"},
		{name: "sub number", claims: `"exp":` + e + `,"sub":5`, wantMsg: "malformed"},
		{name: "context null", claims: `"exp":` + e + `,"context":null`, exp: exp},
		{name: "context room then null", claims: `"exp":` + e + `,"context":{"room_id":100},"context":null`, exp: exp},
		{name: "room_id number", claims: `"exp":` + e + `,"context":{"room_id":100}`, exp: exp, roomID: 100},
		{name: "room_id null", claims: `"exp":` + e + `,"context":{"room_id":null}`, exp: exp},
		{name: "room_id empty string", claims: `"exp":` + e + `,"context":{"room_id":" "}`, exp: exp},
		{name: "room_id negative", claims: `"exp":` + e + `,"context":{"room_id":-1}`, wantMsg: "malformed"},
		{name: "room_id fraction", claims: `"exp":` + e + `,"context":{"room_id":100.5}`, wantMsg: "malformed"},
		{name: "context not an object", claims: `"exp":` + e + `,"context":5`, wantMsg: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, err := v.Verify(context.Background(), signRaw(t, inst, `{"iss":"room-inst",`+tt.claims+`}`))
			if tt.wantMsg != "" {
				wantKind(t, err, addon.Unauthorized, tt.wantMsg)
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want the token accepted", err)
			}
			if !c.ExpiresAt.Equal(tt.exp) || !c.IssuedAt.Equal(tt.iat) || c.IssuedAt.IsZero() != tt.iat.IsZero() {
				t.Errorf("exp, iat = %v, %v; want %v, %v", c.ExpiresAt, c.IssuedAt, tt.exp, tt.iat)
			}
			if c.RoomID != tt.roomID {
				t.Errorf("RoomID = %d, want %d", c.RoomID, tt.roomID)
			}
		})
	}
}

// TestSignJWTPayload pins the payload SignJWT writes: field order, and
// zero claims left out.
func TestSignJWTPayload(t *testing.T) {
	tests := []struct {
		name string
		c    hipchat.Claims
		want string
	}{
		{name: "all", c: hipchat.Claims{Subject: "1661743", RoomID: 100, UserTZ: "Europe/Berlin", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour), ID: "j1"},
			want: `{"iss":"i","sub":"1661743","exp":1772622000,"iat":1772618400,"jti":"j1","context":{"room_id":100,"user_tz":"Europe/Berlin"}}`},
		{name: "sub-second times", c: hipchat.Claims{IssuedAt: t0.Add(time.Second / 2), ExpiresAt: t0.Add(time.Hour + time.Second/2)},
			want: `{"iss":"i","exp":1772622000,"iat":1772618400}`},
		{name: "none", want: `{"iss":"i"}`},
		{name: "time zone only", c: hipchat.Claims{UserTZ: "UTC"}, want: `{"iss":"i","context":{"user_tz":"UTC"}}`},
		{name: "room only", c: hipchat.Claims{RoomID: 7}, want: `{"iss":"i","context":{"room_id":7}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := hipchat.SignJWT("i", "s", tt.c)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("token has %d parts", len(parts))
			}
			header, _ := base64.RawURLEncoding.DecodeString(parts[0])
			payload, err := base64.RawURLEncoding.DecodeString(parts[1])
			if err != nil {
				t.Fatal(err)
			}
			if string(header) != `{"alg":"HS256","typ":"JWT"}` || string(payload) != tt.want {
				t.Errorf("header, payload = %s, %s\nwant %s, %s", header, payload, `{"alg":"HS256","typ":"JWT"}`, tt.want)
			}
		})
	}
}

// TestVerifyConcurrent has one Verifier, its settings resolved on first
// use, check tokens from many goroutines at once (run with -race).
func TestVerifyConcurrent(t *testing.T) {
	inst := addon.Installation{OAuthID: "i", OAuthSecret: "secret-secret-secret"}
	v := &hipchat.Verifier{Store: newMemStore(inst), Now: func() time.Time { return t0 }}
	good, err := hipchat.SignJWT(inst.OAuthID, inst.OAuthSecret, hipchat.Claims{IssuedAt: t0, ExpiresAt: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	expired, err := hipchat.SignJWT(inst.OAuthID, inst.OAuthSecret, hipchat.Claims{IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(-time.Minute * 2)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, _, err := v.Verify(context.Background(), good); err != nil {
					t.Errorf("good token: %v", err)
				}
				if _, _, err := v.Verify(context.Background(), expired); addon.KindOf(err) != addon.Unauthorized {
					t.Errorf("expired token: err = %v", err)
				}
			}
		})
	}
	wg.Wait()
}
