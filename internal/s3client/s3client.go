// Package s3client builds the minio-go client that drorch's S3 drivers (the
// s3 store and the s3bucket access driver) share: path-style addressing,
// bounded retries so that a dead server fails a call in seconds and
// Temporal's retry takes over, a bounded dial, and an optional CA bundle.
package s3client

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/secret"
)

// Options say how to reach one S3 endpoint.
type Options struct {
	Endpoint    string // host:port, no scheme
	Region      string
	AccessKey   secret.Secret
	SecretKey   secret.Secret
	Insecure    bool          // plain HTTP
	CAFile      string        // PEM bundle trusted besides the system's
	DialTimeout time.Duration // 0: 10s
	// TrailingHeaders lets PutObject take an x-amz-checksum-* header (minio-go
	// refuses one otherwise); without a checksum given, it also makes
	// minio-go add one, as a trailer, to every upload.
	TrailingHeaders bool
}

// MaxRetries bounds minio-go's own retries of one request (it defaults to 10
// with back-off): a dead server must fail the call within seconds so that
// Temporal's retry policy, which the operator can see and tune, takes over.
const MaxRetries = 3

// New returns a client for o. It does not contact the server.
func New(o Options) (*minio.Client, error) {
	tr, err := Transport(o)
	if err != nil {
		return nil, err
	}
	return minio.New(o.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(o.AccessKey.Value(), o.SecretKey.Value(), ""),
		Secure:       !o.Insecure,
		Transport:    tr,
		Region:       o.Region,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   MaxRetries,

		TrailingHeaders: o.TrailingHeaders,
	})
}

// Transport is the HTTP transport of a client for o (also MinIO's admin
// client): minio-go's defaults, a bounded dial and o's CA bundle.
func Transport(o Options) (*http.Transport, error) {
	tr, err := minio.DefaultTransport(!o.Insecure)
	if err != nil {
		return nil, err
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 10 * time.Second
	}
	tr.DialContext = (&net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca file %s: no PEM certificate in it", o.CAFile)
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return tr, nil
}

// transientCodes are S3 error codes that a later attempt may not see although
// their HTTP status is a 4xx, which is otherwise permanent.
var transientCodes = map[string]bool{
	"RequestTimeout":        true, // 400: the connection stalled mid-request
	"ExpiredToken":          true, // 400: temporary credentials are refreshed between attempts
	"ExpiredTokenException": true,
	// 400: the body the server received does not match the checksum computed
	// from the bytes sent, so they were damaged on the way; sending again may succeed.
	"BadDigest":                   true,
	"XAmzContentSHA256Mismatch":   true,
	"XAmzContentChecksumMismatch": true, // MinIO's for x-amz-checksum-*; AWS says BadDigest
	// 499 / 400: the connection broke while the server read the request (a
	// server restarting, a proxy cutting it); sending again succeeds.
	"ClientDisconnected":   true,
	"IncompleteBody":       true,
	"SlowDown":             true, // throttling, whatever status a server picks
	"Throttling":           true,
	"ThrottlingException":  true,
	"RequestLimitExceeded": true,
}

// statusClientClosed is the status a server (nginx, MinIO) gives a request
// whose connection broke before it could answer.
const statusClientClosed = 499

// Permanent reports whether an S3 error answer with this code and HTTP
// status is one no retry fixes: a 4xx, except timeouts, throttling, broken
// connections and the codes that mean the same.
func Permanent(code string, status int) bool {
	if transientCodes[code] {
		return false
	}
	return status >= 400 && status < 500 && status != http.StatusRequestTimeout &&
		status != http.StatusTooManyRequests && status != statusClientClosed
}

// TLSMismatch explains an S3 error that means the client's TLS settings
// (insecure, ca file) do not match the server's; "" for any other error.
func TLSMismatch(err error) string {
	if hint := drivers.TLSMismatch(err, "set insecure, or enable TLS on the server"); hint != "" {
		return hint
	}
	if resp := minio.ToErrorResponse(err); resp.StatusCode == http.StatusBadRequest &&
		strings.Contains(resp.Message, "HTTP request to an HTTPS server") {
		return "the server speaks HTTPS (unset insecure)"
	}
	return ""
}

// Check reports every problem with o and bucket, each error naming its
// field (endpoint, bucket, access key, secret key, ca file), for the
// drivers' config validation.
func Check(o Options, bucket string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	switch ep := o.Endpoint; {
	case ep == "":
		bad("endpoint", "is required (host:port)")
	case strings.Contains(ep, "://"):
		bad("endpoint", "%q must be host:port without a scheme (set insecure for plain HTTP)", ep)
	case strings.ContainsAny(ep, "/?#@ "):
		bad("endpoint", "%q must be host:port, without a path, user or spaces", ep)
	default:
		if host, _, err := net.SplitHostPort(ep); err == nil && host == "" {
			bad("endpoint", "%q has no host", ep)
		}
	}
	if bucket == "" {
		bad("bucket", "is required")
	} else if err := s3utils.CheckValidBucketNameStrict(bucket); err != nil {
		bad("bucket", "%q: %v", bucket, err)
	}
	if o.AccessKey.IsZero() {
		bad("access key", "is required")
	}
	if o.SecretKey.IsZero() {
		bad("secret key", "is required")
	}
	if o.Insecure && o.CAFile != "" {
		bad("ca file", "is set but insecure (plain HTTP) turns TLS off")
	}
	return errs
}
