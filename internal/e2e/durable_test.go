package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/source/dir"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/workflows"
)

// scanOrder lists the entries of root in the order a backup records them
// (the restore point's entry order, which a restore's resume point counts).
func scanOrder(t *testing.T, root string) []source.Entry {
	t.Helper()
	d, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	var out []source.Entry
	err = d.Scan(context.Background(), func(e source.Entry) error {
		if e.Type != source.TypeOther {
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// restoreBookkeeping lists what restores keep beside a target (.drorch-*).
func restoreBookkeeping(t *testing.T, parent string) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(parent, ".drorch-*"))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// fileIndexes are the positions of the regular files among entries.
func fileIndexes(entries []source.Entry) []int {
	var out []int
	for i, e := range entries {
		if e.Type == source.TypeFile {
			out = append(out, i)
		}
	}
	return out
}

// running reports whether the run has not ended yet.
func (s *stack) running(run interface{ GetID() string }) bool {
	desc, err := s.cl.DescribeWorkflowExecution(context.Background(), run.GetID(), "")
	return err == nil && desc.GetWorkflowExecutionInfo().GetCloseTime() == nil
}

// A worker dies mid-restore, after some files were reported finished; one of
// them is then damaged on disk, as a power loss could leave a file the kernel
// had not written yet. The resumed attempt reads back what it would skip,
// writes the damaged file again, and the restored tree is the source's.
func TestWorkerKilledDuringRestoreRewritesADamagedFile(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	src := s.source("primary")
	genTree(t, src, crashData)
	entries := scanOrder(t, src)
	files := fileIndexes(entries)
	w := s.spawnWorker()
	s.backup()

	to := filepath.Join(s.dir, "restored")
	// The restore is held at its swap, so that however fast this machine
	// is, the worker dies with the files staged and reported finished.
	letGo := holdSwap(t, to)
	run := s.start(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to})
	waitFor(t, "a restore heartbeat naming finished files", 5*time.Minute, func() bool { return s.resumePoint(run) > files[2] })
	w.kill()
	letGo()
	next := s.resumePoint(run)
	if !s.running(run) {
		t.Fatalf("the restore ended before the worker was killed")
	}
	staging := restoreBookkeeping(t, s.dir)
	var stagingDir string
	for _, p := range staging {
		if strings.Contains(filepath.Base(p), ".drorch-staging-") {
			stagingDir = p
		}
	}
	if stagingDir == "" {
		t.Fatalf("no staging beside the target after the kill: %v", staging)
	}
	// The largest file the heartbeat reports finished loses its second half.
	victim := -1
	for _, i := range files {
		if i < next && (victim < 0 || entries[i].Size > entries[victim].Size) {
			victim = i
		}
	}
	vpath := filepath.Join(stagingDir, filepath.FromSlash(entries[victim].Path))
	if err := os.Truncate(vpath, entries[victim].Size/2); err != nil {
		t.Fatalf("damage the staged %q: %v", entries[victim].Path, err)
	}
	t.Logf("killed the worker at resume point %d of %d entries; truncated %q (%d bytes) to half", next, len(entries), entries[victim].Path, entries[victim].Size)

	w2 := s.spawnWorker()
	var res workflows.RestoreResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("restore after the worker was killed: %v\n%s", err, s.logs.Tail(3000))
	}
	requireSameTree(t, src, to)
	log := string(w2.log.Bytes())
	if !strings.Contains(log, "failed its check") || !strings.Contains(log, "holds "+strconv.FormatInt(entries[victim].Size/2, 10)+" bytes") {
		t.Errorf("the resumed restore did not report the damaged file it wrote again:\n%s", tailLines(log, 20))
	}
	if left := restoreBookkeeping(t, s.dir); len(left) > 0 {
		t.Errorf("the restore left %v behind", left)
	}
}

// A restore cancelled while it stages removes its staging: nothing is left
// beside the target, and the target is untouched.
func TestCancelledRestoreRemovesItsStaging(t *testing.T) {
	s := newStack(t, stackOptions{})
	src := s.source("primary")
	genTree(t, src, crashData)
	files := fileIndexes(scanOrder(t, src))
	s.startWorker()
	s.backup()

	to := filepath.Join(s.dir, "restored")
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(to, "keep-me"), []byte("what the target held"), 0o644); err != nil {
		t.Fatal(err)
	}
	holdSwap(t, to) // the restore stages everything, then waits to swap
	run := s.start(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to})
	waitFor(t, "the restore to stage files", 5*time.Minute, func() bool { return s.resumePoint(run) > files[1] })
	if len(restoreBookkeeping(t, s.dir)) == 0 {
		t.Fatal("no staging beside the target while the restore runs")
	}
	if err := s.cl.CancelWorkflow(context.Background(), run.GetID(), run.GetRunID()); err != nil {
		t.Fatal(err)
	}
	err := s.wait(run, nil)
	var cancelled *temporal.CanceledError
	if !errors.As(err, &cancelled) {
		t.Fatalf("the cancelled restore ended with %v, want cancelled", err)
	}
	waitFor(t, "the cancelled restore's staging to be removed", time.Minute, func() bool {
		return len(restoreBookkeeping(t, s.dir)) == 0
	})
	names, _ := os.ReadDir(to)
	if b, _ := os.ReadFile(filepath.Join(to, "keep-me")); string(b) != "what the target held" || len(names) != 1 {
		t.Fatalf("the cancelled restore touched the target: %d entries, keep-me %q", len(names), b)
	}
}

