package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/addon"
	"github.com/hipconnect/hipconnect/internal/command"
	"github.com/hipconnect/hipconnect/internal/hipchat/hipchattest"
	"github.com/hipconnect/hipconnect/internal/httperr"
	"github.com/hipconnect/hipconnect/internal/store"
)

// jobRecorder is the store of FuzzWebhook: the installation lookup is
// answered from memory and Enqueue records the job (each one new), every
// other method goes to the bbolt store.
type jobRecorder struct {
	*store.DB
	inst addon.Installation
	mu   sync.Mutex
	jobs []addon.Job
}

func (s *jobRecorder) Installation(ctx context.Context, oauthID string) (addon.Installation, error) {
	if oauthID == s.inst.OAuthID {
		return s.inst, nil
	}
	return s.DB.Installation(ctx, oauthID)
}

func (s *jobRecorder) Enqueue(_ context.Context, j addon.Job) (addon.Job, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jobs = append(s.jobs, j)
	return j, true, nil
}

// take returns the jobs enqueued since the last call.
func (s *jobRecorder) take() []addon.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	jobs := s.jobs
	s.jobs = nil
	return jobs
}

// fuzzMaxBody is FuzzWebhook's body cap, small enough for the fuzzer to
// reach.
const fuzzMaxBody = 4096

