package e2e

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/workflows"
)

// scaleData has many small files, so a backup has several pieces (at most
// 2000 entries each) and so several ranges, cheaply.
var scaleData = treeSpec{seed: 10, dataBytes: 64 << 20, files: 8200}

// uploadsRunning returns the identities of the workers running the run's
// Upload activities now, and their count.
func (s *stack) uploadsRunning(run client.WorkflowRun) map[string]int {
	desc, err := s.cl.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetActivityType().GetName() == "Upload" && pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
			out[pa.GetLastWorkerIdentity()]++
		}
	}
	return out
}

// workerPID is the process id in a Go SDK worker identity ("pid@host@").
func workerPID(identity string) string { pid, _, _ := strings.Cut(identity, "@"); return pid }

// Two worker processes serve one site. A backup's upload runs as ranges
// spread over both; one worker is killed while it uploads, and the other
// takes its range over (heartbeat timeout, retry, resume) and finishes the
// backup, whose point restores byte for byte.
func TestBackupSpreadsOverTwoWorkersAndSurvivesLosingOne(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true, planExtra: func(*stack) string { return "    parallel: 2\n" }})
	src := s.source("primary")
	began := time.Now()
	genTree(t, src, scaleData)
	t.Logf("%s: tree written", time.Since(began).Round(time.Millisecond))
	// One data slot each: the two ranges in flight land on two workers.
	w1 := s.spawnWorker("--data-slots", "1")
	w2 := s.spawnWorker("--data-slots", "1")
	run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})

	var running map[string]int
	waitFor(t, "both workers running an Upload", 2*time.Minute, func() bool {
		running = s.uploadsRunning(run)
		return len(running) == 2
	})
	victim, survivor := w1, w2
	var survivorID string
	for id := range running {
		if workerPID(id) == strconv.Itoa(w2.cmd.Process.Pid) {
			survivorID = id
		}
	}
	if survivorID == "" || len(running) != 2 {
		t.Fatalf("the running Uploads are not on workers %d and %d: %v", w1.cmd.Process.Pid, w2.cmd.Process.Pid, running)
	}
	victim.kill()
	t.Logf("%s: killed", time.Since(began).Round(time.Millisecond))
	t.Logf("killed worker %d while it uploaded; workers running uploads were %v", victim.cmd.Process.Pid, running)

	var res workflows.BackupResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("backup after a worker was killed: %v\n%s", err, s.logs.Tail(3000))
	}
	t.Logf("%s: backup done", time.Since(began).Round(time.Millisecond))
	// The killed worker's range was retried, on the survivor.
	retried := false
	it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && a.GetAttempt() > 1 {
			if a.GetIdentity() != survivorID {
				t.Errorf("a retried activity ran on %s, not on the surviving worker %s", a.GetIdentity(), survivorID)
			}
			retried = true
		}
	}
	if !retried {
		t.Errorf("no activity was retried after the kill: the killed worker's range did not move to the survivor")
	}
	if !strings.Contains(string(survivor.log.Bytes()), "resuming upload") {
		t.Logf("the survivor started the killed range from its beginning (it had no finished piece yet)")
	}
	if res.Totals.Files < int64(scaleData.files) {
		t.Fatalf("the point holds %d files, want at least %d", res.Totals.Files, scaleData.files)
	}

	restored := filepath.Join(s.dir, "restored")
	s.restore("primary", restored)
	t.Logf("%s: restored", time.Since(began).Round(time.Millisecond))
	requireSameTree(t, src, restored)
}

// A backup cancelled while two ranges upload ends cancelled, with its
// staging removed and nothing written there afterwards.
func TestCancelledParallelBackupLeavesNoStaging(t *testing.T) {
	s := newStack(t, stackOptions{planExtra: func(*stack) string { return "    parallel: 2\n" }})
	genTree(t, s.source("primary"), scaleData)
	s.startWorker()
	run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})
	waitFor(t, "two Upload ranges running", 2*time.Minute, func() bool {
		n := 0
		for _, c := range s.uploadsRunning(run) {
			n += c
		}
		return n == 2
	})
	if err := s.cl.CancelWorkflow(context.Background(), run.GetID(), run.GetRunID()); err != nil {
		t.Fatal(err)
	}
	err := s.wait(run, nil)
	var cancelled *temporal.CanceledError
	if !errors.As(err, &cancelled) {
		t.Fatalf("the cancelled backup ended with %v, want cancelled", err)
	}
	time.Sleep(2 * time.Second) // a straggling range would write now
	if s.stagingHas("primary", "backup-") {
		t.Fatalf("staging left behind after the cancelled backup")
	}
}
