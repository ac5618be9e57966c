package descriptor

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func spec() Spec {
	return Spec{BaseURL: "https://addon.intranet.example/", Key: "com.example.blogsearch", Name: "Blog Search",
		Description: "Search the blog", VendorName: "Example Corp", VendorURL: "https://example.com",
		Commands: []string{"hascode", "echo"}, Scopes: []string{"send_notification", "view_room"}}
}

func TestBuild(t *testing.T) {
	d, err := Build(spec())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(d.JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	caps := doc["capabilities"].(map[string]any)
	inst := caps["installable"].(map[string]any)
	if got, want := inst["callbackUrl"], "https://addon.intranet.example/installable"; got != want {
		t.Errorf("callbackUrl = %v, want %v", got, want)
	}
	if got, want := doc["links"].(map[string]any)["self"], "https://addon.intranet.example/atlassian-connect.json"; got != want {
		t.Errorf("links.self = %v, want %v", got, want)
	}
	hooks := caps["webhook"].([]any)
	if len(hooks) != 2 {
		t.Fatalf("webhooks = %d, want 2", len(hooks))
	}
	h := hooks[0].(map[string]any)
	if h["authentication"] != "jwt" || h["event"] != "room_message" || h["url"] != "https://addon.intranet.example/webhook/hascode" {
		t.Errorf("webhook = %v", h)
	}
	re := regexp.MustCompile(h["pattern"].(string))
	for msg, want := range map[string]bool{"/hascode java": true, "/hascode": true, "/hascodex": false, "hi /hascode": false} {
		if got := re.MatchString(msg); got != want {
			t.Errorf("pattern matches %q = %v, want %v", msg, got, want)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	tests := []refusal{
		{"long key", func(d *Descriptor) { d.Key = strings.Repeat("k", 41) }, "key"},
		{"key charset", func(d *Descriptor) { d.Key = "a b" }, "key"},
		{"empty name", func(d *Descriptor) { d.Name = "" }, "name"},
		{"vendor without url", func(d *Descriptor) { d.Vendor.URL = "" }, "vendor"},
		{"bad scope", func(d *Descriptor) { d.Capabilities.HipchatAPIConsumer.Scopes = []string{"root"} }, "scope"},
		{"webhook without jwt", func(d *Descriptor) { d.Capabilities.Webhook[0].Authentication = "none" }, "jwt"},
		{"unknown event", func(d *Descriptor) { d.Capabilities.Webhook[0].Event = "room_explode" }, "event"},
		{"duplicate webhook key", func(d *Descriptor) { d.Capabilities.Webhook[1].Key = d.Capabilities.Webhook[0].Key }, "unique"},
		{"relative self", func(d *Descriptor) { d.Links.Self = "/atlassian-connect.json" }, "links.self"},
	}
	testRefuses(t, spec(), tests)
}

func uiSpec() Spec {
	s := spec()
	s.UI = true
	return s
}

func TestBuildUI(t *testing.T) {
	d, err := Build(uiSpec())
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Capabilities struct {
			Glance       []map[string]any `json:"glance"`
			WebPanel     []map[string]any `json:"webPanel"`
			Dialog       []map[string]any `json:"dialog"`
			Configurable map[string]any   `json:"configurable"`
		} `json:"capabilities"`
	}
	if err := json.Unmarshal(d.JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	c := doc.Capabilities
	if len(c.Glance) != 1 || len(c.WebPanel) != 1 || len(c.Dialog) != 1 || c.Configurable == nil {
		t.Fatalf("capabilities = %+v, want one glance, webPanel, dialog and a configurable", c)
	}
	const base = "https://addon.intranet.example"
	g, p, dl := c.Glance[0], c.WebPanel[0], c.Dialog[0]
	for _, tt := range []struct {
		what      string
		got, want any
	}{
		{"glance key", g["key"], "blogsearch-glance"},
		{"glance name", g["name"], map[string]any{"value": "Blog Search"}},
		{"glance queryUrl", g["queryUrl"], base + "/glance"},
		{"glance target", g["target"], "blogsearch-sidebar"},
		{"glance icon", g["icon"], map[string]any{"url": base + "/static/icon.png", "url@2x": base + "/static/icon@2x.png"}},
		{"webPanel key", p["key"], "blogsearch-sidebar"},
		{"webPanel url", p["url"], base + "/sidebar"},
		{"webPanel location", p["location"], "hipchat.sidebar.right"},
		{"dialog key", dl["key"], "blogsearch-dialog"},
		{"dialog title", dl["title"], map[string]any{"value": "Blog Search"}},
		{"dialog url", dl["url"], base + "/dialog"},
		{"dialog options", dl["options"], map[string]any{}},
		{"configurable url", c.Configurable["url"], base + "/configure"},
	} {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.what, tt.got, tt.want)
		}
	}

	// Without UI, Build declares none of them, as before.
	plain, err := Build(spec())
	if err != nil {
		t.Fatal(err)
	}
	if s := string(plain.JSON()); strings.Contains(s, "glance") || strings.Contains(s, "webPanel") || strings.Contains(s, "configurable") {
		t.Errorf("descriptor without UI declares UI surfaces:\n%s", s)
	}
}

func TestUIKeys(t *testing.T) {
	tests := []struct{ addonKey, want string }{
		{"com.example.blogsearch", "blogsearch-glance"},
		{"blogsearch", "blogsearch-glance"},
		{"com.example.", "hipconnect-glance"},
		{"com.example.blog search!", "blogsearch-glance"},
		{"com.example." + strings.Repeat("x", 60), strings.Repeat("x", 32) + "-glance"},
	}
	for _, tt := range tests {
		if got := GlanceKey(tt.addonKey); got != tt.want {
			t.Errorf("GlanceKey(%q) = %q, want %q", tt.addonKey, got, tt.want)
		}
		for _, k := range []string{GlanceKey(tt.addonKey), WebPanelKey(tt.addonKey), DialogKey(tt.addonKey)} {
			if !keyRe.MatchString(k) {
				t.Errorf("key %q for %q breaks the schema", k, tt.addonKey)
			}
		}
	}
}

func TestValidateRefusesUI(t *testing.T) {
	tests := []refusal{
		{"glance without key", func(d *Descriptor) { d.Capabilities.Glance[0].Key = "" }, "glance key"},
		{"glance key too long", func(d *Descriptor) { d.Capabilities.Glance[0].Key = strings.Repeat("g", 41) }, "glance key"},
		{"glance key charset", func(d *Descriptor) { d.Capabilities.Glance[0].Key = "blog/glance" }, "glance key"},
		{"glance without name", func(d *Descriptor) { d.Capabilities.Glance[0].Name.Value = "" }, "name.value"},
		{"glance name too long", func(d *Descriptor) { d.Capabilities.Glance[0].Name.Value = strings.Repeat("n", 101) }, "name.value"},
		{"glance without icon url", func(d *Descriptor) { d.Capabilities.Glance[0].Icon.URL = "" }, "icon needs url and url@2x"},
		{"glance without icon url@2x", func(d *Descriptor) { d.Capabilities.Glance[0].Icon.URL2x = "" }, "icon needs url and url@2x"},
		{"glance relative icon", func(d *Descriptor) { d.Capabilities.Glance[0].Icon.URL = "/static/icon.png" }, "glance icon url"},
		{"glance relative queryUrl", func(d *Descriptor) { d.Capabilities.Glance[0].QueryURL = "/glance" }, "queryUrl"},
		{"glance target unknown", func(d *Descriptor) { d.Capabilities.Glance[0].Target = "nowhere" }, "target"},
		{"webPanel without key", func(d *Descriptor) {
			d.Capabilities.WebPanel[0].Key = ""
			d.Capabilities.Glance[0].Target = ""
		}, "webPanel key"},
		{"webPanel without name", func(d *Descriptor) { d.Capabilities.WebPanel[0].Name.Value = "" }, "name.value"},
		{"webPanel without url", func(d *Descriptor) { d.Capabilities.WebPanel[0].URL = "" }, "webPanel url"},
		{"webPanel without location", func(d *Descriptor) { d.Capabilities.WebPanel[0].Location = "" }, "location"},
		{"webPanel other location", func(d *Descriptor) { d.Capabilities.WebPanel[0].Location = "hipchat.sidebar.left" }, "location"},
		{"webPanel half icon", func(d *Descriptor) { d.Capabilities.WebPanel[0].Icon.URL2x = "" }, "icon needs url and url@2x"},
		{"dialog without title", func(d *Descriptor) { d.Capabilities.Dialog[0].Title.Value = "" }, "title.value"},
		{"dialog without url", func(d *Descriptor) { d.Capabilities.Dialog[0].URL = "" }, "dialog url"},
		{"dialog key clashes with webPanel", func(d *Descriptor) { d.Capabilities.Dialog[0].Key = d.Capabilities.WebPanel[0].Key }, "unique"},
		{"dialog bad authentication", func(d *Descriptor) { d.Capabilities.Dialog[0].Authentication = "basic" }, "authentication"},
		{"configurable without url", func(d *Descriptor) { d.Capabilities.Configurable.URL = "" }, "configurable url"},
	}
	testRefuses(t, uiSpec(), tests)
}

// refusal is a change to a built descriptor that Validate must refuse with
// an error mentioning want.
type refusal struct {
	name   string
	change func(*Descriptor)
	want   string
}

// testRefuses builds s, applies each change and checks Validate refuses it.
func testRefuses(t *testing.T, s Spec, tests []refusal) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Build(s)
			if err != nil {
				t.Fatal(err)
			}
			tt.change(&d)
			err = Validate(d)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
