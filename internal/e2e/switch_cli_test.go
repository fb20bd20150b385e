package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/workflows"
)

// cli runs drorch and returns its output, failing the test if it fails.
func (ss *switchStack) cli(args ...string) string {
	ss.t.Helper()
	out, errOut, err := ss.drorch(args...)
	if err != nil {
		ss.t.Fatalf("drorch %s: %v\n%s\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// cliStatus is drorch status --json.
func (ss *switchStack) cliStatus() workflows.StatusResult {
	ss.t.Helper()
	var st workflows.StatusResult
	if out := ss.cli("status", "--plan", plan, "--json"); json.Unmarshal([]byte(out), &st) != nil {
		ss.t.Fatalf("status --json: %s", out)
	}
	return st
}

// The switching commands as an operator runs them: failover, status while a
// data recovery waits, complete, report, permanent-failover; each with
// --json where a script would parse it.
func TestSwitchingCLI(t *testing.T) {
	ss := newSwitchStack(t, failbackSettings)
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 31, dataBytes: 2 << 20, files: 10})
	ss.backup()
	ss.transmit()
	cli, status := ss.cli, ss.cliStatus

	if _, errOut, err := ss.drorch("complete", "--plan", plan); err == nil || !strings.Contains(errOut, "no data recovery (failback) of plan files is running") {
		t.Fatalf("complete with nothing running: %v\n%s", err, errOut)
	}
	var rep workflows.SwitchReport
	if out := cli("failover", "--plan", plan, "--unplanned", "--wait", "--json"); json.Unmarshal([]byte(out), &rep) != nil || rep.Outcome != "completed" || rep.To != "secondary" {
		t.Fatalf("failover --json: %s", out)
	}
	if st := status(); st.Active != "secondary" || st.InProgress != nil {
		t.Fatalf("status after the failover: active %s, in progress %+v", st.Active, st.InProgress)
	}

	if out := cli("failback", "--plan", plan); !strings.Contains(out, "drorch/files/switch") {
		t.Fatalf("failback without --wait prints the run: %s", out)
	}
	waitFor(t, "status to show the data recovery caught up", 5*time.Minute, func() bool {
		st := status()
		return st.InProgress != nil && st.InProgress.Operation == workflows.OpFailback && strings.Contains(st.InProgress.Waiting, "drorch complete")
	})
	if out := cli("status", "--plan", plan); !strings.Contains(out, "in progress") || !strings.Contains(out, "caught up") {
		t.Fatalf("status does not show the data recovery: %s", out)
	}
	if _, errOut, err := ss.drorch("failover", "--plan", plan); err == nil || !strings.Contains(errOut, "already running") {
		t.Fatalf("a failover during data recovery: %v\n%s", err, errOut)
	}
	rep = workflows.SwitchReport{}
	if out := cli("complete", "--plan", plan, "--wait", "--json"); json.Unmarshal([]byte(out), &rep) != nil || rep.Outcome != "completed" || rep.Operation != workflows.OpFailback || rep.To != "primary" {
		t.Fatalf("complete --wait --json: %s", out)
	}
	if st := status(); st.Active != "primary" || st.InProgress != nil {
		t.Fatalf("status after the failback: active %s, in progress %+v", st.Active, st.InProgress)
	}
	if out := cli("report", "--plan", plan); !strings.Contains(out, "failover unplanned") || !strings.Contains(out, "failback") {
		t.Fatalf("report lacks the failover or the failback:\n%s", out)
	}

	cli("failover", "--plan", plan, "--wait")
	if out := cli("permanent-failover", "--plan", plan, "--wait"); !strings.Contains(out, "permanent-failover") || !strings.Contains(out, "completed") {
		t.Fatalf("permanent-failover --wait:\n%s", out)
	}
	if st := status(); st.Primary != "secondary" || st.Secondary != "primary" || st.Active != "secondary" {
		t.Fatalf("roles after the permanent failover: %+v", st)
	}
	if out := cli("status", "--plan", plan); !strings.Contains(out, "primary secondary, secondary primary") {
		t.Fatalf("status does not show the new roles:\n%s", out)
	}
	requireReplays(ss.stack)
}
