package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/rs/zerolog"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/workflows"
)

// drorch check names a corrupted and a deleted chunk and exits non-zero; the
// next backup of the same data writes both again; check then passes and a
// restore verifies.
func TestCheckFindsDamageAndTheNextBackupRepairsIt(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 7, dataBytes: 6 << 20, files: 12})
	b := s.backup()

	s.requireCheckOK("of a sound repository", "primary")

	// Data chunks: the chunks holding the point's entries are read by any
	// check (TestCheckFindsADamagedEntryPart).
	parts := pointPartKeys(t, s, "primary", b.Point)
	keys := make([]string, 0)
	for key := range s.chunkObjects("primary") {
		if !parts[key] {
			keys = append(keys, key)
		}
	}
	if len(keys) < 3 {
		t.Fatalf("only %d data chunks", len(keys))
	}
	corrupt, deleted := keys[0], keys[1]
	corruptObject(t, s, "primary", corrupt)
	mc := s.minio["primary"].Client(t)
	if err := mc.RemoveObject(context.Background(), "drorch", deleted, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	// Without reading: the deleted chunk only.
	out, _, err := s.drorch("check", "--plan", plan, "--site", "primary", "--wait")
	if err == nil || !strings.Contains(out, deleted) || strings.Contains(out, corrupt) {
		t.Fatalf("check without --read-data: err %v, want exit non-zero naming %s only\n%s", err, deleted, out)
	}
	out, errOut, err := s.drorch("check", "--plan", plan, "--site", "primary", "--read-data", "--wait")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("check of a damaged repository: %v, want a non-zero exit\n%s\n%s", err, out, errOut)
	}
	for _, key := range []string{corrupt, deleted} {
		if !strings.Contains(out, key) {
			t.Errorf("check does not name %s:\n%s", key, out)
		}
	}
	if !strings.Contains(out, "DAMAGED: 2 objects") || !strings.Contains(errOut, "2 damaged objects") {
		t.Errorf("check output:\n%s\n%s", out, errOut)
	}

	b = s.backup() // the same data: only the damaged chunks are new
	if b.ChunksNew != 2 {
		t.Errorf("the repairing backup uploaded %d chunks, want the 2 damaged ones", b.ChunksNew)
	}
	out, errOut, err = s.drorch("check", "--plan", plan, "--site", "primary", "--read-data", "--wait", "--json")
	if err != nil || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("check after the repairing backup: %v\n%s\n%s", err, out, errOut)
	}
	if s.stagingHas("primary", "damaged/") {
		t.Error("the damage records outlived the repair")
	}
	to := filepath.Join(s.dir, "restored")
	s.restore("primary", to)
	requireSameTree(t, s.source("primary"), to)
}

// A chunk holding a restore point's entries that no longer reads back is
// found by any check, which must read the entries to know the data chunks;
// it is recorded as a damaged chunk, the next backup of the same tree
// writes it again, and the damaged point restores again (its entries are
// in that same chunk).
func TestCheckFindsADamagedEntryPart(t *testing.T) {
	s, first := backedUpTree(t)
	var part string
	for key := range pointPartKeys(t, s, "primary", first.Point) {
		part = key
	}
	corruptObject(t, s, "primary", part)

	out, errOut, err := s.drorch("check", "--plan", plan, "--site", "primary", "--wait") // without --read-data
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("check with a damaged entry part: %v, want a non-zero exit\n%s\n%s", err, out, errOut)
	}
	for _, want := range []string{part, first.Point, "1 unreadable", "1 damaged"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if !s.stagingHas("primary", "damaged/") {
		t.Fatal("the damaged part is not recorded")
	}
	err = s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", Point: first.Point, To: filepath.Join(s.dir, "before")}, nil)
	if err == nil {
		t.Fatal("restore of a point whose entries are damaged succeeded")
	}

	s.backup() // the same tree: the same entries, in the same part
	s.requireCheckOK("after the repairing backup", "primary")
	if s.stagingHas("primary", "damaged/") {
		t.Error("the damage record outlived the repair")
	}
	to := filepath.Join(s.dir, "restored")
	s.restorePoint("the repaired point", "primary", first.Point, to)
	requireSameTree(t, s.source("primary"), to)
}

// A damage record outlives a check that cannot read every point: the
// chunks an unreadable point names are unknown to it, and a record cleared
// as "not needed" would make the next backup take a damaged data chunk as
// present, and write a point that does not restore. (Found in review: a
// damaged entry part cleared the record of a damaged data chunk.)
func TestDamageRecordOutlivesAnUnreadablePoint(t *testing.T) {
	s, first := backedUpTree(t)
	parts := pointPartKeys(t, s, "primary", first.Point)
	var data, part string
	for key := range s.chunkObjects("primary") {
		if !parts[key] {
			data = key
			break
		}
	}
	for key := range parts {
		part = key
	}
	corruptObject(t, s, "primary", data)
	if out, _, err := s.drorch("check", "--plan", plan, "--site", "primary", "--read-data", "--wait"); err == nil || !strings.Contains(out, data) {
		t.Fatalf("check with data chunk %s damaged: %v\n%s", data, err, out)
	}
	corruptObject(t, s, "primary", part)
	if out, _, err := s.drorch("check", "--plan", plan, "--site", "primary", "--wait"); err == nil || !strings.Contains(out, part) {
		t.Fatalf("check with entry part %s damaged: %v\n%s", part, err, out)
	}
	b := s.backup() // the same tree: writes the part and the data chunk again
	if b.ChunksNew != 1 {
		t.Errorf("the repairing backup uploaded %d data chunks, want the damaged one", b.ChunksNew)
	}
	to := filepath.Join(s.dir, "restored")
	s.restorePoint("the repairing backup's point", "primary", b.Point, to)
	requireSameTree(t, s.source("primary"), to)
	s.requireCheckOK("after the repairing backup", "primary")
}

