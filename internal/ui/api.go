package ui

import (
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/httperr"
	"github.com/hipconnect/hipconnect/internal/jwtauth"
	"github.com/hipconnect/hipconnect/internal/slash"
)

// maxAPIBody caps the JSON bodies of /api/ requests.
const maxAPIBody = 16 << 10

// apiHandler answers one /api/ call for a session.
type apiHandler func(w http.ResponseWriter, r *http.Request, s jwtauth.Session) error

// api runs h for r's session. The JWT came in the Authorization header
// only (jwtauth.HeaderOnly, see httpapi's routes), and a write must send
// JSON: together they keep a cross-site form or link from acting for the
// user, as neither can set that header or that type, and no CORS header
// lets another origin's script try.
func (u *UI) api(w http.ResponseWriter, r *http.Request, h apiHandler) {
	w.Header().Set("Cache-Control", "no-store")
	s, err := session(r)
	if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead && !isJSON(r) {
		err = addon.WithStatus(addon.Invalid, http.StatusUnsupportedMediaType, "send application/json")
	}
	if err == nil {
		err = h(w, r, s)
	}
	if err != nil {
		u.fail(w, r, err)
	}
}

// GetSettings answers the installation's settings.
func (u *UI) GetSettings(w http.ResponseWriter, r *http.Request) { u.api(w, r, u.getSettings) }

// PutSettings stores the configuration page's settings.
func (u *UI) PutSettings(w http.ResponseWriter, r *http.Request) { u.api(w, r, u.putSettings) }

// Search runs the dialog's search and answers the hits it would show.
func (u *UI) Search(w http.ResponseWriter, r *http.Request) { u.api(w, r, u.search) }

// Post posts the dialog's search result to the room.
func (u *UI) Post(w http.ResponseWriter, r *http.Request) { u.api(w, r, u.post) }

// History answers the room's recent searches.
func (u *UI) History(w http.ResponseWriter, r *http.Request) { u.api(w, r, u.history) }

// decodeJSON reads one JSON value with only known fields into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	return httperr.DecodeJSON(dec, v)
}

func (u *UI) getSettings(w http.ResponseWriter, r *http.Request, s jwtauth.Session) error {
	st, err := u.d.Slash.Settings(r.Context(), s.Inst.OAuthID)
	if err != nil {
		return err
	}
	httperr.WriteJSON(w, http.StatusOK, st)
	return nil
}

// putSettings stores the configuration page's settings for the
// installation. HipChat shows that page to the installation's admins only;
// a valid JWT is all the add-on can check.
func (u *UI) putSettings(w http.ResponseWriter, r *http.Request, s jwtauth.Session) error {
	var st slash.Settings
	if err := decodeJSON(w, r, &st); err != nil {
		return err
	}
	saved, err := u.d.Slash.SaveSettings(r.Context(), s.Inst.OAuthID, st)
	if err != nil {
		return err
	}
	u.d.Logger.Info("ui: settings saved", slog.String("oauth_id", s.Inst.OAuthID),
		slog.String("user", s.Claims.Subject), slog.Int("max_results", saved.MaxResults), slog.Int("disabled", len(saved.Disabled)))
	httperr.WriteJSON(w, http.StatusOK, saved)
	return nil
}

// searchRequest is the body of /api/search and /api/post.
type searchRequest struct {
	Command string `json:"command"`
	Term    string `json:"term"`
}

// searchResponse is the answer of /api/search.
type searchResponse struct {
	Command string      `json:"command"`
	Term    string      `json:"term"`
	Total   int         `json:"total"`
	Hits    []slash.Hit `json:"hits"` // the first Settings.MaxResults
}

// search runs a search for the dialog and answers the hits it would show.
func (u *UI) search(w http.ResponseWriter, r *http.Request, s jwtauth.Session) error {
	var req searchRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	spec, term, err := u.d.Slash.PrepareSearch(r.Context(), s.Inst.OAuthID, req.Command, req.Term)
	if err != nil {
		return err
	}
	hits, err := u.d.Slash.Search(r.Context(), spec, term)
	if err != nil {
		return err
	}
	resp := searchResponse{Command: spec.Name, Term: term, Total: len(hits), Hits: []slash.Hit{}}
	for _, h := range hits[:min(len(hits), spec.MaxResults)] {
		resp.Hits = append(resp.Hits, slash.Hit{Title: command.Truncate(h.Title, slash.MaxTitleChars), URL: h.URL})
	}
	httperr.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// post runs the dialog's search again on the server and posts the
// command's own reply to the room: nothing the page sends ends up in the
// message except the term, which the reply escapes.
func (u *UI) post(w http.ResponseWriter, r *http.Request, s jwtauth.Session) error {
	var req searchRequest
	if err := decodeJSON(w, r, &req); err != nil {
		return err
	}
	if err := s.NeedRoom(); err != nil {
		return err
	}
	spec, term, err := u.d.Slash.PrepareSearch(r.Context(), s.Inst.OAuthID, req.Command, req.Term)
	if err != nil {
		return err
	}
	if u.d.Post == nil {
		return addon.Errorf(addon.Busy, "posting to rooms is not available")
	}
	hits, err := u.d.Slash.Search(r.Context(), spec, term)
	if err != nil {
		return err
	}
	n := u.d.Slash.Reply(spec, term, hits)
	if err := u.d.Post(r.Context(), s.Inst, s.Room, n); err != nil {
		return addon.Wrap(addon.Unavailable, err, "could not post to the room; try again later")
	}
	if err := u.d.Slash.AfterSearch(r.Context(), s.Inst, s.Room, spec.Name, term, hits); err != nil {
		u.d.Logger.Warn("ui: after search", slog.String("oauth_id", s.Inst.OAuthID), slog.Int64("room", s.Room), slog.Any("err", err))
	}
	httperr.WriteJSON(w, http.StatusOK, map[string]any{"posted": true, "total": len(hits), "shown": min(len(hits), spec.MaxResults)})
	return nil
}

// history answers the room's recent searches, newest first.
func (u *UI) history(w http.ResponseWriter, r *http.Request, s jwtauth.Session) error {
	if err := s.NeedRoom(); err != nil {
		return err
	}
	rec, err := u.d.Slash.Room(r.Context(), s.Inst.OAuthID, s.Room)
	if err != nil {
		return err
	}
	count, _ := rec.ThisWeek(u.d.Now())
	list := rec.Searches
	if list == nil {
		list = []slash.Search{}
	}
	httperr.WriteJSON(w, http.StatusOK, map[string]any{"searches": list, "weekCount": count})
	return nil
}
