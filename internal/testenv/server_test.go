package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
)

// TestPostgresServer: the bench's cluster takes its settings, answers on
// its unix socket without a password, and Close removes its files.
func TestPostgresServer(t *testing.T) {
	if _, err := postgresBinDirPath(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	p, err := StartPostgresServer("archive_mode=on", "work_mem=7MB")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=%s dbname=%s", p.SocketDir(), p.Port, p.User, p.Database))
	if err != nil {
		t.Fatalf("connect on the unix socket: %v", err)
	}
	var mode, mem string
	if err := conn.QueryRow(ctx, "SELECT current_setting('archive_mode'), current_setting('work_mem')").Scan(&mode, &mem); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if mode != "on" || mem != "7MB" {
		t.Errorf("archive_mode %q, work_mem %q; want the settings it was started with, on and 7MB", mode, mem)
	}
	p.Close()
	if _, err := os.Stat(filepath.Dir(p.Dir)); !os.IsNotExist(err) {
		t.Errorf("after Close, %s: %v; want it removed", filepath.Dir(p.Dir), err)
	}
}

// TestMinIOTLSServer: the bench's TLS MinIO answers over HTTPS with the
// certificate in CAFile.
func TestMinIOTLSServer(t *testing.T) {
	Tool(t, "minio") // skips, or fails in CI, when it is missing
	m, err := StartMinIOTLSServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.CAFile == "" {
		t.Fatal("no CAFile: the server is not serving HTTPS")
	}
	if err := m.Client(t).MakeBucket(context.Background(), "bench", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make a bucket over HTTPS: %v", err)
	}
}
