package http

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/drivers/access/accesstest"
	"github.com/drorch/drorch/internal/secret"
)

const token = "s3cr3t-T0ken-value-1234"

var auth = map[string]secret.Secret{"Authorization": secret.New("env:WEBHOOK_TOKEN", "Bearer "+token)}

// resource is a webhook in front of a resource that holds a mode and accepts
// writes only when read-write, as an application's admin endpoint would.
type resource struct {
	mu   sync.Mutex
	mode access.Mode
	sets int // POSTs that set a mode
}

func (r *resource) handler(t *testing.T) nethttp.Handler {
	mux := nethttp.NewServeMux()
	authorized := func(w nethttp.ResponseWriter, req *nethttp.Request) bool {
		if req.Header.Get("Authorization") != "Bearer "+token {
			nethttp.Error(w, "who are you?", nethttp.StatusUnauthorized)
			return false
		}
		return true
	}
	mux.HandleFunc("POST /mode", func(w nethttp.ResponseWriter, req *nethttp.Request) {
		if !authorized(w, req) {
			return
		}
		if ct := req.Header.Get("Content-Type"); ct != "application/json" {
			nethttp.Error(w, "content type "+ct, nethttp.StatusUnsupportedMediaType)
			return
		}
		var body struct{ Mode string }
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusBadRequest)
			return
		}
		mode, err := access.ParseMode(body.Mode)
		if err != nil {
			nethttp.Error(w, err.Error(), nethttp.StatusBadRequest)
			return
		}
		r.mu.Lock()
		r.mode = mode
		r.sets++
		r.mu.Unlock()
		w.WriteHeader(nethttp.StatusNoContent)
	})
	mux.HandleFunc("GET /mode", func(w nethttp.ResponseWriter, req *nethttp.Request) {
		if !authorized(w, req) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]access.Mode{"mode": r.current()})
	})
	mux.HandleFunc("GET /mode.txt", func(w nethttp.ResponseWriter, req *nethttp.Request) {
		if !authorized(w, req) {
			return
		}
		fmt.Fprintf(w, "%s\n", r.current())
	})
	mux.HandleFunc("POST /write", func(w nethttp.ResponseWriter, req *nethttp.Request) {
		if r.current() != access.ReadWrite {
			nethttp.Error(w, "read-only", nethttp.StatusForbidden)
			return
		}
		w.WriteHeader(nethttp.StatusNoContent)
	})
	return mux
}

func (r *resource) current() access.Mode {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == "" {
		return access.ReadWrite
	}
	return r.mode
}

// canWrite asks the resource itself whether it accepts a write now.
func canWrite(base string) func(ctx context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		req, err := nethttp.NewRequestWithContext(ctx, nethttp.MethodPost, base+"/write", nil)
		if err != nil {
			return false, err
		}
		resp, err := nethttp.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case nethttp.StatusNoContent:
			return true, nil
		case nethttp.StatusForbidden:
			return false, nil
		}
		return false, fmt.Errorf("write: %s", resp.Status)
	}
}

func mustNew(t *testing.T, cfg Config) access.Access {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// noSecret fails the test if err shows the token.
func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), token) {
		t.Fatalf("error shows the header secret: %v", err)
	}
}

func TestConformance(t *testing.T) {
	t.Run("JSON status at the same URL", func(t *testing.T) {
		r := &resource{}
		srv := httptest.NewServer(r.handler(t))
		defer srv.Close()
		a := mustNew(t, Config{URL: srv.URL + "/mode", Headers: auth})
		if got, want := a.Describe(), "http POST "+srv.URL+"/mode"; got != want {
			t.Errorf("Describe = %q, want %q", got, want)
		}
		accesstest.Run(t, a, canWrite(srv.URL))
		if r.sets != 6 {
			t.Errorf("the webhook got %d POSTs, want 6", r.sets)
		}
	})
	t.Run("text status at its own URL", func(t *testing.T) {
		r := &resource{}
		srv := httptest.NewServer(r.handler(t))
		defer srv.Close()
		a := mustNew(t, Config{URL: srv.URL + "/mode?site=primary&key=abc", StatusURL: srv.URL + "/mode.txt", Headers: auth})
		if got, want := a.Describe(), "http POST "+srv.URL+"/mode"; got != want {
			t.Errorf("Describe = %q, want %q (no query string)", got, want)
		}
		accesstest.Run(t, a, canWrite(srv.URL))
	})
	t.Run("TLS with a CA file", func(t *testing.T) {
		r := &resource{}
		srv := httptest.NewTLSServer(r.handler(t))
		defer srv.Close()
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		a := mustNew(t, Config{URL: srv.URL + "/mode", Headers: auth, CAFile: ca})
		accesstest.Run(t, a, func(ctx context.Context) (bool, error) { return r.current() == access.ReadWrite, nil })
	})
}

