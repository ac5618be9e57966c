package command

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSearchResults feeds a backend's JSON answer through what fetch does
// with it (a json.Number decode, extract and lookup), renders the hits with
// Format, and cuts the term with Truncate. Properties:
//   - extract keeps only hits with an http(s) URL of at most 2000 bytes and
//     a trimmed, non-empty title, never more than the list has;
//   - lookup of a dotted path is lookup of its parts one after another;
//   - Format shows at most spec.MaxResults links, stays within HipChat's
//     message limit (maxMessage characters), and every '<', '>' and '"' in
//     it belongs to the markup Format writes itself: nothing from the
//     backend, the term or the show-all URL comes out unescaped;
//   - Truncate(s, n) returns s when it fits, else n characters ending in
//     "…" (nothing for n < 1), and keeps valid UTF-8 valid.
func FuzzSearchResults(f *testing.F) {
	blog := `[{"title":"Java 21 records","url":"https://blog.example/2024/records"},` +
		`{"title":"  <script>alert(1)</script>  ","url":"https://blog.example/x?a=1&b=2"},` +
		`{"title":null,"url":"http://blog.example/no-title"},{"title":"ftp","url":"ftp://blog.example/f"},` +
		`{"title":12.50,"url":"https://blog.example/n"},{"url":"javascript:alert(1)"}]`
	nested := `{"data":{"results":[{"meta":{"title":"Nested \u00e9t\u00e9"},"link":{"href":"https://wiki.example/p/1"}},` +
		`{"meta":{"title":["a",1,true]},"link":{"href":"https://wiki.example/p/2"}}]}}`
	f.Add([]byte(blog), "", "title", "url", 10, "java", "https://blog.example/tag/{term}", 100)
	f.Add([]byte(nested), "data.results", "meta.title", "link.href", 1, `"><script>`, "https://wiki.example/search?q={term}", 5)
	f.Add([]byte(`{"results":null}`), "results", "title", "url", 10, "none", "", 7)
	f.Add([]byte(`{"results":{"not":"a list"}}`), "results", "title", "url", 3, "x", "", 3)
	f.Add([]byte(`[]`), "", "title", "url", 50, "\xff\xfe invalid utf-8 ☃", "https://blog.example/tag/{term}", 1)
	f.Add([]byte(blog), "", "title", "url", 0, strings.Repeat(`"`, 3000), "https://blog.example/tag/{term}", 200)

	f.Fuzz(func(t *testing.T, doc []byte, resultsPath, titleField, urlField string, maxResults int, term, showAll string, n int) {
		dec := json.NewDecoder(bytes.NewReader(doc))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return
		}
		// Config allows 1 to 50 results (config.validateSearch).
		maxResults = 1 + (maxResults%50+50)%50
		spec := Spec{Name: "hascode", ResultsPath: resultsPath, TitleField: titleField, URLField: urlField,
			MaxResults: maxResults, ShowAllURL: showAll}

		checkLookup(t, v, resultsPath)
		hits, err := extract(v, spec)
		list, isList := lookup(v, resultsPath).([]any)
		switch {
		case err != nil:
			if isList || lookup(v, resultsPath) == nil {
				t.Fatalf("extract failed (%v) on a list or nothing", err)
			}
		case !isList && hits != nil:
			t.Fatalf("extract found %d hits without a list", len(hits))
		case len(hits) > len(list):
			t.Fatalf("extract found %d hits in a list of %d", len(hits), len(list))
		}
		for _, h := range hits {
			if !httpURL(h.URL) || len(h.URL) > 2000 {
				t.Fatalf("hit with URL %q", h.URL)
			}
			if h.Title == "" || h.Title != strings.TrimSpace(h.Title) {
				t.Fatalf("hit with title %q", h.Title)
			}
		}

		checkFormat(t, spec, term, hits)
		// The same with hits that did not come from a backend, as the UI's
		// post or a test might pass them.
		checkFormat(t, spec, term, []Hit{{Title: titleField, URL: urlField}, {Title: resultsPath, URL: showAll}})
		checkTruncate(t, term, n)
	})
}

