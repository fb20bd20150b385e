package postgres

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/drivers/access/accesstest"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
)

// The application's role: no superuser, allowed to insert into probe.
const (
	appUser     = "app"
	appPassword = "app-password-1"
)

// server is a cluster with the application's role and table, and the
// Access under test, connected as the superuser to database "app".
type server struct {
	*testenv.Postgres
	access access.Access
}

func start(t *testing.T) *server {
	t.Helper()
	p := testenv.StartPostgres(t)
	ctx := context.Background()
	conn := superConn(t, p, p.Database)
	for _, sql := range []string{
		"CREATE ROLE " + appUser + " LOGIN PASSWORD '" + appPassword + "'",
		"CREATE TABLE probe(x int)",
		"GRANT SELECT, INSERT ON probe TO " + appUser,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return &server{Postgres: p, access: newAccess(t, p, nil)}
}

func newAccess(t *testing.T, p *testenv.Postgres, edit func(*Config)) access.Access {
	t.Helper()
	cfg := Config{
		Host:     p.Host,
		Port:     p.Port,
		User:     p.User,
		Password: secret.New("env:PGPASSWORD", p.Password),
		Database: p.Database,
		Timeout:  5 * time.Second, // SSLMode: the default, prefer, against a server without TLS
		Roles:    []string{appUser},
	}
	if edit != nil {
		edit(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return a
}

func superConn(t *testing.T, p *testenv.Postgres, database string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.Database = database
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// appConn opens a new session as the application does.
func appConn(ctx context.Context, p *testenv.Postgres) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(p.DSN())
	if err != nil {
		return nil, err
	}
	cfg.User, cfg.Password = appUser, appPassword
	return pgx.ConnectConfig(ctx, cfg)
}

// appWrites reports whether the application can write now: a new session of
// its role inserts. false when the role may not log in or the transaction is
// read-only.
func appWrites(ctx context.Context, p *testenv.Postgres) (bool, error) {
	conn, err := appConn(ctx, p)
	if sqlState(err) == "28000" { // invalid_authorization_specification: not permitted to log in
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer conn.Close(ctx)
	return insert(ctx, conn)
}

// insert reports whether conn may write: false when the server refuses
// because the transaction is read-only.
func insert(ctx context.Context, conn *pgx.Conn) (bool, error) {
	_, err := conn.Exec(ctx, "INSERT INTO probe VALUES (1)")
	if sqlState(err) == "25006" { // read_only_sql_transaction
		return false, nil
	}
	return err == nil, err
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func TestConformance(t *testing.T) {
	t.Parallel()
	s := start(t)
	accesstest.Run(t, s.access, func(ctx context.Context) (bool, error) { return appWrites(ctx, s.Postgres) })
	if got, want := s.access.Describe(), "postgres "+s.Host+":"+strconv.Itoa(s.Port)+"/app"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
}

// A session the application opened while the site was read-write cannot
// keep writing once it is read-only: not in an open transaction, not after
// overriding the default for itself, not later.
func TestReadOnlyEndsOpenSessions(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	open := func() *pgx.Conn {
		t.Helper()
		conn, err := appConn(ctx, s.Postgres)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	idle, overriding, inTx := open(), open(), open()
	if _, err := overriding.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	tx, err := inTx.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO probe VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	if ok, err := insert(ctx, idle); !ok {
		t.Fatalf("before read-only, an insert was refused: %v", err)
	}

	if err := s.access.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}

	if _, err := tx.Exec(ctx, "INSERT INTO probe VALUES (2)"); err == nil {
		t.Error("the transaction begun read-write went on writing after SetMode(read-only)")
	}
	if err := tx.Commit(ctx); err == nil {
		t.Error("the transaction begun read-write committed after SetMode(read-only)")
	}
	for name, conn := range map[string]*pgx.Conn{"idle": idle, "overriding": overriding} {
		if ok, err := insert(ctx, conn); ok {
			t.Errorf("the %s session opened read-write still writes after SetMode(read-only)", name)
		} else {
			t.Logf("%s session: %v", name, err)
		}
	}
	var n int
	if err := superConn(t, s.Postgres, s.Database).QueryRow(ctx, "SELECT count(*) FROM probe").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("probe has %d rows, want the 1 inserted before SetMode(read-only)", n)
	}
}

// Read-only is the cluster's: a normal user, the superuser, and every database
// refuse writes.
func TestReadOnlyForEveryUserAndDatabase(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.access.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := appConn(ctx, s.Postgres); sqlState(err) != "28000" {
		t.Errorf("%s logging in in read-only mode: got %v, want SQLSTATE 28000 (not permitted to log in)", appUser, err)
	}
	for _, db := range []string{"app", "postgres"} {
		_, err := superConn(t, s.Postgres, db).Exec(ctx, "CREATE TABLE written(x int)")
		if sqlState(err) != "25006" {
			t.Errorf("create table by the superuser in database %s in read-only mode: got %v, want SQLSTATE 25006", db, err)
		}
	}
}

// Setting the mode in force leaves the sessions opened under it alone;
// switching ends them.
func TestSetModeAgainKeepsSessions(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.access.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	reader := superConn(t, s.Postgres, s.Database)
	if err := s.access.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a session opened read-only was ended by setting read-only again: %v", err)
	}
	if err := s.access.SetMode(ctx, access.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a session opened read-only survived SetMode(read-write)")
	}
}

// ALTER SYSTEM RESET leaves postgresql.conf alone: when it keeps the cluster
// read-only, SetMode says so and where.
func TestReadWriteBlockedByPostgresqlConf(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conf := filepath.Join(s.Dir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("default_transaction_read_only = on\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := superConn(t, s.Postgres, s.Database).Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}

	err = s.access.SetMode(ctx, access.ReadWrite)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig || !strings.Contains(err.Error(), conf) {
		t.Fatalf("SetMode(read-write) with postgresql.conf setting read-only: got %v (permanent %v %q), want a permanent InvalidConfig naming %s", err, ok, reason, conf)
	}
	t.Log(err)
	if mode, err := s.access.Status(ctx); mode == access.ReadWrite {
		t.Fatalf("Status = %s, %v; want it not to say %s", mode, err, access.ReadWrite)
	}
}

// A role setting overrides the server's for that role's new sessions: SetMode
// still fences everyone else, and says what keeps the role writable.
func TestReadOnlyOverriddenForARole(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := superConn(t, s.Postgres, s.Database).Exec(ctx, "ALTER ROLE "+s.User+" SET default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	err := s.access.SetMode(ctx, access.ReadOnly)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig || !strings.Contains(err.Error(), "ALTER ROLE") {
		t.Fatalf("SetMode(read-only) with a role setting read-write: got %v, want a permanent InvalidConfig naming ALTER ROLE", err)
	}
	t.Log(err)
	if ok, err := appWrites(ctx, s.Postgres); ok || err != nil {
		t.Fatalf("write by %s: accepted=%v, %v; want it refused", appUser, ok, err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	s := start(t)
	const badPassword = "not-the-password-0123"
	cases := []struct {
		name       string
		edit       func(*Config)
		reason     string // "" for transient
		statusErr  bool   // Status fails too
		wantInText string
	}{
		{"wrong password", func(c *Config) { c.Password = secret.New("env:X", badPassword) }, drivers.ReasonAuth, true, "password authentication failed"},
		{"no such role", func(c *Config) { c.User = "nobody" }, drivers.ReasonAuth, true, `"nobody"`},
		{"no such database", func(c *Config) { c.Database = "nosuch" }, drivers.ReasonInvalidConfig, true, `"nosuch"`},
		{"not a superuser", func(c *Config) { c.User, c.Password, c.Roles = appUser, secret.New("env:X", appPassword), nil }, drivers.ReasonAccessDenied, false, "needs superuser"},
		{"no such application role", func(c *Config) { c.Roles = []string{"nosuchapp"} }, drivers.ReasonInvalidConfig, true, `"nosuchapp"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			a := newAccess(t, s.Postgres, tc.edit)
			err := a.SetMode(ctx, access.ReadOnly)
			if reason, ok := drivers.IsPermanent(err); !ok || reason != tc.reason {
				t.Fatalf("SetMode: got %v (permanent %v, reason %q), want permanent %s", err, ok, reason, tc.reason)
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.wantInText) || !strings.Contains(err.Error(), a.Describe()) {
				t.Errorf("error %q does not name %q and %q", err, a.Describe(), tc.wantInText)
			}
			if strings.Contains(err.Error(), badPassword) || strings.Contains(err.Error(), s.Password) {
				t.Errorf("error %q shows a password", err)
			}
			if drivers.IsUnreachable(err) {
				t.Error("the server answered, yet the error says unreachable")
			}
			_, err = a.Status(ctx)
			if _, ok := drivers.IsPermanent(err); ok != tc.statusErr {
				t.Errorf("Status: %v", err)
			}
		})
	}
	if mode, err := s.access.Status(context.Background()); err != nil || mode != access.ReadWrite {
		t.Fatalf("after the refused attempts, Status = %s, %v; want %s", mode, err, access.ReadWrite)
	}

	t.Run("server stopped", func(t *testing.T) {
		s.Stop(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for name, err := range map[string]error{
			"SetMode": s.access.SetMode(ctx, access.ReadOnly),
			"Status":  func() error { _, err := s.access.Status(ctx); return err }(),
		} {
			if _, ok := drivers.IsPermanent(err); err == nil || ok || !drivers.IsUnreachable(err) {
				t.Errorf("%s: got %v, want a transient error wrapping ErrUnreachable", name, err)
			}
			t.Logf("%s: %v", name, err)
		}
	})
}

// A server that accepts the connection and never answers is as unreachable as
// one that is gone, once Timeout has passed.
func TestHungServerIsUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // never accepted: the kernel completes the handshake, nobody reads
	a, err := New(Config{
		Host:     "127.0.0.1",
		Port:     l.Addr().(*net.TCPAddr).Port,
		User:     "drorch",
		Password: secret.New("env:PGPASSWORD", "pw"),
		Timeout:  300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = a.SetMode(context.Background(), access.ReadOnly)
	if _, ok := drivers.IsPermanent(err); err == nil || ok || !drivers.IsUnreachable(err) {
		t.Fatalf("got %v, want a transient error wrapping ErrUnreachable", err)
	}
	t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
}

func TestNew(t *testing.T) {
	pw := secret.New("env:PGPASSWORD", "pw")
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no host", Config{User: "u", Password: pw}},
		{"port out of range", Config{Host: "h", Port: 70000, User: "u", Password: pw}},
		{"no user", Config{Host: "h", Password: pw}},
		{"no password", Config{Host: "h", User: "u"}},
		{"unknown sslmode", Config{Host: "h", User: "u", Password: pw, SSLMode: "yes"}},
		{"negative timeout", Config{Host: "h", User: "u", Password: pw, Timeout: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidConfig {
				t.Fatalf("New: got %v, want a permanent InvalidConfig error", err)
			}
		})
	}
	a, err := New(Config{Host: "db.example", User: "o'brien", Password: pw})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Describe(), "postgres db.example:5432/postgres"; got != want {
		t.Errorf("Describe() = %q, want %q", got, want)
	}
	if got := a.(*cluster).conn.User; got != "o'brien" {
		t.Errorf("user %q after quoting, want o'brien", got)
	}
}

// The application cannot lift the fence for itself: its open sessions are
// ended whatever they asked for, and it cannot open another one to ask for a
// read-write transaction. drorch's user still can, and lifts it.
func TestApplicationCannotLiftTheFence(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Sessions opened while read-write that ask to keep writing.
	overriding, err := appConn(ctx, s.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	defer overriding.Close(context.Background())
	if _, err := overriding.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
		t.Fatal(err)
	}
	if err := s.access.SetMode(ctx, access.ReadOnly); err != nil {
		t.Fatal(err)
	}
	if _, err := overriding.Exec(ctx, "BEGIN READ WRITE; INSERT INTO probe VALUES (7); COMMIT"); err == nil {
		t.Error("a session of the application that turned the read-only default off wrote after SetMode(read-only)")
	}
	for _, sql := range []string{"BEGIN READ WRITE; INSERT INTO probe VALUES (8); COMMIT", "SET default_transaction_read_only = off; INSERT INTO probe VALUES (9)"} {
		conn, err := appConn(ctx, s.Postgres)
		if err == nil {
			_, err = conn.Exec(ctx, sql)
			conn.Close(ctx)
			t.Errorf("the application logged in to a fenced cluster; %q: %v", sql, err)
			continue
		}
		if sqlState(err) != "28000" || !strings.Contains(err.Error(), "not permitted to log in") {
			t.Errorf("the application's login to a fenced cluster: %v; want SQLSTATE 28000, not permitted to log in", err)
		}
	}
	var n int
	if err := superConn(t, s.Postgres, s.Database).QueryRow(ctx, "SELECT count(*) FROM probe").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("probe has %d rows written through the fence", n)
	}
	if mode, err := s.access.Status(ctx); err != nil || mode != access.ReadOnly {
		t.Fatalf("Status = %s, %v; want %s", mode, err, access.ReadOnly)
	}

	if err := s.access.SetMode(ctx, access.ReadWrite); err != nil {
		t.Fatal(err)
	}
	if ok, err := appWrites(ctx, s.Postgres); !ok {
		t.Fatalf("after SetMode(read-write) the application cannot write: %v", err)
	}
}

// A fence half in place is neither mode: Status says what is missing, and
// setting the mode again completes it.
func TestPartialFenceIsReported(t *testing.T) {
	t.Parallel()
	s := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		mode   access.Mode
		undo   string // what someone does behind drorch's back
		inText string
	}{
		{access.ReadOnly, "BEGIN READ WRITE; ALTER ROLE " + appUser + " LOGIN; COMMIT", "role(s) app can log in"},
		{access.ReadWrite, "ALTER ROLE " + appUser + " NOLOGIN", "role(s) app cannot log in"},
	} {
		if err := s.access.SetMode(ctx, tc.mode); err != nil {
			t.Fatal(err)
		}
		if _, err := superConn(t, s.Postgres, s.Database).Exec(ctx, tc.undo); err != nil {
			t.Fatal(err)
		}
		mode, err := s.access.Status(ctx)
		if !errors.Is(err, access.ErrPartial) || !strings.Contains(err.Error(), tc.inText) || !strings.Contains(err.Error(), s.access.Describe()) {
			t.Fatalf("Status of a %s fence undone in part: %s, %v; want an ErrPartial naming the resource and saying %q", tc.mode, mode, err, tc.inText)
		}
		t.Log(err)
		if err := s.access.SetMode(ctx, tc.mode); err != nil {
			t.Fatal(err)
		}
		if mode, err := s.access.Status(ctx); err != nil || mode != tc.mode {
			t.Fatalf("after SetMode(%s) again: Status = %s, %v", tc.mode, mode, err)
		}
	}
}
