package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/minio/minio-go/v7"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/drivers/access/postgres"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// switchStack is a stack whose plan has a PostgreSQL cluster per site and an
// A record in BIND.
type switchStack struct {
	*stack
	pg   map[string]*testenv.Postgres
	bind *testenv.BIND
}

var siteAddr = map[string]string{"primary": "192.0.2.1", "secondary": "192.0.2.2"}

// The application's role in each site's PostgreSQL: the fence locks it out.
const (
	appRole     = "app"
	appPassword = "app-e2e-password"
)

// newSwitchStack starts the servers; zone, when given, replaces the DNS
// record's zone (to inject a failure).
func newSwitchStack(t *testing.T, steps string, zone ...string) *switchStack {
	return newSwitchStackIn(t, nil, steps, zone...)
}

// newSwitchStackIn is newSwitchStack with the primary's MinIO and
// PostgreSQL in the network namespace ns, when given, so that the test can
// make the primary site dark.
func newSwitchStackIn(t *testing.T, ns *testenv.NetNS, steps string, zone ...string) *switchStack {
	ss := &switchStack{pg: map[string]*testenv.Postgres{}}
	for _, site := range []string{"primary", "secondary"} {
		if site == "primary" && ns != nil {
			ss.pg[site] = testenv.StartPostgresIn(t, ns)
			continue
		}
		ss.pg[site] = testenv.StartPostgres(t)
	}
	ss.bind = testenv.StartBIND(t)
	ss.stack = newStack(t, stackOptions{darkable: ns, planExtra: func(s *stack) string {
		var b []byte
		b = append(b, "    access:\n"...)
		for _, site := range []string{"primary", "secondary"} {
			p := ss.pg[site]
			env := "E2E_PG_" + site
			s.setenv(env, p.Password)
			b = fmt.Appendf(b, "      %s:\n        - {driver: postgres, host: %s, port: %d, user: %s, password: env:%s, database: %s, sslmode: disable, roles: [%s]}\n",
				site, p.Host, p.Port, p.User, env, p.Database, appRole)
		}
		s.setenv("E2E_TSIG", ss.bind.KeySecret)
		z := ss.bind.Zone
		if len(zone) > 0 {
			z = zone[0]
		}
		b = fmt.Appendf(b, "    dns:\n      - {server: %s, zone: %s, name: app, type: A, ttl: 30, values: {primary: %s, secondary: %s}, tsig: {name: %s, secret: env:E2E_TSIG}}\n",
			ss.bind.Addr, z, siteAddr["primary"], siteAddr["secondary"], ss.bind.KeyName)
		return string(b) + steps
	}})
	// The plan starts as a running production would: the primary's database
	// open for writes, the standby's read-only.
	for _, p := range ss.pg {
		for _, sql := range []string{
			"CREATE TABLE orders (id serial PRIMARY KEY, note text)",
			"CREATE ROLE " + appRole + " LOGIN PASSWORD '" + appPassword + "'",
			"GRANT SELECT, INSERT ON orders TO " + appRole, "GRANT USAGE ON SEQUENCE orders_id_seq TO " + appRole,
		} {
			if err := ss.exec(p, sql); err != nil {
				t.Fatal(err)
			}
		}
	}
	for site, mode := range map[string]access.Mode{"primary": access.ReadWrite, "secondary": access.ReadOnly} {
		ss.setMode(site, mode)
	}
	return ss
}

func (ss *switchStack) setMode(site string, mode access.Mode) {
	ss.t.Helper()
	p := ss.pg[site]
	a, err := postgres.New(postgres.Config{Host: p.Host, Port: p.Port, User: p.User, Password: secret.New("test", p.Password), Database: p.Database, SSLMode: "disable",
		Roles: []string{appRole}})
	if err != nil {
		ss.t.Fatal(err)
	}
	if err := a.SetMode(context.Background(), mode); err != nil {
		ss.t.Fatalf("set %s %s: %v", site, mode, err)
	}
}

