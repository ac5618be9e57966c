package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// webhookBody is a room_message webhook body, edited by the replacer
// (old, new pairs) if any.
func webhookBody(msgID, text string, edits ...string) []byte {
	b := string(hipchattest.RoomMessage("inst-1", 100, msgID, text))
	return []byte(strings.NewReplacer(edits...).Replace(b))
}

func webhookPost(tok string, body []byte) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "https://addon.example/webhook/echo", bytes.NewReader(body))
	r.Header.Set("Authorization", "JWT "+tok)
	r.Header.Set("Content-Type", "application/json")
	return r
}

// logLine is one line of the handler's JSON log.
type logLine struct {
	Level  string `json:"level"`
	Msg    string `json:"msg"`
	Method string `json:"method"`
	Path   string `json:"path"`
	Status int    `json:"status"`
	Reason string `json:"reason"`
}

func readLog(t *testing.T, buf *bytes.Buffer) []logLine {
	t.Helper()
	var lines []logLine
	dec := json.NewDecoder(buf)
	for dec.More() {
		var l logLine
		if err := dec.Decode(&l); err != nil {
			t.Fatalf("log: %v", err)
		}
		lines = append(lines, l)
	}
	return lines
}

// TestWebhookAnswers pins what the webhook answers each kind of request
// with: status, client message, the one log line of a refusal with its
// reason, the request's debug line, and the metrics.
func TestWebhookAnswers(t *testing.T) {
	var logBuf bytes.Buffer
	e := newTestEnv(t, envOptions{log: &logBuf, maxBodyBytes: 2048})
	good := func(id string) []byte { return webhookBody(id, "/echo hello") }
	rows := []struct {
		name   string
		req    func() *http.Request
		code   int
		msg    string // the client's {"error": msg}; "" for none
		reason string // the refusal's logged reason; "" for none
	}{
		{name: "accepted", req: func() *http.Request { return webhookPost(e.tok, good("a")) }, code: 204},
		{name: "duplicate", req: func() *http.Request { return webhookPost(e.tok, good("a")) }, code: 204},
		{name: "duplicate with a new JWT", req: func() *http.Request { return webhookPost(e.sign(), good("a")) }, code: 204},
		{name: "JWT replayed with another body", req: func() *http.Request { return webhookPost(e.tok, good("a2")) }, code: 401,
			msg: "JWT replayed with another body", reason: "JWT replayed with another body"},
		{name: "empty body", req: func() *http.Request { return webhookPost(e.sign(), nil) }, code: 400,
			msg: "malformed JSON body", reason: "malformed JSON body: EOF"},
		{name: "truncated", req: func() *http.Request { return webhookPost(e.sign(), good("b")[:100]) }, code: 400,
			msg: "malformed JSON body", reason: "malformed JSON body: unexpected EOF"},
		{name: "syntax error", req: func() *http.Request { return webhookPost(e.sign(), []byte(`{"event":}`)) }, code: 400,
			msg: "malformed JSON body", reason: "malformed JSON body: invalid character '}' looking for beginning of value"},
		{name: "wrong type", req: func() *http.Request {
			return webhookPost(e.sign(), webhookBody("c", "/echo hello", `"room":{"id":100`, `"room":{"id":"100"`))
		}, code: 400, msg: "malformed JSON body",
			reason: "malformed JSON body: json: cannot unmarshal string into Go struct field .item.room.id of type int64"},
		{name: "trailing data", req: func() *http.Request { return webhookPost(e.sign(), append(good("d"), " x"...)) }, code: 400,
			msg: "malformed JSON body: trailing data", reason: "malformed JSON body: trailing data"},
		{name: "two values", req: func() *http.Request { return webhookPost(e.sign(), append(good("e"), good("f")...)) }, code: 400,
			msg: "malformed JSON body: trailing data", reason: "malformed JSON body: trailing data"},
		// json.Decoder.More does not count a closing bracket as more data.
		{name: "closing bracket after", req: func() *http.Request { return webhookPost(e.sign(), append(good("g"), " ]"...)) }, code: 204},
		{name: "trailing spaces", req: func() *http.Request { return webhookPost(e.sign(), append(good("h"), " \n\t"...)) }, code: 204},
		// The whole body is read (the replay check digests it): spaces
		// past the cap are over the cap too.
		{name: "spaces past the cap", req: func() *http.Request {
			return webhookPost(e.sign(), append(good("i"), bytes.Repeat([]byte(" "), 4096)...))
		}, code: 413, msg: "request body over 2048 bytes", reason: "http: request body too large"},
		{name: "over the cap", req: func() *http.Request {
			return webhookPost(e.sign(), webhookBody("j", "/echo "+strings.Repeat("x", 2048)))
		}, code: 413, msg: "request body over 2048 bytes", reason: "http: request body too large"},

		{name: "other event", req: func() *http.Request {
			return webhookPost(e.sign(), webhookBody("l", "/echo hello", `"event":"room_message"`, `"event":"room_enter"`))
		}, code: 400, msg: `unsupported event "room_enter"`, reason: `unsupported event "room_enter"`},
		{name: "no message id", req: func() *http.Request { return webhookPost(e.sign(), good("")) }, code: 400,
			msg: "item.room.id and item.message.id are required", reason: "item.room.id and item.message.id are required"},
		{name: "other oauth client", req: func() *http.Request {
			return webhookPost(e.sign(), webhookBody("m", "/echo hello", `"oauth_client_id":"inst-1"`, `"oauth_client_id":"inst-2"`))
		}, code: 401, msg: "oauth_client_id does not match the JWT issuer", reason: "oauth_client_id does not match the JWT issuer"},
		{name: "no oauth client", req: func() *http.Request {
			return webhookPost(e.sign(), webhookBody("m2", "/echo hello", `,"oauth_client_id":"inst-1"`, ``))
		}, code: 401, msg: "oauth_client_id does not match the JWT issuer", reason: "oauth_client_id does not match the JWT issuer"},
		{name: "JWT of another room", req: func() *http.Request {
			return webhookPost(e.sign(), webhookBody("n", "/echo hello", `"room":{"id":100`, `"room":{"id":200`))
		}, code: 401, msg: "the JWT's room is not the webhook's room", reason: "the JWT's room is not the webhook's room"},
		{name: "other room", req: func() *http.Request {
			return webhookPost(e.signRoom(0), webhookBody("n2", "/echo hello", `"room":{"id":100`, `"room":{"id":200`))
		}, code: 403, msg: "room 200 is not covered by installation inst-1", reason: "room 200 is not covered by installation inst-1"},
		{name: "other command", req: func() *http.Request { return webhookPost(e.sign(), webhookBody("o", "/other x")) }, code: 400,
			msg: "message is not a /echo command", reason: "message is not a /echo command"},
		{name: "bad jwt", req: func() *http.Request { return webhookPost(e.tok+"x", good("p")) }, code: 401,
			msg: "invalid JWT", reason: "invalid JWT: hipchat: verify jwt: bad signature: token signature is invalid: signature is invalid"},
		{name: "no jwt", req: func() *http.Request {
			r := webhookPost(e.sign(), good("q"))
			r.Header.Del("Authorization")
			return r
		}, code: 401, msg: "missing or malformed JWT", reason: "missing or malformed JWT: hipchat: extract jwt: no jwt in the request"},
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) {
			logBuf.Reset()
			w := httptest.NewRecorder()
			e.h.ServeHTTP(w, tt.req())
			if w.Code != tt.code {
				t.Fatalf("status = %d, want %d (%s)", w.Code, tt.code, w.Body)
			}
			if tt.msg == "" {
				if w.Body.Len() != 0 {
					t.Errorf("body = %q, want none", w.Body)
				}
			} else {
				want := map[string]string{"error": tt.msg}
				var got map[string]string
				if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || !maps.Equal(got, want) {
					t.Errorf("body = %s, want %v", w.Body, want)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			}
			if got, want := w.Header().Get("WWW-Authenticate"), map[bool]string{true: `JWT realm="hipconnect"`}[tt.code == 401]; got != want {
				t.Errorf("WWW-Authenticate = %q, want %q", got, want)
			}
			lines := readLog(t, &logBuf)
			var refusals, requests []logLine
			for _, l := range lines {
				switch l.Msg {
				case "request refused":
					refusals = append(refusals, l)
				case "request":
					requests = append(requests, l)
				default:
					t.Errorf("unexpected log line %+v", l)
				}
			}
			if wantRequest := (logLine{Level: "DEBUG", Msg: "request", Method: "POST", Path: "/webhook/echo", Status: tt.code}); len(requests) != 1 || requests[0] != wantRequest {
				t.Errorf("request log lines = %+v, want one %+v", requests, wantRequest)
			}
			var wantRefusals []logLine
			if tt.reason != "" {
				level := "WARN"
				if tt.code >= 500 {
					level = "ERROR"
				}
				wantRefusals = []logLine{{Level: level, Msg: "request refused", Method: "POST", Path: "/webhook/echo", Status: tt.code, Reason: tt.reason}}
			}
			if !slices.Equal(refusals, wantRefusals) {
				t.Errorf("refusal log lines = %+v, want %+v", refusals, wantRefusals)
			}
		})
	}

	want := `
# HELP hipconnect_webhooks_total Webhook deliveries from HipChat by result.
# TYPE hipconnect_webhooks_total counter
hipconnect_webhooks_total{result="accepted"} 3
hipconnect_webhooks_total{result="bad request"} 9
hipconnect_webhooks_total{result="duplicate"} 2
hipconnect_webhooks_total{result="forbidden"} 1
hipconnect_webhooks_total{result="request entity too large"} 2
hipconnect_webhooks_total{result="unauthorized"} 4
`
	if err := testutil.GatherAndCompare(e.m.Registry, strings.NewReader(want), "hipconnect_webhooks_total"); err != nil {
		t.Error(err)
	}
	counts := map[string]uint64{}
	mfs, err := e.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "hipconnect_http_request_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			counts[strings.Join(labels, ",")] = m.GetHistogram().GetSampleCount()
		}
	}
	wantCounts := map[string]uint64{"code=204,route=webhook": 5, "code=400,route=webhook": 9, "code=401,route=webhook": 6,
		"code=403,route=webhook": 1, "code=413,route=webhook": 2}
	if fmt.Sprint(counts) != fmt.Sprint(wantCounts) {
		t.Errorf("request duration counts = %v, want %v", counts, wantCounts)
	}
}

