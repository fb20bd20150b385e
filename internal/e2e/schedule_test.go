package e2e

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/workflows"
)

// drorch schedule apply is idempotent, keeps a schedule whose plan left the
// config unless --prune, and a triggered run protects the plan.
func TestScheduleApply(t *testing.T) {
	s := newStack(t, stackOptions{})
	// Schedule ids are namespace-wide: a plan name of this test's own.
	name := "sched-" + randomHex(4)
	base, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write := func(extra string) {
		cfg := strings.Replace(string(base), "\n  "+plan+":\n", "\n  "+name+":\n", 1) + extra
		if err := os.WriteFile(s.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if s.cfg, err = config.Load(s.cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	write("    schedule: {every: 1h}\n")
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 5, dataBytes: 1 << 20, files: 4})
	cli := func(want string, args ...string) string {
		t.Helper()
		out, errOut, err := s.drorch(append([]string{"schedule"}, args...)...)
		if err != nil {
			t.Fatalf("drorch schedule %v: %v\n%s%s", args, err, out, errOut)
		}
		if !strings.Contains(out, want) {
			t.Fatalf("drorch schedule %v printed %q, want %q", args, out, want)
		}
		return out
	}
	id := workflows.ScheduleID(name)
	h := s.cl.ScheduleClient().GetHandle(context.Background(), id)
	t.Cleanup(func() { _ = h.Delete(context.Background()) })

	cli("plan "+name+": created", "apply", "--plan", name)
	desc, err := h.Describe(context.Background())
	if err != nil {
		t.Fatalf("describe %s: %v", id, err)
	}
	if desc.Schedule.Policy.Overlap.String() != "Skip" || desc.Schedule.Policy.CatchupWindow != time.Hour {
		t.Errorf("policies %+v: want overlap skip, catch-up 1h", desc.Schedule.Policy)
	}
	updated := desc.Info.LastUpdateAt

	cli("plan "+name+": unchanged", "apply", "--plan", name)
	if desc, _ = h.Describe(context.Background()); !desc.Info.LastUpdateAt.Equal(updated) {
		t.Errorf("an unchanged apply updated the schedule (%s → %s)", updated, desc.Info.LastUpdateAt)
	}
	// A pause by hand survives an unchanged apply.
	cli("paused", "pause", "--plan", name, "--note", "maintenance")
	cli("unchanged", "apply", "--plan", name)
	if desc, _ = h.Describe(context.Background()); !desc.Schedule.State.Paused || desc.Schedule.State.Note != "maintenance" {
		t.Errorf("state after apply: %+v, want paused by hand with its note", desc.Schedule.State)
	}
	cli("unpaused", "unpause", "--plan", name)

	write("    schedule: {every: 2h}\n")
	cli("plan "+name+": updated", "apply", "--plan", name)
	if desc, _ = h.Describe(context.Background()); desc.Schedule.Spec.Intervals[0].Every != 2*time.Hour {
		t.Errorf("spec after update: %+v", desc.Schedule.Spec.Intervals)
	}

	cli("triggered", "trigger", "--plan", name)
	var runID string
	waitFor(t, "the triggered run", 30*time.Second, func() bool {
		d, err := h.Describe(context.Background())
		if err == nil && len(d.Info.RecentActions) > 0 {
			runID = d.Info.RecentActions[0].StartWorkflowResult.WorkflowID
		}
		return runID != ""
	})
	if !strings.HasPrefix(runID, "drorch/"+name+"/protect") {
		t.Errorf("run id %s", runID)
	}
	run := s.cl.GetWorkflow(context.Background(), runID, "")
	var res workflows.ProtectResult
	err = s.wait(run, &res)
	if v, qerr := s.cl.QueryWorkflow(context.Background(), runID, "", workflows.QueryProtect); qerr == nil {
		_ = v.Get(&res)
	}
	if err != nil || res.Point == "" || len(res.Sites) != 2 || res.Sites[1].Point != res.Point {
		t.Fatalf("triggered cycle: %+v (%v)", res, err)
	}
	for _, site := range res.Sites {
		if site.Retention != "done" || site.Kept < 1 {
			t.Errorf("triggered cycle: retention at %s: %+v", site.Site, site)
		}
	}
	out := cli(name, "list")
	if !strings.Contains(out, "every 2h0m0s") {
		t.Errorf("list: %s", out)
	}

	write("")
	cli("plan "+name+": kept, not in the config", "apply")
	cli("plan "+name+": deleted", "apply", "--prune")
	if _, err := h.Describe(context.Background()); err == nil {
		t.Error("the schedule is still there after apply --prune")
	}

	// A namespace without drorch's search attributes gets no schedule: its
	// Protect runs could not set DrorchRPOBreached and would never run.
	bare := "bare-" + randomHex(4)
	if _, err := s.cl.WorkflowService().RegisterNamespace(context.Background(), &workflowservice.RegisterNamespaceRequest{
		Namespace: bare, WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour),
	}); err != nil {
		t.Fatalf("register namespace %s: %v", bare, err)
	}
	write("    schedule: {every: 1h}\n")
	out, errOut, err := s.drorch("--namespace", bare, "schedule", "apply", "--plan", name)
	if err == nil || !strings.Contains(errOut, "lacks drorch's search attributes") || !strings.Contains(errOut, "--name DrorchRPOBreached --type Bool") {
		t.Fatalf("apply in a namespace without the search attributes: %v\n%s%s", err, out, errOut)
	}
}
