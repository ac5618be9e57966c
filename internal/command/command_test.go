package command

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func hitsJSON(n int, title func(i int) string) []map[string]string {
	out := make([]map[string]string, n)
	for i := range out {
		out[i] = map[string]string{"title": title(i), "url": fmt.Sprintf("https://blog.example/a/%d", i)}
	}
	return out
}

func newBackend(t *testing.T, h http.HandlerFunc) (*httptest.Server, *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.RawQuery)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func spec(base string) Spec {
	return Spec{Name: "hascode", Kind: KindSearch, SearchURL: base + "/byTag.php?tag={term}",
		TitleField: "title", URLField: "url", MaxResults: 10, ShowAllURL: "https://blog.example/tag/{term}", Timeout: time.Second}
}

func TestSearch(t *testing.T) {
	tests := []struct {
		name      string
		n         int
		title     func(int) string
		wantLinks int
		wantAll   bool
		wantIn    []string
		wantNotIn []string
	}{
		{name: "three hits", n: 3, title: func(i int) string { return fmt.Sprintf("Article %d", i) }, wantLinks: 3,
			wantIn: []string{"3 articles for java", `<a href="https://blog.example/a/2">Article 2</a>`}},
		{name: "twenty-five hits", n: 25, title: func(i int) string { return fmt.Sprintf("Article %d", i) }, wantLinks: 10, wantAll: true,
			wantIn: []string{"25 articles", `Show all 25 results for java`, `href="https://blog.example/tag/java"`}, wantNotIn: []string{"Article 10<"}},
		{name: "exactly ten", n: 10, title: func(i int) string { return "t" }, wantLinks: 10},
		{name: "none", n: 0, title: nil, wantLinks: 0, wantIn: []string{"No articles for <b>java</b>"}},
		{name: "hostile titles escaped", n: 2, title: func(int) string { return `<script>alert(1)</script>"&` }, wantLinks: 2,
			wantIn: []string{"&lt;script&gt;alert(1)&lt;/script&gt;&#34;&amp;"}, wantNotIn: []string{"<script>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, seen := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
				_ = json.NewEncoder(w).Encode(hitsJSON(tt.n, tt.title))
			})
			r := New(srv.Client(), "Blog Search", []Spec{spec(srv.URL)})
			n, err := r.Run(context.Background(), "hascode", "java")
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got := strings.Count(n.Message, "<li>"); got != tt.wantLinks {
				t.Errorf("links = %d, want %d\n%s", got, tt.wantLinks, n.Message)
			}
			if got := strings.Contains(n.Message, "Show all"); got != tt.wantAll {
				t.Errorf("show-all link present = %v, want %v", got, tt.wantAll)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(n.Message, s) {
					t.Errorf("message lacks %q:\n%s", s, n.Message)
				}
			}
			for _, s := range tt.wantNotIn {
				if strings.Contains(n.Message, s) {
					t.Errorf("message contains %q:\n%s", s, n.Message)
				}
			}
			if n.MessageFormat != "html" || n.From != "Blog Search" {
				t.Errorf("format/from = %q/%q", n.MessageFormat, n.From)
			}
			if len(*seen) != 1 || (*seen)[0] != "tag=java" {
				t.Errorf("backend saw %q, want [tag=java]", *seen)
			}
		})
	}
}

func TestSearchTermEscaped(t *testing.T) {
	srv, seen := newBackend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("[]")) })
	r := New(srv.Client(), "", []Spec{spec(srv.URL)})
	n, err := r.Run(context.Background(), "hascode", `a&b=c <x>`)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := (*seen)[0], "tag=a%26b%3Dc%20%3Cx%3E"; got != want {
		t.Errorf("query = %q, want %q", got, want)
	}
	if strings.Contains(n.Message, "<x>") {
		t.Errorf("term not escaped in reply: %s", n.Message)
	}
}

func TestSearchBackendFailures(t *testing.T) {
	tests := []struct {
		name string
		h    http.HandlerFunc
	}{
		{"status 500", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }},
		{"malformed json", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("[{")) }},
		{"not a list", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"a":1}`)) }},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := newBackend(t, tt.h)
			s := spec(srv.URL)
			s.Timeout = 200 * time.Millisecond
			r := New(srv.Client(), "", []Spec{s})
			n, err := r.Run(context.Background(), "hascode", "java")
			if err == nil {
				t.Fatal("want an error for the log")
			}
			if !strings.Contains(n.Message, "failed") || n.Color != "red" {
				t.Errorf("want a short error reply, got %+v", n)
			}
		})
	}
}

func TestResultsPathAndBadLinks(t *testing.T) {
	srv, _ := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"data":{"hits":[
			{"post":{"name":"Good","link":"https://blog.example/good"}},
			{"post":{"name":"Evil","link":"javascript:alert(1)"}},
			{"post":{"link":"http://blog.example/untitled"}}]}}`))
	})
	s := spec(srv.URL)
	s.ResultsPath, s.TitleField, s.URLField = "data.hits", "post.name", "post.link"
	n, err := New(srv.Client(), "", []Spec{s}).Run(context.Background(), "hascode", "x")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(n.Message, "javascript:") {
		t.Errorf("javascript link kept: %s", n.Message)
	}
	if !strings.Contains(n.Message, ">Good<") || !strings.Contains(n.Message, ">http://blog.example/untitled<") {
		t.Errorf("unexpected reply: %s", n.Message)
	}
}

func TestMessageLimit(t *testing.T) {
	long := strings.Repeat("€", 5000)
	hits := make([]Hit, 50)
	for i := range hits {
		hits[i] = Hit{Title: long, URL: "https://blog.example/" + strings.Repeat("x", 1900)}
	}
	s := Spec{MaxResults: 50, ShowAllURL: "https://blog.example/tag/{term}"}
	msg := Format(s, "java", hits)
	if n := utf8.RuneCountInString(msg); n > maxMessage {
		t.Errorf("message has %d characters, limit %d", n, maxMessage)
	}
	if !strings.Contains(msg, "Show all 50 results") {
		t.Errorf("show-all link missing when the list was cut")
	}
}

func TestEchoAndParse(t *testing.T) {
	r := New(http.DefaultClient, "Bot", []Spec{{Name: "echo", Kind: KindEcho}, {Name: "hascode"}})
	tests := []struct {
		msg, name, args string
		ok              bool
	}{
		{"/echo hello world", "echo", "hello world", true},
		{"  /echo   spaced  ", "echo", "spaced", true},
		{"/echo", "echo", "", true},
		{"/hascode\tjava", "hascode", "java", true},
		{"/unknown x", "", "", false},
		{"echo x", "", "", false},
		{"/echoes x", "", "", false},
	}
	for _, tt := range tests {
		name, args, ok := r.Parse(tt.msg)
		if name != tt.name || args != tt.args || ok != tt.ok {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q, %v", tt.msg, name, args, ok, tt.name, tt.args, tt.ok)
		}
	}
	n, err := r.Run(context.Background(), "echo", "<b>hi</b>")
	if err != nil || n.Message != "<b>hi</b>" || n.MessageFormat != "text" {
		t.Errorf("echo = %+v, %v; want the text verbatim in text format", n, err)
	}
	if _, err := r.Run(context.Background(), "nope", ""); err == nil {
		t.Error("unknown command: want error")
	}
}