func (ss *switchStack) exec(p *testenv.Postgres, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		ss.t.Fatalf("connect %s: %v", p.DSN(), err)
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// writable reports whether the site's database accepts a write from a new
// session of the application's role, as the application would see it: not
// when the role may not log in or the transaction is read-only.
func (ss *switchStack) writable(site string) bool {
	ss.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(ss.pg[site].DSN())
	if err != nil {
		ss.t.Fatal(err)
	}
	cfg.User, cfg.Password = appRole, appPassword
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		_, err = conn.Exec(ctx, "INSERT INTO orders (note) VALUES ('probe')")
		conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return true
	case errors.As(err, &pgErr) && (pgErr.Code == "25006" || pgErr.Code == "28000"): // read-only transaction, not permitted to log in
		return false
	}
	ss.t.Fatalf("write probe at %s: %v", site, err)
	return false
}

func (ss *switchStack) failover(in workflows.FailoverInput) (workflows.SwitchReport, error) {
	ss.t.Helper()
	run, err := ss.cl.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: workflows.SwitchWorkflowID(plan) + "-" + ss.queue, TaskQueue: ss.queue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL, WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, workflows.Failover, in)
	if err != nil {
		ss.t.Fatal(err)
	}
	ss.runs = append(ss.runs, run)
	var rep workflows.SwitchReport
	err = ss.wait(run, &rep)
	return rep, err
}

