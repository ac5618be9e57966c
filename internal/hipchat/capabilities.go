package hipchat

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/hipconnect/hipconnect/internal/addon"
)

// Capabilities is what the add-on takes from a HipChat Server's capabilities
// document (PROTOCOL.md section 2).
type Capabilities struct {
	APIURL           string   // hipchatApiProvider.url, always ending in "/"
	TokenURL         string   // oauth2Provider.tokenUrl
	AuthorizationURL string   // oauth2Provider.authorizationUrl; "" on older servers
	Self             string   // links.self, equal to the URL the document was read from
	Homepage         string   // links.homepage; may be ""
	Origin           string   // scheme://host[:port] of Self: where HipChat's web client lives
	Scopes           []string // ids of hipchatApiProvider.availableScopes, sorted; nil on older servers
}

type capabilitiesDoc struct {
	Capabilities struct {
		APIProvider *struct {
			URL             string          `json:"url"`
			AvailableScopes json.RawMessage `json:"availableScopes"`
		} `json:"hipchatApiProvider"`
		OAuth2Provider *struct {
			AuthorizationURL string `json:"authorizationUrl"`
			TokenURL         string `json:"tokenUrl"`
		} `json:"oauth2Provider"`
	} `json:"capabilities"`
	Links struct {
		Self     string `json:"self"`
		Homepage string `json:"homepage"`
	} `json:"links"`
}

// Capabilities reads the capabilities document at capabilitiesURL and checks
// what an install relies on (PROTOCOL.md section 3, steps 1 and 2):
//   - capabilitiesURL's host is allowed (else Forbidden, no request made);
//   - the server answers 2xx (else Unavailable, with the status) with at
//     most 1 MiB (else TooLarge) of JSON (else Invalid);
//   - links.self equals capabilitiesURL, ignoring one trailing slash (else
//     Invalid);
//   - oauth2Provider.tokenUrl and hipchatApiProvider.url are present
//     absolute http(s) URLs (else Invalid) on allowed hosts (else Forbidden).
//
// Optional fields (authorizationUrl, availableScopes, homepage) may be
// missing. APIURL is returned with a trailing "/".
func (c *Client) Capabilities(ctx context.Context, capabilitiesURL string) (Capabilities, error) {
	const op = "capabilities"
	u, err := c.checkURL("capabilities url", capabilitiesURL)
	if err != nil {
		return Capabilities{}, opError(op, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Capabilities{}, opError(op, addon.Wrap(addon.Invalid, err, "bad capabilities url"))
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.do(req)
	if err != nil {
		return Capabilities{}, opError(op, err)
	}
	defer drain(resp)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Capabilities{}, opError(op, addon.Errorf(addon.Unavailable,
			"hipchat answered %d for the capabilities document", resp.StatusCode))
	}
	body, err := readBody(resp)
	if err != nil {
		return Capabilities{}, opError(op, err)
	}
	caps, err := c.parseCapabilities(body, capabilitiesURL, u)
	if err != nil {
		return Capabilities{}, opError(op, err)
	}
	return caps, nil
}

// parseCapabilities decodes body, the capabilities document read from
// capabilitiesURL (u is that URL as checkURL returned it), and makes the
// checks Capabilities lists after the response: JSON, links.self, and the
// token and API URLs. It makes no request.
func (c *Client) parseCapabilities(body []byte, capabilitiesURL string, u *url.URL) (Capabilities, error) {
	var doc capabilitiesDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return Capabilities{}, addon.Wrap(addon.Invalid, err, "the capabilities document is not valid json")
	}

	if doc.Links.Self == "" {
		return Capabilities{}, addon.Errorf(addon.Invalid, "the capabilities document has no links.self")
	}
	// atlassian-connect-express-hipchat rejects a document whose links.self
	// is not the URL it was read from (PROTOCOL.md section 3 step 2). Only a
	// trailing slash is forgiven: any other difference is a mismatch.
	if strings.TrimSuffix(doc.Links.Self, "/") != strings.TrimSuffix(capabilitiesURL, "/") {
		return Capabilities{}, addon.Errorf(addon.Invalid,
			"the capabilities document's links.self does not match the capabilities url")
	}

	var caps Capabilities
	caps.Self = doc.Links.Self
	caps.Homepage = doc.Links.Homepage
	caps.Origin = u.Scheme + "://" + u.Host

	if p := doc.Capabilities.OAuth2Provider; p != nil {
		caps.TokenURL = p.TokenURL
		caps.AuthorizationURL = p.AuthorizationURL
	}
	if caps.TokenURL == "" {
		return Capabilities{}, addon.Errorf(addon.Invalid, "the capabilities document has no oauth2Provider.tokenUrl")
	}
	if err := c.checkSameOrigin("token url", caps.TokenURL, caps.Origin); err != nil {
		return Capabilities{}, err
	}

	if p := doc.Capabilities.APIProvider; p != nil {
		caps.APIURL = p.URL
		caps.Scopes = scopeIDs(p.AvailableScopes)
	}
	if caps.APIURL == "" {
		return Capabilities{}, addon.Errorf(addon.Invalid, "the capabilities document has no hipchatApiProvider.url")
	}
	if err := c.checkSameOrigin("api url", caps.APIURL, caps.Origin); err != nil {
		return Capabilities{}, err
	}
	if !strings.HasSuffix(caps.APIURL, "/") {
		caps.APIURL += "/"
	}
	return caps, nil
}

// checkSameOrigin checks raw like checkURL and also that it is on origin,
// the capabilities document's own server: the credentials are sent to the
// token URL, so a document must not be able to send them to another host,
// even one on the allowlist (HipChat Server serves all three from its own
// host).
func (c *Client) checkSameOrigin(what, raw, origin string) error {
	u, err := c.checkURL(what, raw)
	if err != nil {
		return err
	}
	if u.Scheme+"://"+u.Host != origin {
		return addon.Errorf(addon.Forbidden, "%s is not on the capabilities document's server %s", what, origin)
	}
	return nil
}

// scopeIDs reads availableScopes in either shape seen in public material:
// an object keyed by scope id (PROTOCOL.md section 2) or a list of ids or of
// objects with an "id" (seeds/002, "Building an add-on with your own
// technology stack"). Anything else yields nil: the field is optional.
func scopeIDs(raw json.RawMessage) []string {
	if len(raw) == 0 {
		return nil
	}
	var ids []string
	var obj map[string]json.RawMessage
	var list []json.RawMessage
	switch {
	case json.Unmarshal(raw, &obj) == nil && obj != nil:
		for id := range obj {
			ids = append(ids, id)
		}
	case json.Unmarshal(raw, &list) == nil:
		for _, item := range list {
			var s string
			var o struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(item, &s) == nil && s != "" {
				ids = append(ids, s)
			} else if json.Unmarshal(item, &o) == nil && o.ID != "" {
				ids = append(ids, o.ID)
			}
		}
	}
	sort.Strings(ids)
	return ids
}
