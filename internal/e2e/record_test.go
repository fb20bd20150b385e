package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/history/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
)

// RecordedRun names one history file in a recording: workflows replay
// them (workflows/replay_test.go) with the run's own id and run id, from
// which operation and child ids derive.
type RecordedRun struct {
	File       string `json:"file"`
	WorkflowID string `json:"workflowId"`
	RunID      string `json:"runId"`
	Type       string `json:"type"`
}

// recordHistories, when DRORCH_RECORD_HISTORIES names a directory, writes
// the history of every closed run on the stack's task queue into it (one
// JSON file per run, as `temporal workflow show --output json` would, and
// an index.json naming the runs), so that a released version's histories
// can be kept as testdata and replayed against later workflow code.
func recordHistories(t *testing.T, cl client.Client, queue string) {
	dir := os.Getenv("DRORCH_RECORD_HISTORIES")
	if dir == "" || t.Failed() {
		return
	}
	ctx := context.Background()
	name := regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-")
	var runs []RecordedRun
	var token []byte
	for {
		resp, err := cl.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Query: fmt.Sprintf("TaskQueue = %q AND ExecutionStatus != 'Running'", queue), NextPageToken: token,
		})
		if err != nil {
			t.Errorf("record histories: %v", err)
			return
		}
		for _, ex := range resp.GetExecutions() {
			id, runID := ex.GetExecution().GetWorkflowId(), ex.GetExecution().GetRunId()
			h := &history.History{}
			it := cl.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					t.Errorf("record history of %s: %v", id, err)
					return
				}
				h.Events = append(h.Events, ev)
			}
			if len(h.Events) < 3 {
				continue // ended before its first task (a delayed start cancelled): nothing to replay
			}
			b, err := protojson.MarshalOptions{Indent: " "}.Marshal(h)
			if err != nil {
				t.Errorf("record history of %s: %v", id, err)
				return
			}
			file := fmt.Sprintf("%s-%s-%s.json", name, ex.GetType().GetName(), runID[len(runID)-8:])
			if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
				t.Errorf("record history: %v", err)
				return
			}
			runs = append(runs, RecordedRun{File: file, WorkflowID: id, RunID: runID, Type: ex.GetType().GetName()})
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	b, _ := json.MarshalIndent(runs, "", " ")
	idx := filepath.Join(dir, "index-"+strings.ToLower(name)+".json")
	if err := os.WriteFile(idx, b, 0o644); err != nil {
		t.Errorf("record histories: %v", err)
	}
	t.Logf("recorded %d histories in %s", len(runs), dir)
}
