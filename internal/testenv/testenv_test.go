package testenv

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.temporal.io/api/operatorservice/v1"
)

func TestMinIOKeepsDataAcrossRestart(t *testing.T) {
	start := time.Now()
	m := StartMinIO(t)
	t.Logf("minio ready at %s in %s", m.Endpoint, time.Since(start).Round(time.Millisecond))
	ctx := context.Background()
	c := m.Client(t)

	if err := c.MakeBucket(ctx, "keep", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	want := []byte("restore point 1")
	if _, err := c.PutObject(ctx, "keep", "a/b", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() []byte {
		t.Helper()
		obj, err := c.GetObject(ctx, "keep", "a/b", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		b, err := io.ReadAll(obj)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := get(); !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}

	m.Stop(t)
	if conn, err := net.DialTimeout("tcp", m.Endpoint, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", m.Endpoint)
	}
	start = time.Now()
	m.Start(t)
	t.Logf("minio restarted in %s", time.Since(start).Round(time.Millisecond))
	if got := get(); !bytes.Equal(got, want) {
		t.Fatalf("after restart got %q, want %q", got, want)
	}

	m.Kill(t)
	m.Start(t)
	if got := get(); !bytes.Equal(got, want) {
		t.Fatalf("after kill and restart got %q, want %q", got, want)
	}
}

func TestMinIOAddUser(t *testing.T) {
	m := StartMinIO(t)
	ctx := context.Background()
	if err := m.Client(t).MakeBucket(ctx, "readonly", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	m.AddUser(t, "reader", "reader-secret-1", `{
		"Version": "2012-10-17",
		"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
		               "Resource": ["arn:aws:s3:::readonly", "arn:aws:s3:::readonly/*"]}]
	}`)
	c, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4("reader", "reader-secret-1", ""), Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.BucketExists(ctx, "readonly"); err != nil || !ok {
		t.Fatalf("reader: bucket exists = %v, %v; want true, nil", ok, err)
	}
	_, err = c.PutObject(ctx, "readonly", "x", bytes.NewReader([]byte("x")), 1, minio.PutObjectOptions{})
	if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
		t.Fatalf("reader put: got %v (code %q), want AccessDenied", err, code)
	}
	err = c.MakeBucket(ctx, "other", minio.MakeBucketOptions{})
	if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
		t.Fatalf("reader make bucket: got %v (code %q), want AccessDenied", err, code)
	}
}

func TestTemporalSearchAttributes(t *testing.T) {
	start := time.Now()
	s := StartTemporal(t)
	t.Logf("temporal ready at %s in %s", s.Address, time.Since(start).Round(time.Millisecond))
	c := s.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: s.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	for name, typ := range SearchAttributes {
		if got := resp.GetCustomAttributes()[name]; got.String() != typ {
			t.Errorf("search attribute %s: got %v, want %s", name, got, typ)
		}
	}
}

func TestSharedTemporalIsShared(t *testing.T) {
	a := SharedTemporal(t)
	b := SharedTemporal(t)
	if a != b {
		t.Fatalf("SharedTemporal returned two servers: %s and %s", a.Address, b.Address)
	}
	if _, err := a.Client(t).CheckHealth(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
}

func TestToolPathOverride(t *testing.T) {
	t.Setenv("DRORCH_MINIO_BIN", "/nonexistent/minio")
	if _, err := ToolPath("minio"); err == nil {
		t.Fatal("a DRORCH_MINIO_BIN that points nowhere must be an error, not a fallback")
	}
	if _, err := ToolPath("nosuchtool"); err == nil {
		t.Fatal("unknown tool must be an error")
	}
}

func TestMinIOTLS(t *testing.T) {
	m := StartMinIOTLS(t)
	if m.CAFile == "" {
		t.Fatal("no CAFile for a TLS server")
	}
	c := m.Client(t)
	if got := c.EndpointURL().Scheme; got != "https" {
		t.Fatalf("client scheme %q, want https", got)
	}
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "tls", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "tls", "k", bytes.NewReader([]byte("v")), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	m.AddUser(t, "tlsuser", "tlsuser-secret", "")
}

// A server that lost the race for its port is started again on new ports:
// addrInUse must know each server's way of saying so.
func TestAddrInUseKnowsEachServersWords(t *testing.T) {
	for log, want := range map[string]bool{
		"listen tcp 127.0.0.1:7233: bind: address already in use\n":            true,
		"FATAL Unable to start the server: Specified port is already in use\n": true,
		"FATAL Unable to start the server: Invalid credentials\n":              false,
	} {
		path := filepath.Join(t.TempDir(), "server.log")
		if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := (&process{logPath: path}).addrInUse(); got != want {
			t.Errorf("addrInUse(%q) = %v, want %v", log, got, want)
		}
	}
}