// FuzzWebhook decodes a fuzzed body with decodeWebhook and posts it to
// POST /webhook/{command} of the public handler (installation inst-1 of
// room 100, command echo), with a fresh JWT naming room 100, no room, or
// room 200. Properties:
//   - decodeWebhook accepts exactly one JSON value (json.Decoder's More
//     decides what may follow) of a room_message with a room id > 0 and a
//     message id, and refuses anything else as Invalid; what it accepts,
//     re-encoded, decodes to the same value;
//   - nothing panics, and the status is one the webhook documents: 204,
//     400, 401, 403 or 413 (503 needs a failing store);
//   - the status is the one the webhook's rules give, checked in their
//     order on the body as httperr.DecodeJSON decodes it: 403 for a JWT of
//     a room not covered, 413 over the cap, 400 for malformed JSON (nothing
//     is enqueued then), another event, no room id > 0 or no message id,
//     401 for another oauth_client_id or a JWT of another room, 403 for a
//     room not covered, 400 for a message that is not /<command>;
//   - a 204 enqueued exactly one job, with the body's room (> 0), message
//     id (not empty), date, sender and the command's arguments; anything
//     else enqueued none;
//   - the decoded body re-encoded and posted again (with a new JWT) is
//     accepted with the same job.
func FuzzWebhook(f *testing.F) {
	var rec *jobRecorder
	e := newTestEnv(f, envOptions{maxBodyBytes: fuzzMaxBody, wrap: func(db *store.DB, inst addon.Installation) addon.Store {
		rec = &jobRecorder{DB: db, inst: inst}
		return rec
	}})
	parser := command.New(http.DefaultClient, "x", []command.Spec{{Name: "echo", Kind: command.KindEcho}})

	f.Add(hipchattest.RoomMessage("inst-1", 100, "m1", "/echo hello world"), uint8(0), uint8(0))
	f.Add(hipchattest.RoomMessage("inst-1", 100, "m2", "  /echo\thello  "), uint8(0), uint8(1))
	f.Add(hipchattest.RoomMessage("inst-1", 200, "m3", "/echo x"), uint8(0), uint8(1))
	f.Add(hipchattest.RoomMessage("inst-1", 100, "m4", "/hascode java"), uint8(1), uint8(0))
	f.Add(hipchattest.RoomMessage("inst-2", 100, "m5", "/echo"), uint8(0), uint8(0))
	f.Add(hipchattest.RoomMessage("inst-1", 100, "m6", "/echo"), uint8(0), uint8(2))
	f.Add([]byte(`{"event":"room_message","item":{"message":{"id":"a","message":"/echo \u00e9","date":"2026-03-04T10:00:00.123+01:00",`+
		`"from":{"name":"\xff"}},"room":{"id":100}},"oauth_client_id":"inst-1"} ]`), uint8(0), uint8(0))
	f.Add([]byte(`{"EVENT":"room_message","Item":{"Message":{"ID":"b","Message":"/echo"},"Room":{"ID":1e2}},"OAuth_Client_ID":"inst-1","event":"room_enter"}`),
		uint8(0), uint8(0))
	f.Add([]byte(`{"event":"room_message","item":{"room":{"id":-100}}}`), uint8(0), uint8(0))
	f.Add([]byte(`{"event":"room_message","item":{"room":{"id":"100"}}}`), uint8(0), uint8(0))
	f.Add([]byte(`{} {}`), uint8(0), uint8(0))
	f.Add([]byte(``), uint8(2), uint8(0))
	f.Add(append(hipchattest.RoomMessage("inst-1", 100, "m7", "/echo big"), bytes.Repeat([]byte(" "), fuzzMaxBody)...), uint8(0), uint8(0))

	f.Fuzz(func(t *testing.T, body []byte, cmdSel, roomSel uint8) {
		name := []string{"echo", "hascode", "echo2"}[cmdSel%3]
		jwtRoom := []int64{100, 0, 200}[roomSel%3]
		rec.take()
		code, jobs := postWebhook(e, rec, name, jwtRoom, body)
		switch code {
		case http.StatusNoContent, http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d for %q", code, body)
		}

		// decodeWebhook, the body's decoding, on its own.
		var p webhookPayload
		decodeErr := httperr.DecodeJSON(json.NewDecoder(bytes.NewReader(body)), &p)
		wantDecoded := decodeErr == nil && p.Event == "room_message" && p.Item.Room.ID > 0 && p.Item.Message.ID != ""
		dp, err := decodeWebhook(body)
		switch {
		case (err == nil) != wantDecoded:
			t.Fatalf("decodeWebhook(%q) = %+v, %v; want an error: %v", body, dp, err, !wantDecoded)
		case err != nil && addon.KindOf(err) != addon.Invalid:
			t.Fatalf("decodeWebhook(%q): err = %v of kind %q, want invalid", body, err, addon.KindOf(err))
		case err == nil && !reflect.DeepEqual(dp, p):
			t.Fatalf("decodeWebhook(%q) = %+v, want %+v", body, dp, p)
		}
		if err == nil {
			again, err := json.Marshal(dp)
			if err != nil {
				t.Fatalf("re-encoding %+v: %v", dp, err)
			}
			if dq, err := decodeWebhook(again); err != nil || !reflect.DeepEqual(dp, dq) {
				t.Fatalf("re-encoded %s decodes to %+v, %v; want %+v", again, dq, err, dp)
			}
		}

		cmd, args, isCmd := parser.Parse(p.Item.Message.Message)
		want := http.StatusNoContent
		switch {
		case jwtRoom != 0 && jwtRoom != 100:
			want = http.StatusForbidden // jwtauth: the JWT's room is not the installation's
		case len(body) > fuzzMaxBody:
			want = http.StatusRequestEntityTooLarge
		case !wantDecoded:
			want = http.StatusBadRequest
		case p.OAuthClientID != "inst-1", jwtRoom != 0 && jwtRoom != p.Item.Room.ID:
			want = http.StatusUnauthorized
		case p.Item.Room.ID != 100:
			want = http.StatusForbidden
		case !isCmd || cmd != name:
			want = http.StatusBadRequest
		}
		if code != want {
			t.Fatalf("status %d, want %d, for JWT room %d, /webhook/%s, body %q", code, want, jwtRoom, name, body)
		}
		if code != http.StatusNoContent {
			if len(jobs) != 0 {
				t.Fatalf("status %d but %d jobs enqueued for %q", code, len(jobs), body)
			}
			return
		}
		if len(jobs) != 1 {
			t.Fatalf("accepted with %d jobs enqueued, want 1: %q", len(jobs), body)
		}
		date, _ := time.Parse(time.RFC3339Nano, p.Item.Message.Date)
		wantJob := addon.Job{OAuthID: "inst-1", RoomID: p.Item.Room.ID, MessageID: p.Item.Message.ID, MessageDate: date.UTC(),
			Command: "echo", Args: args, From: p.Item.Message.From.Name}
		job := jobs[0]
		if job.Received.IsZero() {
			t.Fatalf("job has no Received time")
		}
		job.Received = time.Time{}
		if !reflect.DeepEqual(job, wantJob) || job.RoomID <= 0 || job.MessageID == "" || strings.TrimSpace(p.Item.Message.Message) == "" {
			t.Fatalf("job = %+v\nwant %+v\nfor %q", job, wantJob, body)
		}

		again, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", p, err)
		}
		if len(again) > fuzzMaxBody {
			return
		}
		code, jobs = postWebhook(e, rec, name, jwtRoom, again)
		if code != http.StatusNoContent || len(jobs) != 1 {
			t.Fatalf("re-encoded %s: status %d, %d jobs", again, code, len(jobs))
		}
		jobs[0].Received = time.Time{}
		if !reflect.DeepEqual(jobs[0], wantJob) {
			t.Fatalf("re-encoded %s: job %+v, want %+v", again, jobs[0], wantJob)
		}
	})
}

// postWebhook posts body to /webhook/{name} with a new JWT of room jwtRoom
// (0: none) and returns the status and the jobs enqueued.
func postWebhook(e *testEnv, rec *jobRecorder, name string, jwtRoom int64, body []byte) (int, []addon.Job) {
	r := httptest.NewRequest(http.MethodPost, "https://addon.example/webhook/"+name, bytes.NewReader(body))
	r.Header.Set("Authorization", "JWT "+e.signRoom(jwtRoom))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w.Code, rec.take()
}
