package e2e

import (
	"context"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/workflows"
)

// requireReplays replays the history of every closed run the stack
// started — the runs of every workflow of the suite, with their signals,
// timers, children and failures — against the workflow code, and fails
// on any nondeterminism: a command in another order or one too many.
func requireReplays(s *stack) {
	s.t.Helper()
	r := worker.NewWorkflowReplayer()
	for _, wf := range workflows.All {
		r.RegisterWorkflow(wf)
	}
	n := 0
	for _, run := range s.runs {
		// Follow continue-as-new: every run of the chain is replayed.
		for runID := run.GetRunID(); runID != ""; {
			h := &history.History{}
			it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					s.t.Fatalf("history of %s: %v", run.GetID(), err)
				}
				h.Events = append(h.Events, ev)
			}
			next := ""
			if last := h.Events[len(h.Events)-1]; last.GetEventType() == enums.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW {
				next = last.GetWorkflowExecutionContinuedAsNewEventAttributes().GetNewExecutionRunId()
			}
			// The run's own id: operation ids derive from it.
			opts := worker.ReplayWorkflowHistoryOptions{OriginalExecution: workflow.Execution{ID: run.GetID(), RunID: runID}}
			if err := r.ReplayWorkflowHistoryWithOptions(nil, h, opts); err != nil {
				s.t.Fatalf("replaying %s run %s: %v", run.GetID(), runID, err)
			}
			n++
			runID = next
		}
	}
	s.t.Logf("replayed %d histories", n)
}
