package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// Outcome is what an uninstall request came to.
type Outcome string

const (
	// Removed: HipChat refused the installation's credentials, so it was
	// removed with everything stored for it.
	Removed Outcome = "removed"
	// Requested: HipChat still accepted the credentials (or could not be
	// asked), so the uninstall is recorded and re-checked on the schedule.
	Requested Outcome = "requested"
	// Absent: no such installation is stored; nothing to do.
	Absent Outcome = "absent"
)

// DefaultRechecks is the re-check schedule of a requested uninstall when
// Service.Rechecks is empty: how long after the request HipChat is asked
// again whether it still accepts the credentials.
func DefaultRechecks() []time.Duration {
	return []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 24 * time.Hour}
}

// PendingNamespace is the key/value namespace of requested uninstalls; each
// record is under the installation's addon.KeyPrefix, so removing the
// installation removes its record in the same transaction.
const PendingNamespace = "uninstall"

// pendingKey is the record's key within the installation's prefix.
const pendingKey = "requested"

// PendingUninstall is an uninstall HipChat has not confirmed yet.
type PendingUninstall struct {
	OAuthID     string    `json:"oauthId"`
	RequestedAt time.Time `json:"requestedAt"`
	Checks      int       `json:"checks"` // re-checks done after the request
	Next        time.Time `json:"next"`   // when HipChat is asked again
	LastError   string    `json:"lastError,omitempty"`
}

// Uninstall handles HipChat's uninstall of inst (PROTOCOL.md section 8).
// HipChat revokes an uninstalled add-on's OAuth client, but no source says
// whether before or after it tells the add-on, so only HipChat refusing
// the credentials (401 invalid_client) removes: then inst is removed
// (Removed). Credentials that still work, or a HipChat that cannot be
// asked, record the uninstall as requested (Requested): Recheck asks again
// on the schedule and removes the moment HipChat refuses them; a request
// already recorded keeps its schedule. An installation already gone is
// Absent.
func (s *Service) Uninstall(ctx context.Context, inst addon.Installation) (Outcome, error) {
	err := s.confirmUninstalled(ctx, inst)
	if err == nil {
		return s.remove(ctx, inst.OAuthID)
	}
	if _, lookErr := s.Store.Installation(ctx, inst.OAuthID); addon.IsNotFound(lookErr) {
		return Absent, nil
	}
	now := s.now()
	rec := PendingUninstall{OAuthID: inst.OAuthID, RequestedAt: now, Next: now.Add(s.rechecks()[0]), LastError: reason(err)}
	kv := s.Store.KV(PendingNamespace)
	key := addon.KeyPrefix(inst.OAuthID) + pendingKey
	first := false
	werr := kv.Update(ctx, key, func(old []byte, found bool) ([]byte, error) {
		if first = !found; found {
			return old, nil
		}
		return json.Marshal(rec)
	})
	if werr != nil {
		return "", fmt.Errorf("uninstall %s: record the request: %w", addon.Clip(inst.OAuthID, 100), werr)
	}
	if first {
		s.log().Info("uninstall requested; HipChat still accepts the credentials, re-checking",
			slog.String("oauth_id", inst.OAuthID), slog.String("reason", rec.LastError), slog.Time("next_check", rec.Next))
	}
	return Requested, nil
}

// reason is why an uninstall was not confirmed, for the record and the log.
func reason(err error) string {
	if errors.Is(err, errStillInstalled) {
		return "HipChat still accepts the credentials"
	}
	return err.Error()
}

