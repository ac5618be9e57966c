package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/seal"
	bolt "go.etcd.io/bbolt"
)

// testKey returns a fixed key; different seeds give different keys.
func testKey(seed byte) []byte {
	return bytes.Repeat([]byte{seed}, KeySize)
}

const (
	knownSecret  = "oauth-SECRET-3f9a1c77e2b54d08"
	knownToken   = "access-TOKEN-b81e5a0c6d2f4937"
	knownPrivKey = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKNOWNPRIVATEKEYMATERIALxyz\n-----END EC PRIVATE KEY-----\n"
	knownCert    = "-----BEGIN CERTIFICATE-----\nPUBLICCERTIFICATEMATERIALabc\n-----END CERTIFICATE-----\n"
)

var (
	acmeKeyPath = "acme/ca/users/admin@example/admin.key"
	certKeyPath = "certificates/ca/hip.example/hip.example.key"
	certCrtPath = "certificates/ca/hip.example/hip.example.crt"
)

// forms returns s and its base64 forms (base64 of a substring would show
// up with three alignments; the whole value is enough to catch a plain
// encoding of it).
func forms(s string) []string {
	out := []string{s}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		for off := range 3 {
			if off < len(s) {
				// Drop the last character, which depends on what follows.
				e := enc.EncodeToString([]byte(s[off:]))
				out = append(out, strings.TrimRight(e, "=")[:len(strings.TrimRight(e, "="))-1])
			}
		}
	}
	return out
}

// assertFileLacks fails if the raw bytes of path hold any of the secrets
// (or their base64).
func assertFileLacks(t *testing.T, path string, secrets ...string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		for _, f := range forms(s) {
			if bytes.Contains(raw, []byte(f)) {
				t.Errorf("%s holds %q (a form of secret %.12q...)", filepath.Base(path), f, s)
			}
		}
	}
}

func assertFileHas(t *testing.T, path, s string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(s)) {
		t.Errorf("%s lacks %.20q", filepath.Base(path), s)
	}
}

