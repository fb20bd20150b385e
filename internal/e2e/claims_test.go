package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/workflows"
)

// Two restores into one target, started together, never interleave: the
// plan lock grants the target to one, and refuses the other naming it,
// also when the other names the target through a symlink.
func TestRestoresIntoOneTargetNeverInterleave(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	src := s.source("primary")
	genTree(t, src, treeSpec{seed: 21, dataBytes: 96 << 20, files: 12})
	s.backup()
	to := filepath.Join(s.dir, "restored")
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(s.dir, alias); err != nil {
		t.Fatal(err)
	}
	in := workflows.RestoreInput{Plan: plan, Site: "primary", To: to}
	viaAlias := workflows.RestoreInput{Plan: plan, Site: "primary", To: filepath.Join(alias, "restored")}
	runs := []client.WorkflowRun{s.start(workflows.OpRestore, workflows.Restore, in), s.start(workflows.OpRestore, workflows.Restore, viaAlias)}
	errs := make([]error, 2)
	done := make(chan int)
	for i, r := range runs {
		go func() { errs[i] = s.wait(r, nil); done <- i }()
	}
	<-done
	<-done
	ok, refused := -1, -1
	for i, err := range errs {
		switch {
		case err == nil:
			ok = i
		case strings.Contains(err.Error(), "refused") && strings.Contains(err.Error(), runs[1-i].GetID()):
			refused = i
		default:
			t.Fatalf("restore %s: %v", runs[i].GetID(), err)
		}
	}
	if ok < 0 || refused < 0 {
		t.Fatalf("two restores into one target: %v; want one done and the other refused naming it", errs)
	}
	t.Logf("refused: %v", errs[refused])
	requireSameTree(t, src, to)
	// The target is free again once the holder has ended.
	s.restore("primary", to)
	requireSameTree(t, src, to)
	requireReplays(s)
}

// A standby refresh (a restore into the standby's own target) that is
// held after staging (here: the test holds the target's swap lock, as a
// paused worker would) when an unplanned failover to that site runs is
// taken over: the restore fails as superseded, the failover completes, and
// what the application writes at the new active site afterwards survives.
func TestFailoverSupersedesARestoreOfItsTarget(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.startWorker()
	src := ss.source("primary")
	genTree(t, src, treeSpec{seed: 22, dataBytes: 16 << 20, files: 16})
	ss.backup()
	ss.transmit()
	letGo := holdSwap(t, ss.source("secondary"))
	refresh := ss.start(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"})
	waitFor(t, "the refresh to stage every file", 2*time.Minute, func() bool {
		live := ss.heartbeat(refresh)
		return live.Step == "restore" && live.BytesTotal > 0 && live.BytesDone == live.BytesTotal
	})
	failover := ss.startSwitch(workflows.Failover, workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	err := ss.wait(refresh, nil)
	if err == nil || !strings.Contains(err.Error(), "superseded") || !strings.Contains(err.Error(), "failover") {
		t.Fatalf("the refresh overtaken by the failover: %v; want it superseded", err)
	}
	letGo()
	var rep workflows.SwitchReport
	if err := ss.wait(failover, &rep); err != nil || rep.Outcome != "completed" || !rep.Restored {
		t.Fatalf("failover: %+v, %v", rep, err)
	}
	// The application writes at its new active site.
	order := filepath.Join(ss.source("secondary"), "order-after-failover")
	writeFile(t, order, "written at the new active site")
	time.Sleep(3 * time.Second) // long enough for a late swap, had one been coming
	if b, err := os.ReadFile(order); err != nil || string(b) != "written at the new active site" {
		t.Fatalf("the write after the failover is gone: %q, %v", b, err)
	}
	if err := os.Remove(order); err != nil {
		t.Fatal(err)
	}
	requireSameTree(t, src, ss.source("secondary"))
	requireReplays(ss.stack)
}

// heartbeat is the newest progress a pending activity of run has sent in
// its heartbeats (what the CLI and the Web UI show as live numbers).
func (s *stack) heartbeat(run client.WorkflowRun) activities.Progress {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var live activities.Progress
	desc, err := s.cl.DescribeWorkflowExecution(ctx, run.GetID(), run.GetRunID())
	if err != nil {
		return live
	}
	for _, pa := range desc.GetPendingActivities() {
		var hb struct {
			Progress activities.Progress `json:"progress"`
		}
		if pa.GetHeartbeatDetails() != nil && converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &hb) == nil &&
			hb.Progress.Updated.After(live.Updated) {
			live = hb.Progress
		}
	}
	return live
}

// holdSwap holds the swap lock of the restore target at path, as a restore
// swapping into it would: a restore into it stages every file, then waits
// at its swap until the returned function lets go (or the test ends). A
// test so holds a restore mid-way, whatever the machine's speed.
func holdSwap(t *testing.T, path string) (letGo func()) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".drorch-lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	letGo = func() { _ = f.Close() } // closing the descriptor releases the lock
	t.Cleanup(letGo)
	return letGo
}

// A restore does not overwrite the plan's data at a site that takes
// writes (the active site, or a standby whose database was opened by
// hand) unless the operator says so.
func TestRestoreRefusesAWritableTarget(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 24, dataBytes: 1 << 20, files: 4})
	ss.backup()
	ss.transmit()
	err := ss.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary"}, nil)
	if err == nil || !strings.Contains(err.Error(), "primary is the plan's active site") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("a restore over the active site's data: %v; want it refused", err)
	}
	ss.setMode("secondary", access.ReadWrite)
	marker := filepath.Join(ss.source("secondary"), "written-at-the-standby")
	writeFile(t, marker, "someone writes here")
	err = ss.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan}, nil)
	if err == nil || !strings.Contains(err.Error(), "is read-write at secondary") {
		t.Fatalf("a restore over a read-write standby: %v; want it refused", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the refused restore touched the standby: %v", err)
	}
	if err := ss.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Force: true}, nil); err != nil {
		t.Fatalf("a forced restore: %v", err)
	}
	requireSameTree(t, ss.source("primary"), ss.source("secondary"))
}
