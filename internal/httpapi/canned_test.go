package httpapi

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hipconnect/hipconnect/internal/descriptor"
)

// The responses net/http writes itself, before any handler runs, cannot
// carry SecurityHeaders. These tests pin down what they are, over the
// wire, on a server configured like the daemon's public listener, so that
// what docs/security notes say about them stays true:
//
//   - a header block over MaxHeaderBytes: 431, text/plain, Connection: close,
//     a fixed body, then the connection is closed;
//   - a request net/http cannot parse: 400 (505 for an unsupported HTTP
//     version, 501 for an unsupported Transfer-Encoding), text/plain,
//     Connection: close, a fixed body, then the connection is closed;
//   - a request header not complete within ReadHeaderTimeout: no response
//     at all, the connection is closed;
//
// and none of them reflects a byte of the request.

// cannedReadHeaderTimeout stands in for the daemon's min(5s, ReadTimeout).
const cannedReadHeaderTimeout = 500 * time.Millisecond

// xss is in every request below; no response may contain it.
const xss = `<script>alert(1)</script>`

// startCanned starts the public handler on 127.0.0.1 behind an
// http.Server with the settings internal/daemon's listen gives the public
// listener (MaxHeaderBytes 32 KiB, the timeouts), over TLS if useTLS.
func startCanned(t *testing.T, useTLS bool) (dial func() net.Conn, serverLog *syncBuffer) {
	t.Helper()
	e := newTestEnv(t, envOptions{})
	ts := httptest.NewUnstartedServer(e.h)
	serverLog = &syncBuffer{}
	ts.Config.ErrorLog = log.New(serverLog, "", 0)
	ts.Config.MaxHeaderBytes = 32 << 10
	ts.Config.ReadHeaderTimeout = cannedReadHeaderTimeout
	ts.Config.ReadTimeout = 10 * time.Second
	ts.Config.WriteTimeout = 10 * time.Second
	ts.Config.IdleTimeout = 30 * time.Second
	if useTLS {
		ts.StartTLS() // HTTP/1.1 only: what a raw request is about
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()
	return func() net.Conn {
		t.Helper()
		var c net.Conn
		var err error
		if useTLS {
			c, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: ts.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs,
				ServerName: "example.com", NextProtos: []string{"http/1.1"}})
		} else {
			c, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}, serverLog
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// exchange writes req and reads until the server closes the connection
// (a read error), returning what it read, the error that ended the read,
// and how long that took.
func exchange(t *testing.T, c net.Conn, req string) ([]byte, error, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := c.SetDeadline(start.Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	// Written while the answer is read: a server that answers before it
	// has read everything (431) and closes must find the answer read, not
	// lost to the reset its close sends while the rest is still coming.
	wrote := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, req)
		wrote <- err
	}()
	var got bytes.Buffer
	_, err := io.Copy(&got, c)
	if werr := <-wrote; werr != nil && got.Len() == 0 {
		t.Fatalf("write request: %v", werr)
	}
	if err == nil {
		err = io.EOF // io.Copy reports EOF as nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v; read so far %q", time.Since(start), got.Bytes())
	}
	return got.Bytes(), err, time.Since(start)
}