// putSecrets writes an installation, its token and certmagic files.
func putSecrets(t *testing.T, d *DB) {
	t.Helper()
	ctx := context.Background()
	in := inst("a")
	in.OAuthSecret = knownSecret
	if err := d.PutInstallation(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := d.PutToken(ctx, "a", addon.Token{AccessToken: knownToken, Scope: "send_notification"}); err != nil {
		t.Fatal(err)
	}
	cs := d.CertStorage()
	for k, v := range map[string]string{acmeKeyPath: knownPrivKey, certKeyPath: knownPrivKey, certCrtPath: knownCert} {
		if err := cs.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
}

// assertSecrets reads back what putSecrets wrote.
func assertSecrets(t *testing.T, d *DB) {
	t.Helper()
	ctx := context.Background()
	if got, err := d.Installation(ctx, "a"); err != nil || got.OAuthSecret != knownSecret || got.APIURL != inst("a").APIURL {
		t.Errorf("Installation = %+v, %v; want secret %q", got, err, knownSecret)
	}
	all, err := d.Installations(ctx)
	if err != nil || len(all) == 0 || all[0].OAuthID != "a" || all[0].OAuthSecret != knownSecret {
		t.Errorf("Installations = %+v, %v; want a with secret %q first", all, err, knownSecret)
	}
	if got, err := d.Token(ctx, "a"); err != nil || got.AccessToken != knownToken || got.Scope != "send_notification" {
		t.Errorf("Token = %+v, %v; want %q", got, err, knownToken)
	}
	cs := d.CertStorage()
	for k, want := range map[string]string{acmeKeyPath: knownPrivKey, certKeyPath: knownPrivKey, certCrtPath: knownCert} {
		got, err := cs.Load(ctx, k)
		if err != nil || string(got) != want {
			t.Errorf("Load(%s) = %q, %v; want %q", k, got, err, want)
		}
		ki, err := cs.Stat(ctx, k)
		if err != nil || ki.Size != int64(len(want)) {
			t.Errorf("Stat(%s).Size = %d, %v; want the plaintext size %d", k, ki.Size, err, len(want))
		}
	}
}

func TestSecretsEncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hipconnect.db")
	d, err := Open(path, Options{Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	putSecrets(t, d)
	assertSecrets(t, d)
	// Overwrite once: the old ciphertext in free pages is still ciphertext.
	putSecrets(t, d)
	bk := filepath.Join(dir, "hipconnect.bak")
	if err := d.BackupFile(bk); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := d.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	s, err := d.Stats(context.Background())
	if err != nil || !s.SecretsEncrypted {
		t.Errorf("Stats.SecretsEncrypted = %v, %v; want true", s.SecretsEncrypted, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	for _, p := range []string{path, bk} {
		assertFileLacks(t, p, knownSecret, knownToken, knownPrivKey, "KNOWNPRIVATEKEYMATERIAL")
		assertFileHas(t, p, "PUBLICCERTIFICATEMATERIAL") // only secrets are encrypted
		assertFileHas(t, p, seal.Prefix)
	}
	for _, f := range forms(knownSecret) {
		if bytes.Contains(buf.Bytes(), []byte(f)) {
			t.Errorf("Backup to a writer holds %q", f)
		}
	}

	t.Run("reopen with the key", func(t *testing.T) {
		d := openPath(t, path, Options{Key: testKey(1)})
		assertSecrets(t, d)
		d2 := openPath(t, bk, Options{Key: testKey(1)})
		assertSecrets(t, d2)
	})
	t.Run("reopen with another key", func(t *testing.T) {
		d, err := Open(path, Options{Key: testKey(2)})
		if err == nil {
			d.Close()
			t.Fatal("Open with another key succeeded")
		}
		if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), "wrong key or damaged data") {
			t.Errorf("err = %v, want ErrWrongKey", err)
		}
	})
	t.Run("reopen without a key", func(t *testing.T) {
		d, err := Open(path, Options{})
		if err == nil {
			d.Close()
			t.Fatal("Open without a key succeeded")
		}
		if !errors.Is(err, ErrKeyRequired) ||
			!strings.HasPrefix(err.Error(), "store: secrets are encrypted: storage.key_file is required") {
			t.Errorf("err = %v, want ErrKeyRequired", err)
		}
	})
	t.Run("Restore needs no key", func(t *testing.T) {
		restored := filepath.Join(dir, "restored.db")
		if err := Restore(bk, restored); err != nil {
			t.Fatal(err)
		}
		assertFileLacks(t, restored, knownSecret, knownToken, knownPrivKey)
		assertSecrets(t, openPath(t, restored, Options{Key: testKey(1)}))
	})
}

// With the right key a ciphertext still fails to decrypt if it was damaged
// or moved to another record (the additional data names the record), or if
// the key in use differs from the one it was written with; the error is
// clear and holds neither plaintext nor ciphertext.
func TestSecretsDecryptErrors(t *testing.T) {
	ctx := context.Background()
	d := openPath(t, filepath.Join(t.TempDir(), "hipconnect.db"), Options{Key: testKey(1)})
	putSecrets(t, d)
	if err := d.PutInstallation(ctx, inst("b")); err != nil {
		t.Fatal(err)
	}
	if err := d.PutToken(ctx, "b", addon.Token{AccessToken: "tb"}); err != nil {
		t.Fatal(err)
	}
	var storedInst, storedTok []byte
	_ = d.db.View(func(tx *bolt.Tx) error {
		storedInst = bytes.Clone(bucket(tx, bucketInstallations).Get([]byte("a")))
		storedTok = bytes.Clone(bucket(tx, bucketTokens).Get([]byte("a")))
		return nil
	})
	sealedSecret := storedInst[bytes.Index(storedInst, []byte(seal.Prefix)):]
	sealedSecret = sealedSecret[:bytes.IndexByte(sealedSecret, '"')]
	put := func(bkt, key string, v []byte) {
		t.Helper()
		if err := d.db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bkt)).Put([]byte(key), v) }); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil || err.Error() != want || !errors.Is(err, ErrWrongKey) {
			t.Errorf("err = %v, want %q", err, want)
			return
		}
		for _, leak := range []string{knownSecret, knownToken, string(sealedSecret), string(sealedSecret[len(seal.Prefix):])} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("error leaks %.20q", leak)
			}
		}
	}

	t.Run("installation moved to another record", func(t *testing.T) {
		put(bucketInstallations, "b", storedInst)
		_, err := d.Installation(ctx, "b")
		check(t, err, `store: decrypt secret of installation "b": wrong key or damaged data`)
		_, err = d.Installations(ctx)
		check(t, err, `store: decrypt secret of installation "b": wrong key or damaged data`)
	})
	t.Run("token moved to another record", func(t *testing.T) {
		put(bucketTokens, "b", storedTok)
		_, err := d.Token(ctx, "b")
		check(t, err, `store: decrypt token of installation "b": wrong key or damaged data`)
	})
	t.Run("damaged ciphertext", func(t *testing.T) {
		damaged := bytes.Clone(storedInst)
		i := bytes.Index(damaged, []byte(seal.Prefix)) + len(seal.Prefix) + 10
		damaged[i] ^= 'A' ^ 'B' // stays base64 often enough; either way it fails
		put(bucketInstallations, "a", damaged)
		_, err := d.Installation(ctx, "a")
		check(t, err, `store: decrypt secret of installation "a": wrong key or damaged data`)
		put(bucketInstallations, "a", storedInst)
	})
	t.Run("plaintext in an encrypted store", func(t *testing.T) {
		put(bucketTokens, "b", []byte(`{"accessToken":"plain"}`))
		_, err := d.Token(ctx, "b")
		check(t, err, `store: decrypt token of installation "b": wrong key or damaged data`)
	})
	t.Run("read with another key", func(t *testing.T) {
		other, err := newSealer(testKey(2))
		if err != nil {
			t.Fatal(err)
		}
		right := d.sealer
		d.sealer = other
		defer func() { d.sealer = right }()
		_, err = d.Installation(ctx, "a")
		check(t, err, `store: decrypt secret of installation "a": wrong key or damaged data`)
		_, err = d.Token(ctx, "a")
		check(t, err, `store: decrypt token of installation "a": wrong key or damaged data`)
		_, err = d.CertStorage().Load(ctx, certKeyPath)
		check(t, err, fmt.Sprintf(`store: decrypt certmagic %q: wrong key or damaged data`, certKeyPath))
	})
	// Leave a file that passes Check and reads back.
	put(bucketTokens, "b", storedTok)
	if err := d.DeleteInstallation(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	assertSecrets(t, d)
}

