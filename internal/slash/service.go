// Package slash is the slash-command service: it answers a command the
// way the installation's settings say, and owns what it keeps for each
// installation in the store's key/value area (namespace "ui"): the
// settings the configuration page edits, each room's search history, and
// the glance counts it pushes to the room after each search. The
// dispatcher runs acknowledged commands through Run; the pages of package
// ui read and change the same data through the other methods.
//
// Everything is kept under addon.KeyPrefix of the installation, so the
// store's removal of an installation removes it in the same transaction.
package slash

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat"
)

// Deps are what the Service needs. Commands and KV are required; the rest
// may be zero.
type Deps struct {
	// Commands runs the searches and renders their replies.
	Commands *command.Runner
	// KV keeps settings and search history (the store's namespace "ui").
	KV addon.KV
	// CommandNames are the configured commands, in the order the
	// configuration page lists them. Names Commands does not have are
	// ignored.
	CommandNames []string
	// PushGlance sends a glance update to a room. Nil: no update is sent.
	PushGlance func(ctx context.Context, inst addon.Installation, roomID int64, g hipchat.Glance) error
	// GlanceKey is the glance's key in the descriptor; "" sends no glance
	// update.
	GlanceKey string
	// Logger gets a line per failed side effect; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service is the slash-command service. It is safe for concurrent use.
type Service struct {
	d        Deps
	commands []string // Deps.CommandNames that Commands has, without repeats
}

// New returns the Service of d.
func New(d Deps) *Service {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	sv := &Service{d: d}
	seen := map[string]bool{}
	for _, n := range d.CommandNames {
		if _, ok := d.Commands.Spec(n); ok && !seen[n] {
			seen[n] = true
			sv.commands = append(sv.commands, n)
		}
	}
	return sv
}

// Commands returns the configured commands' specs, in the configured
// order.
func (sv *Service) Commands() []command.Spec {
	out := make([]command.Spec, 0, len(sv.commands))
	for _, n := range sv.commands {
		spec, _ := sv.d.Commands.Spec(n)
		out = append(out, spec)
	}
	return out
}

// PrepareSearch checks a search the dialog asks for: term (trimmed) must
// be non-empty and at most MaxTermChars, and name an enabled search
// command of the installation. It returns the command's spec with the
// installation's settings applied, and the trimmed term; Invalid
// otherwise.
func (sv *Service) PrepareSearch(ctx context.Context, oauthID, name, term string) (command.Spec, string, error) {
	term = strings.TrimSpace(term)
	if term == "" {
		return command.Spec{}, "", addon.Errorf(addon.Invalid, "enter a term to search for")
	}
	if len([]rune(term)) > MaxTermChars {
		return command.Spec{}, "", addon.Errorf(addon.Invalid, "the term is over %d characters", MaxTermChars)
	}
	st, err := sv.Settings(ctx, oauthID)
	if err != nil {
		return command.Spec{}, "", err
	}
	for _, n := range sv.SearchCommands(st) {
		if n == name {
			spec, _ := sv.d.Commands.Spec(n)
			return st.Apply(spec), term, nil
		}
	}
	return command.Spec{}, "", addon.Errorf(addon.Invalid, "/%s is not an enabled search command", command.Truncate(name, 40))
}

// Search runs spec's search for term; a backend failure is Unavailable.
func (sv *Service) Search(ctx context.Context, spec command.Spec, term string) ([]command.Hit, error) {
	hits, err := sv.d.Commands.Search(ctx, spec.Name, term)
	if err != nil {
		return nil, addon.Wrap(addon.Unavailable, err, "the search service did not answer; try again later")
	}
	return hits, nil
}

// Reply is the room notification of spec's search for term: the same the
// slash command answers.
func (sv *Service) Reply(spec command.Spec, term string, hits []command.Hit) addon.Notification {
	return sv.d.Commands.Reply(spec, term, hits)
}