// TestSecurityHeaders pins the headers every public response carries,
// refusals included, and that each response has its own.
func TestSecurityHeaders(t *testing.T) {
	base := map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
		"Cache-Control":           "no-store",
	}
	for _, scheme := range []string{"https", "http"} {
		t.Run(scheme, func(t *testing.T) {
			e := newTestEnv(t, envOptions{baseURL: scheme + "://addon.example"})
			want := base
			if scheme == "https" {
				want = maps.Clone(base)
				want["Strict-Transport-Security"] = "max-age=31536000"
			}
			reqs := map[string]func() *http.Request{
				"accepted": func() *http.Request { return webhookPost(e.tok, webhookBody("a", "/echo hi")) },
				"401": func() *http.Request {
					return httptest.NewRequest(http.MethodPost, "https://addon.example/webhook/echo", strings.NewReader("{}"))
				},
				"421": func() *http.Request {
					r := webhookPost(e.tok, webhookBody("b", "/echo hi"))
					r.Host = "evil.example"
					return r
				},
				"descriptor": func() *http.Request {
					return httptest.NewRequest(http.MethodGet, "https://addon.example/atlassian-connect.json", nil)
				},
			}
			for name, req := range reqs {
				w := httptest.NewRecorder()
				e.h.ServeHTTP(w, req())
				h := w.Result().Header
				for k, v := range want {
					if got := h[k]; len(got) != 1 || got[0] != v {
						t.Errorf("%s: %s = %q, want [%q]", name, k, got, v)
					}
				}
				if scheme == "http" && h.Get("Strict-Transport-Security") != "" {
					t.Errorf("%s: HSTS over plain http", name)
				}
				// A handler changing its response's headers changes no other's.
				for k := range want {
					w.Header()[k][0] = "changed"
					w.Header().Add(k, "added")
				}
			}
		})
	}
}