// checkLookup checks that lookup of a dotted path walks it part by part.
func checkLookup(t *testing.T, v any, path string) {
	t.Helper()
	head, tail, ok := strings.Cut(path, ".")
	if !ok || head == "" || tail == "" {
		return
	}
	if got, want := lookup(v, path), lookup(lookup(v, head), tail); !reflect.DeepEqual(got, want) {
		t.Fatalf("lookup(%q) = %v, but lookup of %q then %q = %v", path, got, head, tail, want)
	}
}

// formatMarkup is every piece of markup Format writes itself.
var formatMarkup = strings.NewReplacer(`<b>`, "", `</b>`, "", `<ul>`, "", `</ul>`, "", `<li>`, "", `</li>`, "",
	`<a href="`, "", `">`, "", `</a>`, "")

func checkFormat(t *testing.T, spec Spec, term string, hits []Hit) {
	t.Helper()
	out := Format(spec, term, hits)
	qt := html.EscapeString(Truncate(term, 100))
	if len(hits) == 0 {
		if want := "No articles for <b>" + qt + "</b>."; out != want {
			t.Fatalf("Format of no hits = %q, want %q", out, want)
		}
		return
	}
	if c := utf8.RuneCountInString(out); c > maxMessage {
		t.Fatalf("Format output has %d characters, over HipChat's %d (term %d bytes, %d hits)", c, maxMessage, len(term), len(hits))
	}
	links := strings.Count(out, "<li>")
	if links > spec.MaxResults || links > len(hits) {
		t.Fatalf("Format shows %d links for %d hits, max %d", links, len(hits), spec.MaxResults)
	}
	for _, h := range hits[:links] {
		if !strings.Contains(out, `<a href="`+html.EscapeString(h.URL)+`">`) {
			t.Fatalf("Format lost the link %q", h.URL)
		}
	}
	if rest := formatMarkup.Replace(out); strings.ContainsAny(rest, `<>"`) {
		t.Fatalf("Format output has unescaped markup: %q", out)
	}
	if strings.Contains(strings.ToLower(out), "<script") {
		t.Fatalf("Format output has a script tag: %q", out)
	}
	valid := utf8.ValidString(term) && utf8.ValidString(spec.ShowAllURL)
	for _, h := range hits {
		valid = valid && utf8.ValidString(h.Title) && utf8.ValidString(h.URL)
	}
	if valid && !utf8.ValidString(out) {
		t.Fatalf("Format made invalid UTF-8 of valid input: %q", out)
	}
	if links < len(hits) && spec.ShowAllURL != "" && !strings.Contains(out, "Show all") {
		// Left out only when it does not fit.
		footer := `<a href="` + html.EscapeString(expand(spec.ShowAllURL, term)) + fmt.Sprintf(`">Show all %d results for `, len(hits)) + qt + `</a>`
		if utf8.RuneCountInString(out)+utf8.RuneCountInString(footer) <= maxMessage {
			t.Fatalf("Format left out the show-all link though it fits")
		}
	}
	if u, err := url.Parse(expand("https://blog.example/tag/{term}", term)); err != nil || u.Host != "blog.example" {
		t.Fatalf("expand of term %q escapes into the URL's host: %v", term, err)
	}
}

func checkTruncate(t *testing.T, s string, n int) {
	t.Helper()
	n %= 1 << 16
	out := Truncate(s, n)
	count := utf8.RuneCountInString(s)
	switch {
	case count <= n:
		if out != s {
			t.Fatalf("Truncate(%q, %d) = %q, want it unchanged", s, n, out)
		}
	case n < 1:
		if out != "" {
			t.Fatalf("Truncate(%q, %d) = %q, want \"\"", s, n, out)
		}
	default:
		if c := utf8.RuneCountInString(out); c != n {
			t.Fatalf("Truncate(%q, %d) has %d characters", s, n, c)
		}
		if !strings.HasSuffix(out, "…") || !strings.HasPrefix(out, string([]rune(s)[:n-1])) {
			t.Fatalf("Truncate(%q, %d) = %q, want the first %d characters and …", s, n, out, n-1)
		}
	}
	if utf8.ValidString(s) && !utf8.ValidString(out) {
		t.Fatalf("Truncate(%q, %d) = %q is not valid UTF-8", s, n, out)
	}
}
