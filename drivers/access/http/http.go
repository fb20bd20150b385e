// Package http switches a resource through the operator's webhook: drorch
// POSTs {"mode":"read-only"} or {"mode":"read-write"} (Content-Type
// application/json) to one URL, and reads the mode in force with a GET of
// that URL or of a separate status URL.
//
// The webhook must treat a POST as idempotent — drorch sends the same mode
// again after a retry or a resumed failover — and answer 2xx only once the
// mode is in force. The status GET answers 2xx with either JSON
// {"mode":"read-only"} or the plain text read-only / read-write; surrounding
// white space is ignored.
//
// Answers are classified for Temporal: 2xx is success; 401 (AuthFailed), 403
// (AccessDenied) and every other 4xx except 408 and 429 are permanent; 5xx,
// 408 and 429 are transient. A 3xx is permanent too: redirects are not
// followed, because a client that follows one turns the POST into a GET and
// may carry the headers to another host. A server that never answers (refused,
// unreachable, or silent until the timeout) is transient and wraps
// drivers.ErrUnreachable, so an unplanned failover records the resource as
// not fenced and goes on.
//
// Header values are secrets: they are sent, never shown. Describe and errors
// name the URL without its query string or user information, and a server
// that echoes a header value in an error body has it masked.
package http

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/secret"
)

// Config locates the webhook and says how to call it.
type Config struct {
	URL       string                   // POST {"mode":"…"} here to set the mode
	StatusURL string                   // GET the mode in force here (default URL)
	Headers   map[string]secret.Secret // sent with every request, e.g. Authorization
	Timeout   time.Duration            // bounds each SetMode and Status call (default 30s)
	CAFile    string                   // optional PEM bundle to trust, in addition to the system's
	Insecure  bool                     // skip TLS certificate verification (discouraged)
}

const (
	defaultTimeout = 30 * time.Second
	dialTimeout    = 10 * time.Second

	// errorBodySize is how much of a failed answer's body goes into the error.
	errorBodySize = 2 << 10
	// maxStatusBody bounds what is read of a status answer; it is one word.
	maxStatusBody = 64 << 10
)

type webhook struct {
	client              *nethttp.Client
	setURL, statusURL   string
	setName, statusName string // the URLs as shown: no query, no user
	headers             nethttp.Header
	secrets             []string // values to mask in anything shown
	timeout             time.Duration
}

var _ access.Access = (*webhook)(nil)

// New returns the access driver for cfg. It checks the configuration but does
// not contact the server.
func New(cfg Config) (access.Access, error) {
	if err := cfg.validate(); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("http access: %w", err))
	}
	if cfg.StatusURL == "" {
		cfg.StatusURL = cfg.URL
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	tr, err := transport(cfg)
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("http access: %w", err))
	}
	w := &webhook{
		client: &nethttp.Client{
			Transport:     tr,
			CheckRedirect: func(*nethttp.Request, []*nethttp.Request) error { return nethttp.ErrUseLastResponse },
		},
		setURL:     cfg.URL,
		statusURL:  cfg.StatusURL,
		setName:    shown(cfg.URL),
		statusName: shown(cfg.StatusURL),
		headers:    nethttp.Header{},
		timeout:    cfg.Timeout,
	}
	for name, value := range cfg.Headers {
		w.headers.Set(name, value.Value())
		w.secrets = append(w.secrets, value.Value())
		// A server may echo only the credential of "Bearer <token>".
		for _, f := range strings.Fields(value.Value()) {
			if len(f) >= 8 {
				w.secrets = append(w.secrets, f)
			}
		}
	}
	// Longest first, so a value is masked whole before any part of it.
	sort.Slice(w.secrets, func(i, j int) bool { return len(w.secrets[i]) > len(w.secrets[j]) })
	return w, nil
}

// validate reports every problem with cfg at once, each naming its field.
// Header values are never echoed.
func (cfg Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	checkURL := func(field, raw string) {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			bad(field, "is not a URL") // the parse error quotes the URL, which may carry a token
		case u.Scheme != "http" && u.Scheme != "https":
			bad(field, "%s must be an http or https URL", shown(raw))
		case u.Host == "":
			bad(field, "%s has no host", shown(raw))
		case u.User != nil:
			bad(field, "%s must not hold user information: put credentials in headers, which are secrets", shown(raw))
		}
	}
	if cfg.URL == "" {
		bad("url", "is required")
	} else {
		checkURL("url", cfg.URL)
	}
	if cfg.StatusURL != "" {
		checkURL("status url", cfg.StatusURL)
	}
	for name, value := range cfg.Headers {
		field := fmt.Sprintf("headers[%q]", name)
		switch {
		case !isToken(name):
			bad(field, "is not a valid header name")
		case strings.EqualFold(name, "Host"), strings.EqualFold(name, "Content-Length"), strings.EqualFold(name, "Content-Type"):
			bad(field, "is set by drorch")
		case value.IsZero():
			bad(field, "has no value")
		case strings.ContainsAny(value.Value(), "\r\n\x00"):
			bad(field, "value %s holds a line break or NUL", value) // value prints as its reference
		}
	}
	if cfg.Timeout < 0 {
		bad("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	if cfg.Insecure && cfg.CAFile != "" {
		bad("ca file", "is set but insecure turns certificate verification off")
	}
	return errors.Join(errs...)
}

// isToken reports whether s is an RFC 9110 token, as header names must be.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r >= 0x80 || !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", r)) {
			return false
		}
	}
	return true
}

