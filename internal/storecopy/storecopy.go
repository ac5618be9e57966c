// Package storecopy copies everything one hipconnect store holds into
// another, empty one: `hipconnect store copy --from-config OLD --to-config
// NEW` moves a single-node deployment from the embedded bbolt file onto
// PostgreSQL with it.
//
// Copy goes through the store contract (addon.Store) and certmagic's
// storage only, so it works between any two backends and never looks at
// their files or tables. What the contract cannot read is not copied:
//
//   - the seen message ids of jobs already delivered: a HipChat
//     redelivery of a message delivered before the move counts as new on
//     the target (the ids of the jobs copied are known to it; see Copy);
//   - key/value and certmagic modified times: the target stamps its own
//     (certmagic's Stat then reports the copy time);
//   - certmagic locks, which are held only while a daemon runs;
//   - key/value namespaces other than Options.Namespaces.
//
// The daemon must be stopped for the copy: jobs it delivered meanwhile
// would be copied as pending and sent again. With the bbolt file as the
// source that is ensured already, since the file is locked while a process
// has it open (the copy then fails to open it).
//
// Secrets. Both stores encrypt the secrets at rest (oauth secrets, access
// tokens, certmagic's "*.key" values), each with its own key
// (store.Options.Key, pgstore.Options.Key). Copy reads them in plaintext
// from the source and the target encrypts them with its key as it stores
// them, so the two keys need not be the same. Nothing is logged or
// printed, and no error Copy returns holds a secret or a value: they name
// installations, job IDs, namespaces and keys.
package storecopy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/caddyserver/certmagic"
	"github.com/hipconnect/hipconnect/internal/addon"
)

// Store is what Copy reads from and writes to: the store contract and
// certmagic's storage. *store.DB (bbolt) and *pgstore.DB (PostgreSQL) are
// both one.
type Store interface {
	addon.Store
	CertStorage() certmagic.Storage
}

// Options tune Copy.
type Options struct {
	// Namespaces are the key/value namespaces to copy (the daemon's:
	// daemon.KVNamespaces, "ui" and install.PendingNamespace). certmagic's
	// storage is copied through CertStorage, so "certmagic" is refused
	// here; a name given twice is copied once.
	Namespaces []string
	// Force lets Copy write into a target that is not empty. What the
	// target holds is kept, except what the source has too: an
	// installation with the same OAuthID, the token of one (when the
	// source has a token for it), a key/value key, a pacing window or a
	// certmagic key is replaced by the source's. A job or dead letter
	// whose message the target has seen already is not copied (see
	// Report.Duplicates).
	Force bool
}

// Report counts what Copy copied. On an error, it counts what was copied
// before it.
type Report struct {
	Installations int // installations stored
	Tokens        int // access tokens stored
	Jobs          int // pending jobs enqueued
	DeadLetters   int // dead letters enqueued and buried
	KV            int // key/value entries stored, all namespaces together
	PaceWindows   int // pacing windows stored
	CertFiles     int // certmagic keys (files, not directories) stored
	// Duplicates counts the pending jobs and dead letters not copied
	// because the target already knew their message (the same OAuthID,
	// MessageDate and MessageID) and its duplicate detection refused them:
	// another job of the copy had it (the source kept two jobs of one
	// HipChat message, the first's seen id pruned before the second came),
	// or, with Force, the target had it before. Zero for a copy into an
	// empty target from a source that holds each message once.
	Duplicates int
}

// ErrTargetNotEmpty is returned, wrapped with what the target holds, when
// the target of Copy holds anything and Options.Force is not set.
var ErrTargetNotEmpty = errors.New("storecopy: the target store is not empty")

