package main

import (
	"bytes"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	bolt "go.etcd.io/bbolt"
)

// TestRemoveLeavesNothing removes an installation with
// `hipconnect installations remove`, with the daemon stopped (on the file)
// and while it runs (through the admin socket), after it stored a token,
// settings, a search history and seen message ids; then no key or value
// anywhere in the bbolt file names it, while another installation's data
// is intact.
func TestRemoveLeavesNothing(t *testing.T) {
	for _, running := range []bool{false, true} {
		name := "daemon stopped"
		if running {
			name = "through the running daemon"
		}
		t.Run(name, func(t *testing.T) {
			d, hc := setup(t)
			gone, goneSecret := install(t, d, hc, 100)
			kept, keptSecret := install(t, d, hc, 200)
			for _, inst := range []struct {
				id, secret string
				room       int64
			}{{gone, goneSecret, 100}, {kept, keptSecret, 200}} {
				tok := hc.Signer(inst.id, inst.secret, inst.room, time.Minute)
				if code, body := d.do("PUT", "/api/settings", tok(), []byte(`{"disabled":{"echo":true},"maxResults":3}`)); code != http.StatusOK {
					t.Fatalf("save settings = %d %s", code, body)
				}
				msg := hipchattest.RoomMessage(inst.id, inst.room, "m-"+inst.id, "/hascode 5")
				if code, body := d.do("POST", "/webhook/hascode", tok(), msg); code != http.StatusNoContent {
					t.Fatalf("webhook = %d %s", code, body)
				}
			}
			wait(t, hc, 4) // two greetings, two search replies: the histories are stored
			if !running {
				d.stop(syscall.SIGTERM)
			}
			out, err := exec.Command(binary, "installations", "remove", gone, "--config", d.cfgPath).CombinedOutput()
			if err != nil {
				t.Fatalf("installations remove: %v\n%s", err, out)
			}
			d.stop(syscall.SIGTERM)
			db := filepath.Join(filepath.Dir(d.cfgPath), "hipconnect.db")
			if n := mentions(t, db, gone); n != 0 {
				t.Errorf("%d keys or values still name the removed installation", n)
			}
			if n := mentions(t, db, kept); n < 5 { // installation, token, settings, history, seen id
				t.Errorf("only %d keys or values name the installation kept, want its installation, token, settings, history and seen id", n)
			}
		})
	}
}

// mentions counts the keys and values in every bucket (nested ones too) of
// the bbolt file at path that contain oauthID, as it is or path-escaped.
func mentions(t *testing.T, path, oauthID string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	needles := [][]byte{[]byte(oauthID), []byte(url.PathEscape(oauthID))}
	has := func(b []byte) bool {
		for _, n := range needles {
			if bytes.Contains(b, n) {
				return true
			}
		}
		return false
	}
	var n int
	var walk func(b *bolt.Bucket, path string)
	walk = func(b *bolt.Bucket, path string) {
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil {
				walk(b.Bucket(k), path+"/"+string(k))
				return nil
			}
			if has(k) || has(v) {
				n++
				t.Logf("%s: key %q", path, strings.ToValidUTF8(string(k), "?"))
			}
			return nil
		})
	}
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			walk(b, string(name))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