// backedUpTree starts a stack with an encrypted repository and backs up a
// small tree at the primary.
func backedUpTree(t *testing.T) (*stack, workflows.BackupResult) {
	t.Helper()
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 9, dataBytes: 2 << 20, files: 12})
	return s, s.backup()
}

// restorePoint restores point at site into to, failing the test if it
// cannot.
func (s *stack) restorePoint(what, site, point, to string) {
	s.t.Helper()
	if err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: site, Point: point, To: to}, nil); err != nil {
		s.t.Fatalf("restore of %s: %v", what, err)
	}
}

// requireCheckOK runs drorch check --read-data at site and fails the test
// unless it finds the repository sound.
func (s *stack) requireCheckOK(what, site string) {
	s.t.Helper()
	out, errOut, err := s.drorch("check", "--plan", plan, "--site", site, "--read-data", "--wait")
	if err != nil || !strings.Contains(out, "OK") {
		s.t.Fatalf("check %s: %v\n%s\n%s", what, err, out, errOut)
	}
}

// pointPartKeys returns the object keys of the chunks holding point's
// entries at site.
func pointPartKeys(t *testing.T, s *stack, site, point string) map[string]bool {
	t.Helper()
	p, err := siteRepo(t, s, site).OpenPoint(context.Background(), point)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Parts) == 0 {
		t.Fatalf("point %s has no entry parts", point)
	}
	keys := map[string]bool{}
	for _, part := range p.Parts {
		keys[plan+"/"+repo.ChunkKey(part.ID)] = true
	}
	return keys
}

// corruptObject flips a byte in the middle of the object at key: the same
// size, so only reading it finds the damage.
func corruptObject(t *testing.T, s *stack, site, key string) {
	t.Helper()
	ctx := context.Background()
	mc := s.minio[site].Client(t)
	obj, err := mc.GetObject(ctx, "drorch", key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(obj); err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	bad := body.Bytes()
	bad[len(bad)/2] ^= 0xff
	if _, err := mc.PutObject(ctx, "drorch", key, bytes.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A chunk that vanishes between upload and commit fails the backup at once,
// non-retryably, with a message that names it and says what to do: no
// retry brings it back (it used to be retried for 24 hours).
func TestCommitOfAMissingChunkFailsAtOnce(t *testing.T) {
	s := newStack(t, stackOptions{})
	genTree(t, s.source("primary"), treeSpec{seed: 8, dataBytes: 2 << 20, files: 4})
	var commits atomic.Int32
	var victim atomic.Value
	s.startWorkerWith(&beforeActivity{name: "Commit", fn: func() {
		if commits.Add(1) > 1 {
			return
		}
		for key := range s.chunkObjects("primary") {
			victim.Store(key)
			if err := s.minio["primary"].Client(t).RemoveObject(context.Background(), "drorch", key, minio.RemoveObjectOptions{}); err != nil {
				t.Error(err)
			}
			return
		}
	}})

	started := time.Now()
	err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || !app.NonRetryable() || app.Type() != repo.ReasonMissingChunk {
		t.Fatalf("backup with a chunk deleted before commit: %v; want a non-retryable %s error", err, repo.ReasonMissingChunk)
	}
	key, _ := victim.Load().(string)
	id := key[strings.LastIndex(key, "/")+1:]
	for _, want := range []string{id, "no retry brings them back", "drorch check", "new backup"} {
		if !strings.Contains(app.Error(), want) {
			t.Errorf("the error lacks %q: %s", want, app.Error())
		}
	}
	if n := commits.Load(); n != 1 {
		t.Errorf("commit ran %d times, want once", n)
	}
	if d := time.Since(started); d > time.Minute {
		t.Errorf("the backup took %s to fail", d)
	}
	for o := range s.minio["primary"].Client(t).ListObjects(context.Background(), "drorch", minio.ListObjectsOptions{Prefix: plan + "/points/", Recursive: true}) {
		t.Errorf("a restore point was written: %s %v", o.Key, o.Err)
	}
}

// beforeActivity runs fn before each attempt of the activity name.
type beforeActivity struct {
	interceptor.WorkerInterceptorBase
	name string
	fn   func()
}

func (b *beforeActivity) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &beforeInbound{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, b: b}
}

type beforeInbound struct {
	interceptor.ActivityInboundInterceptorBase
	b *beforeActivity
}

func (i *beforeInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	if activity.GetInfo(ctx).ActivityType.Name == i.b.name {
		i.b.fn()
	}
	return i.Next.ExecuteActivity(ctx, in)
}

// startWorkerWith is startWorker with extra interceptors on every worker.
func (s *stack) startWorkerWith(extra ...interceptor.WorkerInterceptor) {
	s.t.Helper()
	acts := activities.New(s.cfg, s.cl, zerolog.New(s.logs).Level(zerolog.DebugLevel))
	opts := activities.WorkerOptionsFor(s.cfg)
	opts.Interceptors = append(append([]interceptor.WorkerInterceptor{}, extra...), opts.Interceptors...)
	queues := []string{s.queue, workflows.SiteTaskQueue(s.queue, "primary"), workflows.SiteTaskQueue(s.queue, "secondary"),
		workflows.SiteDataTaskQueue(s.queue, "primary"), workflows.SiteDataTaskQueue(s.queue, "secondary")}
	for i, q := range queues {
		w := worker.New(s.cl, q, opts)
		if i == 0 {
			for _, wf := range workflows.All {
				w.RegisterWorkflow(wf)
			}
		}
		w.RegisterActivity(acts)
		if err := w.Start(); err != nil {
			s.t.Fatal(err)
		}
		s.t.Cleanup(w.Stop)
	}
}
