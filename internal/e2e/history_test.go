package e2e

import (
	"context"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"

	"github.com/drorch/drorch/workflows"
)

// maxEventsPerStep bounds the history a data-moving workflow writes: a
// fixed number of events per step, and none per second of activity. Live
// progress travels in heartbeats (not in history), so a 35-hour backup or
// a week-long data recovery (which also continues as new every 100 rounds)
// stays far from Temporal's 51,200-event limit: the bound is 0 events per
// hour of activity beyond the steps themselves.
const maxEventsPerStep = 12

func TestHistoryDoesNotGrowWithActivityTime(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 23, dataBytes: 128 << 20, files: 8})
	started := time.Now()
	run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})
	var res workflows.BackupResult
	if err := s.wait(run, &res); err != nil {
		t.Fatal(err)
	}
	took := time.Since(started)
	var events, signals, steps int
	it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		events++
		switch ev.GetEventType() {
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
			// The plan lock's answer is one signal per run; progress
			// signals (one per interval of work) must be gone.
			if ev.GetWorkflowExecutionSignaledEventAttributes().GetSignalName() != workflows.SignalClaimReply {
				signals++
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			steps++
		}
	}
	t.Logf("backup of %d MiB took %s: %d events, %d activities, %d signals", res.BytesRead>>20, took.Round(time.Millisecond), events, steps, signals)
	if signals > 0 {
		t.Fatalf("%d progress signals in the history of a backup: progress must not grow history", signals)
	}
	if events > maxEventsPerStep*steps {
		t.Fatalf("%d events for %d activities: more than %d a step", events, steps, maxEventsPerStep)
	}
}