func TestAnswers(t *testing.T) {
	for _, tc := range []struct {
		name        string
		status      int
		body        string
		header      map[string]string
		reason      string   // permanent reason; "" for transient
		want        []string // in the error
		unreachable bool
	}{
		{name: "500 is transient", status: 500, body: "database is failing over, try later", want: []string{"500 Internal Server Error", "database is failing over, try later"}},
		{name: "503 is transient", status: 503, want: []string{"503 Service Unavailable"}},
		{name: "429 is transient", status: 429, want: []string{"429"}},
		{name: "408 is transient", status: 408, want: []string{"408"}},
		{name: "401 is an auth failure", status: 401, body: "bad token", reason: drivers.ReasonAuth, want: []string{"401 Unauthorized", "bad token"}},
		{name: "403 is access denied", status: 403, body: "not allowed to fence", reason: drivers.ReasonAccessDenied, want: []string{"403 Forbidden", "not allowed to fence"}},
		{name: "404 is a config error", status: 404, reason: drivers.ReasonInvalidConfig, want: []string{"404 Not Found"}},
		{name: "422 is permanent", status: 422, body: "unknown resource", reason: "HTTP422", want: []string{"422", "unknown resource"}},
		{
			name: "redirect is not followed", status: 302, header: map[string]string{"Location": "/elsewhere?token=abc"},
			reason: drivers.ReasonInvalidConfig, want: []string{"302 Found to http://", "/elsewhere (redirects are not followed"},
		},
		{
			name: "an echoed header is masked", status: 500, body: "got Authorization: Bearer " + token + " and token " + token,
			want: []string{"got Authorization: (secret) and token (secret)"},
		},
		{name: "a long body is cut", status: 500, body: strings.Repeat("x", 3000) + "END", want: []string{"xxxx"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, req *nethttp.Request) {
				calls.Add(1)
				if req.Header.Get("Authorization") != "Bearer "+token {
					t.Errorf("request without the Authorization header")
				}
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			a := mustNew(t, Config{URL: srv.URL + "/hook?key=q1", Headers: auth})
			for _, call := range []struct {
				name string
				do   func() error
			}{
				{"SetMode", func() error { return a.SetMode(testCtx(t), access.ReadOnly) }},
				{"Status", func() error { _, err := a.Status(testCtx(t)); return err }},
			} {
				err := call.do()
				if err == nil {
					t.Fatalf("%s succeeded", call.name)
				}
				t.Logf("%s: %v", call.name, err)
				noSecret(t, err)
				msg := err.Error()
				for _, w := range tc.want {
					if !strings.Contains(msg, w) {
						t.Errorf("%s: error lacks %q", call.name, w)
					}
				}
				if strings.Contains(msg, "key=q1") || strings.Contains(msg, "token=abc") {
					t.Errorf("%s: error shows a query string", call.name)
				}
				if strings.Contains(msg, "END") {
					t.Errorf("%s: error holds more than %d bytes of the body", call.name, errorBodySize)
				}
				if reason, _ := drivers.IsPermanent(err); reason != tc.reason {
					t.Errorf("%s: permanent reason = %q, want %q", call.name, reason, tc.reason)
				}
				if drivers.IsUnreachable(err) {
					t.Errorf("%s: a server that answered is reported unreachable", call.name)
				}
			}
			if n := calls.Load(); n != 2 {
				t.Errorf("the server got %d requests, want 2 (no redirect followed, no retry)", n)
			}
		})
	}
}