func TestSecretsEncryptedInPlace(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	putSecrets(t, d)
	before := enqueueN(t, d, "a", "m", 3)
	if err := d.Complete(ctx, before[2].ID); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// The test would prove nothing if the plaintext did not show.
	for _, s := range []string{knownSecret, knownToken, "KNOWNPRIVATEKEYMATERIAL"} {
		assertFileHas(t, path, s)
	}

	d, err = Open(path, Options{Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	w := d.Warnings()
	if len(w) != 2 || !strings.Contains(w[0], "encrypted the secrets of 1 installations, 1 tokens and 2 certmagic keys") ||
		!strings.Contains(w[1], "compacted") {
		t.Errorf("Warnings = %q, want encryption and compaction reported", w)
	}
	assertSecrets(t, d)
	// The compacted file is live: writes go on, and job IDs continue (the
	// bucket sequence was copied), so no ID is given twice.
	if err := d.PutInstallation(ctx, inst("c")); err != nil {
		t.Fatal(err)
	}
	if j := enqueueN(t, d, "c", "m", 1)[0]; j.ID <= before[2].ID {
		t.Errorf("job ID after compaction = %d, want above %d", j.ID, before[2].ID)
	}
	if got := pendingFor(t, d, "a"); got != 2 {
		t.Errorf("PendingFor(a) after compaction = %d, want 2", got)
	}
	if err := d.Check(); err != nil {
		t.Error(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	assertFileLacks(t, path, knownSecret, knownToken, "KNOWNPRIVATEKEYMATERIAL")
	assertFileHas(t, path, "PUBLICCERTIFICATEMATERIAL")
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("compaction left %s.compact: %v", path, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after compaction = %v, %v; want 0600", fi.Mode(), err)
	}

	d = openPath(t, path, Options{Key: testKey(1)})
	if w := d.Warnings(); len(w) != 0 {
		t.Errorf("second Open Warnings = %q, want none", w)
	}
	assertSecrets(t, d)
}

// A crash after encrypting in place but before the compaction finished
// leaves the meta flag; the next Open compacts.
func TestCompactionResumes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	putSecrets(t, d)
	err = d.db.Update(func(tx *bolt.Tx) error {
		return bucket(tx, bucketMeta).Put([]byte(keyCompact), []byte{1})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// A stale temporary from the crash.
	if err := os.WriteFile(path+".compact", []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = openPath(t, path, Options{Key: testKey(1)})
	if w := d.Warnings(); len(w) != 1 || !strings.Contains(w[0], "compacted") {
		t.Errorf("Warnings = %q, want the compaction", w)
	}
	_ = d.db.View(func(tx *bolt.Tx) error {
		if bucket(tx, bucketMeta).Get([]byte(keyCompact)) != nil {
			t.Error("compact flag still set")
		}
		return nil
	})
	assertSecrets(t, d)
	if _, err := os.Stat(path + ".compact"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale %s.compact left: %v", path, err)
	}
}

// A store created with a key is encrypted even while it holds no secret.
func TestFreshEncryptedStoreNeedsKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hipconnect.db")
	d, err := Open(path, Options{Key: testKey(1)})
	if err != nil {
		t.Fatal(err)
	}
	if w := d.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %q, want none", w)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if d, err := Open(path, Options{}); !errors.Is(err, ErrKeyRequired) {
		if err == nil {
			d.Close()
		}
		t.Errorf("Open without key = %v, want ErrKeyRequired", err)
	}
	openPath(t, path, Options{Key: testKey(1)})
}

func TestOpenBadKeyLength(t *testing.T) {
	for _, n := range []int{1, 16, 31, 33, 64} {
		d, err := Open(filepath.Join(t.TempDir(), "h.db"), Options{Key: make([]byte, n)})
		if err == nil {
			d.Close()
			t.Errorf("Open with a %d-byte key succeeded", n)
		}
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys", "hipconnect.db.key")
	key, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != KeySize || bytes.Equal(key, make([]byte, KeySize)) {
		t.Errorf("key = %x, want %d random bytes", key, KeySize)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o400 {
		t.Errorf("key file mode = %04o, want 0400", fi.Mode().Perm())
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("key dir mode = %v, %v; want 0700", di.Mode(), err)
	}
	raw, err := os.ReadFile(path)
	if err != nil || string(raw) != hex.EncodeToString(key)+"\n" {
		t.Errorf("key file = %q, %v; want the key in hex and a newline", raw, err)
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("second LoadOrCreateKey = %x, %v; want %x", again, err, key)
	}

	// The key works with Open.
	openPath(t, filepath.Join(dir, "hipconnect.db"), Options{Key: key})

	bad := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"readable by others", hex.EncodeToString(key), 0o644,
			"is readable by group or others (mode 0644): chmod 0400"},
		{"readable by group", hex.EncodeToString(key), 0o440,
			"is readable by group or others (mode 0440): chmod 0400"},
		{"too short", hex.EncodeToString(key[:16]), 0o400, "holds 32 characters, want 64 hex digits"},
		{"too long", hex.EncodeToString(append(key, 1)), 0o400, "holds 66 characters, want 64 hex digits"},
		{"raw bytes", string(key), 0o400, "want 64 hex digits"},
		{"not hex", strings.Repeat("zz", KeySize), 0o400, "not hex digits"},
		{"empty", "", 0o400, "holds 0 characters"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil {
				t.Fatal(err)
			}
			k, err := LoadOrCreateKey(p)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadOrCreateKey = %x, %v; want an error containing %q", k, err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), hex.EncodeToString(key)) {
				t.Errorf("error leaks the key: %v", err)
			}
			if want := "store: key file " + p; err != nil && tt.mode != 0o400 && !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err = %v, want it to start %q", err, want)
			}
		})
	}

	// White space around the hex digits is fine (an editor's newline).
	p := filepath.Join(t.TempDir(), "k")
	if err := os.WriteFile(p, []byte("  "+strings.ToUpper(hex.EncodeToString(key))+"\r\n\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadOrCreateKey(p); err != nil || !bytes.Equal(k, key) {
		t.Errorf("LoadOrCreateKey with white space = %x, %v", k, err)
	}
}

// Racing first starts agree on one key.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hipconnect.db.key")
	keys := make([][]byte, 16)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreateKey(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for i, k := range keys {
		if !bytes.Equal(k, keys[0]) {
			t.Errorf("caller %d got another key", i)
		}
	}
	// No temporary file is left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only the key file", names)
	}
}

// BenchmarkDecryptSecret is the part of a lookup that the key adds: base64
// and AES-256-GCM open of one secret.
func BenchmarkDecryptSecret(b *testing.B) {
	s, err := newSealer(testKey(1))
	if err != nil {
		b.Fatal(err)
	}
	ad := aad(bucketInstallations, "install-001")
	v := s.Seal(ad, []byte(knownSecret))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Open(ad, v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInstallationLookup measures Installation() (a read transaction
// and a JSON decode) with and without decrypting the secret.
func BenchmarkInstallationLookup(b *testing.B) {
	for _, bc := range []struct {
		name string
		key  []byte
	}{{"plaintext", nil}, {"aes-gcm", testKey(1)}} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			d := openPath(b, filepath.Join(b.TempDir(), "hipconnect.db"), Options{Key: bc.key})
			for i := range 100 {
				in := inst(fmt.Sprintf("install-%03d", i))
				in.OAuthSecret = knownSecret
				if err := d.PutInstallation(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					got, err := d.Installation(ctx, fmt.Sprintf("install-%03d", i%100))
					if err != nil || got.OAuthSecret != knownSecret {
						b.Errorf("Installation = %v, %v", got.OAuthSecret, err)
						return
					}
					i++
				}
			})
		})
	}
}
