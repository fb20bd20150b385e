package workflows

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// TestReplayRecordedHistories replays the histories recorded from released
// versions (testdata/histories/<version>/, written by the e2e suite with
// DRORCH_RECORD_HISTORIES) against the workflow code: a change that would
// break a run started by an earlier version, still running in the field,
// fails here. docs/versioning.md says how to change a workflow safely.
func TestReplayRecordedHistories(t *testing.T) {
	indexes, err := filepath.Glob("testdata/histories/*/index-*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(indexes) == 0 {
		t.Fatal("no recorded histories in testdata/histories")
	}
	r := worker.NewWorkflowReplayer()
	for _, wf := range All {
		r.RegisterWorkflow(wf)
	}
	n := 0
	for _, idx := range indexes {
		b, err := os.ReadFile(idx)
		if err != nil {
			t.Fatal(err)
		}
		var runs []struct {
			File       string `json:"file"`
			WorkflowID string `json:"workflowId"`
			RunID      string `json:"runId"`
		}
		if err := json.Unmarshal(b, &runs); err != nil {
			t.Fatalf("%s: %v", idx, err)
		}
		for _, run := range runs {
			path := filepath.Join(filepath.Dir(idx), run.File)
			h, err := client.HistoryFromJSON(mustOpen(t, path), client.HistoryJSONOptions{})
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			opts := worker.ReplayWorkflowHistoryOptions{OriginalExecution: workflow.Execution{ID: run.WorkflowID, RunID: run.RunID}}
			if err := r.ReplayWorkflowHistoryWithOptions(nil, h, opts); err != nil {
				t.Errorf("replaying %s (%s): %v", run.File, run.WorkflowID, err)
			}
			n++
		}
	}
	t.Logf("replayed %d recorded histories", n)
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
