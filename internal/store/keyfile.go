package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Key file format: the KeySize key bytes as 64 lowercase hex digits and a
// newline (surrounding white space is ignored when reading), so an operator
// can copy it, diff it and keep it in a password manager.

// maxKeyFileSize caps what LoadOrCreateKey reads.
const maxKeyFileSize = 1024

// LoadOrCreateKey returns the key in the key file at path. If there is no
// file, it creates one (and its directory, mode 0700) holding a new random
// key, mode 0400: written and fsynced in a temporary file created with
// O_EXCL, then hard-linked to path (which fails if path exists, so two racing
// callers end up with the same key, and nobody ever sees a partial key file,
// even after a crash) and the directory fsynced. It refuses a file that group
// or others may access, and one that does not hold exactly KeySize bytes in
// hex. Nothing of the key ends up in an error.
//
// Losing the key file loses the encrypted secrets: installations then have
// to be installed again. Back it up apart from the store's backups.
func LoadOrCreateKey(path string) ([]byte, error) {
	key, err := readKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key, err = createKeyFile(path)
		if errors.Is(err, fs.ErrExist) {
			key, err = readKeyFile(path) // another process created it first
		}
	}
	return key, err
}

func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	if err := checkPrivate(fi, "key file "+path, "0400"); err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("store: key file %s: %w", path, err)
	}
	text := bytes.TrimSpace(raw)
	if len(text) != hex.EncodedLen(KeySize) {
		return nil, fmt.Errorf("store: key file %s: holds %d characters, want %d hex digits (a %d-byte key)",
			path, len(text), hex.EncodedLen(KeySize), KeySize)
	}
	key := make([]byte, KeySize)
	if _, err := hex.Decode(key, text); err != nil {
		return nil, fmt.Errorf("store: key file %s: not hex digits", path)
	}
	return key, nil
}

// createKeyFile writes a new key to path; an fs.ErrExist error means path
// appeared meanwhile.
func createKeyFile(path string) ([]byte, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	// CreateTemp opens with O_CREATE|O_EXCL and mode 0600.
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after the link, path keeps the file
	err = f.Chmod(0o400)
	if err == nil {
		_, err = f.WriteString(hex.EncodeToString(key) + "\n")
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fs.ErrExist
		}
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	if err := os.Remove(tmp); err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("store: key file: %w", err)
	}
	return key, nil
}

// CheckPrivate refuses the file at path (the store, a backup) if it is not a
// regular file or if its mode gives group or others any access. Open calls
// it for an existing store file; LoadOrCreateKey does the same for the key
// file.
func CheckPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return checkPrivate(fi, path, "0600")
}

// checkPrivate refuses fi (named what in the error) unless it is a regular
// file with no permission bits for group or others; fix is the mode to
// suggest.
func checkPrivate(fi fs.FileInfo, what, fix string) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("store: %s is not a regular file", what)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("store: %s is readable by group or others (mode %04o): chmod %s", what, perm, fix)
	}
	return nil
}
