package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// logicalTables are the tables of the logical round trip, each with the
// order its checksum reads it in.
var logicalTables = map[string]string{"items": "id", `"Odd Name ✓"`: "k", "plain": "t::text"}

// tableSums is, per table, its row count and an md5 of every row as text,
// in a fixed order: two databases with the same sums hold the same rows.
func tableSums(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	sums := map[string]string{}
	for table, order := range logicalTables {
		var n int64
		var sum *string
		q := fmt.Sprintf("SELECT count(*), md5(string_agg(t::text, E'\\n' ORDER BY %s)) FROM %s t", order, table)
		if err := conn.QueryRow(context.Background(), q).Scan(&n, &sum); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		s := "<none>"
		if sum != nil {
			s = *sum
		}
		sums[table] = fmt.Sprintf("%d rows, md5 %s", n, s)
	}
	return sums
}

func sameSums(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for table, w := range want {
		if got[table] != w {
			t.Errorf("%s: table %s has %s at the standby, want %s as at the primary", what, table, got[table], w)
		}
	}
}

// A postgres source in logical mode: pg_dump of the primary's database
// "app", streamed into a restore point, transmitted, and restored with
// pg_restore into the secondary's database "standby_app", created by the
// first restore. Every row comes back identical (NULLs, unicode, every
// byte value in bytea, a 4 MiB text), also after a second round trip that
// changed, deleted and added rows at the primary and put a stray row into
// the standby's copy. A restore into the standby while a client is
// connected to it and it is read-write is refused, naming the server, and
// passes with --force; a read-only standby (as a fenced site is) takes the
// restore with clients connected.
func TestPostgresLogicalRoundTrip(t *testing.T) {
	primary, secondary := testenv.StartPostgres(t), testenv.StartPostgres(t)
	t.Setenv("E2E_PGL_PRIMARY", primary.Password)
	t.Setenv("E2E_PGL_SECONDARY", secondary.Password)
	s := newStack(t, stackOptions{source: func(s *stack, site string) string {
		pg, db := primary, "app"
		if site == "secondary" {
			pg, db = secondary, "standby_app"
		}
		return fmt.Sprintf("{driver: postgres, mode: logical, host: %s, port: %d, user: %s, password: env:E2E_PGL_%s, database: %s, sslmode: disable}",
			pg.Host, pg.Port, pg.User, strings.ToUpper(site), db)
	}})
	s.secrets = append(s.secrets, primary.Password, secondary.Password)
	if s.cfg.Plans[plan].ShipsWAL() {
		t.Fatal("a logical plan ships WAL")
	}
	s.startWorker()
	standbyDSN := strings.Replace(secondary.DSN(), "/"+secondary.Database+"?", "/standby_app?", 1)
	if standbyDSN == secondary.DSN() {
		t.Fatalf("cannot derive the standby database's DSN from %s", secondary.DSN())
	}

	pc := pgConnect(t, primary.DSN())
	pgExec(t, pc, `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, note text, data bytea, big text,
		price numeric(12,3), at timestamptz, tags text[], doc jsonb)`)
	pgExec(t, pc, `INSERT INTO items
		SELECT i, 'item ' || i || ' héllo wörld ✓ 日本語 🐘 tab	quote'' back\slash',
			CASE WHEN i % 7 = 0 THEN NULL ELSE E'line one\nline two' END,
			CASE WHEN i % 5 = 0 THEN NULL ELSE decode(md5(i::text) || md5((i+1)::text), 'hex') END,
			NULL, i * 1.125, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute',
			ARRAY['a', NULL, 'ü'], jsonb_build_object('i', i, 'nul', NULL, 'ε', 'λ')
		FROM generate_series(1, 3000) i`)
	// Every byte value, and a 4 MiB text that does not compress to nothing.
	pgExec(t, pc, `INSERT INTO items (id, name, data, big) VALUES
		(0, 'all bytes', (SELECT string_agg(set_byte('\x00'::bytea, 0, b), ''::bytea) FROM generate_series(0, 255) b),
		 (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 131072) g))`)
	pgExec(t, pc, `CREATE TABLE "Odd Name ✓" (k text PRIMARY KEY, v bigint)`)
	pgExec(t, pc, `INSERT INTO "Odd Name ✓" VALUES ('', 0), ('NULL', NULL), ('ключ', 9223372036854775807)`)
	pgExec(t, pc, `CREATE TABLE plain (t text)`) // no key, duplicate and NULL rows
	pgExec(t, pc, `INSERT INTO plain VALUES ('same'), ('same'), (NULL), ('')`)
	want := tableSums(t, pc)
	t.Logf("primary: %v", want)

	first := s.backup()
	if !strings.Contains(first.Source, "pg_dump") || !strings.Contains(first.Source, `"app"`) {
		t.Errorf("backup source %q, want pg_dump of database app", first.Source)
	}
	s.transmit()
	res := s.restore("secondary", "")
	if res.Point != first.Point || !strings.Contains(res.Target, "standby_app") {
		t.Fatalf("restored %s into %q, want %s into standby_app", res.Point, res.Target, first.Point)
	}
	sc := pgConnect(t, standbyDSN)
	sameSums(t, "first round trip", tableSums(t, sc), want)

	// Second round: rows change at the primary, and the standby's copy
	// gets a row of its own, which the restore must not keep.
	pgExec(t, pc, `UPDATE items SET note = NULL, name = name || ' ∆' WHERE id % 3 = 0`)
	pgExec(t, pc, `DELETE FROM items WHERE id BETWEEN 100 AND 199`)
	pgExec(t, pc, `INSERT INTO items (id, name, note) VALUES (5000, 'new', 'après')`)
	pgExec(t, pc, `DELETE FROM plain WHERE t IS NULL`)
	want = tableSums(t, pc)
	pgExec(t, sc, `INSERT INTO items (id, name) VALUES (9999, 'only at the standby')`)
	second := s.backup()
	t.Logf("dumps: first read %d bytes in %d chunks, stored %d new; second read %d in %d chunks, stored %d new in %d", first.BytesRead, first.Chunks, first.BytesNew, second.BytesRead, second.Chunks, second.BytesNew, second.ChunksNew)
	s.transmit()

	// sc is still connected and the database is read-write: refused.
	err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, nil)
	server := fmt.Sprintf("%s port %d", secondary.Host, secondary.Port)
	if err == nil || !strings.Contains(err.Error(), "read-write") || !strings.Contains(err.Error(), "client session") ||
		!strings.Contains(err.Error(), server) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore into a read-write standby with a client connected: %v; want it refused, naming %s", err, server)
	}
	t.Logf("refused: %v", err)
	if n := pgInt(t, sc, "SELECT count(*) FROM items WHERE id = 9999"); n != 1 {
		t.Fatal("the refused restore changed the standby's data")
	}
	var forced workflows.RestoreResult
	if err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary", Force: true}, &forced); err != nil {
		t.Fatalf("forced restore: %v\nworker log:\n%s", err, s.logs.Tail(4000))
	}
	if forced.Point != second.Point {
		t.Fatalf("forced restore of %s, want the newest point %s", forced.Point, second.Point)
	}
	sameSums(t, "second round trip (forced)", tableSums(t, sc), want)

	// A read-only standby (what fencing makes of a site) takes a restore
	// with a client connected, and stays read-only.
	pgExec(t, sc, `ALTER DATABASE standby_app SET default_transaction_read_only = on`)
	pgExec(t, pc, `INSERT INTO plain VALUES ('third')`)
	want = tableSums(t, pc)
	s.backup()
	s.transmit()
	ro := pgConnect(t, standbyDSN)
	s.restore("secondary", "")
	sameSums(t, "restore into a read-only standby", tableSums(t, ro), want)
	if _, err := pgConnect(t, standbyDSN).Exec(context.Background(), "INSERT INTO plain VALUES ('x')"); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("the standby took a write after the restore (%v): it must stay read-only", err)
	}
}

