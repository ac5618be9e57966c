package outbound

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/hipconnect/hipconnect/internal/allowlist"
)

// TestHTTP2HeadersNotIndexed shows that the client's HTTP/2 HPACK encoder
// never adds header fields to its dynamic table (MaxEncoderHeaderTableSize
// 1), so an Authorization token is sent in full on every request instead of
// being kept in the compression table and referenced (RFC 7541 section
// 7.1.3). A raw HTTP/2 server on loopback records the header block of each
// of two POSTs the client sends on one connection.
func TestHTTP2HeadersNotIndexed(t *testing.T) {
	ln, pool := listenH2(t)
	var blocks [][]byte // written by serveH2, read once it has returned
	served := make(chan error, 1)
	go func() { served <- serveH2(ln, 2, &blocks) }()

	allow, err := allowlist.Parse([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c := New(Options{Allow: allow, RootCAs: pool, Timeout: 5 * time.Second})
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	const auth = "Bearer 0123456789abcdefghijklmnopqrstuvwxyzABCD" // 40-char token
	for i := range 2 {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+ln.Addr().String()+"/", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", auth)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST %d: %v", i+1, err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusNoContent {
			t.Fatalf("POST %d: %s %s, want HTTP/2.0 204", i+1, resp.Proto, resp.Status)
		}
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	if len(blocks) != 2 {
		t.Fatalf("server saw %d requests on the connection, want 2", len(blocks))
	}

	// One decoder for the connection, as the peer keeps it: a block that
	// referenced an entry added by the first would still decode here.
	dec := hpack.NewDecoder(4096, nil)
	for i, b := range blocks {
		fields, err := dec.DecodeFull(b)
		if err != nil {
			t.Fatalf("request %d: decoding header block: %v", i+1, err)
		}
		var got []string
		for _, f := range fields {
			if f.Name == "authorization" {
				got = append(got, f.Value)
			}
		}
		if len(got) != 1 || got[0] != auth {
			t.Fatalf("request %d: authorization = %q, want [%q]", i+1, got, auth)
		}
		if err := checkNotIndexed(b); err != nil {
			t.Errorf("request %d: header block %x: %v", i+1, b, err)
		}
	}
}

// listenH2 listens for TLS on 127.0.0.1, offering only h2, with a fresh
// self-signed certificate, and returns the pool that trusts it.
func listenH2(t *testing.T) (net.Listener, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"h2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, pool
}

// serveH2 accepts one connection and speaks just enough HTTP/2 for the
// client: it appends a copy of each request's header block to blocks and
// answers each request, once its body has arrived, with 204 No Content.
// After n answers it closes its side, and returns once the client has closed
// the connection in turn.
func serveH2(ln net.Listener, n int, blocks *[][]byte) error {
	conn, err := ln.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(conn, preface); err != nil || string(preface) != http2.ClientPreface {
		return fmt.Errorf("client preface %q: %v", preface, err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	var resp bytes.Buffer
	enc := hpack.NewEncoder(&resp)
	if err := enc.WriteField(hpack.HeaderField{Name: ":status", Value: "204"}); err != nil {
		return err
	}
	for answered := 0; answered < n; {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		ended := false // the client has sent all of f's stream
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.HeadersFrame:
			if !f.HeadersEnded() {
				return errors.New("header block split into CONTINUATION frames")
			}
			*blocks = append(*blocks, bytes.Clone(f.HeaderBlockFragment()))
			ended = f.StreamEnded()
		case *http2.DataFrame:
			ended = f.StreamEnded()
		}
		if ended {
			if err := fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID:      f.Header().StreamID,
				BlockFragment: resp.Bytes(),
				EndStream:     true,
				EndHeaders:    true,
			}); err != nil {
				return err
			}
			answered++
		}
	}
	// close_notify: the client's read loop sees EOF and closes its end.
	if err := conn.(*tls.Conn).CloseWrite(); err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, conn)
	return err
}

// checkNotIndexed walks the field representations of an HPACK header block
// (RFC 7541 section 6) and reports one that adds to the dynamic table
// (literal with incremental indexing) or refers to it (index above the 61
// static entries).
func checkNotIndexed(b []byte) error {
	for len(b) > 0 {
		var prefix uint // bits of the first byte that hold the integer
		kind := ""
		switch c := b[0]; {
		case c&0x80 != 0:
			prefix, kind = 7, "indexed"
		case c&0xc0 == 0x40:
			prefix, kind = 6, "literal with incremental indexing"
		case c&0xe0 == 0x20:
			prefix, kind = 5, "size update"
		default: // 0000xxxx without indexing, 0001xxxx never indexed
			prefix, kind = 4, "literal"
		}
		idx, rest, err := hpackInt(b, prefix)
		if err != nil {
			return err
		}
		b = rest
		switch {
		case kind == "literal with incremental indexing":
			return fmt.Errorf("field uses %s", kind)
		case kind != "size update" && idx > 61:
			return fmt.Errorf("%s field refers to dynamic table entry %d", kind, idx)
		case kind == "literal":
			strs := 1 // the value
			if idx == 0 {
				strs = 2 // a new name, then the value
			}
			for range strs {
				n, rest, err := hpackInt(b, 7) // the high bit is the Huffman flag
				if err != nil {
					return err
				}
				if uint64(len(rest)) < n {
					return errors.New("truncated string literal")
				}
				b = rest[n:]
			}
		}
	}
	return nil
}

// hpackInt decodes the integer (RFC 7541 section 5.1) with an n-bit prefix
// at the start of b and returns it with the bytes after it.
func hpackInt(b []byte, n uint) (uint64, []byte, error) {
	if len(b) == 0 {
		return 0, nil, errors.New("truncated integer")
	}
	mask := uint64(1)<<n - 1
	v := uint64(b[0]) & mask
	b = b[1:]
	if v < mask {
		return v, b, nil
	}
	for shift := uint(0); len(b) > 0 && shift < 63; shift += 7 {
		c := b[0]
		b = b[1:]
		v += uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v, b, nil
		}
	}
	return 0, nil, errors.New("truncated or overlong integer")
}
