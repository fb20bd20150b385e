package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/workflows"
)

// countRuns is the number of workflow executions, open or closed, on the
// stack's queue, as the Web UI's list shows them.
func (s *stack) countRuns() int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	var token []byte
	for {
		resp, err := s.cl.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("TaskQueue = %q", s.queue), NextPageToken: token,
		})
		if err != nil {
			s.t.Fatalf("list workflows: %v", err)
		}
		n += len(resp.GetExecutions())
		if token = resp.GetNextPageToken(); len(token) == 0 {
			return n
		}
	}
}

// drorch status reads ages against the objective, the schedule and the
// running operations from the plan's lock, and adds no run to the list.
func TestStatusAddsNoRun(t *testing.T) {
	s := newStack(t, stackOptions{planExtra: func(*stack) string { return "    objectives: {rpo: 1h, rto: 5m}\n" }})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 41, dataBytes: 256 << 10, files: 5})
	b := s.backup()
	s.transmit()
	var drill workflows.DrillReport
	if err := s.run(workflows.OpDrill, workflows.Drill, workflows.DrillInput{Plan: plan}, &drill); err != nil || !drill.Passed {
		t.Fatalf("drill: %v, %+v", err, drill.Problems)
	}

	// An operation of the plan that is running (its start is delayed, so
	// it never touches anything).
	ctx := context.Background()
	pending, err := s.cl.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.WorkflowID(plan, workflows.OpBackup, time.Now(), "delayed"), TaskQueue: s.queue, StartDelay: time.Hour,
		TypedSearchAttributes: workflows.Attributes(plan, "primary", workflows.OpBackup),
	}, workflows.Backup, workflows.BackupInput{Plan: plan})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.cl.TerminateWorkflow(ctx, pending.GetID(), "", "test over") })

	status := func() workflows.StatusResult {
		out, errOut, err := s.drorch("status", "--plan", plan, "--json")
		var st workflows.StatusResult
		if err != nil || json.Unmarshal([]byte(out), &st) != nil {
			t.Fatalf("status --json: %v\n%s\n%s", err, out, errOut)
		}
		return st
	}
	// The first status may start the plan's lock if the backup's has ended:
	// that is the one run status may add, and only once.
	status()
	waitFor(t, "the delayed backup to be listed", 30*time.Second, func() bool { return len(status().Running) == 1 })
	before := s.countRuns()
	var st workflows.StatusResult
	for range 3 {
		st = status()
	}
	time.Sleep(2 * time.Second) // visibility lags a little: give a new run time to show
	if after := s.countRuns(); after != before {
		t.Fatalf("three status reads added %d workflow runs", after-before)
	}

	if st.Active != "primary" || st.Objectives.RPO != workflows.Duration(time.Hour) || st.Objectives.RTO != workflows.Duration(5*time.Minute) || st.Breached {
		t.Fatalf("status: active %s, objectives %+v, breached %v", st.Active, st.Objectives, st.Breached)
	}
	if len(st.Sites) != 2 {
		t.Fatalf("status sites: %+v", st.Sites)
	}
	for _, site := range st.Sites {
		if !site.Reachable || site.State.Latest != b.Point || site.Age <= 0 || site.Age.D() > 5*time.Minute {
			t.Fatalf("site %s: reachable %v, latest %s (want %s), age %s", site.Site, site.Reachable, site.State.Latest, b.Point, site.Age)
		}
	}
	if st.RPO <= 0 || st.Schedule == nil || st.Schedule.Exists {
		t.Fatalf("status: RPO %s, schedule %+v", st.RPO, st.Schedule)
	}
	if d := st.LastDrill; d == nil || !d.Passed || d.Site != "secondary" || d.Point != b.Point || d.RTO <= 0 {
		t.Fatalf("last drill: %+v", st.LastDrill)
	}
	if r := st.Running[0]; r.WorkflowID != pending.GetID() || r.Type != "Backup" || r.Operation != workflows.OpBackup {
		t.Fatalf("running: %+v", st.Running)
	}
	// The JSON reads well: durations as text.
	out, _, _ := s.drorch("status", "--plan", plan, "--json")
	if !strings.Contains(out, `"rpo": "1h0m0s"`) {
		t.Fatalf("status --json has no readable objective:\n%s", out)
	}
	// Every plan, for a person.
	out, errOut, err := s.drorch("status")
	for _, want := range []string{"objectives  RPO 1h0m0s, RTO 5m0s", "no schedule", "last drill  PASSED at secondary", "running     Backup " + pending.GetID()} {
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("status lacks %q: %v\n%s\n%s", want, err, out, errOut)
		}
	}
}