// A logical restore whose pg_restore fails fails the restore with its
// stderr, cleaned of secrets, and leaves the standby's database as it was
// (one transaction); --at is refused for a logical plan.
func TestPostgresLogicalRestoreFails(t *testing.T) {
	primary, secondary := testenv.StartPostgres(t), testenv.StartPostgres(t)
	t.Setenv("E2E_PGLF_PRIMARY", primary.Password)
	t.Setenv("E2E_PGLF_SECONDARY", secondary.Password)
	s := newStack(t, stackOptions{source: func(s *stack, site string) string {
		pg := primary
		if site == "secondary" {
			pg = secondary
		}
		return fmt.Sprintf("{driver: postgres, mode: logical, host: %s, port: %d, user: %s, password: env:E2E_PGLF_%s, database: app, sslmode: disable}",
			pg.Host, pg.Port, pg.User, strings.ToUpper(site))
	}, planExtra: func(s *stack) string {
		return "    drill: {sandbox: " + filepath.Join(s.dir, "sandbox") + "}\n" +
			"    steps: [{name: dump, on: [drill], after: [{exec: [" + filepath.Join(pgBin, "pg_restore") + ", --list, " + filepath.Join(s.dir, "sandbox", "stream") + "]}]}]\n"
	}})
	s.startWorker()
	pc := pgConnect(t, primary.DSN())
	pgExec(t, pc, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	pgExec(t, pc, `INSERT INTO t SELECT i, 'v' || i FROM generate_series(1, 100) i`)
	s.backup()
	s.transmit()
	// The standby has a view on t that the primary lacks: --clean cannot
	// drop t, and pg_restore fails on it.
	sc := pgConnect(t, secondary.DSN())
	pgExec(t, sc, `CREATE TABLE t (id int PRIMARY KEY, v text)`)
	pgExec(t, sc, `INSERT INTO t VALUES (-1, 'standby only')`)
	pgExec(t, sc, `CREATE VIEW v AS SELECT * FROM t`)
	sc.Close(context.Background())

	err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, nil)
	if err == nil || !strings.Contains(err.Error(), "pg_restore") || !strings.Contains(err.Error(), "exited with status 1") ||
		!strings.Contains(err.Error(), "depend") {
		t.Fatalf("restore with pg_restore failing: %v; want its exit status and stderr", err)
	}
	t.Logf("failed: %v", err)
	for _, secret := range s.secrets {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows a secret: %v", err)
		}
	}
	sc = pgConnect(t, secondary.DSN())
	if n := pgInt(t, sc, "SELECT count(*) FROM t"); n != 1 {
		t.Errorf("after the failed restore the standby's t has %d rows, want its 1 (the restore is one transaction)", n)
	}
	// A drill writes the dump into its sandbox, verifies every byte, and
	// its step has pg_restore read it; the standby is untouched.
	var drill workflows.DrillReport
	if err := s.run(workflows.OpDrill, workflows.Drill, workflows.DrillInput{Plan: plan}, &drill); err != nil || !drill.Passed {
		t.Fatalf("drill: %v, passed %v, problems %q", err, drill.Passed, drill.Problems)
	}
	if n := pgInt(t, sc, "SELECT count(*) FROM t"); n != 1 {
		t.Errorf("the drill changed the standby's database: t has %d rows", n)
	}
	err = s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary", At: time.Now()}, nil)
	if err == nil || !strings.Contains(err.Error(), "--at needs a postgres source in physical mode") {
		t.Errorf("restore --at of a logical plan: %v; want it refused", err)
	}
}
