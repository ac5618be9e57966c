package slash

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
)

// MaxResultsLimit is the largest number of results a search may show.
const MaxResultsLimit = 50

// Settings are an installation's choices on the configuration page. They
// take effect with the next command: nothing caches them.
type Settings struct {
	// Disabled names the commands turned off; absent means enabled.
	Disabled map[string]bool `json:"disabled"`
	// MaxResults is the number of results a search shows: 1 to 50, or 0
	// for each command's configured value.
	MaxResults int `json:"maxResults"`
}

// Enabled reports whether command name is on.
func (s Settings) Enabled(name string) bool { return !s.Disabled[name] }

// Apply returns spec with the settings' number of results, if one is set.
func (s Settings) Apply(spec command.Spec) command.Spec {
	if s.MaxResults > 0 {
		spec.MaxResults = s.MaxResults
	}
	return spec
}

// settingsKey is where an installation's Settings are kept: under its
// addon.KeyPrefix, so that removing the installation removes them.
func settingsKey(oauthID string) string { return addon.KeyPrefix(oauthID) + "settings" }

// Settings returns the settings of installation oauthID: the stored ones,
// or the defaults (everything enabled, the commands' own numbers) when none
// are stored.
func (sv *Service) Settings(ctx context.Context, oauthID string) (Settings, error) {
	b, err := sv.d.KV.Get(ctx, settingsKey(oauthID))
	if addon.IsNotFound(err) {
		return Settings{Disabled: map[string]bool{}}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("slash: read settings: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return Settings{}, addon.Wrap(addon.Internal, err, "slash: stored settings are corrupt")
	}
	if s.Disabled == nil {
		s.Disabled = map[string]bool{}
	}
	return s, nil
}

// SaveSettings validates s (see [Service.ValidateSettings]) and stores it as
// the settings of installation oauthID, normalised: only disabled commands
// are kept in Disabled.
func (sv *Service) SaveSettings(ctx context.Context, oauthID string, s Settings) (Settings, error) {
	if err := sv.ValidateSettings(s); err != nil {
		return Settings{}, err
	}
	norm := Settings{Disabled: map[string]bool{}, MaxResults: s.MaxResults}
	for name, off := range s.Disabled {
		if off {
			norm.Disabled[name] = true
		}
	}
	b, err := json.Marshal(norm)
	if err != nil {
		return Settings{}, addon.Wrap(addon.Internal, err, "slash: encode settings")
	}
	if err := sv.d.KV.Put(ctx, settingsKey(oauthID), b); err != nil {
		return Settings{}, fmt.Errorf("slash: store settings: %w", err)
	}
	return norm, nil
}

// ValidateSettings refuses (addon.Invalid) a MaxResults outside 0..50 and
// a Disabled entry naming no configured command.
func (sv *Service) ValidateSettings(s Settings) error {
	if s.MaxResults < 0 || s.MaxResults > MaxResultsLimit {
		return addon.Errorf(addon.Invalid, "maxResults must be 1 to %d (0 for each command's default)", MaxResultsLimit)
	}
	var unknown []string
	for name := range s.Disabled {
		if !sv.known(name) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return addon.Errorf(addon.Invalid, "unknown command %q", command.Truncate(unknown[0], 40))
	}
	return nil
}

// known reports whether name is one of the configured commands.
func (sv *Service) known(name string) bool {
	for _, n := range sv.commands {
		if n == name {
			return true
		}
	}
	return false
}

// SearchCommands returns the configured search commands s enables, in
// the configured order.
func (sv *Service) SearchCommands(s Settings) []string {
	var out []string
	for _, n := range sv.commands {
		spec, _ := sv.d.Commands.Spec(n)
		if spec.Kind != command.KindEcho && s.Enabled(n) {
			out = append(out, n)
		}
	}
	return out
}
