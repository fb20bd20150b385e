package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

const pgBin = "/usr/lib/postgresql/15/bin"

// pgStack is a stack whose plan protects a PostgreSQL cluster: the primary
// site's source is a running cluster archiving its WAL with drorch-worker
// wal-push into both sites' repositories, the secondary's a stopped
// cluster's data directory that a restore replaces and starts.
type pgStack struct {
	*stack
	primary   *testenv.Postgres
	secondary *testenv.Postgres // its data directory; the server a restore starts listens on its port
}

func newPGStack(t *testing.T, opts stackOptions, archiveTimeout string) *pgStack {
	t.Helper()
	ps := &pgStack{primary: testenv.StartPostgres(t), secondary: testenv.StartPostgres(t)}
	ps.secondary.Stop(t)
	// A restore starts the server with pg_ctl, outside testenv: stop it
	// before testenv removes its directory.
	t.Cleanup(func() {
		exec.Command("runuser", "-u", "postgres", "--", filepath.Join(pgBin, "pg_ctl"), "stop", "-m", "immediate", "-D", ps.secondary.Dir).Run()
	})
	t.Setenv("E2E_PG_PASSWORD", ps.primary.Password) // a physical copy has the primary's roles
	opts.source = func(s *stack, site string) string {
		pg := ps.primary
		if site == "secondary" {
			pg = ps.secondary
		}
		return fmt.Sprintf("{driver: postgres, path: %s, host: %s, port: %d, user: %s, password: env:E2E_PG_PASSWORD, database: %s, sslmode: disable, startTimeout: 2m}",
			pg.Dir, pg.Host, pg.Port, pg.User, pg.Database)
	}
	ps.stack = newStack(t, opts)
	ps.secrets = append(ps.secrets, ps.primary.Password)
	ps.env = append(ps.env, "E2E_PG_PASSWORD="+ps.primary.Password)
	ps.readableConfig()
	ps.archive(archiveTimeout)
	return ps
}

// readableConfig makes the stack's config one the user postgres can read,
// with its secrets in files: the servers run archive_command and
// restore_command (drorch-worker wal-push and wal-fetch) with it.
func (ps *pgStack) readableConfig() {
	t := ps.t
	dir, err := os.MkdirTemp("", "drorch-pgcfg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(ps.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(text)
	for _, kv := range ps.env {
		name, value, _ := strings.Cut(kv, "=")
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, []byte(value), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg = strings.ReplaceAll(cfg, "env:"+name+",", "file:"+file+",")
		cfg = strings.ReplaceAll(cfg, "env:"+name+"}", "file:"+file+"}")
	}
	ps.cfgPath = filepath.Join(dir, "drorch.yaml")
	if err := os.WriteFile(ps.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			chownPostgres(t, filepath.Join(dir, e.Name()))
		}
	}
	bin := workerBinary(t)
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
}

