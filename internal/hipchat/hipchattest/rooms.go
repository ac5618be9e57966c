package hipchattest

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hipconnect/hipconnect/internal/httperr"
)

// Rooms and the room tokens of "Build your own" integrations (PROTOCOL.md
// sections 10 and 11).
//
// Every positive room id is a room: one AddRoom did not name is called
// "Room {id}", the name RoomMessage gives it. A path's {id_or_name} is a
// decimal id, or a room's name (exactly, case included), so that
// /v2/room/1147/... and /v2/room/Ops%20Room/... are the same room once
// AddRoom(1147, "Ops Room") ran; flood control counts them together.

// roomToken is a room token made by AddRoomToken.
type roomToken struct {
	roomID int64
	path   string   // the {id_or_name} of its URL, as AddRoomToken was given it
	scopes []string // what it may do in its room
	gone   atomic.Bool
}

func (t *roomToken) revoked() bool { return t.gone.Load() }

// roomRef is the room a path's {id_or_name} names.
type roomRef struct {
	path string // {id_or_name} as sent, unescaped
	id   int64  // 0: a name the fake does not know
	name string // "" when id is 0
}

// key is the room's key in the flood control windows: its id, or the path
// for a name the fake does not know (a room of its own); "" for no room.
func (r roomRef) key() string {
	switch {
	case r.id > 0:
		return strconv.FormatInt(r.id, 10)
	case r.path != "" && !isDecimal(r.path):
		return "name:" + r.path
	}
	return ""
}