// TestSecurityHeadersOnHandledRequests is the contrast: on the same
// server, a request that reaches the handler carries the headers.
func TestSecurityHeadersOnHandledRequests(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		dial, _ := startCanned(t, useTLS)
		c := dial()
		raw, _, _ := exchange(t, c, "GET "+descriptor.PathDescriptor+" HTTP/1.1\r\nHost: addon.example\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
		if err != nil {
			t.Fatalf("tls=%v: %v: %q", useTLS, err, raw)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Content-Type-Options") != "nosniff" ||
			resp.Header.Get("Content-Security-Policy") == "" || resp.Header.Get("Referrer-Policy") == "" {
			t.Errorf("tls=%v: %s %v", useTLS, resp.Status, resp.Header)
		}
	}
}

// TestCannedResponses: what net/http answers, by itself, to requests it
// refuses before the handler (and so SecurityHeaders) runs.
func TestCannedResponses(t *testing.T) {
	const (
		textPlain = "Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"
		line431   = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
		line400   = "HTTP/1.1 400 Bad Request\r\n"
	)
	// Over 32 KiB + net/http's 4 KiB of slack, and never finished.
	oversize := "GET /" + xss + " HTTP/1.1\r\nHost: addon.example\r\nX-Big: " + xss + strings.Repeat("A", 40<<10) + "\r\nX-More: 1\r\n"
	for _, tt := range []struct {
		name, req string
		// The whole response, byte for byte: status line, exactly these
		// two headers (no Date, no Content-Length: the body ends with the
		// connection), and a body of fixed text.
		want string
	}{
		{"header too large", oversize, line431 + textPlain + "431 Request Header Fields Too Large"},
		{"malformed request line", "GET /" + xss + "\r\nHost: addon.example\r\n\r\n", line400 + textPlain + "400 Bad Request"},
		{"invalid method", "G<E>T /" + xss + " HTTP/1.1\r\nHost: addon.example\r\n\r\n", line400 + textPlain + "400 Bad Request"},
		{"malformed version", "GET / HTTP/" + xss + "\r\nHost: addon.example\r\n\r\n", line400 + textPlain + "400 Bad Request"},
		{"malformed header line", "GET / HTTP/1.1\r\nHost: addon.example\r\n" + xss + "\r\n\r\n", line400 + textPlain + "400 Bad Request"},
		// (net/textproto refuses a bad header name before net/http's own
		// "invalid header name" check: the plain 400.)
		{"invalid header name", "GET / HTTP/1.1\r\nHost: addon.example\r\nX<" + xss + ">: 1\r\n\r\n", line400 + textPlain + "400 Bad Request"},
		// statusError: net/http's own fixed reason after the status text.
		{"missing host", "GET /" + xss + " HTTP/1.1\r\nX: " + xss + "\r\n\r\n",
			"HTTP/1.1 400 Bad Request: missing required Host header\r\n" + textPlain + "400 Bad Request: missing required Host header"},
		{"malformed host", "GET / HTTP/1.1\r\nHost: " + xss + "\r\n\r\n",
			"HTTP/1.1 400 Bad Request: malformed Host header\r\n" + textPlain + "400 Bad Request: malformed Host header"},
		{"HTTP/2.0 request line", "GET /" + xss + " HTTP/2.0\r\nHost: addon.example\r\n\r\n",
			"HTTP/1.1 505 HTTP Version Not Supported: unsupported protocol version\r\n" + textPlain + "505 HTTP Version Not Supported: unsupported protocol version"},
		{"unsupported transfer encoding", "POST / HTTP/1.1\r\nHost: addon.example\r\nTransfer-Encoding: " + xss + "\r\n\r\n",
			"HTTP/1.1 501 Not Implemented\r\n" + textPlain + "Unsupported transfer encoding"},
	} {
		for _, useTLS := range []bool{false, true} {
			name := tt.name + map[bool]string{false: " tcp", true: " tls"}[useTLS]
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				dial, _ := startCanned(t, useTLS)
				raw, err, _ := exchange(t, dial(), tt.req)
				if !errors.Is(err, io.EOF) {
					t.Logf("connection ended with %v (not a clean close)", err)
				}
				resp, perr := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
				if perr != nil {
					t.Fatalf("no HTTP response (%v): %q", perr, raw)
				}
				body, _ := io.ReadAll(resp.Body)
				// (ReadResponse takes Connection out of the Header, into Close.)
				head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
				if resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" || !resp.Close ||
					!bytes.Contains(head, []byte("\r\nConnection: close")) {
					t.Errorf("header %q, want Content-Type: text/plain; charset=utf-8 and Connection: close", head)
				}
				for _, h := range []string{"X-Content-Type-Options", "Content-Security-Policy", "Referrer-Policy"} {
					if v := resp.Header.Get(h); v != "" {
						t.Errorf("%s: %s: net/http's canned responses have started to carry security headers; update docs/security notes", h, v)
					}
				}
				if bytes.Contains(raw, []byte("script")) || bytes.ContainsAny(raw, "<>") {
					t.Errorf("response reflects the request: %q", raw)
				}
				if string(raw) != tt.want {
					t.Errorf("response\n%q\nwant (net/http changed its canned response? check docs/security notes)\n%q\nbody %q", raw, tt.want, body)
				}
			})
		}
	}
}