// TestHostMatches pins which Host headers name the base URL's host.
func TestHostMatches(t *testing.T) {
	tests := []struct {
		hostHeader, host, port string
		want                   bool
	}{
		{"addon.example", "addon.example", "", true},
		{"ADDON.example", "addon.example", "", true},
		{"addon.example.", "addon.example", "", true},
		{"addon.example:443", "addon.example", "", false},
		{"addon.example:8443", "addon.example", "8443", true},
		{"addon.example", "addon.example", "8443", true},
		{"addon.example:9999", "addon.example", "8443", false},
		{"addon.example:", "addon.example", "8443", true},
		{"evil.example", "addon.example", "", false},
		{"", "addon.example", "", false},
		{"[::1]:8443", "::1", "8443", true},
		{"[::1]", "::1", "", true},
		{"::1", "::1", "", true}, // no port to split off
		{"[::1]:8443:1", "::1", "8443", false},
		{"addon.example:8443:1", "addon.example", "8443", false},
		{"[addon.example]", "addon.example", "", true},
		{"addon.example]", "addon.example", "", true},
	}
	for _, tt := range tests {
		if got := hostMatches(tt.hostHeader, tt.host, tt.port); got != tt.want {
			t.Errorf("hostMatches(%q, %q, %q) = %v, want %v", tt.hostHeader, tt.host, tt.port, got, tt.want)
		}
	}
}
