package store

import (
	"bytes"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/hipconnect/hipconnect/internal/addon"
	bolt "go.etcd.io/bbolt"
)

// uiNamespace is the KV namespace whose keys schema 4 moved under
// addon.KeyPrefix.
const uiNamespace = "ui"

// Schema 3's keys of the ui namespace that belonged to an installation.
const (
	schema3Settings = "settings/" // + url.PathEscape(oauthID)
	schema3Room     = "room/"     // + url.PathEscape(oauthID) + "/" + room id
)

// migrate3to4 moves the ui namespace's keys of each installation under
// addon.KeyPrefix, where DeleteInstallation finds them:
//
//	settings/<escaped oauthID>          -> KeyPrefix(oauthID) + "settings"
//	room/<escaped oauthID>/<room id>    -> KeyPrefix(oauthID) + "room/" + room id
//
// keeping each stored record (modified time and value) byte for byte. Keys
// of installations no longer stored (left behind by removals before schema
// 4) are deleted; keys of neither form are left alone. Should the new key
// exist already, it is kept and the old one deleted. With nothing to move,
// it says nothing.
func migrate3to4(tx *bolt.Tx) (string, error) {
	b := tx.Bucket([]byte(kvBucketPrefix + uiNamespace))
	if b == nil {
		return "", nil
	}
	insts := tx.Bucket([]byte(bucketInstallations))
	var moved, removed, superseded int
	for _, k := range append(keysWithPrefix(b, []byte(schema3Settings)), keysWithPrefix(b, []byte(schema3Room))...) {
		oauthID, newKey, ok := schema4Key(string(k))
		switch {
		case !ok:
			continue
		case insts == nil || insts.Get([]byte(oauthID)) == nil:
			removed++
		case b.Get([]byte(newKey)) != nil:
			superseded++
		default:
			if err := b.Put([]byte(newKey), bytes.Clone(b.Get(k))); err != nil {
				return "", fmt.Errorf("ui key %q: %w", k, err)
			}
			moved++
		}
		if err := b.Delete(k); err != nil {
			return "", fmt.Errorf("ui key %q: %w", k, err)
		}
	}
	if moved+removed+superseded == 0 {
		return "", nil
	}
	note := fmt.Sprintf("migrated schema 3 to 4: %d ui keys moved under their installation, %d of removed installations deleted",
		moved, removed)
	if superseded > 0 {
		note += fmt.Sprintf(", %d deleted as their new key was there already", superseded)
	}
	return note, nil
}

// schema4Key maps a schema 3 ui key of an installation to its installation
// and its schema 4 key; ok is false for a key of neither schema 3 form
// (the oauthID must be escaped as url.PathEscape does it, the room id a
// decimal number as strconv.FormatInt writes it).
func schema4Key(old string) (oauthID, key string, ok bool) {
	if esc, found := strings.CutPrefix(old, schema3Settings); found {
		if oauthID, ok = unescapeOAuthID(esc); ok {
			return oauthID, addon.KeyPrefix(oauthID) + "settings", true
		}
		return "", "", false
	}
	rest, found := strings.CutPrefix(old, schema3Room)
	if !found {
		return "", "", false
	}
	esc, room, found := strings.Cut(rest, "/")
	if !found || !canonicalInt(room) {
		return "", "", false
	}
	if oauthID, ok = unescapeOAuthID(esc); ok {
		return oauthID, addon.KeyPrefix(oauthID) + "room/" + room, true
	}
	return "", "", false
}

// unescapeOAuthID undoes url.PathEscape; ok is false unless esc is exactly
// what PathEscape makes of a non-empty id.
func unescapeOAuthID(esc string) (string, bool) {
	id, err := url.PathUnescape(esc)
	if err != nil || id == "" || url.PathEscape(id) != esc {
		return "", false
	}
	return id, true
}

// canonicalInt reports whether s is an int64 as strconv.FormatInt writes it.
func canonicalInt(s string) bool {
	n, err := strconv.ParseInt(s, 10, 64)
	return err == nil && strconv.FormatInt(n, 10) == s
}
