package ui

import (
	"context"
	"fmt"
	"html"
	"log/slog"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
)

// RunCommand answers a slash command the way the installation's settings
// say, for the daemon's dispatcher: a disabled command gets a short notice,
// a search shows the configured number of results and is recorded with
// [UI.AfterSearch] (which also updates the glance), anything else is run
// by the Runner as is. Like command.Runner.Run, a failed search yields a
// notification for the room together with an error for the log; a failed
// glance update is only logged.
func (u *UI) RunCommand(ctx context.Context, inst addon.Installation, roomID int64, name, args string) (addon.Notification, error) {
	spec, ok := u.d.Commands.Spec(name)
	if !ok {
		return u.d.Commands.Run(ctx, name, args) // its not-found error
	}
	st, err := u.Settings(ctx, inst.OAuthID)
	if err != nil {
		// Settings unreadable: answer with the configured defaults rather
		// than not at all.
		u.d.Logger.Warn("ui: settings unreadable, using defaults", slog.String("oauth_id", inst.OAuthID), slog.Any("err", err))
		st = Settings{}
	}
	if !st.Enabled(name) {
		return addon.Notification{Message: fmt.Sprintf("/%s is turned off for this room by an administrator.", name),
			MessageFormat: "text", Color: "gray"}, nil
	}
	if spec.Kind == command.KindEcho || args == "" {
		return u.d.Commands.Run(ctx, name, args)
	}
	spec = st.Apply(spec)
	hits, err := u.d.Commands.Search(ctx, name, args)
	if err != nil {
		msg := fmt.Sprintf("Sorry, the search for <b>%s</b> failed: the search service did not answer. Please try again later.",
			html.EscapeString(command.Truncate(args, maxTermChars)))
		return addon.Notification{Message: msg, MessageFormat: "html", Color: "red"}, fmt.Errorf("ui: %s: %w", name, err)
	}
	n := u.d.Commands.Reply(spec, args, hits)
	if err := u.AfterSearch(ctx, inst, roomID, name, args, hits); err != nil {
		u.d.Logger.Warn("ui: after search", slog.String("oauth_id", inst.OAuthID), slog.Int64("room", roomID), slog.Any("err", err))
	}
	return n, nil
}