// A restore whose worker died and whose workflow was then terminated leaves
// a staging nobody owns; the next restore into the same target removes it.
func TestStaleRestoreStagingIsSwept(t *testing.T) {
	s := newStack(t, stackOptions{})
	src := s.source("primary")
	genTree(t, src, crashData)
	files := fileIndexes(scanOrder(t, src))
	w := s.spawnWorker()
	s.backup()

	to := filepath.Join(s.dir, "restored")
	letGo := holdSwap(t, to) // the restore stages everything, then waits to swap
	run := s.start(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to})
	waitFor(t, "the restore to stage files", 5*time.Minute, func() bool { return s.resumePoint(run) > files[1] })
	w.kill()
	letGo()
	if err := s.cl.TerminateWorkflow(context.Background(), run.GetID(), run.GetRunID(), "the test abandons it"); err != nil {
		t.Fatal(err)
	}
	stale := restoreBookkeeping(t, s.dir)
	if len(stale) == 0 {
		t.Fatal("the killed restore left no staging to sweep")
	}
	t.Logf("left behind: %v", stale)

	s.spawnWorker()
	s.restore("primary", to)
	requireSameTree(t, src, to)
	if left := restoreBookkeeping(t, s.dir); len(left) > 0 {
		t.Fatalf("after the next restore into the target: %v still there", left)
	}
}

// restore --to and a drill sandbox that lead into the plan's live source,
// through a symlink or by holding it, are refused before anything is
// written or removed there.
func TestRestoreRefusesPathsIntoTheLiveSource(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	src := s.source("primary")
	genTree(t, src, treeSpec{seed: 72, dataBytes: 1 << 20, files: 5})
	s.backup()
	prod := filepath.Join(src, "drill")
	if err := os.WriteFile(prod, []byte("production data"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(s.dir, "innocent-looking")
	if err := os.Symlink(src, link); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, err error, path string) {
		t.Helper()
		app := innermostAppError(err)
		if app == nil || !app.NonRetryable() || !strings.Contains(app.Error(), path) || !strings.Contains(app.Error(), src) {
			t.Fatalf("%s %s: %v; want a non-retryable refusal naming it and the source %s", what, path, err, src)
		}
	}
	for _, to := range []string{filepath.Join(link, "restored"), link, s.dir, src} {
		err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to}, nil)
		refused("restore --to", err, to)
	}
	sandbox := filepath.Join(link, "drill")
	err := s.run(workflows.OpDrill, workflows.Drill, workflows.DrillInput{Plan: plan, Sandbox: sandbox}, nil)
	refused("drill --sandbox", err, sandbox)
	if b, err := os.ReadFile(prod); err != nil || string(b) != "production data" {
		t.Fatalf("production data under the sandbox's real path: %q, %v", b, err)
	}
}