func isDecimal(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// resolveRoom finds the room idOrName names. ok is false only for an id
// that cannot be a room (0 or negative): HipChat's 404. A name the fake
// does not know is ok with id 0, as before rooms had names here: an
// add-on token may post to it (Notification.RoomID 0).
func (s *Server) resolveRoom(idOrName string) (ref roomRef, ok bool) {
	ref.path = idOrName
	if n, err := strconv.ParseInt(idOrName, 10, 64); err == nil {
		if n <= 0 {
			return ref, false
		}
		s.mu.Lock()
		ref.id, ref.name = n, s.roomNameLocked(n)
		s.mu.Unlock()
		return ref, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, name := range s.rooms {
		if name == idOrName {
			ref.id, ref.name = id, name
			return ref, true
		}
	}
	if rest, found := strings.CutPrefix(idOrName, "Room "); found {
		// The default name of a room AddRoom did not name.
		if n, err := strconv.ParseInt(rest, 10, 64); err == nil && n > 0 && strconv.FormatInt(n, 10) == rest {
			if _, named := s.rooms[n]; !named {
				ref.id, ref.name = n, idOrName
			}
		}
	}
	return ref, true
}

// roomNameLocked is the name of room id; s.mu is held.
func (s *Server) roomNameLocked(id int64) string {
	if name, ok := s.rooms[id]; ok {
		return name
	}
	return "Room " + strconv.FormatInt(id, 10)
}

// AddRoom names room id (a positive id) name, so that paths naming it by
// name reach it; naming it again renames it. A name is unique among rooms
// and is not a decimal number (a path would read it as an id). It reports
// a misuse with t.Errorf, as well as a name "Room {n}" for another room n
// (the default name of room n).
func (s *Server) AddRoom(id int64, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case id <= 0:
		s.t.Errorf("hipchattest: AddRoom(%d, %q): a room id is positive", id, name)
		return
	case name == "" || isDecimal(name):
		s.t.Errorf("hipchattest: AddRoom(%d, %q): a room name is not empty and not a number", id, name)
		return
	}
	if rest, found := strings.CutPrefix(name, "Room "); found && isDecimal(rest) && rest != strconv.FormatInt(id, 10) {
		s.t.Errorf("hipchattest: AddRoom(%d, %q): that is the default name of another room", id, name)
		return
	}
	for other, n := range s.rooms {
		if n == name && other != id {
			s.t.Errorf("hipchattest: AddRoom(%d, %q): room %d has that name", id, name, other)
			return
		}
	}
	s.rooms[id] = name
}

// AddRoomToken makes the token of a "Build your own" integration of room
// (PROTOCOL.md section 11): room is the {id_or_name} of its URL, a decimal
// id or the name of a room AddRoom named (RoomURL keeps that form). The
// token is a user-generated token: it is limited by
// Limits.UserTokenRequests, never expires (until RevokeRoomToken), is
// taken in Authorization: Bearer or in ?auth_token=, and works only on its
// own room, whether a path names it by id or by name:
//
//   - POST /v2/room/{id_or_name}/notification, with scope
//     send_notification;
//   - GET /v2/room/{id_or_name} (room info), only with scope view_room or
//     view_group.
//
// scopes default to send_notification alone, which is what HipChat's room
// notification tokens had: public reports show such a token refused with
// 403 on get room (RidersDiscountCom/HypChat#22 and #34). Pass
// "send_notification", "view_room" for a token that may also read its
// room. Another room, or any other endpoint, answers 403; a revoked token
// 401. A room AddRoomToken cannot find is reported with t.Errorf and
// yields "".
func (s *Server) AddRoomToken(room string, scopes ...string) (token string) {
	ref, ok := s.resolveRoom(room)
	if !ok || ref.id == 0 {
		s.t.Errorf("hipchattest: AddRoomToken(%q): no such room (AddRoom names rooms)", room)
		return ""
	}
	if len(scopes) == 0 {
		scopes = []string{"send_notification"}
	}
	token = randomHex(20)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.roomTokens[token] = &roomToken{roomID: ref.id, path: room, scopes: slices.Clone(scopes)}
	return token
}

// RoomURL is the URL HipChat's "Build your own" page shows for token (an
// AddRoomToken token, revoked or not), the one an admin copies into an
// integration (PROTOCOL.md section 10, seed 004):
// https://{host}/v2/room/{id_or_name}/notification?auth_token={token},
// with the room as AddRoomToken was given it, path-escaped (a space is
// %20). An unknown token is reported with t.Errorf and yields "".
func (s *Server) RoomURL(token string) string {
	s.mu.Lock()
	rt := s.roomTokens[token]
	s.mu.Unlock()
	if rt == nil {
		s.t.Errorf("hipchattest: RoomURL: not a room token")
		return ""
	}
	return s.url + PathRoom + url.PathEscape(rt.path) + "/notification?auth_token=" + url.QueryEscape(token)
}

// RevokeRoomToken makes token fail with 401 from now on, as deleting the
// integration does; RoomURL still gives its URL.
func (s *Server) RevokeRoomToken(token string) {
	s.mu.Lock()
	rt := s.roomTokens[token]
	s.mu.Unlock()
	if rt != nil {
		rt.gone.Store(true)
	}
}

// handleRoom is "get room": the room's id, name and links, with an add-on
// token that has view_room or view_group, or a room token of that room
// that has one of them (see AddRoomToken). A name the fake does not know
// is 404. Like every API call it counts against the token's rate limit,
// not the room's flood control.
func (s *Server) handleRoom(w http.ResponseWriter, r *http.Request) {
	c, ok := s.authorize(w, r, r.PathValue("id"), "view_room", "view_group")
	if !ok || s.overLimit(w, r, c, "") {
		return
	}
	if !c.refOK || c.ref.id == 0 {
		writeAPIError(w, http.StatusNotFound, "Room not found")
		return
	}
	self := s.url + PathRoom + strconv.FormatInt(c.ref.id, 10)
	httperr.WriteJSON(w, http.StatusOK, map[string]any{
		"id":          c.ref.id,
		"name":        c.ref.name,
		"privacy":     "public",
		"is_archived": false,
		"topic":       "",
		"links": map[string]string{
			"self":         self,
			"participants": self + "/participant",
			"webhooks":     self + "/webhook",
		},
	})
}