// Copy copies what from holds into to, which must be empty unless
// o.Force is set, and reports what it copied.
//
// Empty means: no installations, no pending jobs, no dead letters, no keys
// in the namespaces o.Namespaces and no certmagic keys (List("", true)
// names no file). Tokens and pacing windows need an installation, so there
// are none then either. A target that is not empty is refused with
// ErrTargetNotEmpty (wrapped, saying what it holds), before anything is
// written.
//
// Copy writes, in this order:
//
//  1. the installations (PutInstallation), secrets included;
//  2. their access tokens (Token, PutToken; an installation without one is
//     skipped);
//  3. the dead letters, in ID order: the dead letter's job is enqueued and
//     at once buried (Enqueue, Bury) with its reason. The job is kept as
//     it was (attempts, last error, message id and date); its ID is the
//     target's new one, and its burial time (DeadLetter.At) becomes the
//     time of the copy, by the target's clock, so PruneDead counts its age
//     from the copy;
//  4. the pending jobs, in ID order, through Enqueue: the target gives them
//     new IDs, a greater one to a later job, so the order of each room's
//     jobs is kept. Everything else of a job is kept: Received, Attempts
//     and LastError, and MessageID and MessageDate, so that the target's
//     duplicate detection knows their messages (a redelivery after the
//     move is not new);
//  5. the dead letters deferred from step 3: those that share their
//     installation and message id with a pending job are copied after the
//     pending jobs, so that the job, not the dead letter, is what the
//     target keeps if its duplicate detection takes the two for one
//     message;
//  6. the key/value entries of each namespace of o.Namespaces (List(""),
//     Get, Put);
//  7. the pacing windows (LoadPacing, SavePacing), so the daemon on the
//     target knows how much of HipChat's budgets is spent;
//  8. certmagic's keys (List("", true), then Stat, Load and Store of each
//     that is a file; directories exist only as prefixes of files).
//
// Dead letters go before the pending jobs because each passes through the
// target's outbox: an installation whose outbox is full on the source
// (storage.max_pending) would otherwise have no room for them.
//
// A job or dead letter the target's duplicate detection refuses (Enqueue
// reports it is not new) is not copied and is counted in
// Report.Duplicates. An Enqueue that fails fails the copy: in particular
// the target refuses a new job (an Unavailable error) of an installation
// that has as many pending jobs as its bound (pgstore and store
// Options.MaxPendingPerInstallation, storage.max_pending); open the target
// with a bound at least the source's. Nothing is ever left out silently:
// Copy stops at the first error and returns it.
//
// Copy is not atomic: each write commits on its own. On an error, the
// target holds what the Report counts, and a second Copy into it needs
// o.Force; jobs and dead letters with a message id are then recognised as
// copied (Duplicates), but those without one (the greetings) are copied
// again. After a failed copy, rather empty the target (a new database) and
// copy again.
//
// Copy neither locks nor watches either store: the daemon must not run on
// either while it copies (see the package documentation).
func Copy(ctx context.Context, from, to Store, o Options) (Report, error) {
	var r Report
	namespaces, err := checkNamespaces(o.Namespaces)
	if err != nil {
		return r, err
	}
	if !o.Force {
		held, err := contents(ctx, to, namespaces)
		if err != nil {
			return r, fmt.Errorf("storecopy: reading the target: %w", err)
		}
		if len(held) > 0 {
			return r, fmt.Errorf("%w: it holds %s", ErrTargetNotEmpty, strings.Join(held, ", "))
		}
	}
	if err := copyInstallations(ctx, from, to, &r); err != nil {
		return r, err
	}
	if err := copyOutbox(ctx, from, to, &r); err != nil {
		return r, err
	}
	if err := copyKV(ctx, from, to, namespaces, &r); err != nil {
		return r, err
	}
	if err := copyPacing(ctx, from, to, &r); err != nil {
		return r, err
	}
	if err := copyCerts(ctx, from, to, &r); err != nil {
		return r, err
	}
	return r, nil
}

// checkNamespaces returns names without repeats, refusing certmagic's.
func checkNamespaces(names []string) ([]string, error) {
	var out []string
	for _, ns := range names {
		if ns == addon.CertMagicNamespace {
			return nil, addon.Errorf(addon.Invalid, "storecopy: namespace %q is certmagic's storage, copied through CertStorage: leave it out of Options.Namespaces", ns)
		}
		if !slices.Contains(out, ns) {
			out = append(out, ns)
		}
	}
	return out, nil
}

