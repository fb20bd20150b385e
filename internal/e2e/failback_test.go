package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/workflows"
)

// failbackSettings make data recovery quick enough for a test: a round
// every two seconds, caught up under a minute of lag.
const failbackSettings = "    failback: {lagThreshold: 1m, interval: 2s}\n"

// startSwitch starts a switching workflow under the plan's switch id (made
// unique per test, as failover does).
func (ss *switchStack) startSwitch(wf, in any) client.WorkflowRun {
	ss.t.Helper()
	run, err := ss.cl.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: workflows.SwitchWorkflowID(plan) + "-" + ss.queue, TaskQueue: ss.queue,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL, WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, wf, in)
	if err != nil {
		ss.t.Fatal(err)
	}
	ss.runs = append(ss.runs, run)
	return run
}

// progress asks the newest run of a switching workflow for its progress.
func (ss *switchStack) progress(run client.WorkflowRun) workflows.Progress {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p workflows.Progress
	if v, err := ss.cl.QueryWorkflow(ctx, run.GetID(), "", workflows.QueryProgress); err == nil {
		_ = v.Get(&p)
	}
	return p
}

func (ss *switchStack) status() workflows.StatusResult {
	ss.t.Helper()
	var st workflows.StatusResult
	if err := ss.run(workflows.OpStatus, workflows.Status, workflows.StatusInput{Plan: plan}, &st); err != nil {
		ss.t.Fatalf("status: %v", err)
	}
	return st
}

// failback runs data recovery to its end: it waits until the primary has
// caught up, then sends complete.
func (ss *switchStack) failback() workflows.SwitchReport {
	ss.t.Helper()
	run := ss.startSwitch(workflows.Failback, workflows.FailbackInput{Plan: plan})
	waitFor(ss.t, "data recovery to catch up", 5*time.Minute, func() bool {
		return strings.Contains(ss.progress(run).Waiting, "caught up")
	})
	if err := ss.update(run.GetID(), workflows.UpdateComplete, workflows.CompleteSignal{By: "e2e"}, nil); err != nil {
		ss.t.Fatal(err)
	}
	var rep workflows.SwitchReport
	if err := ss.wait(run, &rep); err != nil {
		ss.t.Fatalf("failback: %v\n%s", err, ss.logs.Tail(4000))
	}
	return rep
}

// update sends a workflow update to the running workflow id and waits for
// its answer (into res unless nil); a validator's refusal is the error.
func (s *stack) update(id, name string, arg, res any) error {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := s.cl.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: id, UpdateName: name, Args: []any{arg}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err != nil {
		return err
	}
	return h.Get(ctx, res)
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A failover, writes at the secondary, then data recovery: the writes come
// back to the primary, which is the only writable site again, DNS answers
// it, and what the primary held only itself is kept as a restore point.
// Then the plan's roles are reversed for good.
func TestFailbackAndPermanentFailover(t *testing.T) {
	ss := newSwitchStack(t, failbackSettings)
	ss.startWorker()
	primary, secondary := ss.source("primary"), ss.source("secondary")
	genTree(t, primary, treeSpec{seed: 11, dataBytes: 4 << 20, files: 20})
	ss.backup()
	ss.transmit()
	if _, err := ss.failover(workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned}); err != nil {
		t.Fatalf("failover: %v\n%s", err, ss.logs.Tail(4000))
	}

	// Production runs at the secondary; the primary's directory holds a
	// file that never reached it (written as the disaster struck).
	writeFile(t, filepath.Join(secondary, "written-at-the-secondary.txt"), "order 1001")
	if err := os.RemoveAll(filepath.Join(secondary, "d0")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(primary, "only-at-the-primary.txt"), "order 1000")
	if !ss.writable("secondary") || ss.writable("primary") {
		t.Fatal("after the failover only the secondary should be writable")
	}

	rep := ss.failback()
	t.Logf("failback: %d rounds, lag %s, downtime %s, preserved %s, steps %d", rep.Rounds, rep.Lag, rep.RTO, rep.Preserved, len(rep.Steps))
	if rep.Outcome != "completed" || rep.From != "secondary" || rep.To != "primary" || rep.Preserved == "" || rep.RPO != 0 {
		t.Fatalf("report: %+v", rep)
	}
	requireSameTree(t, secondary, primary)
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["primary"] {
		t.Fatalf("BIND answers app = %v, want the primary's %s", got, siteAddr["primary"])
	}
	if !ss.writable("primary") || ss.writable("secondary") {
		t.Fatal("after the failback only the primary should be writable")
	}
	st := ss.status()
	if st.Active != "primary" || st.Primary != "primary" {
		t.Fatalf("status after failback: active %s, primary %s", st.Active, st.Primary)
	}
	for _, s := range st.Sites {
		if s.State.Epoch.Epoch != st.Epoch || s.State.Epoch.Active != "primary" {
			t.Fatalf("site %s records epoch %+v, want %d naming the primary", s.Site, s.State.Epoch, st.Epoch)
		}
	}
	// Forward replication resumed: the secondary holds a point of the new epoch.
	for _, s := range st.Sites {
		if s.Site == "secondary" && (s.State.Latest == "" || s.State.Latest <= rep.Point) {
			t.Fatalf("the secondary's latest point %q is not newer than the failback's %q", s.State.Latest, rep.Point)
		}
	}
	// The primary's own write is in the preserved restore point.
	kept := filepath.Join(t.TempDir(), "kept")
	var res workflows.RestoreResult
	if err := ss.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", Point: rep.Preserved, To: kept}, &res); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(kept, "only-at-the-primary.txt")); err != nil || string(b) != "order 1000" {
		t.Fatalf("the preserved point lacks the primary's own write: %q %v", b, err)
	}

	// A data recovery with nothing to recover is refused.
	var none workflows.SwitchReport
	if err := ss.wait(ss.startSwitch(workflows.Failback, workflows.FailbackInput{Plan: plan}), &none); err == nil || !strings.Contains(err.Error(), "nothing to fail back") {
		t.Fatalf("failback at the primary: %v", err)
	}

	// Permanent failover: switch over, then make it permanent.
	if _, err := ss.failover(workflows.FailoverInput{Plan: plan}); err != nil {
		t.Fatalf("switchover: %v", err)
	}
	var perm workflows.SwitchReport
	if err := ss.wait(ss.startSwitch(workflows.PermanentFailover, workflows.PermanentFailoverInput{Plan: plan}), &perm); err != nil {
		t.Fatalf("permanent failover: %v\n%s", err, ss.logs.Tail(4000))
	}
	st = ss.status()
	if st.Primary != "secondary" || st.Secondary != "primary" || st.Active != "secondary" {
		t.Fatalf("roles after the permanent failover: primary %s, secondary %s, active %s", st.Primary, st.Secondary, st.Active)
	}
	for _, s := range st.Sites {
		if s.State.Epoch.Primary != "secondary" {
			t.Fatalf("site %s does not record the new roles: %+v", s.Site, s.State.Epoch)
		}
	}
	// Later operations use the new roles: backups run at the new primary,
	// and there is nothing to fail back.
	if b := ss.backup(); b.Site != "secondary" {
		t.Fatalf("a backup after the permanent failover ran at %s", b.Site)
	}
	if err := ss.wait(ss.startSwitch(workflows.Failback, workflows.FailbackInput{Plan: plan}), &none); err == nil || !strings.Contains(err.Error(), "active at its primary secondary") {
		t.Fatalf("failback after the permanent failover: %v", err)
	}
	requireReplays(ss.stack)
}
