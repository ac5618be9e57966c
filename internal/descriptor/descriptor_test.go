package descriptor

import (
	"encoding/json"
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
	tests := []struct {
		name   string
		change func(*Descriptor)
		want   string
	}{
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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Build(spec())
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