// contents describes what s holds that makes it not empty ("2
// installations", ...); nothing if it is empty.
func contents(ctx context.Context, s Store, namespaces []string) ([]string, error) {
	var held []string
	count := func(n int, one, many string) {
		switch {
		case n == 1:
			held = append(held, "1 "+one)
		case n > 1:
			held = append(held, fmt.Sprintf("%d %s", n, many))
		}
	}
	insts, err := s.Installations(ctx)
	if err != nil {
		return nil, err
	}
	count(len(insts), "installation", "installations")
	jobs, err := s.Pending(ctx, 0)
	if err != nil {
		return nil, err
	}
	count(len(jobs), "pending job", "pending jobs")
	dead, err := s.DeadLetters(ctx)
	if err != nil {
		return nil, err
	}
	count(len(dead), "dead letter", "dead letters")
	for _, ns := range namespaces {
		keys, err := s.KV(ns).List(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("namespace %q: %w", ns, err)
		}
		count(len(keys), fmt.Sprintf("key in namespace %q", ns), fmt.Sprintf("keys in namespace %q", ns))
	}
	files, err := certFiles(ctx, s.CertStorage())
	if err != nil {
		return nil, err
	}
	count(len(files), "certmagic file", "certmagic files")
	return held, nil
}

// certFiles returns the keys of the files in certmagic's storage cs.
// List("", true) names the files and the directories above them; only
// files (Stat's IsTerminal) have a value.
func certFiles(ctx context.Context, cs certmagic.Storage) ([]string, error) {
	keys, err := cs.List(ctx, "", true)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // nothing stored
	}
	if err != nil {
		return nil, fmt.Errorf("listing certmagic's storage: %w", err)
	}
	var files []string
	for _, key := range keys {
		info, err := cs.Stat(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since List
		}
		if err != nil {
			return nil, fmt.Errorf("certmagic key %q: %w", key, err)
		}
		if info.IsTerminal {
			files = append(files, key)
		}
	}
	return files, nil
}

// copyInstallations copies the installations, then their tokens.
func copyInstallations(ctx context.Context, from, to Store, r *Report) error {
	insts, err := from.Installations(ctx)
	if err != nil {
		return fmt.Errorf("storecopy: reading the installations: %w", err)
	}
	for _, inst := range insts {
		if err := to.PutInstallation(ctx, inst); err != nil {
			return fmt.Errorf("storecopy: installation %s: %w", inst.OAuthID, err)
		}
		r.Installations++
	}
	for _, inst := range insts {
		tok, err := from.Token(ctx, inst.OAuthID)
		if addon.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("storecopy: reading the token of installation %s: %w", inst.OAuthID, err)
		}
		if err := to.PutToken(ctx, inst.OAuthID, tok); err != nil {
			return fmt.Errorf("storecopy: token of installation %s: %w", inst.OAuthID, err)
		}
		r.Tokens++
	}
	return nil
}

// message is what identifies a job's HipChat message for the deferral of
// dead letters: the installation and the message id (not the date, since
// the stores also take a dated message for the same one undated).
type message struct{ oauthID, messageID string }

// copyOutbox copies the dead letters and the pending jobs (steps 3 to 5 of
// Copy).
func copyOutbox(ctx context.Context, from, to Store, r *Report) error {
	dead, err := from.DeadLetters(ctx)
	if err != nil {
		return fmt.Errorf("storecopy: reading the dead letters: %w", err)
	}
	jobs, err := from.Pending(ctx, 0)
	if err != nil {
		return fmt.Errorf("storecopy: reading the pending jobs: %w", err)
	}
	pendingMessages := make(map[message]bool)
	for _, j := range jobs {
		if j.MessageID != "" {
			pendingMessages[message{j.OAuthID, j.MessageID}] = true
		}
	}
	var deferred []addon.DeadLetter
	for _, dl := range dead {
		if dl.Job.MessageID != "" && pendingMessages[message{dl.Job.OAuthID, dl.Job.MessageID}] {
			deferred = append(deferred, dl)
			continue
		}
		if err := copyDead(ctx, to, dl, r); err != nil {
			return err
		}
	}
	for _, j := range jobs {
		_, isNew, err := enqueue(ctx, to, j, "job")
		if err != nil {
			return err
		}
		if !isNew {
			r.Duplicates++
			continue
		}
		r.Jobs++
	}
	for _, dl := range deferred {
		if err := copyDead(ctx, to, dl, r); err != nil {
			return err
		}
	}
	return nil
}