func TestPlannedFailover(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.startWorker()
	src := ss.source("primary")
	genTree(t, src, treeSpec{seed: 9, dataBytes: 8 << 20, files: 30})
	ss.backup()
	ss.transmit()
	// Written after the last backup: a planned failover must not lose it.
	if err := os.WriteFile(filepath.Join(src, "written-just-before.txt"), []byte("the last order"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !ss.writable("primary") || ss.writable("secondary") {
		t.Fatal("the plan did not start with only the primary writable")
	}

	rep, err := ss.failover(workflows.FailoverInput{Plan: plan})
	if err != nil {
		t.Fatalf("planned failover: %v\n%s", err, ss.logs.Tail(4000))
	}
	if rep.Outcome != "completed" || !rep.Fenced || rep.To != "secondary" || rep.RTO <= 0 {
		t.Fatalf("report: %+v", rep)
	}
	t.Logf("planned failover: RTO %s, RPO %s, point %s, epoch %d", rep.RTO, rep.RPO, rep.Point, rep.Epoch)

	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["secondary"] {
		t.Fatalf("BIND answers app = %v, want %s", got, siteAddr["secondary"])
	}
	if !ss.writable("secondary") {
		t.Fatal("the new active site's database refuses writes")
	}
	if ss.writable("primary") {
		t.Fatal("the old active site's database still accepts writes")
	}
	got, err := os.ReadFile(filepath.Join(ss.source("secondary"), "written-just-before.txt"))
	if err != nil || string(got) != "the last order" {
		t.Fatalf("the file written just before the switchover is not at the secondary: %q, %v", got, err)
	}
	requireSameTree(t, src, ss.source("secondary"))
	requireNoSecrets(t, ss.stack)
}

func TestSecondFailoverIsRefused(t *testing.T) {
	ss := newSwitchStack(t, "    steps:\n      - {name: hold, approval: {timeout: 10m}}\n")
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 10, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()
	opts := client.StartWorkflowOptions{ID: workflows.SwitchWorkflowID(plan) + "-" + ss.queue, TaskQueue: ss.queue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL, WorkflowExecutionErrorWhenAlreadyStarted: true}
	first, err := ss.cl.ExecuteWorkflow(context.Background(), opts, workflows.Failover, workflows.FailoverInput{Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ss.cl.ExecuteWorkflow(context.Background(), opts, workflows.Failover, workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	var running *serviceerror.WorkflowExecutionAlreadyStarted
	if !errors.As(err, &running) {
		t.Fatalf("a second failover while one runs: %v; want it refused", err)
	}
	// An approve before any step waits is refused, not kept for later.
	if err := ss.update(first.GetID(), workflows.UpdateApprove, workflows.ApproveUpdate{By: "early"}, nil); err == nil || !strings.Contains(err.Error(), "waits for approval now") {
		t.Fatalf("an approve before the gate: %v; want it refused", err)
	}
	waitFor(t, "the failover to wait for approval", 2*time.Minute, func() bool {
		v, err := ss.cl.QueryWorkflow(context.Background(), first.GetID(), first.GetRunID(), workflows.QueryProgress)
		var p workflows.Progress
		return err == nil && v.Get(&p) == nil && p.Waiting != ""
	})
	// A switch started under another id (as `temporal workflow start`
	// or the Web UI may) is refused by the plan lock, naming the first.
	other := ss.start("failover", workflows.Failover, workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	if err := ss.wait(other, nil); err == nil || !strings.Contains(err.Error(), first.GetID()) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("a failover under another id while one runs: %v; want it refused naming %s", err, first.GetID())
	}
	// So is a backup of the plan while the switch runs.
	if err := ss.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil); err == nil || !strings.Contains(err.Error(), "failover of the plan is running") {
		t.Fatalf("a backup during a failover: %v; want it refused", err)
	}
	// The approval names the step that waits; another name is refused.
	if err := ss.update(first.GetID(), workflows.UpdateApprove, workflows.ApproveUpdate{Step: "other", By: "test"}, nil); err == nil || !strings.Contains(err.Error(), "step hold does") {
		t.Fatalf("approving a step that does not wait: %v; want it refused", err)
	}
	var approved workflows.ApproveResult
	if err := ss.update(first.GetID(), workflows.UpdateApprove, workflows.ApproveUpdate{Step: "hold", By: "test"}, &approved); err != nil || approved.Step != "hold" {
		t.Fatalf("approve: %+v, %v", approved, err)
	}
	var rep workflows.SwitchReport
	if err := ss.wait(first, &rep); err != nil || rep.Outcome != "completed" {
		t.Fatalf("approved failover: %+v, %v", rep, err)
	}
}

// productionState is what a drill must leave alone.
func (ss *switchStack) productionState() string {
	ss.t.Helper()
	var b []byte
	for _, site := range []string{"primary", "secondary"} {
		b = fmt.Appendf(b, "%s writable=%v; ", site, ss.writable(site))
	}
	b = fmt.Appendf(b, "dns=%v; ", ss.bind.Query(ss.t, "app."+ss.bind.Zone, "A"))
	for _, site := range []string{"primary", "secondary"} {
		tree := readTree(ss.t, ss.source(site))
		for _, p := range slices.Sorted(maps.Keys(tree)) {
			b = fmt.Appendf(b, "%s:%q=%+v\n", site, p, tree[p])
		}
	}
	return string(b)
}

func TestDrill(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 11, dataBytes: 16 << 20, files: 40, sparseSize: 64 << 20})
	ss.backup()
	ss.transmit()
	ss.restore("secondary", "") // a warm standby, which the drill must not touch either
	if err := ss.exec(ss.pg["primary"], "INSERT INTO orders (note) VALUES ('before the drill')"); err != nil {
		t.Fatal(err)
	}
	before := ss.productionState()
	drill := func() workflows.DrillReport {
		var rep workflows.DrillReport
		if err := ss.run(workflows.OpDrill, workflows.Drill, workflows.DrillInput{Plan: plan}, &rep); err != nil {
			t.Fatalf("drill: %v\n%s", err, ss.logs.Tail(3000))
		}
		if _, err := os.Stat(rep.Sandbox); !os.IsNotExist(err) {
			t.Fatalf("the drill left its sandbox %s behind (%v)", rep.Sandbox, err)
		}
		if after := ss.productionState(); after != before {
			t.Fatalf("the drill changed production:\nbefore %s\nafter  %s", before, after)
		}
		return rep
	}

	rep := drill()
	if !rep.Passed || rep.Verified == 0 || rep.RTO <= 0 {
		t.Fatalf("a drill on good data: %+v", rep)
	}
	t.Logf("drill passed: %d chunks verified, implied RTO %s", rep.Verified, rep.RTO)

	// A corrupted chunk at the standby fails the drill, naming the chunk.
	victim := ""
	for key := range ss.chunkObjects("secondary") {
		victim = key
		break
	}
	mc := ss.minio["secondary"].Client(t)
	if _, err := mc.PutObject(context.Background(), "drorch", victim, bytes.NewReader([]byte("garbage")), 7, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	rep = drill()
	id := victim[strings.LastIndex(victim, "/")+1:]
	if rep.Passed || !strings.Contains(strings.Join(rep.Problems, "\n"), id) {
		t.Fatalf("a drill on a corrupted chunk: passed=%v problems=%v; want a failure naming %s", rep.Passed, rep.Problems, id)
	}
}

// A failure after fencing (DNS for a zone the server does not have) stops
// the failover with a clear, non-retried error and undoes it: the old site is
// writable again, the new one is not, and the report says what was undone.
func TestFailoverFailureAfterFencingCompensates(t *testing.T) {
	ss := newSwitchStack(t, "", "nope.test")
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 12, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()
	_, err := ss.failover(workflows.FailoverInput{Plan: plan})
	if err == nil || !strings.Contains(err.Error(), "nope.test") {
		t.Fatalf("failover with a missing zone: %v; want an error naming the zone", err)
	}
	if !ss.writable("primary") || ss.writable("secondary") {
		t.Fatalf("after the failover was undone: primary writable=%v, secondary writable=%v; want only the primary", ss.writable("primary"), ss.writable("secondary"))
	}
	var st workflows.StatusResult
	if err := ss.run(workflows.OpStatus, workflows.Status, workflows.StatusInput{Plan: plan}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Active != "primary" || len(st.Reports) != 1 || st.Reports[0].Outcome != "compensated" || len(st.Reports[0].Compensation) == 0 {
		t.Fatalf("status after the undone failover: active %s, reports %+v", st.Active, st.Reports)
	}
	t.Logf("undone: %v", st.Reports[0].Compensation)
}

// The DNS server down when the failover reaches DNS: the step is retried
// and the failover completes once the server is back.
func TestFailoverRetriesDNSUntilTheServerIsBack(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 13, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()
	ss.bind.Stop(t)
	ss.cli("failover", "--plan", plan)
	// drorch status shows the step being retried, and why.
	waitFor(t, "status to show the DNS step retried", 3*time.Minute, func() bool {
		p := ss.cliStatus().InProgress
		return p != nil && strings.Contains(p.Retrying, "SwitchDNS attempt")
	})
	if out := ss.cli("status", "--plan", plan); !strings.Contains(out, "retrying: SwitchDNS attempt") {
		t.Fatalf("status does not say the DNS step is retried:\n%s", out)
	}
	ss.bind.Start(t)
	var st workflows.StatusResult
	waitFor(t, "the failover to end once BIND is back", 3*time.Minute, func() bool {
		st = ss.cliStatus()
		return st.InProgress == nil
	})
	if n := len(st.Reports); n == 0 || st.Reports[n-1].Outcome != "completed" || st.Active != "secondary" {
		t.Fatalf("failover across a DNS outage: active %s, reports %+v", st.Active, st.Reports)
	}
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["secondary"] {
		t.Fatalf("BIND answers app = %v after it came back, want %s", got, siteAddr["secondary"])
	}
	if !ss.writable("secondary") || ss.writable("primary") {
		t.Fatal("after the failover only the secondary must be writable")
	}
	t.Logf("RTO across a DNS outage: %s", st.Reports[len(st.Reports)-1].RTO)
}
