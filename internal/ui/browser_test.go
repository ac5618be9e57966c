package ui

import (
	"context"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// chromiumPath is Debian's chromium (apt-get install -y chromium).
const chromiumPath = "/usr/bin/chromium"

// fakeAllJS stands in for HipChat's all.js: HipChat.auth.withToken hands
// the page the JWT of its own URL, as the real one hands the current JWT
// of the frame. It counts its calls, so the test can tell that the page
// asked it rather than using its fallback.
const fakeAllJS = `(function () {
  var m = /[?&]signed_request=([^&#]+)/.exec(window.location.search);
  var token = m ? decodeURIComponent(m[1]) : null;
  window.__withTokenCalls = 0;
  window.HipChat = {
    auth: {
      withToken: function (cb) {
        window.__withTokenCalls++;
        setTimeout(function () { cb(token ? null : new Error('no token'), token); }, 0);
      }
    }
  };
}());
`

var hostPage = template.Must(template.New("host").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>HipChat (fake)</title></head>
<body>
<h1>Fake HipChat client</h1>
<iframe id="sidebar" title="Sidebar" src="{{.Sidebar}}" width="300" height="640"></iframe>
<iframe id="dialog" title="Dialog" src="{{.Dialog}}" width="520" height="640"></iframe>
<iframe id="configure" title="Configuration" src="{{.Configure}}" width="440" height="640"></iframe>
</body></html>
`))

// TestBrowser drives Debian's chromium through the three pages as the
// HipChat client would frame them: a host page on the "HipChat" origin
// (127.0.0.2) frames the sidebar, the dialog and the configuration page
// served from 127.0.0.1, with a fake all.js. It changes a setting, runs a
// search from the dialog against a fake blog (127.0.0.4), posts it to the
// room, and finds it in the reloaded sidebar. Screenshots go to
// $HIPCONNECT_ARTIFACTS (or a temporary directory).
func TestBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("%s not found (apt-get install -y chromium); set CI to make this a failure", chromiumPath)
		}
		t.Fatalf("CI is set and %s is missing: apt-get install -y chromium", chromiumPath)
	}
	start := time.Now()

	// The "HipChat" origin: the host page and all.js.
	hcLn, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	hcOrigin := "http://" + hcLn.Addr().String()
	f := newFixture(t, fixtureOpts{origin: hcOrigin, blogAddr: "127.0.0.4:0", realTime: true})

	// The add-on: the UI's routes as the public listener mounts them
	// (its Host check is not under test here).
	addonSrv := listen(t, "127.0.0.1:0", f.h)

	sign := func() string {
		now := time.Now()
		tok, err := hipchat.SignJWT(f.inst.OAuthID, testSecret, hipchat.Claims{Subject: "1661743", RoomID: testRoom,
			UserTZ: "Europe/Berlin", IssuedAt: now, ExpiresAt: now.Add(10 * time.Minute), ID: fmt.Sprint(now.UnixNano())})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	pageURL := func(path string) string { return addonSrv.URL + path + "?signed_request=" + sign() }
	urls := map[string]string{"Sidebar": pageURL("/sidebar"), "Dialog": pageURL("/dialog"), "Configure": pageURL("/configure")}
	hcMux := http.NewServeMux()
	hcMux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = hostPage.Execute(w, urls)
	})
	hcMux.HandleFunc("GET /atlassian-connect/all.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write([]byte(fakeAllJS))
	})
	hcSrv := &http.Server{Handler: hcMux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hcSrv.Serve(hcLn) }()
	t.Cleanup(func() { _ = hcSrv.Close() })

	// The browser, with a bound on the whole run: nothing waits forever.
	runCtx, cancelRun := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancelRun()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(runCtx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1320, 720),
	)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	defer cancelBrowser()

	// step bounds one group of actions.
	step := func(ctx context.Context, name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	eval := func(ctx context.Context, expr string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return v
	}
	waitFor := func(ctx context.Context, name, predicate string) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		if _, err := chromedp.Run(sctx, chromedp.Poll[chromedp.Void](predicate,
			chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("waiting for %s (%s): %v", name, predicate, err)
		}
	}

	if err := chromedp.Do(browser); err != nil { // starts chromium
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	step(browser, "open the host page", chromedp.Navigate(hcOrigin+"/"))

	// Each page is a cross-site iframe, so a target of its own.
	frames := map[string]target.ID{}
	deadline := time.Now().Add(10 * time.Second)
	for len(frames) < 3 {
		infos, err := chromedp.Targets(browser)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			for _, p := range []string{"sidebar", "dialog", "configure"} {
				if in.Type == "iframe" && strings.HasPrefix(in.URL, addonSrv.URL+"/"+p+"?") {
					frames[p] = in.TargetID
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("iframes found: %v, want sidebar, dialog and configure", frames)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var detach []context.CancelFunc
	defer func() { // before the browser goes
		for _, cancel := range detach {
			cancel()
		}
	}()
	frame := func(name string) context.Context {
		ctx, cancel := chromedp.NewContext(browser, chromedp.WithTargetID(frames[name]))
		detach = append(detach, cancel)
		// The first Run binds the attachment to the context it gets, so
		// it gets ctx itself (bounded by runCtx), not a shorter child.
		if err := chromedp.Do(ctx, chromedp.WaitReady(chromedp.CSS("body"))); err != nil {
			t.Fatalf("attach to %s: %v", name, err)
		}
		return ctx
	}
	configure, dialog, sidebar := frame("configure"), frame("dialog"), frame("sidebar")

	// Every page got all.js from the HipChat origin, its own script and
	// style past the CSP, and fits the frame without scrolling sideways.
	for name, ctx := range map[string]context.Context{"configure": configure, "dialog": dialog, "sidebar": sidebar} {
		waitFor(ctx, name+" scripts", `typeof window.HipChat === 'object' && document.body.getAttribute('data-page') !== null`)
		if got := eval(ctx, `getComputedStyle(document.querySelector('button')).backgroundColor`); got == "" || got == "rgba(0, 0, 0, 0)" || got == "rgb(239, 239, 239)" {
			t.Errorf("%s: button background %q: app.css not applied", name, got)
		}
		if got := eval(ctx, `String(document.documentElement.scrollWidth <= document.documentElement.clientWidth)`); got != "true" {
			t.Errorf("%s: wider than its %s px frame", name, eval(ctx, `String(document.documentElement.clientWidth)`))
		}
	}

	// Configuration: turn /echo off, show 3 results, Save.
	step(configure, "change the settings",
		chromedp.WaitVisible(chromedp.ID("max-results")),
		chromedp.Click(chromedp.ID("cmd-echo")),
		chromedp.SendKeys(chromedp.ID("max-results"), "3"),
		chromedp.Click(chromedp.ID("save")),
	)
	waitFor(configure, "settings saved", `document.getElementById('status').textContent === 'Settings saved.'`)
	st, err := f.slash.Settings(context.Background(), f.inst.OAuthID)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Disabled["echo"] || st.Enabled("echo") || st.MaxResults != 3 || !st.Enabled("hascode") {
		t.Errorf("settings after Save = %+v, want echo disabled and 3 results", st)
	}

	// Dialog: search "java" (Enter submits), see 3 of 25, post to the room.
	step(dialog, "search",
		chromedp.WaitVisible(chromedp.ID("term")),
		chromedp.SendKeys(chromedp.ID("term"), "java\n"),
	)
	waitFor(dialog, "three results", `document.querySelectorAll('#results li a').length === 3 && !document.getElementById('post-button').disabled`)
	if got, want := eval(dialog, `document.getElementById('results-heading').textContent`), "25 results for java, showing 3"; got != want {
		t.Errorf("results heading = %q, want %q", got, want)
	}
	if got := eval(dialog, `document.querySelector('#results li a').textContent`); got != "java article 1 <b>" {
		t.Errorf("first result = %q, want the title as text", got)
	}
	if got := eval(dialog, `String(window.__withTokenCalls > 0)`); got != "true" {
		t.Error("the dialog did not get its token from HipChat.auth.withToken")
	}
	step(dialog, "post to the room", chromedp.Click(chromedp.ID("post-button")))
	waitFor(dialog, "posted", `document.getElementById('status').textContent === 'Posted to the room.'`)

	posts := f.Posts()
	if len(posts) != 1 {
		t.Fatalf("room notifications = %d, want 1", len(posts))
	}
	if p := posts[0]; p.RoomID != testRoom || strings.Count(p.N.Message, "<a href=") != 3 {
		t.Errorf("room got %+v, want one notification with exactly 3 links", p)
	}
	if gl := f.Glances(); len(gl) != 1 || gl[0].G.Content.Label.Value != "<b>1</b> search this week" {
		t.Errorf("glance pushes = %+v", gl)
	}

	// Sidebar: reload the frame (Page.reload is for top-level targets
	// only, so the frame reloads itself); the new document lists the search.
	eval(sidebar, `window.__beforeReload = 'yes'; setTimeout(function () { location.reload(); }, 0); 'ok'`)
	settle(t, sidebar, "java in the reloaded sidebar", `window.__beforeReload === undefined && document.readyState === 'complete' && (function () {
		var t = document.querySelector('#history .term');
		return !!t && t.textContent === 'java' && document.querySelectorAll('#history .hits a').length === 3;
	}())`)

	// Keyboard: from the top of the sidebar, Tab reaches Refresh, which
	// shows a focus ring.
	eval(browser, `document.getElementById('sidebar').focus(); 'ok'`)
	eval(sidebar, `window.focus(); document.activeElement.blur(); 'ok'`)
	step(browser, "tab to Refresh", chromedp.KeyEvent("\t")) // keys go to the focused frame
	if got := eval(sidebar, `document.activeElement.id + ' ' + getComputedStyle(document.activeElement).outlineStyle`); got != "refresh solid" {
		t.Errorf("after Tab: focused element and outline = %q, want %q", got, "refresh solid")
	}

	// Screenshots of the three pages as framed, and of the host page.
	dir := os.Getenv("HIPCONNECT_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shoot := func(name string, action chromedp.Action[[]byte]) {
		sctx, cancel := context.WithTimeout(browser, 15*time.Second)
		defer cancel()
		png, err := chromedp.Run(sctx, action)
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		path := filepath.Join(dir, "ui-"+name+".png")
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
	for _, name := range []string{"sidebar", "dialog", "configure"} {
		shoot(name, chromedp.Screenshot(chromedp.ID(name)))
	}
	shoot("host", chromedp.FullScreenshot(100)) // 100: PNG

	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}

// settle evaluates predicate in ctx until it is true, for at most 10 s,
// riding out the errors of a navigation in progress (a Poll would not
// survive it).
func settle(t *testing.T, ctx context.Context, name, predicate string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		ok, err := chromedp.Run(ectx, chromedp.Evaluate[bool](predicate))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: not true after 10 s (last error: %v)", name, lastErr)
}
