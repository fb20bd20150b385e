package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
	"github.com/drorch/drorch/drivers/store/storetest"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
)

func config(m *testenv.MinIO, bucket, prefix string) Config {
	return Config{
		Endpoint:  m.Endpoint,
		Bucket:    bucket,
		Prefix:    prefix,
		AccessKey: secret.New("env:TEST_ACCESS_KEY", m.AccessKey),
		SecretKey: secret.New("env:TEST_SECRET_KEY", m.SecretKey),
		Insecure:  true,
	}
}

func mustNew(t testing.TB, cfg Config) store.Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestConformance(t *testing.T) {
	m := testenv.StartMinIO(t)
	var n atomic.Int64
	t.Run("Prefixed", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			return mustNew(t, config(m, "conformance", fmt.Sprintf("sites/primary/run-%03d", n.Add(1))))
		})
	})
	t.Run("BucketRoot", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			return mustNew(t, config(m, fmt.Sprintf("root-%03d", n.Add(1)), ""))
		})
	})
}

func TestLocationHasNoSecret(t *testing.T) {
	cfg := Config{
		Endpoint:  "127.0.0.1:9001",
		Bucket:    "drorch",
		Prefix:    "site-a",
		AccessKey: secret.New("env:AK", "AKIAEXAMPLEACCESS"),
		SecretKey: secret.New("env:SK", "wJalrXUtnFEMI-secret-value"),
	}
	s := mustNew(t, cfg)
	if got, want := s.Location(), "s3://127.0.0.1:9001/drorch/site-a"; got != want {
		t.Errorf("location = %q, want %q", got, want)
	}
	cfg.Prefix = ""
	if got, want := mustNew(t, cfg).Location(), "s3://127.0.0.1:9001/drorch"; got != want {
		t.Errorf("location = %q, want %q", got, want)
	}
	for _, v := range []string{fmt.Sprint(s), fmt.Sprintf("%+v", s), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%+v", cfg)} {
		if strings.Contains(v, "AKIAEXAMPLEACCESS") || strings.Contains(v, "wJalrXUtnFEMI") {
			t.Errorf("a credential shows in %q", v)
		}
	}
}

func TestWrongCredentialsArePermanent(t *testing.T) {
	m := testenv.StartMinIO(t)
	for _, tc := range []struct {
		name       string
		access     string
		secretKey  string
		wantDetail string
	}{
		{"wrong secret key", m.AccessKey, "not-the-secret-key-1234", "SignatureDoesNotMatch"},
		{"unknown access key", "nobody-here", "whatever-secret-5678", "InvalidAccessKeyId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config(m, "drorch", "p")
			cfg.AccessKey = secret.New("env:AK", tc.access)
			cfg.SecretKey = secret.New("env:SK", tc.secretKey)
			s := mustNew(t, cfg)
			start := time.Now()
			err := s.Prepare(testCtx(t))
			t.Logf("prepare failed in %s: %v", time.Since(start).Round(time.Millisecond), err)
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonAccessDenied {
				t.Fatalf("got %v (permanent %v, reason %q), want permanent AccessDenied", err, ok, reason)
			}
			msg := err.Error()
			if !strings.Contains(msg, s.Location()+": access denied: the access key or secret key is wrong") ||
				!strings.Contains(msg, tc.wantDetail) {
				t.Errorf("message %q does not say the credentials are wrong (%s)", msg, tc.wantDetail)
			}
			if strings.Contains(msg, tc.secretKey) || strings.Contains(msg, m.SecretKey) {
				t.Errorf("message %q shows a secret key", msg)
			}
			// The other operations classify the same way.
			_, err = s.Get(testCtx(t), "x")
			if reason, _ := drivers.IsPermanent(err); reason != drivers.ReasonAccessDenied {
				t.Errorf("get: got %v, want permanent AccessDenied", err)
			}
		})
	}
}

