package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a PostgreSQL cluster started for one test, from the Debian
// packages (`go tool task tools:debian`).
type Postgres struct {
	Host     string // 127.0.0.1, or the NetNS's Addr() (StartPostgresIn)
	Port     int    // a free port on Host, kept across Stop/Start
	User     string // "drorch", the bootstrap superuser
	Password string // random per cluster; TCP connections authenticate with scram-sha-256
	Database string // "app", created empty
	Dir      string // data directory; survives Stop/Start and Kill/Start

	bin      string   // the postgres binary
	settings []string // more -c settings (StartPostgresServer), kept across restarts
	sockDir  string
	logPath  string
	cred     *syscall.Credential // user postgres when the test runs as root
	netns    *NetNS              // nil for the test's network namespace
	proc     *process
}

const (
	postgresReadyTimeout = time.Minute
	postgresStopGrace    = 10 * time.Second
	// postgresBinDir is the Debian package's; pg_config names another install.
	postgresBinDir = "/usr/lib/postgresql/15/bin"
)

// StartPostgres creates a cluster in a fresh temporary directory (initdb), starts
// it on a free loopback port with its unix socket inside that directory, and
// creates the database "app". The server runs in the foreground as a child of
// the test process and dies with it; it is stopped and its files removed when
// the test ends. When the test fails, the tail of the server log is reported.
//
// initdb and postgres refuse to run as root: a test running as root runs them
// as the user postgres, which owns the directory.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	return startPostgres(t, nil)
}

// StartPostgresIn is StartPostgres with the server inside ns, listening on
// ns.Addr(), and accepting password connections from ns.HostAddr(), the address
// the test connects from: cutting ns cuts the test off from it.
func StartPostgresIn(t testing.TB, ns *NetNS) *Postgres {
	t.Helper()
	return startPostgres(t, ns)
}

func startPostgres(t testing.TB, netns *NetNS) *Postgres {
	t.Helper()
	binDir, err := postgresBinDirPath()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("testenv: %v", err)
		}
		t.Skipf("testenv: %v", err)
	}
	p, err := newPostgres(binDir, netns)
	if p != nil {
		t.Cleanup(func() { p.cleanup(t) })
	}
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := p.init(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

// StartPostgresServer is StartPostgres for programs that are not tests (the
// bench command): settings are more server settings ("name=value", passed as
// -c, so they override postgresql.conf and ALTER SYSTEM), and the caller
// stops the server and removes its files with Close. It still dies with the
// calling process.
func StartPostgresServer(settings ...string) (*Postgres, error) {
	binDir, err := postgresBinDirPath()
	if err != nil {
		return nil, err
	}
	p, err := newPostgres(binDir, nil)
	if err == nil {
		p.settings = settings
		err = p.init()
	}
	if err != nil {
		if p != nil {
			p.Close()
		}
		return nil, err
	}
	return p, nil
}

// Close stops a server started by StartPostgresServer (fast shutdown) and
// removes its files.
func (p *Postgres) Close() {
	if p.proc != nil {
		p.proc.stop(syscall.SIGINT, postgresStopGrace)
	}
	os.RemoveAll(filepath.Dir(p.Dir))
}

// SocketDir is the directory of the server's unix socket, where local
// connections authenticate without a password.
func (p *Postgres) SocketDir() string { return p.sockDir }

func (p *Postgres) cleanup(t testing.TB) {
	if t.Failed() && p.proc != nil {
		t.Logf("testenv: postgres at %s:%d, log %s; tail:\n%s", p.Host, p.Port, p.logPath, p.proc.logTail(2048))
	}
	if p.proc != nil {
		p.proc.stop(syscall.SIGINT, postgresStopGrace)
	}
	os.RemoveAll(filepath.Dir(p.Dir))
}

func postgresBinDirPath() (string, error) {
	if isExecutable(filepath.Join(postgresBinDir, "postgres")) == nil {
		return postgresBinDir, nil
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if isExecutable(filepath.Join(dir, "initdb")) == nil && isExecutable(filepath.Join(dir, "postgres")) == nil {
			return dir, nil
		}
	}
	return "", fmt.Errorf("postgresql server binaries not found in %s (nor `pg_config --bindir`): install them with `go tool task tools:debian`", postgresBinDir)
}

// newPostgres makes the directory the cluster lives in. It is not under
// t.TempDir, whose parent is private to the user running the test.
func newPostgres(binDir string, netns *NetNS) (*Postgres, error) {
	root, err := os.MkdirTemp("", "drorch-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{
		Host:     listenHost(netns),
		User:     "drorch",
		Password: randomHex(16),
		Database: "app",
		Dir:      filepath.Join(root, "data"),
		bin:      filepath.Join(binDir, "postgres"),
		sockDir:  filepath.Join(root, "sock"),
		logPath:  filepath.Join(root, "postgres.log"),
		netns:    netns,
	}
	if err := os.Mkdir(p.sockDir, 0o700); err != nil {
		return p, err
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return p, fmt.Errorf("running as root, postgres must run as the user postgres: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, d := range []string{root, p.sockDir} {
			if err := os.Chown(d, uid, gid); err != nil {
				return p, err
			}
		}
		if err := searchableByOthers(filepath.Dir(root)); err != nil {
			return p, fmt.Errorf("user postgres cannot reach %s (set TMPDIR elsewhere): %w", root, err)
		}
	}
	return p, nil
}

// searchableByOthers checks that every directory from dir up to / lets any user
// through.
func searchableByOthers(dir string) error {
	for {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by others (mode %s)", dir, fi.Mode().Perm())
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil
		}
		dir = parent
	}
}