func TestStatusAnswers(t *testing.T) {
	for _, tc := range []struct {
		body string
		want access.Mode // "" for an error
	}{
		{"read-only", access.ReadOnly},
		{"  read-write\r\n", access.ReadWrite},
		{`{"mode":"read-only","since":"2026-01-01T00:00:00Z"}`, access.ReadOnly},
		{`{"mode":"off"}`, ""},
		{`{"mode":`, ""},
		{"<html>login</html>", ""},
		{"", ""},
		{"token " + token, ""},
	} {
		t.Run(tc.body, func(t *testing.T) {
			srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, req *nethttp.Request) {
				io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			got, err := mustNew(t, Config{URL: srv.URL, Headers: auth}).Status(testCtx(t))
			if tc.want != "" {
				if err != nil || got != tc.want {
					t.Fatalf("Status = %s, %v; want %s", got, err, tc.want)
				}
				return
			}
			t.Log(err)
			noSecret(t, err)
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig {
				t.Fatalf("Status = %s, %v; want a permanent InvalidConfig error", got, err)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	a := mustNew(t, Config{URL: "http://" + addr + "/hook?key=q1", Headers: auth})
	err = a.SetMode(testCtx(t), access.ReadOnly)
	t.Log(err)
	noSecret(t, err)
	if !drivers.IsUnreachable(err) {
		t.Fatalf("SetMode = %v; want unreachable", err)
	}
	if _, perm := drivers.IsPermanent(err); perm {
		t.Fatalf("SetMode = %v; want transient", err)
	}
	if strings.Contains(err.Error(), "key=q1") {
		t.Fatalf("error shows the query string: %v", err)
	}
	if _, err := a.Status(testCtx(t)); !drivers.IsUnreachable(err) {
		t.Fatalf("Status = %v; want unreachable", err)
	}
}

func TestSilentServerIsUnreachable(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, req *nethttp.Request) {
		<-release
	}))
	defer srv.Close()
	defer close(release)
	a := mustNew(t, Config{URL: srv.URL, Headers: auth, Timeout: 300 * time.Millisecond})
	start := time.Now()
	err := a.SetMode(testCtx(t), access.ReadOnly)
	t.Log(err)
	if !drivers.IsUnreachable(err) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("SetMode = %v; want unreachable, no answer within 300ms", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("SetMode took %s with a 300ms timeout", d)
	}

	// The caller's own deadline is the caller's, not the server's doing.
	a = mustNew(t, Config{URL: srv.URL, Headers: auth})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := a.SetMode(ctx, access.ReadOnly); err == nil || drivers.IsUnreachable(err) {
		t.Fatalf("SetMode past the caller's deadline = %v; want a plain error", err)
	}
}

func TestTLS(t *testing.T) {
	r := &resource{}
	srv := httptest.NewUnstartedServer(r.handler(t))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
	srv.StartTLS()
	defer srv.Close()

	err := mustNew(t, Config{URL: srv.URL + "/mode", Headers: auth}).SetMode(testCtx(t), access.ReadOnly)
	t.Log(err)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig || !strings.Contains(err.Error(), "unknown authority") {
		t.Fatalf("SetMode with an untrusted certificate = %v; want permanent InvalidConfig naming the unknown authority", err)
	}
	if err := mustNew(t, Config{URL: srv.URL + "/mode", Headers: auth, Insecure: true}).SetMode(testCtx(t), access.ReadOnly); err != nil {
		t.Fatalf("SetMode with verification off: %v", err)
	}
	if r.current() != access.ReadOnly {
		t.Fatal("the mode was not set")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"valid", Config{URL: "https://fence.example/hook?key=abc", Headers: auth}, ""},
		{"no url", Config{}, "url: is required"},
		{"not http", Config{URL: "ftp://host/x"}, "url: ftp://host/x must be an http or https URL"},
		{"no host", Config{URL: "http:///x"}, "has no host"},
		{"user in url", Config{URL: "https://admin:hunter2@host/x"}, "url: https://host/x must not hold user information"},
		{"bad status url", Config{URL: "https://host/x", StatusURL: "host/status"}, "status url"},
		{"bad header name", Config{URL: "https://host/x", Headers: map[string]secret.Secret{"Bad Name": secret.New("env:X", "v")}}, "is not a valid header name"},
		{"header set by drorch", Config{URL: "https://host/x", Headers: map[string]secret.Secret{"content-type": secret.New("env:X", "v")}}, "is set by drorch"},
		{"header line break", Config{URL: "https://host/x", Headers: map[string]secret.Secret{"X-Key": secret.New("env:X", "hunter2\r\nX-Evil: 1")}}, "value (secret env:X) holds a line break"},
		{"empty header", Config{URL: "https://host/x", Headers: map[string]secret.Secret{"X-Key": {}}}, "has no value"},
		{"insecure and ca", Config{URL: "https://host/x", Insecure: true, CAFile: "/ca.pem"}, "ca file"},
		{"negative timeout", Config{URL: "https://host/x", Timeout: -time.Second}, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := New(tc.cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := a.Describe(); got != "http POST https://fence.example/hook" {
					t.Fatalf("Describe = %q", got)
				}
				return
			}
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want permanent InvalidConfig containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error shows a secret: %v", err)
			}
		})
	}
}
