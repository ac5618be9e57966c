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
	// UI declares the HipChat UI surfaces that internal/ui serves: a glance
	// (queryUrl PathGlance) opening a sidebar web panel (PathSidebar), a
	// search dialog (PathDialog) and a configuration page (PathConfigure).
	// Their keys come from [GlanceKey], [WebPanelKey] and [DialogKey].
	UI bool
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
	Glance             []Glance    `json:"glance,omitempty"`
	WebPanel           []WebPanel  `json:"webPanel,omitempty"`
	Dialog             []Dialog    `json:"dialog,omitempty"`
	// Configurable is the configuration page HipChat shows to the admins
	// of the installation (room admins for a room install).
	Configurable *Configurable `json:"configurable,omitempty"`
}

// APIConsumer declares the REST API scopes the add-on uses.
type APIConsumer struct {
	FromName string   `json:"fromName"`
	Scopes   []string `json:"scopes"`
}

// Installable says where HipChat announces installs and uninstalls.
type Installable struct {
	AllowGlobal       bool   `json:"allowGlobal"`
	AllowRoom         bool   `json:"allowRoom"`
	CallbackURL       string `json:"callbackUrl"`
	UpdateCallbackURL string `json:"updateCallbackUrl,omitempty"`
	UninstalledURL    string `json:"uninstalledUrl,omitempty"`
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

// Text is a display string of the descriptor ("name", "title"): Value is
// 1 to 100 characters, I18n an optional localisation key.
type Text struct {
	Value string `json:"value"`
	I18n  string `json:"i18n,omitempty"`
}

// Icon is an image in two resolutions; HipChat's schema requires both.
type Icon struct {
	URL   string `json:"url"`
	URL2x string `json:"url@2x"`
}

// Glance is a glance in HipChat's sidebar: a line of text (and a lozenge)
// that HipChat fetches from QueryURL and the add-on updates through the
// REST API. Target is the key of the web panel or dialog it opens.
type Glance struct {
	Key      string `json:"key"`
	Name     Text   `json:"name"`
	QueryURL string `json:"queryUrl,omitempty"`
	Target   string `json:"target,omitempty"`
	Icon     Icon   `json:"icon"`
}

// WebPanel is a page HipChat shows in an iframe in its sidebar.
type WebPanel struct {
	Key            string `json:"key"`
	Name           Text   `json:"name"`
	URL            string `json:"url"`
	Location       string `json:"location"`
	Icon           *Icon  `json:"icon,omitempty"`
	Authentication string `json:"authentication,omitempty"`
}

// Dialog is a page HipChat opens in a modal dialog.
type Dialog struct {
	Key            string        `json:"key"`
	Title          Text          `json:"title"`
	URL            string        `json:"url"`
	Options        DialogOptions `json:"options"`
	Authentication string        `json:"authentication,omitempty"`
}

// DialogOptions are a dialog's options; the defaults suit hipconnect, so
// it is written as {}.
type DialogOptions struct {
	Size string `json:"size,omitempty"` // small, medium, large, xlarge
}

// Configurable is the add-on's configuration page.
type Configurable struct {
	URL            string `json:"url"`
	Authentication string `json:"authentication,omitempty"`
}

// Paths under the base URL that the descriptor points HipChat at; the HTTP
// routes use the same constants.
const (
	PathDescriptor  = "/atlassian-connect.json"
	PathInstallable = "/installable"
	PathUpdated     = "/installable/updated"
	PathUninstalled = "/uninstalled"
	PathWebhook     = "/webhook/" // + command name

	PathGlance    = "/glance"    // glance queryUrl
	PathSidebar   = "/sidebar"   // web panel
	PathDialog    = "/dialog"    // search dialog
	PathConfigure = "/configure" // configuration page
	PathStatic    = "/static/"   // embedded assets
	PathIcon      = PathStatic + "icon.png"
	PathIcon2x    = PathStatic + "icon@2x.png"
)

// LocationSidebar is the only web panel location HipChat's schema knows.
const LocationSidebar = "hipchat.sidebar.right"

// uiKeyStem is the part of an add-on key the UI keys start with: its last
// dot-separated part ("com.example.blogsearch" gives "blogsearch"), reduced
// to [a-zA-Z0-9_-] and to 32 characters so that stem+"-sidebar" fits the
// schema's 40; "hipconnect" when nothing is left.
func uiKeyStem(addonKey string) string {
	last := addonKey[strings.LastIndex(addonKey, ".")+1:]
	stem := strings.Map(func(r rune) rune {
		if r < 128 && (r == '_' || r == '-' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
			return r
		}
		return -1
	}, last)
	if len(stem) > 32 {
		stem = stem[:32]
	}
	if stem == "" {
		stem = "hipconnect"
	}
	return stem
}

// GlanceKey is the key of the glance Build declares for addonKey, e.g.
// "blogsearch-glance"; glance updates must name it.
func GlanceKey(addonKey string) string { return uiKeyStem(addonKey) + "-glance" }

// WebPanelKey is the key of the sidebar web panel Build declares.
func WebPanelKey(addonKey string) string { return uiKeyStem(addonKey) + "-sidebar" }

// DialogKey is the key of the search dialog Build declares.
func DialogKey(addonKey string) string { return uiKeyStem(addonKey) + "-dialog" }

// Build returns the descriptor for s, already validated.
func Build(s Spec) (Descriptor, error) {
	base := strings.TrimRight(s.BaseURL, "/")
	d := Descriptor{
		Key: s.Key, Name: s.Name, Description: s.Description,
		Links: Links{Self: base + PathDescriptor, Homepage: base + "/"},
		Capabilities: Capabilities{
			HipchatAPIConsumer: APIConsumer{FromName: s.Name, Scopes: s.Scopes},
			Installable: Installable{AllowGlobal: true, AllowRoom: true,
				CallbackURL: base + PathInstallable, UpdateCallbackURL: base + PathUpdated,
				UninstalledURL: base + PathUninstalled},
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
	if s.UI {
		caps := &d.Capabilities
		panel := WebPanelKey(s.Key)
		caps.Glance = []Glance{{Key: GlanceKey(s.Key), Name: Text{Value: s.Name}, QueryURL: base + PathGlance,
			Target: panel, Icon: Icon{URL: base + PathIcon, URL2x: base + PathIcon2x}}}
		caps.WebPanel = []WebPanel{{Key: panel, Name: Text{Value: s.Name}, URL: base + PathSidebar,
			Location: LocationSidebar, Icon: &Icon{URL: base + PathIcon, URL2x: base + PathIcon2x}, Authentication: "jwt"}}
		caps.Dialog = []Dialog{{Key: DialogKey(s.Key), Title: Text{Value: s.Name}, URL: base + PathDialog, Authentication: "jwt"}}
		caps.Configurable = &Configurable{URL: base + PathConfigure, Authentication: "jwt"}
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
	key := uniqueKeys(bad)
	for _, w := range d.Capabilities.Webhook {
		key("webhook", w.Key)
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
	validateUI(d.Capabilities, checkURL, bad)
	return errors.Join(errs...)
}

// uniqueKeys returns a check that each key it is given matches keyRe and
// was not given before.
func uniqueKeys(bad func(format string, args ...any)) func(what, k string) {
	seen := map[string]bool{}
	return func(what, k string) {
		if !keyRe.MatchString(k) || seen[k] {
			bad("%s key %q must be unique and 1 to 40 characters of [a-zA-Z0-9_.-]", what, k)
		}
		seen[k] = true
	}
}

// validateUI checks the glance, webPanel, dialog and configurable entries
// as HipChat's schema does (PROTOCOL.md section 1): keys 1 to 40 characters
// of [a-zA-Z0-9_.-], unique among these entries; display texts 1 to 100
// characters; a glance needs key, name and an icon with url and url@2x; a
// web panel key, name, url and location hipchat.sidebar.right; a dialog
// key, title and url; the configuration page a url. A glance's target must
// name one of the descriptor's web panels or dialogs.
func validateUI(c Capabilities, checkURL func(what, u string), bad func(format string, args ...any)) {
	key := uniqueKeys(bad)
	text := func(what, k, field string, t Text) {
		if n := len([]rune(t.Value)); n < 1 || n > 100 {
			bad("%s %q: %s.value must be 1 to 100 characters", what, k, field)
		}
	}
	icon := func(what, k string, i Icon) {
		if i.URL == "" || i.URL2x == "" {
			bad("%s %q: icon needs url and url@2x", what, k)
			return
		}
		checkURL(what+" icon url", i.URL)
		checkURL(what+" icon url@2x", i.URL2x)
	}
	auth := func(what, k, a string) {
		if a != "" && a != "jwt" && a != "none" {
			bad("%s %q: authentication must be jwt or none", what, k)
		}
	}
	targets := map[string]bool{}
	for _, p := range c.WebPanel {
		key("webPanel", p.Key)
		text("webPanel", p.Key, "name", p.Name)
		checkURL("webPanel url", p.URL)
		if p.Location != LocationSidebar {
			bad("webPanel %q: location must be %s", p.Key, LocationSidebar)
		}
		if p.Icon != nil {
			icon("webPanel", p.Key, *p.Icon)
		}
		auth("webPanel", p.Key, p.Authentication)
		targets[p.Key] = true
	}
	for _, g := range c.Dialog {
		key("dialog", g.Key)
		text("dialog", g.Key, "title", g.Title)
		checkURL("dialog url", g.URL)
		auth("dialog", g.Key, g.Authentication)
		targets[g.Key] = true
	}
	for _, g := range c.Glance {
		key("glance", g.Key)
		text("glance", g.Key, "name", g.Name)
		icon("glance", g.Key, g.Icon)
		if g.QueryURL != "" {
			checkURL("glance queryUrl", g.QueryURL)
		}
		if g.Target != "" && !targets[g.Target] {
			bad("glance %q: target %q is not a webPanel or dialog key", g.Key, g.Target)
		}
	}
	if c.Configurable != nil {
		checkURL("configurable url", c.Configurable.URL)
		auth("configurable", "configurable", c.Configurable.Authentication)
	}
}

// JSON returns the descriptor as indented JSON.
func (d Descriptor) JSON() []byte {
	b, _ := json.MarshalIndent(d, "", "  ") // plain strings and slices: cannot fail
	return append(b, '\n')
}
