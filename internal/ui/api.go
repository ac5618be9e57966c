package ui

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hipconnect/hipconnect/internal/httperr"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
)

// maxAPIBody caps the JSON bodies of /api/ requests.
const maxAPIBody = 16 << 10

// api wraps an /api/ handler: the JWT must be in the Authorization header
// (never signed_request), and a write must send JSON. Together they keep a
// cross-site form or link from acting for the user: neither can set that
// header or that type, and no CORS header lets another origin's script
// try.
func (u *UI) api(h func(w http.ResponseWriter, r *http.Request, s session) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s, err := u.authenticate(r, fromHeader)
		if err != nil {
			u.fail(w, r, err, nil)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && !isJSON(r) {
			u.fail(w, r, &httperr.Error{Code: http.StatusUnsupportedMediaType, Msg: "send application/json"}, &s)
			return
		}
		if err := h(w, r, s); err != nil {
			u.fail(w, r, err, &s)
		}
	}
}

// decodeJSON reads one JSON value with only known fields into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	return httperr.DecodeJSON(dec, v)
}

func (u *UI) getSettings(w http.ResponseWriter, r *http.Request, s session) error {
	st, err := u.Settings(r.Context(), s.inst.OAuthID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// putSettings stores the configuration page's settings for the
// installation. HipChat shows that page to the installation's admins only;
// a valid JWT is all the add-on can check.
func (u *UI) putSettings(w http.ResponseWriter, r *http.Request, s session) error {
	var st Settings
	if err := decodeJSON(w, r, &st); err != nil {
		return err
	}
	saved, err := u.SaveSettings(r.Context(), s.inst.OAuthID, st)
	if err != nil {
		return err
	}
	u.d.Logger.Info("ui: settings saved", slog.String("oauth_id", s.inst.OAuthID),
		slog.String("user", s.claims.Subject), slog.Int("max_results", saved.MaxResults), slog.Int("disabled", len(saved.Disabled)))
	writeJSON(w, http.StatusOK, saved)
	return nil
}

// searchRequest is the body of /api/search and /api/post.
type searchRequest struct {
	Command string `json:"command"`
	Term    string `json:"term"`
}

// searchResponse is the answer of /api/search.
type searchResponse struct {
	Command string `json:"command"`
	Term    string `json:"term"`
	Total   int    `json:"total"`
	Hits    []Hit  `json:"hits"` // the first Settings.MaxResults
}

// prepare checks a search request against the settings and returns the
// command's spec with the settings applied.
func (u *UI) prepare(r *http.Request, s session, req *searchRequest) (command.Spec, error) {
	req.Term = strings.TrimSpace(req.Term)
	if req.Term == "" {
		return command.Spec{}, addon.Errorf(addon.Invalid, "enter a term to search for")
	}
	if len([]rune(req.Term)) > maxTermChars {
		return command.Spec{}, addon.Errorf(addon.Invalid, "the term is over %d characters", maxTermChars)
	}
	st, err := u.Settings(r.Context(), s.inst.OAuthID)
	if err != nil {
		return command.Spec{}, err
	}
	for _, n := range u.searchCommands(st) {
		if n == req.Command {
			spec, _ := u.d.Commands.Spec(n)
			return st.Apply(spec), nil
		}
	}
	return command.Spec{}, addon.Errorf(addon.Invalid, "/%s is not an enabled search command", command.Truncate(req.Command, 40))
}

func (u *UI) runSearch(r *http.Request, spec command.Spec, term string) ([]command.Hit, error) {
	hits, err := u.d.Commands.Search(r.Context(), spec.Name, term)
	if err != nil {
		return nil, addon.Wrap(addon.Unavailable, err, "the search service did not answer; try again later")
	}
	return hits, nil
}

// search runs a search for the dialog and answers the hits it would show.
func (u *UI) search(w http.ResponseWriter, r *http.Request, s session) error {
	var req searchRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	spec, err := u.prepare(r, s, &req)
	if err != nil {
		return err
	}
	hits, err := u.runSearch(r, spec, req.Term)
	if err != nil {
		return err
	}
	resp := searchResponse{Command: spec.Name, Term: req.Term, Total: len(hits), Hits: []Hit{}}
	for _, h := range hits[:min(len(hits), spec.MaxResults)] {
		resp.Hits = append(resp.Hits, Hit{Title: command.Truncate(h.Title, maxTitleChars), URL: h.URL})
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// post runs the dialog's search again on the server and posts the
// command's own reply to the room: nothing the page sends ends up in the
// message except the term, which the reply escapes.
func (u *UI) post(w http.ResponseWriter, r *http.Request, s session) error {
	var req searchRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.needRoom(); err != nil {
		return err
	}
	spec, err := u.prepare(r, s, &req)
	if err != nil {
		return err
	}
	if u.d.Post == nil {
		return &httperr.Error{Code: http.StatusServiceUnavailable, Msg: "posting to rooms is not available"}
	}
	hits, err := u.runSearch(r, spec, req.Term)
	if err != nil {
		return err
	}
	n := u.d.Commands.Reply(spec, req.Term, hits)
	if err := u.d.Post(r.Context(), s.inst, s.room, n); err != nil {
		return addon.Wrap(addon.Unavailable, err, "could not post to the room; try again later")
	}
	if err := u.AfterSearch(r.Context(), s.inst, s.room, spec.Name, req.Term, hits); err != nil {
		u.d.Logger.Warn("ui: after search", slog.String("oauth_id", s.inst.OAuthID), slog.Int64("room", s.room), slog.Any("err", err))
	}
	writeJSON(w, http.StatusOK, map[string]any{"posted": true, "total": len(hits), "shown": min(len(hits), spec.MaxResults)})
	return nil
}

// history answers the room's recent searches, newest first.
func (u *UI) history(w http.ResponseWriter, r *http.Request, s session) error {
	if err := s.needRoom(); err != nil {
		return err
	}
	rec, err := u.room(r.Context(), s.inst.OAuthID, s.room)
	if err != nil {
		return err
	}
	count, _ := rec.thisWeek(u.d.Now())
	list := rec.Searches
	if list == nil {
		list = []Search{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"searches": list, "weekCount": count})
	return nil
}