func TestPrepareCreatesMissingBucket(t *testing.T) {
	m := testenv.StartMinIO(t)
	s := mustNew(t, config(m, "created-by-prepare", "plan/x"))
	if err := s.Prepare(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ok, err := m.Client(t).BucketExists(testCtx(t), "created-by-prepare")
	if err != nil || !ok {
		t.Fatalf("bucket exists = %v, %v after prepare", ok, err)
	}
	if err := s.Prepare(testCtx(t)); err != nil {
		t.Fatalf("prepare again: %v", err)
	}
}

// Two workers of one site prepare the same new bucket at the same time.
func TestPrepareConcurrentCreate(t *testing.T) {
	m := testenv.StartMinIO(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = mustNew(t, config(m, "raced", "")).Prepare(testCtx(t)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareWithoutPermission(t *testing.T) {
	m := testenv.StartMinIO(t)
	if err := m.Client(t).MakeBucket(testCtx(t), "readonly", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	// Everything on objects, reading and listing buckets, but no s3:CreateBucket
	// and no writes to "readonly".
	m.AddUser(t, "limited", "limited-secret-42", `{
		"Version": "2012-10-17",
		"Statement": [
			{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
			 "Resource": ["arn:aws:s3:::other", "arn:aws:s3:::other/*"]},
			{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
			 "Resource": ["arn:aws:s3:::readonly", "arn:aws:s3:::readonly/*"]}
		]}`)
	user := func(bucket string) store.Store {
		cfg := config(m, bucket, "plan")
		cfg.AccessKey = secret.New("env:AK", "limited")
		cfg.SecretKey = secret.New("env:SK", "limited-secret-42")
		return mustNew(t, cfg)
	}

	t.Run("missing bucket", func(t *testing.T) {
		err := user("not-yet-there").Prepare(testCtx(t))
		t.Log(err)
		if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonAccessDenied {
			t.Fatalf("got %v, want permanent AccessDenied", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "bucket not-yet-there does not exist") || !strings.Contains(msg, "may not create it") {
			t.Errorf("message %q does not name the bucket and the cause", err)
		}
	})
	t.Run("missing bucket, may list", func(t *testing.T) {
		// This key may see that the bucket is missing, so the message can be sure.
		m.AddUser(t, "lister", "lister-secret-42", `{
			"Version": "2012-10-17",
			"Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject", "s3:PutObject"], "Resource": ["arn:aws:s3:::*"]}]}`)
		cfg := config(m, "not-there-either", "")
		cfg.AccessKey = secret.New("env:AK", "lister")
		cfg.SecretKey = secret.New("env:SK", "lister-secret-42")
		err := mustNew(t, cfg).Prepare(testCtx(t))
		t.Log(err)
		if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonAccessDenied {
			t.Fatalf("got %v, want permanent AccessDenied", err)
		}
		if !strings.Contains(err.Error(), "bucket not-there-either does not exist and these credentials may not create it") {
			t.Errorf("message %q does not name the bucket and the cause", err)
		}
	})
	t.Run("read-only bucket", func(t *testing.T) {
		err := user("readonly").Prepare(testCtx(t))
		t.Log(err)
		if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonAccessDenied {
			t.Fatalf("got %v, want permanent AccessDenied from the write probe", err)
		}
		if !strings.Contains(err.Error(), "write probe") {
			t.Errorf("message %q does not say writing failed", err)
		}
	})
}

func TestServerDownIsTransient(t *testing.T) {
	m := testenv.StartMinIO(t)
	s := mustNew(t, config(m, "drorch", "p"))
	if err := s.Prepare(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(testCtx(t), "k", strings.NewReader("v"), 1); err != nil {
		t.Fatal(err)
	}
	m.Stop(t)

	ops := map[string]func(ctx context.Context) error{
		"prepare": s.Prepare,
		"put":     func(ctx context.Context) error { return s.Put(ctx, "k2", strings.NewReader("v"), 1) },
		"get":     func(ctx context.Context) error { _, err := s.Get(ctx, "k"); return err },
		"stat":    func(ctx context.Context) error { _, err := s.Stat(ctx, "k"); return err },
		"list":    func(ctx context.Context) error { return s.List(ctx, "", func(store.Object) error { return nil }) },
		"delete":  func(ctx context.Context) error { return s.Delete(ctx, "k") },
	}
	for name, op := range ops {
		start := time.Now()
		err := op(testCtx(t))
		t.Logf("%s failed in %s: %v", name, time.Since(start).Round(time.Millisecond), err)
		if err == nil {
			t.Errorf("%s with the server down succeeded", name)
			continue
		}
		if reason, ok := drivers.IsPermanent(err); ok {
			t.Errorf("%s: a stopped server must be transient, got permanent %s: %v", name, reason, err)
		}
		if drivers.IsNotFound(err) {
			t.Errorf("%s: a stopped server must not look like an absent key: %v", name, err)
		}
	}

	// The same store works again once the server is back.
	m.Start(t)
	rc, err := s.Get(testCtx(t), "k")
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	rc.Close()
}

// countingReader records how many uploads are reading their body at once. It
// is slow on purpose so that uploads overlap whenever the store lets them.
type countingReader struct {
	r                *bytes.Reader
	inFlight, maxObs *atomic.Int64
	started          bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if !c.started {
		c.started = true
		n := c.inFlight.Add(1)
		for {
			m := c.maxObs.Load()
			if n <= m || c.maxObs.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	n, err := c.r.Read(p)
	if err == io.EOF {
		c.inFlight.Add(-1)
	}
	return n, err
}

func TestParallelBound(t *testing.T) {
	m := testenv.StartMinIO(t)
	cfg := config(m, "drorch", "parallel")
	cfg.Parallel = 2
	s := mustNew(t, cfg)
	if err := s.Prepare(testCtx(t)); err != nil {
		t.Fatal(err)
	}

	t.Run("puts", func(t *testing.T) {
		var inFlight, maxObs atomic.Int64
		var wg sync.WaitGroup
		errs := make([]error, 8)
		for i := range errs {
			wg.Go(func() {
				r := &countingReader{r: bytes.NewReader(make([]byte, 1000)), inFlight: &inFlight, maxObs: &maxObs}
				errs[i] = s.Put(testCtx(t), fmt.Sprintf("k%d", i), r, -1) // unknown size: read while uploading
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if got := maxObs.Load(); got != 2 {
			t.Fatalf("at most %d puts were in flight at once, want exactly Parallel = 2", got)
		}
	})

	t.Run("gets hold a slot until closed or read to the end", func(t *testing.T) {
		a, err := s.Get(testCtx(t), "k0")
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Get(testCtx(t), "k1")
		if err != nil {
			t.Fatal(err)
		}
		blocked := func() error {
			ctx, cancel := context.WithTimeout(testCtx(t), 300*time.Millisecond)
			defer cancel()
			rc, err := s.Get(ctx, "k2")
			if err == nil {
				rc.Close()
			}
			return err
		}
		if err := blocked(); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("third get with two bodies open: got %v, want it to wait for a slot", err)
		}
		if reason, ok := drivers.IsPermanent(blocked()); ok {
			t.Fatalf("waiting for a slot must not be permanent (%s)", reason)
		}

		a.Close()
		c, err := s.Get(testCtx(t), "k2")
		if err != nil {
			t.Fatalf("get after closing a body: %v", err)
		}
		if _, err := io.ReadAll(c); err != nil { // read to the end, never closed
			t.Fatal(err)
		}
		d, err := s.Get(testCtx(t), "k3")
		if err != nil {
			t.Fatalf("get after reading a body to the end: %v", err)
		}
		d.Close()
		b.Close()
		b.Close() // a second Close must not free a slot twice
		c.Close()
		if got := len(s.(*s3Store).gets); got != 0 {
			t.Fatalf("%d download slots still held after every body is closed", got)
		}
	})

	t.Run("get into put on the same store", func(t *testing.T) {
		// With Parallel = 2, two copies each hold a download slot while they
		// upload; shared slots would deadlock here.
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range errs {
			wg.Go(func() {
				rc, err := s.Get(testCtx(t), fmt.Sprintf("k%d", i))
				if err != nil {
					errs[i] = err
					return
				}
				defer rc.Close()
				errs[i] = s.Put(testCtx(t), fmt.Sprintf("copy%d", i), rc, -1)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTLS(t *testing.T) {
	m := testenv.StartMinIOTLS(t)
	tlsConfig := func(edit func(*Config)) Config {
		cfg := config(m, "tls", "p")
		cfg.Insecure = false
		cfg.CAFile = m.CAFile
		edit(&cfg)
		return cfg
	}
	if err := mustNew(t, tlsConfig(func(*Config) {})).Prepare(testCtx(t)); err != nil {
		t.Fatalf("prepare over TLS with ca file: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		hint string
	}{
		{"without ca file", func(c *Config) { c.CAFile = "" }, "unknown authority"},
		{"plain http to an https server", func(c *Config) { c.CAFile = ""; c.Insecure = true }, "unset insecure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := mustNew(t, tlsConfig(tc.edit)).Prepare(testCtx(t))
			t.Log(err)
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig {
				t.Fatalf("got %v, want permanent InvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.hint) {
				t.Errorf("message %q does not say %q", err, tc.hint)
			}
		})
	}
	t.Run("https to a plain http server", func(t *testing.T) {
		plain := testenv.StartMinIO(t)
		cfg := config(plain, "tls", "")
		cfg.Insecure = false
		err := mustNew(t, cfg).Prepare(testCtx(t))
		t.Log(err)
		if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig {
			t.Fatalf("got %v, want permanent InvalidConfig", err)
		}
		if !strings.Contains(err.Error(), "set insecure") {
			t.Errorf("message %q does not suggest insecure", err)
		}
	})
}

func TestShortReaderIsPermanent(t *testing.T) {
	m := testenv.StartMinIO(t)
	s := mustNew(t, config(m, "drorch", ""))
	if err := s.Prepare(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	err := s.Put(testCtx(t), "short", strings.NewReader("only 16 bytes..."), 100)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidInput {
		t.Fatalf("got %v, want permanent InvalidInput: no retry makes the reader longer", err)
	}
	if !strings.Contains(err.Error(), "the reader ended after 16 of 100 bytes") {
		t.Errorf("message %q does not say what was short", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ak, sk := secret.New("env:AK", "ak"), secret.New("env:SK", "sk")
	good := Config{Endpoint: "127.0.0.1:9000", Bucket: "drorch", AccessKey: ak, SecretKey: sk, Insecure: true}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no endpoint", func(c *Config) { c.Endpoint = "" }, "endpoint"},
		{"scheme", func(c *Config) { c.Endpoint = "http://127.0.0.1:9000" }, "without a scheme"},
		{"path", func(c *Config) { c.Endpoint = "127.0.0.1:9000/drorch" }, "endpoint"},
		{"no bucket", func(c *Config) { c.Bucket = "" }, "bucket"},
		{"bad bucket", func(c *Config) { c.Bucket = "Bad_Bucket" }, "bucket"},
		{"leading slash", func(c *Config) { c.Prefix = "/a" }, "prefix"},
		{"trailing slash", func(c *Config) { c.Prefix = "a/" }, "prefix"},
		{"dot dot", func(c *Config) { c.Prefix = "a/../b" }, "prefix"},
		{"no access key", func(c *Config) { c.AccessKey = secret.Secret{} }, "access key"},
		{"no secret key", func(c *Config) { c.SecretKey = secret.Secret{} }, "secret key"},
		{"ca file with plain http", func(c *Config) { c.CAFile = "/etc/ssl/certs/ca-certificates.crt" }, "ca file"},
		{"missing ca file", func(c *Config) { c.Insecure = false; c.CAFile = "/nonexistent/ca.pem" }, "ca file"},
		{"negative parallel", func(c *Config) { c.Parallel = -1 }, "parallel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.edit(&cfg)
			_, err := New(cfg)
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig {
				t.Fatalf("got %v, want permanent InvalidConfig", err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Errorf("message %q does not name %q", err, tc.field)
			}
		})
	}
	if _, err := New(good); err != nil {
		t.Fatalf("good config rejected: %v", err)
	}
}

func TestClassify(t *testing.T) {
	s := mustNew(t, Config{Endpoint: "127.0.0.1:9001", Bucket: "drorch", AccessKey: secret.New("", "a"), SecretKey: secret.New("", "b"), Insecure: true}).(*s3Store)
	resp := func(status int, code string) error {
		return minio.ErrorResponse{StatusCode: status, Code: code, Message: "server says " + code}
	}
	for _, tc := range []struct {
		err      error
		notFound bool
		reason   string // "" = transient
	}{
		{resp(404, "NoSuchKey"), true, ""},
		{resp(404, "NotFound"), true, ""},
		{resp(403, "AccessDenied"), false, drivers.ReasonAccessDenied},
		{resp(403, "InvalidAccessKeyId"), false, drivers.ReasonAccessDenied},
		{resp(403, "SignatureDoesNotMatch"), false, drivers.ReasonAccessDenied},
		{resp(403, "AllAccessDisabled"), false, drivers.ReasonAccessDenied},
		{resp(403, "AccountProblem"), false, drivers.ReasonAccessDenied},
		{resp(404, "NoSuchBucket"), false, drivers.ReasonNoSuchBucket},
		{resp(400, "InvalidBucketName"), false, drivers.ReasonInvalidConfig},
		{resp(400, "EntityTooLarge"), false, "EntityTooLarge"},
		{resp(400, ""), false, "HTTP400"},
		{resp(405, "405 Method Not Allowed"), false, "HTTP405"},
		{resp(400, "RequestTimeout"), false, ""},
		{resp(400, "BadDigest"), false, ""},
		{resp(400, "XAmzContentChecksumMismatch"), false, ""}, // MinIO: x-amz-checksum-crc32c does not match
		{resp(408, "RequestTimeout"), false, ""},
		{resp(429, "SlowDown"), false, ""},
		{resp(499, "ClientDisconnected"), false, ""}, // MinIO restarting mid-request
		{resp(400, "IncompleteBody"), false, ""},
		{resp(500, "InternalError"), false, ""},
		{resp(503, "XMinioServerNotInitialized"), false, ""},
		{errors.New("dial tcp 127.0.0.1:9001: connect: connection refused"), false, ""},
		{io.ErrUnexpectedEOF, false, ""},
		{context.DeadlineExceeded, false, ""},
		{fmt.Errorf("wrapped: %w", context.Canceled), false, ""},
	} {
		s.accepted.Store(false) // a store that has had no answer yet
		err := s.classify("put", "chunks/ab/abcd", tc.err)
		if got := drivers.IsNotFound(err); got != tc.notFound {
			t.Errorf("%v: not found = %v, want %v", tc.err, got, tc.notFound)
		}
		reason, _ := drivers.IsPermanent(err)
		if reason != tc.reason {
			t.Errorf("%v: permanent reason %q, want %q", tc.err, reason, tc.reason)
		}
		if want := "put chunks/ab/abcd at s3://127.0.0.1:9001/drorch: "; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("message %q does not start with %q", err, want)
		}
	}
	// Once the server has taken these credentials, a signature it finds
	// wrong on an upload is a body damaged on the way: sent again.
	s.accepted.Store(true)
	if reason, ok := drivers.IsPermanent(s.classify("put", "k", resp(403, "SignatureDoesNotMatch"))); ok {
		t.Errorf("SignatureDoesNotMatch on a put after an accepted request: permanent %q, want transient", reason)
	}
	if reason, _ := drivers.IsPermanent(s.classify("get", "k", resp(403, "SignatureDoesNotMatch"))); reason != drivers.ReasonAccessDenied {
		t.Errorf("SignatureDoesNotMatch on a get: permanent %q, want %q", reason, drivers.ReasonAccessDenied)
	}
	for _, tc := range []struct {
		status int
		code   string
	}{{412, "PreconditionFailed"}, {409, "ConditionalRequestConflict"}} {
		err := s.classify("put", "epoch.json", resp(tc.status, tc.code))
		if !drivers.IsPreconditionFailed(err) {
			t.Errorf("%s: got %v, want an error wrapping drivers.ErrPreconditionFailed", tc.code, err)
		}
		if reason, ok := drivers.IsPermanent(err); ok {
			t.Errorf("%s: a failed condition must not be permanent (reason %s): the caller reads again", tc.code, reason)
		}
	}
	if err := s.classify("put", "k", context.Canceled); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled context must stay recognisable: %v", err)
	}
}
