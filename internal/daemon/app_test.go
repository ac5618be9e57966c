package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/config"
	"github.com/hipconnect/hipconnect/internal/tlsmgr"
)

// testConfig is the built-in configuration with its store in a temporary
// directory.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Storage.Path = filepath.Join(t.TempDir(), "hipconnect.db")
	cfg.Storage.OpenTimeout = 200 * time.Millisecond
	cfg.HipChat.AllowedHosts = []string{"127.0.0.2"}
	return &cfg
}

func build(t *testing.T, cfg *config.Config) *App {
	t.Helper()
	a, err := Build(context.Background(), cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func serve(h http.Handler, method, target string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(method, target, nil))
	return w
}

// TestBuild: the built App has its store and key on disk, and its handlers
// answer without any listener: the descriptor it was built from, not
// ready before Serve, an empty installation list on the admin handler.
func TestBuild(t *testing.T) {
	cfg := testConfig(t)
	a := build(t, cfg)
	for path, mode := range map[string]os.FileMode{cfg.Storage.Path: 0o600, KeyFile(cfg): 0o400} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", path, err, fi.Mode().Perm(), mode)
		}
	}
	w := serve(a.Public, "GET", "http://localhost:8080/atlassian-connect.json")
	if w.Code != http.StatusOK || w.Body.String() != string(a.Descriptor.JSON()) {
		t.Errorf("descriptor = %d %s", w.Code, w.Body)
	}
	if !strings.Contains(w.Body.String(), "/webhook/hascode") {
		t.Errorf("descriptor lacks the configured command: %s", w.Body)
	}
	if w := serve(a.Ops, "GET", "/healthz"); w.Code != http.StatusOK {
		t.Errorf("healthz = %d", w.Code)
	}
	if w := serve(a.Ops, "GET", "/readyz"); w.Code != http.StatusServiceUnavailable {
		t.Errorf("readyz before Serve = %d, want 503", w.Code)
	}
	if w := serve(a.Admin, "GET", "/installations"); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "null" {
		t.Errorf("admin installations = %d %q, want 200 and none", w.Code, w.Body)
	}
	if w := serve(a.Public, "GET", "http://evil.example/atlassian-connect.json"); w.Code != http.StatusMisdirectedRequest {
		t.Errorf("unknown host = %d, want 421", w.Code)
	}
}

// TestBuildWiresRemoval: removing an installation through the App's
// lifecycle (what the admin socket calls) removes its settings and history
// with it, and leaves another installation's alone.
func TestBuildWiresRemoval(t *testing.T) {
	a := build(t, testConfig(t))
	ctx := context.Background()
	kv := a.DB.KV("ui")
	for _, id := range []string{"gone", "kept"} {
		if err := a.DB.PutInstallation(ctx, addon.Installation{OAuthID: id, GroupID: 1, RoomID: 7}); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"settings", "room/7"} {
			if err := kv.Put(ctx, addon.KeyPrefix(id)+k, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	w := serve(a.Admin, "DELETE", "/installations/gone")
	if w.Code != http.StatusNoContent {
		t.Fatalf("admin remove = %d %s", w.Code, w.Body)
	}
	if _, err := a.DB.Installation(ctx, "gone"); !addon.IsNotFound(err) {
		t.Errorf("installation after removal: %v", err)
	}
	if keys, err := kv.List(ctx, addon.KeyPrefix("gone")); err != nil || len(keys) != 0 {
		t.Errorf("ui keys after removal: %v %v", keys, err)
	}
	if keys, err := kv.List(ctx, addon.KeyPrefix("kept")); err != nil || len(keys) != 2 {
		t.Errorf("the other installation's ui keys: %v %v, want 2", keys, err)
	}
	if w := serve(a.Admin, "DELETE", "/installations/gone"); w.Code != http.StatusNotFound {
		t.Errorf("second removal = %d, want 404", w.Code)
	}
}

// TestBuildFailureReleasesStore: a build that fails after the store was
// opened (here: certificate files that do not exist) closes it again, so
// the next start can open it; and a second App cannot open a store the
// first holds.
func TestBuildFailureReleasesStore(t *testing.T) {
	cfg := testConfig(t)
	cfg.TLS.Mode = tlsmgr.ModeFiles
	cfg.TLS.CertFile = filepath.Join(t.TempDir(), "missing.crt")
	cfg.TLS.KeyFile = filepath.Join(t.TempDir(), "missing.key")
	if a, err := Build(context.Background(), cfg, Options{}); err == nil {
		_ = a.Close()
		t.Fatal("Build with missing certificate files succeeded")
	}
	cfg.TLS.Mode = tlsmgr.ModeOff
	a, err := Build(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatalf("Build after a failed one: %v", err)
	}
	if _, err := Build(context.Background(), cfg, Options{}); err == nil {
		t.Error("a second App opened the store the first holds")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := OpenStore(context.Background(), cfg, false, nil)
	if err != nil {
		t.Fatalf("store after Close: %v", err)
	}
	_ = db.Close()
}
