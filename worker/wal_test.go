package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// walTestConfig writes a config whose primary store is a closed port and
// returns its path; the secrets are files.
func walTestConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there now
	for name, v := range map[string]string{"ak": "AKIAWALTEST", "sk": "s3cr3t-wal-test-value"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `sites:
  primary: {store: {driver: s3, endpoint: ` + addr + `, bucket: drorch, accessKey: file:` + dir + `/ak, secretKey: file:` + dir + `/sk, insecure: true}}
  secondary: {store: {driver: s3, endpoint: ` + addr + `, bucket: drorch, accessKey: env:WAL_TEST_UNSET, secretKey: env:WAL_TEST_UNSET, insecure: true}}
plans:
  db:
    primary: primary
    secondary: secondary
    source: {primary: {driver: dir, path: /tmp/x}}
`
	p := filepath.Join(dir, "drorch.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestWALCommandErrors: each failure exits with its documented code and
// one message naming what is wrong, without a secret; only the secrets the
// command uses must be set (the secondary's are not).
func TestWALCommandErrors(t *testing.T) {
	cfg := walTestConfig(t)
	saved := walRetries
	walRetries = []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond}
	t.Cleanup(func() { walRetries = saved })
	seg := filepath.Join(t.TempDir(), "000000010000000000000001")
	if err := os.WriteFile(seg, []byte("segment"), 0o600); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no plan", []string{"wal-push", "--site", "primary", seg}, 2, "usage: drorch-worker wal-push"},
		{"fetch without dest", []string{"wal-fetch", "--plan", "db", "--site", "primary", "--config", cfg, "000000010000000000000001"}, 127, "usage: drorch-worker wal-fetch"},
		{"fetch, secret not set", []string{"wal-fetch", "--plan", "db", "--site", "secondary", "--config", cfg, "000000010000000000000001", dest}, 127, "environment variable WAL_TEST_UNSET is not set"},
		{"unknown plan", []string{"wal-push", "--plan", "nope", "--site", "primary", "--config", cfg, seg}, 2, `unknown plan "nope"`},
		{"secret not set", []string{"wal-push", "--plan", "db", "--site", "secondary", "--config", cfg, seg}, 2, "sites.secondary.store.accessKey: environment variable WAL_TEST_UNSET is not set"},
		{"not a WAL name", []string{"wal-push", "--plan", "db", "--site", "primary", "--config", cfg, cfg}, 2, "is not a WAL file name"},
		{"missing file", []string{"wal-push", "--plan", "db", "--site", "primary", "--config", cfg, seg + "x"}, 2, "is not a WAL file name"},
		{"store down", []string{"wal-push", "--plan", "db", "--site", "primary", "--config", cfg, seg}, 3, "PostgreSQL retries the segment later"},
		{"fetch, store down", []string{"wal-fetch", "--plan", "db", "--site", "primary", "--config", cfg, "000000010000000000000001", dest}, 127, "after 5 attempts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code, ok := walCommand(tc.args, &stderr)
			if !ok || code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d (handled %v), stderr:\n%s\nwant exit %d and %q", code, ok, stderr.String(), tc.code, tc.want)
			}
			if strings.Contains(stderr.String(), "s3cr3t-wal-test-value") {
				t.Fatal("a secret in the output")
			}
		})
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("a failed fetch left %s", dest)
	}
	if _, ok := walCommand([]string{"--site", "primary"}, &bytes.Buffer{}); ok {
		t.Fatal("the worker's own flags were taken for a WAL command")
	}
}