// archive turns on WAL archiving at the primary into both sites'
// repositories (so that a restore at the secondary finds the WAL without
// the shipping workflow) and restarts it.
func (ps *pgStack) archive(timeout string) {
	t := ps.t
	bin := workerBinary(t)
	push := func(site string) string {
		return fmt.Sprintf("%s wal-push --plan %s --site %s --config %s %%p", bin, plan, site, ps.cfgPath)
	}
	conf := fmt.Sprintf("archive_mode = on\narchive_command = '%s && %s'\narchive_timeout = '%s'\n", push("primary"), push("secondary"), timeout)
	f, err := os.OpenFile(filepath.Join(ps.primary.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(conf); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ps.primary.Stop(t)
	ps.primary.Start(t)
}

func pgConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// restoredDSN is the DSN of the server a restore started in the
// secondary's data directory: the secondary's port, the primary's roles.
func (ps *pgStack) restoredDSN() string {
	return strings.Replace(ps.primary.DSN(), fmt.Sprintf(":%d/", ps.primary.Port), fmt.Sprintf(":%d/", ps.secondary.Port), 1)
}

func pgExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func pgInt(t *testing.T, conn *pgx.Conn, sql string) int64 {
	t.Helper()
	var n int64
	if err := conn.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// pgTool runs a PostgreSQL client program against pg's DSN-derived
// settings, its password in the environment.
func pgTool(t *testing.T, dsn string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(pgBin, name), append(args, dsn)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return string(out)
}

// TestPostgresBackupUnderLoadRestores takes a base backup while pgbench
// and a counter writer commit, transmits it and restores it into the
// secondary's data directory: the server starts, pg_amcheck passes, the
// pgbench balances agree (each transaction is whole) and every counter row
// committed before the backup ended is there, without a gap.
func TestPostgresBackupUnderLoadRestores(t *testing.T) {
	ps := newPGStack(t, stackOptions{}, "0")
	ps.spawnWorker()
	pgTool(t, ps.primary.DSN(), "pgbench", "-i", "-s", "2", "-q")
	conn := pgConnect(t, ps.primary.DSN())
	pgExec(t, conn, "CREATE TABLE counter (id bigint PRIMARY KEY)")

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var committed atomic.Int64
	var halt atomic.Bool // the writer stops between commits, never in one
	wg.Add(2)
	go func() {
		defer wg.Done()
		wconn, err := pgx.Connect(context.Background(), ps.primary.DSN())
		if err != nil {
			return
		}
		defer wconn.Close(context.Background())
		for i := int64(1); !halt.Load(); i++ {
			if _, err := wconn.Exec(context.Background(), "INSERT INTO counter VALUES ($1)", i); err != nil {
				t.Errorf("counter writer: %v", err)
				return
			}
			committed.Store(i)
		}
	}()
	go func() {
		defer wg.Done()
		cmd := exec.CommandContext(ctx, filepath.Join(pgBin, "pgbench"), "-c", "2", "-T", "60", "-n", ps.primary.DSN())
		cmd.Run()
	}()
	time.Sleep(time.Second)
	b := ps.backup()
	before := committed.Load()
	halt.Store(true)
	stop()
	wg.Wait()
	total := committed.Load()
	if before == 0 {
		t.Fatal("the counter writer committed nothing before the backup ended")
	}
	t.Logf("backup %s: %d files, %d bytes read, %d new; %d counter rows committed when it ended, %d in all", b.Point, b.Totals.Files, b.BytesRead, b.BytesNew, before, total)
	// What archive_timeout does in production: the last WAL is shipped.
	switchWAL(t, conn)

	ps.transmit()
	var res workflows.RestoreResult
	if err := ps.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, &res); err != nil {
		t.Fatalf("restore: %v\nworker log:\n%s", err, ps.logs.Tail(4000))
	}
	t.Logf("restored %s: recovered to %s", res.Point, res.RecoveredTo)

	rc := pgConnect(t, ps.restoredDSN())
	var inRecovery bool
	if err := rc.QueryRow(context.Background(), "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("restored server: in recovery %v, %v; want promoted", inRecovery, err)
	}
	pgTool(t, ps.restoredDSN(), "pg_amcheck", "--install-missing", "--heapallindexed")
	n, max := pgInt(t, rc, "SELECT count(*) FROM counter"), pgInt(t, rc, "SELECT coalesce(max(id), 0) FROM counter")
	if n != total || n != max {
		t.Errorf("counter: %d rows, max id %d; want the %d committed (all archived), without a gap", n, max, total)
	}
	accounts := pgInt(t, rc, "SELECT sum(abalance) FROM pgbench_accounts")
	history := pgInt(t, rc, "SELECT coalesce(sum(delta), 0) FROM pgbench_history")
	branches := pgInt(t, rc, "SELECT sum(bbalance) FROM pgbench_branches")
	if accounts != history || branches != history {
		t.Errorf("pgbench balances disagree: accounts %d, branches %d, history %d: a transaction was restored torn", accounts, branches, history)
	}
	if rows := pgInt(t, rc, "SELECT count(*) FROM pgbench_accounts"); rows != 200000 {
		t.Errorf("pgbench_accounts has %d rows, want 200000", rows)
	}
}

// switchWAL ends the current WAL file and waits until it is archived.
func switchWAL(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	var name string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&name); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var last *string
		if err := conn.QueryRow(ctx, "SELECT last_archived_wal FROM pg_stat_archiver").Scan(&last); err != nil {
			t.Fatal(err)
		}
		if last != nil && *last >= name {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WAL file %s not archived after 30s (last archived %v)", name, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestPostgresPointInTime restores to a time between two commits: the
// restored server has the first row and not the second.
func TestPostgresPointInTime(t *testing.T) {
	ps := newPGStack(t, stackOptions{}, "0")
	ps.spawnWorker()
	conn := pgConnect(t, ps.primary.DSN())
	pgExec(t, conn, "CREATE TABLE marks (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	b := ps.backup()
	ps.transmit()

	pgExec(t, conn, "INSERT INTO marks (name) VALUES ('t1')")
	time.Sleep(1500 * time.Millisecond)
	between := time.Now()
	time.Sleep(1500 * time.Millisecond)
	pgExec(t, conn, "INSERT INTO marks (name) VALUES ('t2')")
	switchWAL(t, conn)

	// A time before the oldest base backup ended cannot be reached.
	err := ps.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary", At: b.Snapshot.Add(-time.Minute)}, nil)
	if err == nil || !strings.Contains(err.Error(), "no base backup") {
		t.Fatalf("restore --at before the first backup: %v; want an error saying no base backup ended before that time", err)
	}

	var res workflows.RestoreResult
	if err := ps.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary", At: between}, &res); err != nil {
		t.Fatalf("restore --at: %v\nworker log:\n%s", err, ps.logs.Tail(4000))
	}
	rc := pgConnect(t, ps.restoredDSN())
	var names []string
	rows, err := rc.Query(context.Background(), "SELECT name FROM marks ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	if strings.Join(names, ",") != "t1" {
		t.Fatalf("restored to %s: marks %v; want [t1] (t2 was committed after)", between.Format(time.RFC3339Nano), names)
	}
	if res.RecoveredTo.IsZero() || res.RecoveredTo.After(between) {
		t.Errorf("recovered to %s; want the t1 commit, before %s", res.RecoveredTo, between)
	}
	rc.Close(context.Background())

	// The restored server is now a running primary: a restore by hand
	// refuses to replace it, a forced one stops it and recovers to the
	// newest WAL, reusing what the data directory holds.
	err = ps.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, nil)
	if err == nil || !strings.Contains(err.Error(), "running primary") {
		t.Fatalf("restore over a running primary: %v; want it refused", err)
	}
	var forced workflows.RestoreResult
	if err := ps.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary", Force: true}, &forced); err != nil {
		t.Fatalf("forced restore: %v\nworker log:\n%s", err, ps.logs.Tail(4000))
	}
	rc = pgConnect(t, ps.restoredDSN())
	if n := pgInt(t, rc, "SELECT count(*) FROM marks"); n != 2 {
		t.Errorf("after the forced restore to the newest WAL: %d marks, want t1 and t2", n)
	}
	if forced.ChunksLocal == 0 {
		t.Errorf("the forced restore fetched every chunk (%d), reusing none of the data directory's", forced.Chunks)
	}
}

// TestPostgresUnplannedFailover kills the primary cluster while a writer
// commits; the unplanned failover restores the secondary from the last
// base backup and the shipped WAL: every row committed up to the last
// shipped WAL is there, without a gap, and the report's RPO is the time
// from the fence back to the last replayed transaction.
func TestPostgresUnplannedFailover(t *testing.T) {
	ps := newPGStack(t, stackOptions{}, "1s")
	ps.spawnWorker()
	conn := pgConnect(t, ps.primary.DSN())
	pgExec(t, conn, "CREATE TABLE counter (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	ps.backup()
	ps.transmit()

	type commit struct {
		id int64
		at time.Time
	}
	var mu sync.Mutex
	var commits []commit
	done := make(chan struct{})
	go func() {
		defer close(done)
		wconn, err := pgx.Connect(context.Background(), ps.primary.DSN())
		if err != nil {
			return
		}
		defer wconn.Close(context.Background())
		for i := int64(1); ; i++ {
			if _, err := wconn.Exec(context.Background(), "INSERT INTO counter (id) VALUES ($1)", i); err != nil {
				return // the server was killed
			}
			mu.Lock()
			commits = append(commits, commit{i, time.Now()})
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(4 * time.Second)
	killed := time.Now()
	ps.primary.Kill(t)
	<-done

	rep, err := (&switchStack{stack: ps.stack}).failover(workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	if err != nil {
		t.Fatalf("unplanned failover: %v\nworker log:\n%s", err, ps.logs.Tail(4000))
	}
	rc := pgConnect(t, ps.restoredDSN())
	n, max := pgInt(t, rc, "SELECT count(*) FROM counter"), pgInt(t, rc, "SELECT coalesce(max(id), 0) FROM counter")
	var last time.Time
	if err := rc.QueryRow(context.Background(), "SELECT coalesce(max(at), 'epoch') FROM counter").Scan(&last); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Shipped within archive_timeout (1s) and wal-push: rows committed
	// 3s before the kill are in the archive.
	var old int64
	for _, c := range commits {
		if c.at.Before(killed.Add(-3 * time.Second)) {
			old = c.id
		}
	}
	t.Logf("failover: RTO %s, RPO %s, recovered to %s; %d rows restored of %d committed; measured loss %s",
		rep.RTO, rep.RPO, rep.RecoveredTo.Format(time.RFC3339Nano), n, len(commits), killed.Sub(last).Round(time.Millisecond))
	if n != max || n < old {
		t.Errorf("restored %d rows, max id %d; want every row up to %d (committed 3s before the kill), without a gap", n, max, old)
	}
	if rep.RecoveredTo.IsZero() || rep.RecoveredTo.Sub(last).Abs() > time.Millisecond {
		t.Errorf("report recovered to %s; the last restored row was committed at %s", rep.RecoveredTo, last)
	}
	if rep.RPO.D() < killed.Sub(last)-time.Second || rep.RPO.D() > killed.Sub(last)+time.Minute {
		t.Errorf("report RPO %s; the data lost at the kill is %s", rep.RPO, killed.Sub(last))
	}
}