// A restore from a repository without a key leaves out setuid and setgid
// bits unless asked (restore --setuid); one from an encrypted repository,
// whose content is authenticated, keeps them.
func TestKeylessRestoreLeavesOutSetuid(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		s := newStack(t, stackOptions{encrypt: encrypt})
		s.startWorker()
		src := s.source("primary")
		genTree(t, src, treeSpec{seed: 73, dataBytes: 1 << 20, files: 3})
		sgid := filepath.Join(src, "setgid-tool")
		if err := os.WriteFile(sgid, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(sgid, 0o2755); err != nil {
			t.Fatal(err)
		}
		s.backup()
		mode := func(root, name string) uint32 {
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(root, name), &st); err != nil {
				t.Fatal(err)
			}
			return st.Mode & 0o7777
		}
		plain := filepath.Join(s.dir, "plain")
		s.restore("primary", plain)
		wantSetuid, wantSetgid := uint32(0o4755), uint32(0o2755)
		if !encrypt {
			wantSetuid, wantSetgid = 0o755, 0o755
		}
		if got, got2 := mode(plain, "setuid-tool"), mode(plain, "setgid-tool"); got != wantSetuid || got2 != wantSetgid {
			t.Errorf("encrypted=%v: restored setuid-tool %o, setgid-tool %o; want %o, %o", encrypt, got, got2, wantSetuid, wantSetgid)
		}
		if encrypt {
			continue
		}
		asked := filepath.Join(s.dir, "asked")
		if out, errOut, err := s.drorch("restore", "--plan", plan, "--site", "primary", "--to", asked, "--setuid", "--wait"); err != nil {
			t.Fatalf("drorch restore --setuid: %v\n%s\n%s", err, out, errOut)
		}
		if got, got2 := mode(asked, "setuid-tool"), mode(asked, "setgid-tool"); got != 0o4755 || got2 != 0o2755 {
			t.Errorf("restore --setuid from a keyless repository: setuid-tool %o, setgid-tool %o; want 4755, 2755", got, got2)
		}
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// A backup's worker dies after some pieces were recorded in staging; one of
// those records is then lost. The resumed upload checks the records it
// relies on and uploads that piece again, so the commit finds every piece.
func TestResumedBackupChecksItsStagingRecords(t *testing.T) {
	// parallel: 1 makes the first range several pieces long, so its
	// heartbeat names finished pieces while it runs.
	s := newStack(t, stackOptions{encrypt: true, planExtra: func(*stack) string { return "    parallel: 1\n" }})
	src := s.source("primary")
	// Many small files make many pieces (2,000 entries each). Small files
	// upload fast (format v2 runs), so the store is frozen once two pieces
	// are recorded: the upload then hangs with more to come, on a machine
	// of any speed, until its heartbeat names them.
	genTree(t, src, treeSpec{seed: 7, dataBytes: 96 << 20, files: 12000})
	w := s.spawnWorker()
	mc := s.minio["primary"].Client(t)
	run := s.start(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan})
	waitFor(t, "two uploaded pieces in staging", 5*time.Minute, func() bool { return s.stagingHas("primary", "/"+datapath.UploadedName(1)+".") })
	s.minio["primary"].Pause(t)
	waitFor(t, "a heartbeat naming two uploaded pieces", 5*time.Minute, func() bool { return s.resumePoint(run) >= 2 })
	w.kill()
	s.minio["primary"].Resume(t)
	if s.stagingHas("primary", "/"+datapath.UploadedName(5)+".") {
		t.Fatal("the last piece was uploaded before the store was frozen: the test did not catch the upload half-way")
	}
	var lost string
	for obj := range mc.ListObjects(context.Background(), "drorch", minio.ListObjectsOptions{Prefix: plan + "/staging/", Recursive: true}) {
		if obj.Err == nil && strings.HasSuffix(obj.Key, "/"+datapath.UploadedName(0)+".json.zst") {
			lost = obj.Key
		}
	}
	if lost == "" {
		t.Fatal("no record of the first uploaded piece in staging")
	}
	if err := mc.RemoveObject(context.Background(), "drorch", lost, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	w2 := s.spawnWorker()
	if err := s.wait(run, nil); err != nil {
		t.Fatalf("backup after a lost staging record: %v\n%s", err, s.logs.Tail(3000))
	}
	if !strings.Contains(string(w2.log.Bytes()), "has no record in staging") {
		t.Errorf("the resumed upload did not say it found a piece without its record")
	}
	restored := filepath.Join(s.dir, "restored")
	s.restore("primary", restored)
	requireSameTree(t, src, restored)
}
