package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/hipconnect/hipconnect/internal/httperr"
)

// fail answers r with err's status and a JSON body {"error": msg}, and logs
// one line with the reason. Neither carries a token or secret: the error
// texts of this code base never include them.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code, msg := httperr.Refuse(s.Logger, "request refused", w, r, err)
	httperr.WriteJSON(w, code, map[string]string{"error": msg})
}

// decodeJSON reads r's body (already capped by the middleware) into v.
func decodeJSON(r *http.Request, v any) error {
	return httperr.DecodeJSON(json.NewDecoder(r.Body), v)
}

// decodeBody is decodeJSON for the webhook, the hot path: the same results
// at less cost when the body's length is known and within the cap
// (httperr.DecodeBody).
func (s *server) decodeBody(r *http.Request, v any) error {
	size := r.ContentLength
	if size > s.MaxBodyBytes {
		size = -1 // the cap may be hit: read as a stream, as decodeJSON does
	}
	return httperr.DecodeBody(r.Body, size, v)
}
