package testenv

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
)

func TestNetNSCutAndRestore(t *testing.T) {
	ns := StartNetNS(t)
	start := time.Now()
	m := StartMinIOIn(t, ns)
	p := StartPostgresIn(t, ns)
	t.Logf("namespace %s at %s (test at %s); minio at %s, postgres at %s:%d, ready in %s",
		ns.name, ns.Addr(), ns.HostAddr(), m.Endpoint, p.Host, p.Port, time.Since(start).Round(time.Millisecond))
	if host, _, _ := net.SplitHostPort(m.Endpoint); host != ns.Addr() || p.Host != ns.Addr() {
		t.Fatalf("minio at %s, postgres at %s: want both on %s", m.Endpoint, p.Host, ns.Addr())
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mc := m.Client(t)
	if err := mc.MakeBucket(ctx, "site", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var client string
	if err := conn.QueryRow(ctx, "SELECT host(inet_client_addr())").Scan(&client); err != nil {
		t.Fatal(err)
	}
	if client != ns.HostAddr() {
		t.Fatalf("postgres sees the test connect from %s, want %s", client, ns.HostAddr())
	}
	wrong := *p
	wrong.Password = "not-the-password"
	if c, err := pgx.Connect(ctx, wrong.DSN()); err == nil {
		c.Close(ctx)
		t.Fatalf("a wrong password was accepted from %s", ns.HostAddr())
	}

	ns.Cut(t)
	// Each fails on its own or when its context ends; the log shows which and
	// when, for Cut's doc comment.
	const bound = 3 * time.Second
	for _, c := range []struct {
		name string
		op   func(ctx context.Context) error
	}{
		{"minio, client used before the cut", func(ctx context.Context) error {
			_, err := mc.BucketExists(ctx, "site")
			return err
		}},
		{"minio, new client", func(ctx context.Context) error {
			_, err := m.Client(t).BucketExists(ctx, "site")
			return err
		}},
		{"postgres, connection opened before the cut", func(ctx context.Context) error {
			return conn.Ping(ctx)
		}},
		{"postgres, new connection", func(ctx context.Context) error {
			c, err := pgx.Connect(ctx, p.DSN())
			if err == nil {
				c.Close(ctx)
			}
			return err
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		start := time.Now()
		err := c.op(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s: answered across a cut link", c.name)
			continue
		}
		t.Logf("%s: failed after %s: %v", c.name, time.Since(start).Round(time.Millisecond), err)
	}

	start = time.Now()
	ns.Restore(t)
	t.Logf("reachable again %s after Restore", time.Since(start).Round(time.Millisecond))
	if m.proc.exited() || p.proc.exited() {
		t.Fatalf("a server stopped during the cut: minio %s, postgres %s", m.proc.status(), p.proc.status())
	}
	if ok, err := mc.BucketExists(ctx, "site"); err != nil || !ok {
		t.Fatalf("minio after Restore: bucket exists = %v, %v; want true, nil", ok, err)
	}
	conn2, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		t.Fatalf("postgres after Restore: %v", err)
	}
	defer conn2.Close(context.Background())
	if err := conn2.Ping(ctx); err != nil {
		t.Fatalf("postgres after Restore: %v", err)
	}
}

func TestNetNSSeveralAndCleanup(t *testing.T) {
	var a, b *NetNS
	var sleeper *process
	ok := t.Run("two", func(t *testing.T) {
		a, b = StartNetNS(t), StartNetNS(t)
		if a.subnet.Overlaps(b.subnet) || a.name == b.name {
			t.Fatalf("two namespaces share %s/%s, %s/%s", a.name, a.subnet, b.name, b.subnet)
		}
		a.Cut(t)
		if err := b.waitReachable(time.Second); err != nil {
			t.Fatalf("cutting %s cut %s too: %v", a.name, b.name, err)
		}
		_, err := net.DialTimeout("tcp", net.JoinHostPort(a.Addr(), netnsProbePort), time.Second)
		if !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Fatalf("dial %s after Cut: %v; want no route to host", a.Addr(), err)
		}
		a.Restore(t)

		// A process left running inside must not outlive the namespace.
		sleeper, err = startCommand(command{
			name: "sleep", bin: "sleep", args: []string{"600"},
			logPath: filepath.Join(t.TempDir(), "sleep.log"), netns: b,
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	if !ok || sleeper == nil {
		return // failed or skipped
	}
	select {
	case <-sleeper.done:
	case <-time.After(10 * time.Second):
		t.Errorf("a process started in %s still runs after the test", b.name)
	}
	for _, ns := range []*NetNS{a, b} {
		for _, args := range [][]string{
			{"netns", "pids", ns.name},
			{"link", "show", ns.hostLink},
			{"route", "show", "exact", ns.subnet.String(), "table", "main"},
		} {
			out, err := exec.Command(ns.ip, args...).CombinedOutput()
			if err == nil && len(out) > 0 {
				t.Errorf("ip %q after the test: %s", args, out)
			}
		}
	}
}