// init creates the cluster, starts it and creates the database.
func (p *Postgres) init() error {
	root := filepath.Dir(p.Dir)
	pwfile := filepath.Join(root, "pwfile")
	if err := os.WriteFile(pwfile, []byte(p.Password+"\n"), 0o600); err != nil {
		return err
	}
	if p.cred != nil {
		if err := os.Chown(pwfile, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			return err
		}
	}
	cmd := exec.Command(filepath.Join(filepath.Dir(p.bin), "initdb"),
		"-D", p.Dir,
		"-U", p.User, "--pwfile", pwfile,
		"--auth-host=scram-sha-256", "--auth-local=trust",
		"-E", "UTF8", "--locale=C",
		"--no-sync", // a test cluster does not outlive an OS crash
	)
	cmd.Dir = root
	cmd.Env = environ([]string{"PG", "LC_", "LANG"})
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := spawn(cmd, nil)
	if err == nil {
		err = cmd.Wait()
	}
	os.Remove(pwfile)
	if err != nil {
		return fmt.Errorf("initdb %s: %w\n%s", p.Dir, err, out.Bytes())
	}
	if p.netns != nil {
		// initdb lets TCP clients in from the loopback only; the test connects
		// from the other end of the namespace's link.
		hba := fmt.Sprintf("host all all %s/32 scram-sha-256\n", p.netns.HostAddr())
		if err := appendFile(filepath.Join(p.Dir, "pg_hba.conf"), hba); err != nil {
			return err
		}
	}

	// The port can be taken between choosing it and the server binding it:
	// try once more on a new port before giving up.
	for attempt := 0; ; attempt++ {
		ports, err := listenPorts(p.netns, 1)
		if err != nil {
			return err
		}
		p.Port = ports[0]
		err = p.start()
		if err == nil {
			break
		}
		if attempt > 0 || p.proc == nil || !strings.Contains(strings.ToLower(p.proc.logTail(4096)), "address already in use") {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.dsn("postgres"))
	if err != nil {
		return fmt.Errorf("postgres at %s:%d: %w", p.Host, p.Port, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{p.Database}.Sanitize()); err != nil {
		return fmt.Errorf("postgres at %s:%d: create database %s: %w", p.Host, p.Port, p.Database, err)
	}
	return nil
}

// start runs the server in the foreground on p's port and data directory and
// waits until it accepts connections. On failure the process is gone and the
// error carries the log tail.
func (p *Postgres) start() error {
	args := []string{
		"-D", p.Dir,
		"-p", strconv.Itoa(p.Port),
		"-k", p.sockDir,
		"-c", "listen_addresses=" + p.Host,
		"-c", "fsync=off", // as --no-sync above
	}
	for _, kv := range p.settings {
		args = append(args, "-c", kv)
	}
	proc, err := startCommand(command{
		name:    "postgres",
		bin:     p.bin,
		args:    args,
		env:     environ([]string{"PG"}),
		dir:     filepath.Dir(p.Dir),
		logPath: p.logPath,
		cred:    p.cred, // the user postgres when the test is root
		netns:   p.netns,
	})
	if err != nil {
		return err
	}
	p.proc = proc

	if err := p.waitReady(postgresReadyTimeout); err != nil {
		proc.stop(syscall.SIGKILL, time.Second)
		return fmt.Errorf("postgres at %s:%d: %w (%s); log %s ends with:\n%s", p.Host, p.Port, err, proc.status(), p.logPath, proc.logTail(4096))
	}
	return nil
}

func (p *Postgres) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.proc.exited() {
			return errExited
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, p.dsn("postgres"))
		if err == nil {
			conn.Close(ctx)
			cancel()
			return nil
		}
		cancel()
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down (fast shutdown: open sessions are ended) and waits
// for it to exit. Start brings it back with the same port and data.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	p.proc.stop(syscall.SIGINT, postgresStopGrace)
}

// Kill stops the server as a crash would, without a shutdown checkpoint, so
// that Start runs crash recovery. It is pg_ctl's immediate mode (SIGQUIT)
// rather than SIGKILL: the server's children are in process groups of their
// own, and a child that outlived a killed postmaster would keep the shared
// memory and refuse the restart.
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	p.proc.stop(syscall.SIGQUIT, postgresStopGrace)
}

// Start restarts a stopped server on the same port and data directory.
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	if !p.proc.exited() {
		t.Fatalf("testenv: postgres at %s:%d is already running", p.Host, p.Port)
	}
	if err := p.start(); err != nil {
		t.Fatalf("testenv: restart: %v", err)
	}
}

// DSN is a URL for the superuser and the database "app", without TLS.
func (p *Postgres) DSN() string { return p.dsn(p.Database) }

func (p *Postgres) dsn(database string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(p.User, p.Password),
		Host:     net.JoinHostPort(p.Host, strconv.Itoa(p.Port)),
		Path:     "/" + database,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

func appendFile(name, text string) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
