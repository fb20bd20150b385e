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
	s.backup()

	out, errOut, err := s.drorch("check", "--plan", plan, "--site", "primary", "--read-data", "--wait")
	if err != nil || !strings.Contains(out, "OK") {
		t.Fatalf("check of a sound repository: %v\n%s\n%s", err, out, errOut)
	}

	keys := make([]string, 0)
	for key := range s.chunkObjects("primary") {
		keys = append(keys, key)
	}
	if len(keys) < 3 {
		t.Fatalf("only %d chunks", len(keys))
	}
	corrupt, deleted := keys[0], keys[1]
	ctx := context.Background()
	mc := s.minio["primary"].Client(t)
	obj, err := mc.GetObject(ctx, "drorch", corrupt, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(obj); err != nil {
		t.Fatal(err)
	}
	bad := body.Bytes()
	bad[len(bad)/2] ^= 0xff // same size: only reading finds it
	if _, err := mc.PutObject(ctx, "drorch", corrupt, bytes.NewReader(bad), int64(len(bad)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := mc.RemoveObject(ctx, "drorch", deleted, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	// Without reading: the deleted chunk only.
	out, _, err = s.drorch("check", "--plan", plan, "--site", "primary", "--wait")
	if err == nil || !strings.Contains(out, deleted) || strings.Contains(out, corrupt) {
		t.Fatalf("check without --read-data: err %v, want exit non-zero naming %s only\n%s", err, deleted, out)
	}
	out, errOut, err = s.drorch("check", "--plan", plan, "--site", "primary", "--read-data", "--wait")
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

	b := s.backup() // the same data: only the damaged chunks are new
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