// TestPlainHTTPToTLS: plain HTTP sent to the TLS listener gets net/http's
// HTTP/1.0 400 with no header at all, written on the raw TCP conn.
func TestPlainHTTPToTLS(t *testing.T) {
	e := newTestEnv(t, envOptions{})
	ts := httptest.NewUnstartedServer(e.h)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	defer ts.Close()
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, _, _ := exchange(t, c, "GET /"+xss+" HTTP/1.1\r\nHost: addon.example\r\n\r\n")
	if want := "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"; string(raw) != want {
		t.Errorf("got %q, want %q", raw, want)
	}
}

// TestExpectationFailed: an Expect other than 100-continue is answered
// 417 by net/http through the ResponseWriter, still before the handler:
// Date and Content-Length: 0, Connection: close, no body, no security
// headers.
func TestExpectationFailed(t *testing.T) {
	dial, _ := startCanned(t, false)
	raw, _, _ := exchange(t, dial(), "GET / HTTP/1.1\r\nHost: addon.example\r\nExpect: "+xss+"\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("%v: %q", err, raw)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusExpectationFailed || !resp.Close || len(body) != 0 ||
		resp.Header.Get("X-Content-Type-Options") != "" || bytes.Contains(raw, []byte("script")) {
		t.Errorf("got %q", raw)
	}
}

// TestReadHeaderTimeout: a client that stops in the middle of its
// request header gets the connection closed once ReadHeaderTimeout has
// passed, and nothing logged. Usually nothing is written before; but when
// what it sent ends in a fragment of a line that cannot stand on its own
// (half a request line, a header line without its colon), the canned 400
// comes first: bufio.Reader.ReadLine drops the timeout error of a partial
// line and net/http parses the fragment as if it were the whole line.
func TestReadHeaderTimeout(t *testing.T) {
	const canned400 = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request"
	for _, tt := range []struct{ name, req, want string }{
		{"nothing", "", ""},
		{"half a request line", "GET /" + xss, canned400},
		{"request line only", "GET /" + xss + " HTTP/1.1", ""},
		{"half a header line", "GET /" + xss + " HTTP/1.1\r\nHost: addon.ex", ""},
		{"header line without colon", "GET /" + xss + " HTTP/1.1\r\nHost: addon.example\r\nX-" + xss, canned400},
		{"no blank line", "GET /" + xss + " HTTP/1.1\r\nHost: addon.example\r\nX-A: " + xss + "\r\n", ""},
	} {
		for _, useTLS := range []bool{false, true} {
			t.Run(tt.name+map[bool]string{false: " tcp", true: " tls"}[useTLS], func(t *testing.T) {
				t.Parallel()
				dial, serverLog := startCanned(t, useTLS)
				c := dial()
				if tc, ok := c.(*tls.Conn); ok {
					// The server's clock starts after the handshake.
					if err := tc.Handshake(); err != nil {
						t.Fatal(err)
					}
				}
				raw, err, took := exchange(t, c, tt.req)
				if string(raw) != tt.want {
					t.Errorf("got %q, want %q", raw, tt.want)
				}
				if !errors.Is(err, io.EOF) {
					t.Errorf("connection ended with %v, want a clean close (EOF)", err)
				}
				// Not a timing goal: the bounds only tell the timeout from
				// an answer at once and from no timeout at all, with room
				// for a loaded machine.
				if took < cannedReadHeaderTimeout-50*time.Millisecond || took > cannedReadHeaderTimeout+10*time.Second {
					t.Errorf("closed after %v, want about ReadHeaderTimeout (%v)", took, cannedReadHeaderTimeout)
				}
				if l := serverLog.String(); l != "" {
					t.Errorf("server logged %q", l)
				}
			})
		}
	}
}
