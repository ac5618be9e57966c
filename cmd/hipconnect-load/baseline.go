package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The baseline is this same executable started with baselineEnv=1: a
// separate process, so that its RSS and CPU are measured like hipconnect's
// and it competes for the same two cores the same way. It does the HTTP
// exchanges hipconnect does for a command and nothing else: no JWT check,
// no store, no pacing, no retries.
const (
	baselineEnv       = "HIPCONNECT_LOAD_BASELINE"
	baselineListenEnv = "HIPCONNECT_LOAD_LISTEN" // host:port to serve on
	baselineAPIEnv    = "HIPCONNECT_LOAD_API"    // the fake HipChat's API base URL, ending in /
	baselineTokenEnv  = "HIPCONNECT_LOAD_TOKEN"  // a bearer token the fake accepts
	baselineSearchEnv = "HIPCONNECT_LOAD_SEARCH" // search URL template with {term}
	baselineCAEnv     = "HIPCONNECT_LOAD_CA"     // PEM file of the fakes' CA
	baselineCertEnv   = "HIPCONNECT_LOAD_CERT"   // -tls files: PEM certificate to serve HTTPS with
	baselineKeyEnv    = "HIPCONNECT_LOAD_KEY"    // -tls files: its PEM key
	baselineReplyEnv  = "HIPCONNECT_LOAD_REPLY"  // -reply: api or response
)

// serveBaseline runs the baseline server until ctx ends. For
// POST /webhook/{command} it reads the room_message body, answers 204 at
// once (hipconnect answers before it delivers, too), then, in a goroutine,
// makes the calls hipconnect makes for that command: for hascode a GET to
// the search backend and a glance update POST, then for every command the
// room notification POST, whose message carries the command's text so the
// load tool can match it. With -reply response it answers 200 with that
// notification instead, after the search for hascode, and posts only the
// glance. Given a certificate and key file, it serves
// HTTPS (HTTP/1.1 to the tool's client, as hipconnect's public listener).
func serveBaseline(ctx context.Context, getenv func(string) string) error {
	pem, err := os.ReadFile(getenv(baselineCAEnv))
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return errors.New("baseline: no certificate in the CA file")
	}
	api, token, search := getenv(baselineAPIEnv), getenv(baselineTokenEnv), getenv(baselineSearchEnv)
	// The same transport settings as hipconnect's outbound client.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        64,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	}}
	post := func(path string, body []byte) {
		req, err := http.NewRequest(http.MethodPost, api+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	searchFor := func(term string) {
		if resp, err := client.Get(strings.ReplaceAll(search, "{term}", url.QueryEscape(term))); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	inResponse := getenv(baselineReplyEnv) == replyResponse
	glance := []byte(`{"glance":[{"key":"blogsearch-glance","content":{"label":{"type":"html","value":"<b>1</b> search this week"}}}]}`)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ready\n")) })
	mux.HandleFunc("POST /webhook/{command}", func(w http.ResponseWriter, r *http.Request) {
		var p struct {
			Item struct {
				Message struct {
					Message string `json:"message"`
				} `json:"message"`
				Room struct {
					ID int64 `json:"id"`
				} `json:"room"`
			} `json:"item"`
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		command := r.PathValue("command")
		_, text, _ := strings.Cut(p.Item.Message.Message, " ")
		room := fmt.Sprint(p.Item.Room.ID)
		reply, _ := json.Marshal(map[string]any{"message": text, "message_format": "text", "color": "gray", "notify": false})
		if inResponse {
			// The reply in the response: the search first, the glance
			// after, the notification not posted at all.
			if command == "hascode" {
				searchFor(text)
				go post("addon/ui/room/"+room, glance)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(reply)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		go func() {
			if command == "hascode" {
				searchFor(text)
				post("addon/ui/room/"+room, glance)
			}
			post("room/"+room+"/notification", reply)
		}()
	})
	ln, err := net.Listen("tcp", getenv(baselineListenEnv))
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if cert := getenv(baselineCertEnv); cert != "" {
		err = srv.ServeTLS(ln, cert, getenv(baselineKeyEnv))
	} else {
		err = srv.Serve(ln)
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startBaseline starts the baseline process and waits until it is ready.
// With st (-tls files) it serves HTTPS with st's certificate. It returns the
// process and its base URL.
func startBaseline(ctx context.Context, dir, caFile string, st *serverTLS, hc *fakeHipChat, search *fakeSearch, reply string) (*child, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addr, err := freePort("127.0.0.1")
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), baselineEnv + "=1", baselineListenEnv + "=" + addr,
		baselineAPIEnv + "=" + hc.url + "/v2/", baselineTokenEnv + "=" + hc.mint("baseline"),
		baselineSearchEnv + "=" + search.searchURL(), baselineCAEnv + "=" + caFile, baselineReplyEnv + "=" + reply}
	base := "http://" + addr
	var tc *tls.Config
	if st != nil {
		cmd.Env = append(cmd.Env, baselineCertEnv+"="+st.certFile, baselineKeyEnv+"="+st.keyFile)
		base, tc = "https://"+addr, st.client
	}
	c, err := startChild(ctx, "baseline", cmd, filepath.Join(dir, "baseline.log"), base+"/readyz", tc, 20*time.Second)
	if err != nil {
		return nil, "", err
	}
	return c, base, nil
}
