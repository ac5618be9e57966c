// Package descriptor builds hipconnect's capability descriptor, the JSON
// document HipChat reads at install (PROTOCOL.md section 1), and checks it
// against the rules of HipChat's descriptor schema, since HipChat refuses a
// whole install over a descriptor its schema rejects.
package descriptor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Spec is what the descriptor is generated from.
type Spec struct {
	BaseURL     string // public URL of the add-on, without trailing slash
	Key         string
	Name        string
	Description string
	VendorName  string
	VendorURL   string
	Commands    []string // slash command names, one room_message webhook each
	Scopes      []string
}

// Descriptor is the capability descriptor.
type Descriptor struct {
	Key          string       `json:"key"`
	Name         string       `json:"name"`
	Description  string       `json:"description"`
	Vendor       *Vendor      `json:"vendor,omitempty"`
	Links        Links        `json:"links"`
	Capabilities Capabilities `json:"capabilities"`
}

// Vendor names who provides the add-on.
type Vendor struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

// Links are the descriptor's own URLs.
type Links struct {
	Self     string `json:"self"`
	Homepage string `json:"homepage,omitempty"`
}

// Capabilities lists what the add-on does in HipChat.
type Capabilities struct {
	HipchatAPIConsumer APIConsumer `json:"hipchatApiConsumer"`
	Installable        Installable `json:"installable"`
	Webhook            []Webhook   `json:"webhook,omitempty"`
}

// APIConsumer declares the REST API scopes the add-on uses.
type APIConsumer struct {
	FromName string   `json:"fromName"`
	Scopes   []string `json:"scopes"`
}

// Installable says where HipChat announces installs and uninstalls.
type Installable struct {
	AllowGlobal    bool   `json:"allowGlobal"`
	AllowRoom      bool   `json:"allowRoom"`
	CallbackURL    string `json:"callbackUrl"`
	UninstalledURL string `json:"uninstalledUrl,omitempty"`
}

// Webhook is one event subscription.
type Webhook struct {
	Key            string `json:"key"`
	Event          string `json:"event"`
	Pattern        string `json:"pattern,omitempty"`
	URL            string `json:"url"`
	Name           string `json:"name,omitempty"`
	Authentication string `json:"authentication"`
}

// Paths under the base URL that the descriptor points HipChat at; the HTTP
// routes use the same constants.
const (
	PathDescriptor  = "/atlassian-connect.json"
	PathInstallable = "/installable"
	PathUninstalled = "/uninstalled"
	PathWebhook     = "/webhook/" // + command name
)

// Build returns the descriptor for s, already validated.
func Build(s Spec) (Descriptor, error) {
	base := strings.TrimRight(s.BaseURL, "/")
	d := Descriptor{
		Key: s.Key, Name: s.Name, Description: s.Description,
		Links: Links{Self: base + PathDescriptor, Homepage: base + "/"},
		Capabilities: Capabilities{
			HipchatAPIConsumer: APIConsumer{FromName: s.Name, Scopes: s.Scopes},
			Installable: Installable{AllowGlobal: true, AllowRoom: true,
				CallbackURL: base + PathInstallable, UninstalledURL: base + PathUninstalled},
		},
	}
	if s.VendorName != "" || s.VendorURL != "" {
		d.Vendor = &Vendor{Name: s.VendorName, URL: s.VendorURL}
	}
	for _, c := range s.Commands {
		d.Capabilities.Webhook = append(d.Capabilities.Webhook, Webhook{
			Key: c, Event: "room_message", Pattern: `^/` + regexp.QuoteMeta(c) + `(\s|$)`,
			URL: base + PathWebhook + c, Name: c, Authentication: "jwt",
		})
	}
	return d, Validate(d)
}

var (
	keyRe  = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,40}$`)
	scopes = map[string]bool{"admin_group": true, "admin_room": true, "import_data": true, "manage_rooms": true,
		"send_message": true, "send_notification": true, "view_group": true, "view_messages": true, "view_room": true}
	events = map[string]bool{"room_message": true, "room_notification": true, "room_enter": true, "room_exit": true,
		"room_topic_change": true, "room_archived": true, "room_unarchived": true, "room_deleted": true,
		"room_created": true, "room_file_upload": true}
)

// Validate checks d against the rules of HipChat's descriptor schema that
// hipconnect's descriptors can break (PROTOCOL.md section 1) and returns all
// problems found.
func Validate(d Descriptor) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("descriptor: "+format, args...)) }
	if !keyRe.MatchString(d.Key) {
		bad("key %q must be 1 to 40 characters of [a-zA-Z0-9_.-]", d.Key)
	}
	if n := len([]rune(d.Name)); n < 1 || n > 100 {
		bad("name must be 1 to 100 characters")
	}
	if d.Description == "" {
		bad("description is required")
	}
	checkURL := func(what, u string) {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			bad("%s %q is not an absolute URL", what, u)
		}
	}
	checkURL("links.self", d.Links.Self)
	if d.Vendor != nil {
		if d.Vendor.Name == "" || d.Vendor.URL == "" {
			bad("vendor needs name and url")
		} else {
			checkURL("vendor.url", d.Vendor.URL)
		}
	}
	for _, s := range d.Capabilities.HipchatAPIConsumer.Scopes {
		if !scopes[s] {
			bad("unknown scope %q", s)
		}
	}
	checkURL("installable.callbackUrl", d.Capabilities.Installable.CallbackURL)
	seen := map[string]bool{}
	for _, w := range d.Capabilities.Webhook {
		if !keyRe.MatchString(w.Key) || seen[w.Key] {
			bad("webhook key %q must be unique and 1 to 40 characters of [a-zA-Z0-9_.-]", w.Key)
		}
		seen[w.Key] = true
		if !events[w.Event] {
			bad("webhook %q: unknown event %q", w.Key, w.Event)
		}
		checkURL("webhook url", w.URL)
		if w.Authentication != "jwt" {
			bad("webhook %q: authentication must be jwt, or HipChat sends it unsigned", w.Key)
		}
		if _, err := regexp.Compile(w.Pattern); err != nil {
			bad("webhook %q: pattern: %v", w.Key, err)
		}
	}
	return errors.Join(errs...)
}

// JSON returns the descriptor as indented JSON.
func (d Descriptor) JSON() []byte {
	b, _ := json.MarshalIndent(d, "", "  ") // plain strings and slices: cannot fail
	return append(b, '\n')
}
