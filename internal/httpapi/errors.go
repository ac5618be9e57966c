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