// shown is raw as messages show it: without user information, query or
// fragment, which may carry credentials.
func shown(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

func transport(cfg Config) (*nethttp.Transport, error) {
	tr := nethttp.DefaultTransport.(*nethttp.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: min(dialTimeout, cfg.Timeout), KeepAlive: 30 * time.Second}).DialContext
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.Insecure}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca file %s: no PEM certificate in it", cfg.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return tr, nil
}

func (w *webhook) Describe() string { return "http POST " + w.setName }

func (w *webhook) SetMode(ctx context.Context, mode access.Mode) error {
	if _, err := access.ParseMode(string(mode)); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("set mode with %s: %w", w.Describe(), err))
	}
	body, _ := json.Marshal(struct {
		Mode access.Mode `json:"mode"`
	}{mode})
	_, err := w.do(ctx, fmt.Sprintf("set %s with %s", mode, w.Describe()), nethttp.MethodPost, w.setURL, body, 0)
	return err
}

func (w *webhook) Status(ctx context.Context) (access.Mode, error) {
	what := fmt.Sprintf("status of %s: GET %s", w.Describe(), w.statusName)
	body, err := w.do(ctx, what, nethttp.MethodGet, w.statusURL, nil, maxStatusBody)
	if err != nil {
		return "", err
	}
	text := strings.TrimSpace(string(body))
	word := text
	if strings.HasPrefix(text, "{") {
		var doc struct {
			Mode string `json:"mode"`
		}
		if err := json.Unmarshal([]byte(text), &doc); err != nil {
			return "", drivers.Permanentf(drivers.ReasonInvalidConfig, "%s: the answer is not JSON {\"mode\": …}: %v", what, err)
		}
		word = doc.Mode
	}
	mode, err := access.ParseMode(word)
	if err != nil {
		return "", drivers.Permanentf(drivers.ReasonInvalidConfig,
			"%s: the answer %q names no mode, want %q or %q, as plain text or JSON {\"mode\": …}",
			what, w.mask(clip(text, 200)), access.ReadOnly, access.ReadWrite)
	}
	return mode, nil
}

// do sends one request and returns up to max bytes of a 2xx answer's body;
// what names the call in errors.
func (w *webhook) do(ctx context.Context, what, method, target string, body []byte, max int64) ([]byte, error) {
	var answered atomic.Bool
	callCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	callCtx = httptrace.WithClientTrace(callCtx, &httptrace.ClientTrace{
		GotFirstResponseByte: func() { answered.Store(true) },
	})
	req, err := nethttp.NewRequestWithContext(callCtx, method, target, bytes.NewReader(body))
	if err != nil {
		return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "%s: cannot build the request", what) // err quotes the URL
	}
	req.Header = w.headers.Clone()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	} else {
		req.Body, req.ContentLength = nil, 0
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json, text/plain;q=0.9, */*;q=0.1")
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "drorch")
	}

	resp, err := w.client.Do(req)
	if err != nil {
		return nil, w.transportError(ctx, callCtx, what, err, answered.Load())
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		b, err := io.ReadAll(io.LimitReader(resp.Body, max))
		if err != nil {
			return nil, w.transportError(ctx, callCtx, what+": read the answer", err, true)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
		return b, nil
	}

	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodySize))
	msg := fmt.Sprintf("%s: %s", what, resp.Status)
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if u, err := req.URL.Parse(loc); err == nil {
			loc = u.String()
		}
		msg += fmt.Sprintf(" to %s (redirects are not followed: configure the final URL)", shown(loc))
	}
	if text := strings.TrimSpace(strings.ToValidUTF8(string(snippet), "\uFFFD")); text != "" {
		msg += ": " + w.mask(text)
	}
	err = errors.New(msg)
	switch st := resp.StatusCode; {
	case st == nethttp.StatusRequestTimeout, st == nethttp.StatusTooManyRequests, st >= 500:
		return nil, err
	case st == nethttp.StatusUnauthorized:
		return nil, drivers.Permanent(drivers.ReasonAuth, err)
	case st == nethttp.StatusForbidden:
		return nil, drivers.Permanent(drivers.ReasonAccessDenied, err)
	case st == nethttp.StatusNotFound, st == nethttp.StatusMethodNotAllowed, st < 400:
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, err)
	default:
		return nil, drivers.Permanent(fmt.Sprintf("HTTP%d", st), err)
	}
}

// transportError classifies a request that got no usable answer. The
// *url.Error that net/http returns is unwrapped: its message quotes the full
// URL, query string included.
func (w *webhook) transportError(parent, call context.Context, what string, err error, answered bool) error {
	cause := err
	var uerr *url.Error
	if errors.As(err, &uerr) {
		cause = uerr.Err
	}
	err = errors.New(w.mask(cause.Error())) // keeps no chain to anything that quotes the URL
	switch hint := drivers.TLSMismatch(cause, "use an http:// URL"); {
	case parent.Err() != nil:
		return fmt.Errorf("%s: %w", what, parent.Err()) // the caller gave up
	case hint != "":
		return drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("%s: %s: %w", what, hint, err))
	case answered:
		return fmt.Errorf("%s: %w", what, err)
	case errors.Is(call.Err(), context.DeadlineExceeded):
		return fmt.Errorf("%s: %w: no answer within %s", what, drivers.ErrUnreachable, w.timeout)
	default:
		return fmt.Errorf("%s: %w: %w", what, drivers.ErrUnreachable, err)
	}
}

// mask replaces every header value in s.
func (w *webhook) mask(s string) string {
	for _, v := range w.secrets {
		s = strings.ReplaceAll(s, v, "(secret)")
	}
	return s
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