// copyDead enqueues the dead letter's job on to and buries it there.
func copyDead(ctx context.Context, to Store, dl addon.DeadLetter, r *Report) error {
	nj, isNew, err := enqueue(ctx, to, dl.Job, "dead letter")
	if err != nil {
		return err
	}
	if !isNew {
		// The ID is the other job's: it must not be buried.
		r.Duplicates++
		return nil
	}
	if err := to.Bury(ctx, nj.ID, dl.Reason); err != nil {
		return fmt.Errorf("storecopy: dead letter %d of installation %s: burying it as job %d of the target (left pending there): %w",
			dl.Job.ID, dl.Job.OAuthID, nj.ID, err)
	}
	r.DeadLetters++
	return nil
}

// enqueue enqueues the source's job j (a pending job or a dead letter's,
// says what) on to, with the target to give it its ID.
func enqueue(ctx context.Context, to Store, j addon.Job, what string) (addon.Job, bool, error) {
	id := j.ID
	j.ID = 0
	nj, isNew, err := to.Enqueue(ctx, j)
	switch {
	case err == nil:
		return nj, isNew, nil
	case addon.KindOf(err) == addon.Unavailable:
		return addon.Job{}, false, fmt.Errorf("storecopy: %s %d of installation %s: the target refused it, its outbox for the installation is full: open the target with a greater bound on pending jobs (storage.max_pending) and copy into an empty store again: %w",
			what, id, j.OAuthID, err)
	default:
		return addon.Job{}, false, fmt.Errorf("storecopy: %s %d of installation %s: %w", what, id, j.OAuthID, err)
	}
}

// copyKV copies the key/value entries of each namespace.
func copyKV(ctx context.Context, from, to Store, namespaces []string, r *Report) error {
	for _, ns := range namespaces {
		src, dst := from.KV(ns), to.KV(ns)
		keys, err := src.List(ctx, "")
		if err != nil {
			return fmt.Errorf("storecopy: listing namespace %q: %w", ns, err)
		}
		for _, key := range keys {
			val, err := src.Get(ctx, key)
			if addon.IsNotFound(err) {
				continue // deleted since List: the source is in use after all
			}
			if err != nil {
				return fmt.Errorf("storecopy: reading key %q of namespace %q: %w", key, ns, err)
			}
			if err := dst.Put(ctx, key, val); err != nil {
				return fmt.Errorf("storecopy: key %q of namespace %q: %w", key, ns, err)
			}
			r.KV++
		}
	}
	return nil
}

// copyPacing copies the pacing windows, in one SavePacing.
func copyPacing(ctx context.Context, from, to Store, r *Report) error {
	windows, err := from.LoadPacing(ctx)
	if err != nil {
		return fmt.Errorf("storecopy: reading the pacing windows: %w", err)
	}
	// bbolt keeps the windows as entries of KV("pacing"), which Put can
	// leave empty; SavePacing would take such a window for a deletion.
	windows = slices.DeleteFunc(windows, func(w addon.PaceWindow) bool { return len(w.Times) == 0 })
	if len(windows) == 0 {
		return nil
	}
	if err := to.SavePacing(ctx, windows); err != nil {
		return fmt.Errorf("storecopy: pacing windows: %w", err)
	}
	r.PaceWindows = len(windows)
	return nil
}

// copyCerts copies the files of certmagic's storage.
func copyCerts(ctx context.Context, from, to Store, r *Report) error {
	src, dst := from.CertStorage(), to.CertStorage()
	files, err := certFiles(ctx, src)
	if err != nil {
		return fmt.Errorf("storecopy: %w", err)
	}
	for _, key := range files {
		val, err := src.Load(ctx, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since List
		}
		if err != nil {
			return fmt.Errorf("storecopy: reading certmagic key %q: %w", key, err)
		}
		if err := dst.Store(ctx, key, val); err != nil {
			return fmt.Errorf("storecopy: certmagic key %q: %w", key, err)
		}
		r.CertFiles++
	}
	return nil
}