// Known reports whether the installation oauthID is stored.
func (s *Service) Known(ctx context.Context, oauthID string) (bool, error) {
	_, err := s.Store.Installation(ctx, oauthID)
	if addon.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// UninstallFrom handles the browser redirect flow: installableURL tells
// which installation went (it must be on that installation's HipChat
// server, else Forbidden), and it is uninstalled as by Uninstall.
func (s *Service) UninstallFrom(ctx context.Context, installableURL string) (Outcome, error) {
	oauthID, err := s.HipChat.InstallableInfo(ctx, installableURL)
	if err != nil {
		return "", fmt.Errorf("uninstall: %w", err)
	}
	inst, err := s.Store.Installation(ctx, oauthID)
	if addon.IsNotFound(err) {
		return Absent, nil
	}
	if err != nil {
		return "", err
	}
	if o, _ := originOf(installableURL); o != inst.HipChatOrigin {
		return "", addon.Errorf(addon.Forbidden, "installable_url is not on the installation's HipChat server")
	}
	return s.Uninstall(ctx, inst)
}

// errStillInstalled is confirmUninstalled's answer when HipChat issued a
// token: the installation is alive.
var errStillInstalled = errors.New("HipChat still accepts the installation's credentials")

// confirmUninstalled returns nil when HipChat refuses inst's credentials,
// errStillInstalled when it accepts them, and HipChat's failure otherwise.
func (s *Service) confirmUninstalled(ctx context.Context, inst addon.Installation) error {
	_, err := s.HipChat.RequestToken(ctx, inst, s.Scopes)
	switch {
	case err == nil:
		return errStillInstalled
	case errors.Is(err, hipchat.ErrInvalidClient):
		return nil
	default:
		return fmt.Errorf("confirm with HipChat: %w", err)
	}
}

// remove deletes an installation HipChat confirmed gone.
func (s *Service) remove(ctx context.Context, oauthID string) (Outcome, error) {
	err := s.Remove(ctx, oauthID)
	if addon.IsNotFound(err) {
		return Absent, nil
	}
	if err != nil {
		return "", err
	}
	s.log().Info("uninstalled", slog.String("oauth_id", oauthID))
	return Removed, nil
}

func (s *Service) rechecks() []time.Duration {
	if len(s.Rechecks) == 0 {
		return DefaultRechecks()
	}
	return s.Rechecks
}

// PendingUninstalls returns the uninstalls requested and not yet
// confirmed, ordered by OAuthID.
func (s *Service) PendingUninstalls(ctx context.Context) ([]PendingUninstall, error) {
	kv := s.Store.KV(PendingNamespace)
	keys, err := kv.List(ctx, "installation/")
	if err != nil {
		return nil, err
	}
	out := make([]PendingUninstall, 0, len(keys))
	for _, key := range keys {
		b, err := kv.Get(ctx, key)
		if addon.IsNotFound(err) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		var rec PendingUninstall
		if err := json.Unmarshal(b, &rec); err != nil {
			return nil, fmt.Errorf("pending uninstall %q: %w", key, err)
		}
		out = append(out, rec)
	}
	return out, nil
}

// retryUnanswered is how soon a re-check HipChat did not answer is tried
// again.
const retryUnanswered = time.Minute

// Recheck asks HipChat again about every requested uninstall that is due:
// refused credentials remove the installation; working ones move the
// record to the next step of the schedule, and after the last step the
// request is dropped and the installation kept (HipChat still knows the
// add-on, so it was not uninstalled); a HipChat that does not answer is
// asked again a minute later without using up a step. It returns how many
// installations it removed.
func (s *Service) Recheck(ctx context.Context) (int, error) {
	pending, err := s.PendingUninstalls(ctx)
	if err != nil {
		return 0, fmt.Errorf("recheck uninstalls: %w", err)
	}
	removed := 0
	var errs []error
	for _, rec := range pending {
		if s.now().Before(rec.Next) {
			continue
		}
		gone, err := s.recheck(ctx, rec)
		if gone {
			removed++
		}
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

// recheck settles one due record; it reports whether the installation was
// removed.
func (s *Service) recheck(ctx context.Context, rec PendingUninstall) (bool, error) {
	kv := s.Store.KV(PendingNamespace)
	key := addon.KeyPrefix(rec.OAuthID) + pendingKey
	log := s.log().With(slog.String("oauth_id", rec.OAuthID))
	inst, err := s.Store.Installation(ctx, rec.OAuthID)
	if addon.IsNotFound(err) {
		return false, ignoreNotFound(kv.Delete(ctx, key)) // removed by another way
	}
	if err != nil {
		return false, err
	}
	err = s.confirmUninstalled(ctx, inst)
	if err == nil {
		out, err := s.remove(ctx, rec.OAuthID)
		return out == Removed, err
	}
	now, steps := s.now(), s.rechecks()
	switch {
	case !errors.Is(err, errStillInstalled):
		rec.Next = now.Add(retryUnanswered)
		log.Warn("uninstall re-check: HipChat did not answer", slog.Any("err", err))
	case rec.Checks+1 >= len(steps):
		log.Warn("uninstall not confirmed: HipChat still accepts the credentials after every re-check; installation kept",
			slog.Time("requested", rec.RequestedAt))
		return false, ignoreNotFound(kv.Delete(ctx, key))
	default:
		rec.Checks++
		rec.Next = now.Add(steps[rec.Checks] - steps[rec.Checks-1])
	}
	rec.LastError = reason(err)
	b, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	return false, kv.Put(ctx, key, b)
}

func ignoreNotFound(err error) error {
	if addon.IsNotFound(err) {
		return nil
	}
	return err
}
