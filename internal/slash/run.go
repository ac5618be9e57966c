package slash

import (
	"context"
	"fmt"
	"html"
	"log/slog"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
)

// Run answers the command of job j for the room of installation inst the
// way the installation's settings say (the dispatcher's Run): a disabled
// command gets a short notice, a search shows the configured number of
// results and is recorded with [Service.AfterSearch] (which also updates
// the glance; not for a "Build your own" integration, which has neither
// glance nor sidebar), anything else is run by the Runner as is. Like
// command.Runner.Run, a failed search yields a notification for the room
// together with an error for the log; a failed glance update is only
// logged.
func (sv *Service) Run(ctx context.Context, inst addon.Installation, j addon.Job) (addon.Notification, error) {
	name, args := j.Command, j.Args
	spec, ok := sv.d.Commands.Spec(name)
	if !ok {
		return sv.d.Commands.Run(ctx, name, args) // its not-found error
	}
	st, err := sv.Settings(ctx, inst.OAuthID)
	if err != nil {
		// Settings unreadable: answer with the configured defaults rather
		// than not at all.
		sv.d.Logger.Warn("slash: settings unreadable, using defaults", slog.String("oauth_id", inst.OAuthID), slog.Any("err", err))
		st = Settings{}
	}
	if !st.Enabled(name) {
		return addon.Notification{Message: fmt.Sprintf("/%s is turned off for this room by an administrator.", name),
			MessageFormat: "text", Color: "gray"}, nil
	}
	if !searches(spec, args) {
		return sv.d.Commands.Run(ctx, name, args)
	}
	spec = st.Apply(spec)
	hits, err := sv.d.Commands.Search(ctx, name, args)
	if err != nil {
		msg := fmt.Sprintf("Sorry, the search for <b>%s</b> failed: the search service did not answer. Please try again later.",
			html.EscapeString(command.Truncate(args, MaxTermChars)))
		return addon.Notification{Message: msg, MessageFormat: "html", Color: "red"}, fmt.Errorf("slash: %s: %w", name, err)
	}
	n := sv.d.Commands.Reply(spec, args, hits)
	if inst.Integration != "" {
		return n, nil // no glance or sidebar to keep up to date
	}
	log := sv.d.Logger.With(slog.String("oauth_id", inst.OAuthID), slog.Int64("room", j.RoomID))
	if !j.ResponseOnly {
		if err := sv.AfterSearch(ctx, inst, j.RoomID, name, args, hits); err != nil {
			log.Warn("slash: after search", slog.Any("err", err))
		}
		return n, nil
	}
	// The reply goes in the webhook's response and must not wait for
	// HipChat, which may be out of reach (a firewall dropping packets
	// would hold it for outbound.timeout): the search is recorded now, the
	// glance pushed in the background.
	rec, now, err := sv.record(ctx, inst, j.RoomID, name, args, hits)
	if err != nil {
		log.Warn("slash: after search", slog.Any("err", err))
		return n, nil
	}
	go func() {
		if err := sv.pushGlance(context.WithoutCancel(ctx), inst, j.RoomID, rec, now); err != nil {
			log.Warn("slash: after search", slog.Any("err", err))
		}
	}()
	return n, nil
}

// Requests is how many API requests under the installation's token
// delivering j makes (delivery.Options.Requests): its notification (none
// when it may only go in the webhook's response), plus the glance update
// of a search that Run records.
func (sv *Service) Requests(j addon.Job) int {
	n := 1 // the notification
	if j.ResponseOnly {
		n = 0 // in the webhook's response
	}
	if spec, ok := sv.d.Commands.Spec(j.Command); ok && j.Reply == nil && searches(spec, j.Args) {
		n++ // the glance
	}
	return n
}

// searches reports whether running spec with args is a search (which Run
// records and follows with a glance push): echo is not, nor a search
// command without a term, which answers its usage.
func searches(spec command.Spec, args string) bool {
	return spec.Kind != command.KindEcho && args != ""
}
