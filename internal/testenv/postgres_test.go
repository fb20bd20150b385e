package testenv

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestPostgres(t *testing.T) {
	start := time.Now()
	p := StartPostgres(t)
	t.Logf("postgres ready at %s:%d in %s", p.Host, p.Port, time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	connect := func() *pgx.Conn {
		t.Helper()
		conn, err := pgx.Connect(ctx, p.DSN())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	conn := connect()
	var super bool
	var db string
	if err := conn.QueryRow(ctx, "SELECT rolsuper, current_database() FROM pg_roles WHERE rolname = current_user").Scan(&super, &db); err != nil {
		t.Fatal(err)
	}
	if !super || db != "app" {
		t.Fatalf("connected as superuser=%v to database %q, want a superuser in app", super, db)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept(x text); INSERT INTO kept VALUES ('restore point 1')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	wrong := *p
	wrong.Password = "not-the-password"
	if c, err := pgx.Connect(ctx, wrong.DSN()); err == nil {
		c.Close(ctx)
		t.Fatal("a wrong password was accepted: TCP connections must authenticate")
	}

	get := func() string {
		t.Helper()
		var s string
		if err := connect().QueryRow(ctx, "SELECT x FROM kept").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	p.Stop(t)
	if c, err := net.DialTimeout("tcp", hostPort(p.Port), time.Second); err == nil {
		c.Close()
		t.Fatalf("port %d still accepts connections after Stop", p.Port)
	}
	start = time.Now()
	p.Start(t)
	t.Logf("postgres restarted in %s", time.Since(start).Round(time.Millisecond))
	if got := get(); got != "restore point 1" {
		t.Fatalf("after restart got %q", got)
	}

	p.Kill(t)
	p.Start(t)
	if got := get(); got != "restore point 1" {
		t.Fatalf("after kill and restart got %q", got)
	}
}
