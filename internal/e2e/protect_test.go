package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/drorch/drorch/workflows"
)

// listed reports whether a visibility query finds the workflow id.
func (s *stack) listed(query, id string) bool {
	resp, err := s.cl.ListWorkflow(context.Background(), &workflowservice.ListWorkflowExecutionsRequest{
		Namespace: s.temporal.Namespace, Query: query,
	})
	if err != nil {
		s.t.Fatalf("list %q: %v", query, err)
	}
	for _, e := range resp.GetExecutions() {
		if e.GetExecution().GetWorkflowId() == id {
			return true
		}
	}
	return false
}

// Two protection cycles keep a warm standby at the newest point: a failover
// then skips its restore and reports the time saved, and the standby holds
// the primary's tree. The runs say their RPO was within the objective.
func TestProtectKeepsAWarmStandby(t *testing.T) {
	s := newStack(t, stackOptions{planExtra: func(*stack) string {
		return "    standby: warm\n    objectives: {rpo: 1h}\n"
	}})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 8, dataBytes: 2 << 20, files: 8})

	var first workflows.ProtectResult
	run := s.start(workflows.OpProtect, workflows.Protect, workflows.ProtectInput{Plan: plan})
	if err := s.wait(run, &first); err != nil {
		t.Fatalf("first cycle: %v", err)
	}
	if first.Active != "primary" || first.Point == "" || len(first.Sites) != 2 {
		t.Fatalf("first cycle: %+v", first)
	}
	sec := first.Sites[1]
	if sec.Site != "secondary" || sec.Point != first.Point || !sec.Refreshed || sec.RPO.D() <= 0 || sec.RPO.D() > time.Minute || first.RPOBreached {
		t.Fatalf("first cycle at the secondary: %+v (breached %v)", sec, first.RPOBreached)
	}
	requireSameTree(t, s.source("primary"), s.source("secondary"))
	waitFor(t, "the run listed with DrorchRPOBreached = false", 30*time.Second, func() bool {
		return s.listed(fmt.Sprintf("WorkflowId = %q AND DrorchRPOBreached = false", run.GetID()), run.GetID())
	})
	// Its children show in the Web UI under readable ids.
	if _, err := s.cl.DescribeWorkflowExecution(context.Background(), run.GetID()+"/refresh-secondary", ""); err != nil {
		t.Errorf("the refresh child %s/refresh-secondary: %v", run.GetID(), err)
	}

	// The source changes; the next cycle brings the standby along.
	if err := os.WriteFile(filepath.Join(s.source("primary"), "new-file"), []byte("after the first cycle"), 0o644); err != nil {
		t.Fatal(err)
	}
	var second workflows.ProtectResult
	if err := s.run(workflows.OpProtect, workflows.Protect, workflows.ProtectInput{Plan: plan}, &second); err != nil {
		t.Fatalf("second cycle: %v", err)
	}
	if second.Point == first.Point || !second.Sites[1].Refreshed || second.Sites[1].RefreshTook.D() <= 0 {
		t.Fatalf("second cycle: %+v", second)
	}

	var rep workflows.SwitchReport
	if err := s.run(workflows.OpFailover, workflows.Failover, workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned}, &rep); err != nil {
		t.Fatalf("failover: %v", err)
	}
	if rep.Restored || rep.Point != second.Point || rep.TimeSaved.D() <= 0 {
		t.Fatalf("failover to a warm standby: restored %v, point %s (want %s), time saved %s", rep.Restored, rep.Point, second.Point, rep.TimeSaved)
	}
	requireSameTree(t, s.source("primary"), s.source("secondary"))

	// The roles are reversed: the next cycle protects from the secondary,
	// and leaves the old primary's own data alone: it wrote a file after
	// the last point, which a failback recovers and a refresh would erase.
	lost := filepath.Join(s.source("primary"), "written-after-the-last-point")
	if err := os.WriteFile(lost, []byte("an order the failover did not carry"), 0o644); err != nil {
		t.Fatal(err)
	}
	var third workflows.ProtectResult
	if err := s.run(workflows.OpProtect, workflows.Protect, workflows.ProtectInput{Plan: plan}, &third); err != nil {
		t.Fatalf("cycle after the failover: %v", err)
	}
	if third.Active != "secondary" || third.Sites[1].Site != "primary" || third.Sites[1].Point != third.Point {
		t.Fatalf("cycle after the failover: %+v", third)
	}
	if third.Sites[1].Refreshed || !strings.Contains(third.Sites[1].RefreshSkipped, "primary") {
		t.Fatalf("cycle after the failover refreshed the old primary: %+v", third.Sites[1])
	}
	if _, err := os.Stat(lost); err != nil {
		t.Fatalf("the old primary's own write is gone after a protect cycle: %v", err)
	}
}

// A standby that refuses drorch (wrong credentials) leaves the RPO
// unmeasured: the run fails without writing and says the objective is
// breached, where the Web UI can filter on it.
func TestProtectBreachIsSearchable(t *testing.T) {
	s := newStack(t, stackOptions{
		overrides: func(site string, st map[string]string) {
			if site == "secondary" {
				st["secretKey"] = "not-the-secret-key-1234"
			}
		},
		planExtra: func(*stack) string { return "    objectives: {rpo: 1m}\n" },
	})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 9, dataBytes: 1 << 20, files: 3})
	run := s.start(workflows.OpProtect, workflows.Protect, workflows.ProtectInput{Plan: plan})
	if err := s.wait(run, nil); err == nil {
		t.Fatal("a cycle whose standby refuses drorch succeeded")
	}
	waitFor(t, "the run listed with DrorchRPOBreached = true", 30*time.Second, func() bool {
		return s.listed(fmt.Sprintf("WorkflowId = %q AND DrorchRPOBreached = true", run.GetID()), run.GetID())
	})
}
