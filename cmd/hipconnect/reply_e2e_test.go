package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
)

// replyConfig has the same search command three times, answering in the
// response, through the API, and in the response if within half a second
// (against a backend that takes two), and echo in the response.
const replyConfig = e2eDaemon + `commands:
  - name: hascode
    search_url: "%[1]s/byTag.php?tag={term}"
    show_all_url: "https://blog.example/tag/{term}"
    reply: response
  - name: hascodeapi
    search_url: "%[1]s/byTag.php?tag={term}"
    show_all_url: "https://blog.example/tag/{term}"
    reply: api
  - name: slow
    search_url: "%[2]s/?tag={term}"
    reply: auto
    reply_budget: 500ms
  - name: echo
    kind: echo
    reply: response
%[3]s`

// slowBlog answers every search with one hit after delay.
func slowBlog(t *testing.T, addr string, delay time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay)
		fmt.Fprintf(w, `[{"title":"Slow article","url":"https://blog.example/slow"}]`)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// roomNames are the names of the rooms TestBuildYourOwn makes other than
// the fake's default "Room {id}".
var roomNames = map[int64]string{7: "Ops Room", 8: "Dev Room"}

// hook is a webhook as HipChat sends it: signed for a Connect install
// (secret set), bare for a "Build your own" integration.
func hook(t *testing.T, hc *hipchattest.Server, url, oauthID, secret string, room int64, msgID, text string) hipchattest.WebhookResult {
	t.Helper()
	h := http.Header{}
	if secret != "" {
		h.Set("Authorization", "JWT "+hc.JWT(oauthID, secret, 0, time.Minute))
	}
	body := hipchattest.RoomMessage(oauthID, room, msgID, text)
	if name, ok := roomNames[room]; ok { // as HipChat names the room in the webhook
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		m["item"].(map[string]any)["room"].(map[string]any)["name"] = name
		body, _ = json.Marshal(m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := hc.PostWebhook(ctx, url, h, body)
	if err != nil {
		t.Fatalf("webhook %s: %v", text, err)
	}
	return res
}

// viaCount counts the notifications with message msg, by how they came.
func viaCount(hc *hipchattest.Server, msg string) map[string]int {
	n := map[string]int{}
	for _, x := range hc.Notifications() {
		if x.Body.Message == msg {
			n[x.Via]++
		}
	}
	return n
}

func TestReplyInTheResponse(t *testing.T) {
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	blogURL, searches := blog(t, "127.0.0.4:0")
	d := newDaemonWithCA(t, fmt.Sprintf(replyConfig, blogURL, slowBlog(t, "127.0.0.4:0", 2*time.Second), ""), hc.CAPEM())
	id, secret := install(t, d, hc, 0) // global: no greeting

	t.Run("the same reply as through the API", func(t *testing.T) {
		api := hook(t, hc, d.base+"/webhook/hascodeapi", id, secret, 100, "a1", "/hascodeapi 12")
		if api.Status != http.StatusNoContent {
			t.Fatalf("reply: api answered %d, want 204", api.Status)
		}
		posted := wait(t, hc, 1)[0]
		res := hook(t, hc, d.base+"/webhook/hascode", id, secret, 100, "r1", "/hascode 12")
		if res.Status != http.StatusOK || res.Err != nil || res.Reply == nil {
			t.Fatalf("reply: response answered %d %s (%v)", res.Status, res.Body, res.Err)
		}
		if posted.Via != hipchattest.ViaAPI || res.Reply.Via != hipchattest.ViaResponse {
			t.Fatalf("via %q and %q", posted.Via, res.Reply.Via)
		}
		if string(res.Reply.Raw) != string(posted.Raw) {
			t.Errorf("the reply in the response differs from the one posted:\n%s\n%s", res.Reply.Raw, posted.Raw)
		}
		if c := strings.Count(res.Reply.Body.Message, "<li>"); c != 10 || !strings.Contains(res.Reply.Body.Message, "Show all 12 results") {
			t.Errorf("the reply has %d links: %s", c, res.Reply.Body.Message)
		}
	})

	// From here on HipChat cannot be reached from the add-on.
	hc.BlockAPI(true)
	before := len(hc.Notifications())

	t.Run("outbound blocked", func(t *testing.T) {
		res := hook(t, hc, d.base+"/webhook/echo", id, secret, 100, "e1", "/echo <b>hi</b> & bye")
		if res.Status != http.StatusOK || res.Reply == nil {
			t.Fatalf("/echo answered %d %s (%v)", res.Status, res.Body, res.Err)
		}
		if res.Reply.Body.Message != "<b>hi</b> & bye" || res.Reply.Body.MessageFormat != "text" {
			t.Errorf("/echo reply %+v", res.Reply.Body)
		}
		res = hook(t, hc, d.base+"/webhook/hascode", id, secret, 100, "h1", "/hascode java")
		if res.Status != http.StatusOK || res.Reply == nil || !strings.Contains(res.Reply.Body.Message, "&lt;script&gt;") {
			t.Fatalf("/hascode java answered %d %s (%v)", res.Status, res.Body, res.Err)
		}
	})

	t.Run("a message delivered again is not run again", func(t *testing.T) {
		n := searches.Load()
		res := hook(t, hc, d.base+"/webhook/hascode", id, secret, 100, "h1", "/hascode java")
		if res.Status != http.StatusNoContent || res.Reply != nil {
			t.Errorf("the same message again answered %d %s, want 204 and no reply", res.Status, res.Body)
		}
		if searches.Load() != n {
			t.Errorf("the search ran again")
		}
	})

	t.Run("auto falls back to the outbox", func(t *testing.T) {
		hc.BlockAPI(false)
		start := time.Now()
		res := hook(t, hc, d.base+"/webhook/slow", id, secret, 100, "s1", "/slow go")
		if took := time.Since(start); res.Status != http.StatusNoContent || took > 1500*time.Millisecond {
			t.Fatalf("/slow answered %d after %v, want 204 after the 500ms budget", res.Status, took)
		}
		waitMessage(t, hc, slowReply(t, hc))
		time.Sleep(500 * time.Millisecond) // a second reply would come now
		if got := viaCount(hc, slowReply(t, hc)); got[hipchattest.ViaAPI] != 1 || got[hipchattest.ViaResponse] != 0 {
			t.Errorf("the slow reply came %v, want once through the API", got)
		}
	})
	if got := len(hc.Notifications()) - before; got != 3 {
		t.Errorf("%d notifications after the API was blocked, want 3 (echo, hascode, slow)", got)
	}
	if got := d.metric(t, `hipconnect_webhooks_total{result="answered"}`); got != "3" {
		t.Errorf(`webhooks_total{result="answered"} = %s, want 3`, got)
	}
}

// slowReply is the message of the slow command's reply, once it came.
func slowReply(t *testing.T, hc *hipchattest.Server) string {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, n := range hc.Notifications() {
			if strings.Contains(n.Body.Message, "Slow article") {
				return n.Body.Message
			}
		}
	}
	t.Fatal("the slow command's reply never came")
	return ""
}

// integrationsConfig adds two integrations: ops-room in room 7 answering in
// the response, dev in room 8 ("Dev Room" by name) posting through its
// room URL.
const integrationsConfig = `integrations:
  - name: ops-room
    room_url_file: %s
    commands: [hascode, echo]
  - name: dev
    room_url_file: %s
    commands: [echo]
    reply: api
`

func cli(t *testing.T, d *proc, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append(args, "--config", d.cfgPath)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("hipconnect %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return strings.TrimSpace(string(out))
}

func TestBuildYourOwn(t *testing.T) {
	hc := hipchattest.New(t, hipchattest.Options{Addr: "127.0.0.2:0"})
	for id, name := range roomNames {
		hc.AddRoom(id, name)
	}
	opsToken, devToken := hc.AddRoomToken("7"), hc.AddRoomToken("Dev Room")
	dir := t.TempDir()
	opsFile, devFile := filepath.Join(dir, "ops-room.url"), filepath.Join(dir, "dev.url")
	for f, tok := range map[string]string{opsFile: opsToken, devFile: devToken} {
		if err := os.WriteFile(f, []byte(hc.RoomURL(tok)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	blogURL, searches := blog(t, "127.0.0.4:0")
	d := newDaemonWithCA(t, fmt.Sprintf(replyConfig, blogURL, blogURL, fmt.Sprintf(integrationsConfig, opsFile, devFile)), hc.CAPEM())
	var seen []string // every answer body, checked for tokens at the end

	opsURL := cli(t, d, "integrations", "url", "ops-room")
	if !strings.HasPrefix(opsURL, d.base+"/integrations/ops-room/") || len(opsURL) < len(d.base)+len("/integrations/ops-room/")+43 {
		t.Fatalf("integrations url = %q", opsURL)
	}
	secret := opsURL[strings.LastIndex(opsURL, "/")+1:]

	t.Run("answered in the response", func(t *testing.T) {
		res := hook(t, hc, opsURL, "", "", 7, "b1", "/hascode java")
		seen = append(seen, string(res.Body))
		if res.Status != http.StatusOK || res.Reply == nil || !strings.Contains(res.Reply.Body.Message, "java") {
			t.Fatalf("/hascode java answered %d %s (%v)", res.Status, res.Body, res.Err)
		}
		if got := viaCount(hc, res.Reply.Body.Message); got[hipchattest.ViaAPI] != 0 {
			t.Errorf("also posted through the room URL: %v", got)
		}
	})

	t.Run("refused", func(t *testing.T) {
		n := searches.Load()
		for _, tc := range []struct {
			name, url string
			room      int64
			text      string
			want      int
		}{
			{"wrong secret", d.base + "/integrations/ops-room/" + strings.Repeat("A", 43), 7, "/hascode java", 404},
			{"other integration's name", d.base + "/integrations/dev/" + secret, 8, "/echo x", 404},
			{"unknown integration", d.base + "/integrations/nope/" + secret, 7, "/echo x", 404},
			{"another room", opsURL, 8, "/hascode java", 403},
			{"a command it does not list", opsURL, 7, "/hascodeapi java", 403},
		} {
			res := hook(t, hc, tc.url, "", "", tc.room, "refused-"+tc.name, tc.text)
			seen = append(seen, string(res.Body))
			if res.Status != tc.want || res.Reply != nil {
				t.Errorf("%s: %d %s, want %d", tc.name, res.Status, res.Body, tc.want)
			}
		}
		if searches.Load() != n {
			t.Error("a refused webhook ran a search")
		}
		if strings.Contains(d.log.String(), strings.Repeat("A", 43)) {
			t.Error("the wrong secret is in the log")
		}
	})

	t.Run("through the room URL", func(t *testing.T) {
		res := hook(t, hc, cli(t, d, "integrations", "url", "dev"), "", "", 8, "d1", "/echo deployed")
		if res.Status != http.StatusNoContent {
			t.Fatalf("dev answered %d %s, want 204", res.Status, res.Body)
		}
		waitMessage(t, hc, "deployed")
		for _, n := range hc.Notifications() {
			if n.Body.Message == "deployed" && (n.RoomToken != devToken || n.Via != hipchattest.ViaAPI || n.Room != "Dev%20Room" && n.Room != "Dev Room") {
				t.Errorf("posted as %+v", n)
			}
		}
	})

	t.Run("rotate", func(t *testing.T) {
		next := cli(t, d, "integrations", "rotate", "ops-room")
		if next == opsURL || !strings.HasPrefix(next, d.base+"/integrations/ops-room/") {
			t.Fatalf("rotate = %q", next)
		}
		if res := hook(t, hc, opsURL, "", "", 7, "rot-old", "/echo old"); res.Status != http.StatusNotFound {
			t.Errorf("the old URL answered %d, want 404", res.Status)
		}
		if res := hook(t, hc, next, "", "", 7, "rot-new", "/echo new"); res.Status != http.StatusOK || res.Reply == nil {
			t.Errorf("the new URL answered %d %s", res.Status, res.Body)
		}
		if got := cli(t, d, "integrations", "url", "ops-room"); got != next {
			t.Errorf("url after rotate = %q, want %q", got, next)
		}
	})

	t.Run("notify survives kill -9", func(t *testing.T) {
		hc.BlockAPI(true)
		out := cli(t, d, "notify", "dev", "backup finished")
		if !strings.HasPrefix(out, "queued as job ") {
			t.Fatalf("notify = %q", out)
		}
		d.stop(syscall.SIGKILL)
		hc.BlockAPI(false)
		d.start()
		waitMessage(t, hc, "backup finished")
		time.Sleep(300 * time.Millisecond)
		if got := viaCount(hc, "backup finished"); got[hipchattest.ViaAPI] != 1 {
			t.Errorf("notify delivered %v, want once", got)
		}
	})

	t.Run("no token anywhere", func(t *testing.T) {
		backup := filepath.Join(t.TempDir(), "backup.db")
		cli(t, d, "backup", backup)
		metrics := d.metrics(t)
		check, _ := exec.Command(binary, "check", "--config", d.cfgPath).CombinedOutput()
		d.stop(syscall.SIGTERM)
		db, err := os.ReadFile(filepath.Join(filepath.Dir(d.cfgPath), "hipconnect.db"))
		if err != nil {
			t.Fatal(err)
		}
		bk, err := os.ReadFile(backup)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(check), "integration dev") || !strings.Contains(string(check), "auth_token=REDACTED") {
			t.Errorf("check does not report the integrations:\n%s", check)
		}
		for name, text := range map[string]string{"log": d.log.String(), "database": string(db), "backup": string(bk),
			"metrics": metrics, "check": string(check), "responses": strings.Join(seen, "\n")} {
			for _, tok := range []string{opsToken, devToken} {
				if strings.Contains(text, tok) {
					t.Errorf("a room token is in the %s", name)
				}
			}
			if name != "log" && name != "responses" && strings.Contains(text, secret) {
				t.Errorf("the webhook secret is in the clear in the %s", name)
			}
		}
		if strings.Contains(d.log.String(), secret) {
			t.Errorf("the webhook secret is in the log")
		}
	})
}
