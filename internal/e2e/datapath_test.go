package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/workflows"
)

// The whole data path on real servers: backup at the primary, transmit,
// restore at the secondary, with the restored tree identical; then an
// unchanged backup uploads nothing and a 1% change uploads little and
// transmits only what is new. No secret shows up in any history.
func TestBackupTransmitRestore(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	src := s.source("primary")
	genTree(t, src, treeSpec{seed: 1, dataBytes: 200 << 20, files: 400, sparseSize: 1 << 30})

	b1 := s.backup()
	if b1.Totals.Files < 400 || b1.BytesRead < 200<<20 {
		t.Fatalf("backup read %d files, %d bytes; want the whole tree: %+v", b1.Totals.Files, b1.BytesRead, b1)
	}
	if b1.BytesRead > 200<<20+16<<20 {
		t.Errorf("backup read %d bytes: the holes of the sparse image were read as data", b1.BytesRead)
	}
	t.Logf("full backup: %d files, read %d bytes, %d/%d chunks new, uploaded %d bytes in %s", b1.Totals.Files, b1.BytesRead, b1.ChunksNew, b1.Chunks, b1.Uploaded, b1.Duration)
	t1 := s.transmit()
	t.Logf("transmit: %d/%d chunks, %d bytes in %s", t1.ChunksCopied, t1.Chunks, t1.BytesCopied, t1.Duration)
	if t1.Point != b1.Point || t1.ChunksCopied == 0 || t1.ChunksCopied != t1.Chunks {
		t.Fatalf("first transmit: %+v, want every chunk of %s copied", t1, b1.Point)
	}
	r1 := s.restore("secondary", "")
	if r1.Point != b1.Point {
		t.Fatalf("restored %s, want %s", r1.Point, b1.Point)
	}
	dst := s.source("secondary")
	requireSameTree(t, src, dst)
	requireSparse(t, filepath.Join(dst, "media", "disk.img"), 32<<20)

	// No change: no chunk is uploaded, and no file is read again.
	b2 := s.backup()
	if b2.ChunksNew != 0 || b2.BytesNew != 0 {
		t.Fatalf("a backup with no change uploaded %d chunks (%d bytes)", b2.ChunksNew, b2.BytesNew)
	}
	if b2.BytesRead != 0 || b2.Unchanged != b1.Totals.Files || b2.Parent != b1.Point {
		t.Fatalf("a backup with no change read %d bytes and took %d of %d files from %q", b2.BytesRead, b2.Unchanged, b1.Totals.Files, b2.Parent)
	}
	// --full reads everything again, and still uploads nothing.
	var full workflows.BackupResult
	if err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan, Full: true}, &full); err != nil {
		t.Fatal(err)
	}
	if full.BytesRead != b1.BytesRead || full.ChunksNew != 0 || full.Unchanged != 0 {
		t.Fatalf("a full backup with no change: read %d (want %d), %d new chunks, %d unchanged", full.BytesRead, b1.BytesRead, full.ChunksNew, full.Unchanged)
	}

	// About 1% of the data changes: two 1 MiB regions overwritten in place.
	// The data set is the bytes a backup reads; the image's holes cost nothing.
	changed := changeBytes(t, src, b1.BytesRead/100)
	b3 := s.backup()
	if limit := b1.BytesRead / 20; b3.BytesNew > limit || b3.BytesNew == 0 {
		t.Fatalf("after changing %d bytes, the backup uploaded %d bytes of new chunks; want (0, %d]", changed, b3.BytesNew, limit)
	}
	t.Logf("1%% change (%d bytes): backup read %d, new %d bytes in %d chunks", changed, b3.BytesRead, b3.BytesNew, b3.ChunksNew)
	t3 := s.transmit()
	// It copies the new data chunks and the parts of the entries that changed.
	parts := newParts(t, s, b1.Point, b3.Point)
	if t3.Point != b3.Point || t3.ChunksCopied != b3.ChunksNew+parts {
		t.Fatalf("the transmit after a 1%% change copied %d chunks; the backup made %d new ones and %d new entry parts", t3.ChunksCopied, b3.ChunksNew, parts)
	}
	s.restore("secondary", "")
	requireSameTree(t, src, dst)

	// The restore points are listed at both sites.
	var pts workflows.PointsResult
	if err := s.run(workflows.OpPoints, workflows.Points, workflows.PointsInput{Plan: plan, Site: "secondary"}, &pts); err != nil {
		t.Fatal(err)
	}
	if len(pts.Points) != 2 || pts.Points[0].Point != b1.Point || pts.Points[1].Point != b3.Point {
		t.Fatalf("points at the secondary: %+v, want %s and %s", pts.Points, b1.Point, b3.Point)
	}

	requireNoSecrets(t, s)
	requireSearchAttributes(t, s)

	// The history of the first backup does not grow with the data set: 404
	// files and 501 chunks took a handful of activities, not one per file.
	if n := s.historyLength(s.runs[0]); n > 150 {
		t.Fatalf("the backup's history has %d events for %d files", n, b1.Totals.Files)
	} else {
		t.Logf("backup history: %d events", n)
	}
}

// changeBytes overwrites about n bytes of the largest files in place and
// returns how many it changed.
func changeBytes(t *testing.T, root string, n int64) int64 {
	t.Helper()
	var files []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > 2<<20 && !strings.HasSuffix(p, ".img") {
			files = append(files, p)
		}
		return nil
	})
	if len(files) == 0 {
		t.Fatal("no file to change")
	}
	var done int64
	patch := bytes.Repeat([]byte("drorch changed this "), 1<<16)[:1<<20]
	for i := 0; done < n; i++ {
		p := files[i%len(files)]
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		size := min(int64(len(patch)), n-done)
		if _, err := f.WriteAt(patch[:size], 1<<20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		done += size
	}
	return done
}

// requireSparse fails unless the file takes at most maxDisk bytes on disk.
func requireSparse(t *testing.T, p string, maxDisk int64) {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > maxDisk {
		t.Fatalf("%s takes %d bytes on disk for %d bytes: it was not restored sparse", p, st.Blocks*512, st.Size)
	}
}

func requireNoSecrets(t *testing.T, s *stack) {
	t.Helper()
	hist := s.historyJSON()
	if !strings.Contains(hist, "BackupInput") && !strings.Contains(hist, plan) {
		t.Fatalf("the history looks empty: %.300s", hist)
	}
	logs := string(s.logs.Bytes())
	for _, secret := range s.secrets {
		if strings.Contains(hist, secret) {
			t.Errorf("a secret (%.4s…) appears in a workflow history", secret)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("a secret (%.4s…) appears in the worker's log", secret)
		}
	}
}

func requireSearchAttributes(t *testing.T, s *stack) {
	t.Helper()
	run := s.runs[0]
	desc, err := s.cl.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	fields := desc.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()
	for _, name := range []string{workflows.PlanAttr.GetName(), workflows.SiteAttr.GetName(), workflows.OperationAttr.GetName()} { // DrorchRPOBreached is on Protect runs only
		if fields[name] == nil {
			t.Errorf("search attribute %s is not set on %s (has %v)", name, run.GetID(), fields)
		}
	}
}

// A chunk corrupted at the destination is caught by the restore, which names
// it; the target keeps what it had.
func TestRestoreCatchesACorruptChunk(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	genTree(t, s.source("primary"), treeSpec{seed: 2, dataBytes: 8 << 20, files: 20})
	s.backup()
	s.transmit()

	dst := s.source("secondary")
	if err := os.WriteFile(filepath.Join(dst, "keep-me"), []byte("production data"), 0o644); err != nil {
		t.Fatal(err)
	}
	var victim string
	for key := range s.chunkObjects("secondary") {
		victim = key
		break
	}
	corruptObject(t, s, "secondary", victim)

	err := s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary"}, nil)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || !app.NonRetryable() || app.Type() != "Corrupt" {
		t.Fatalf("restore of a corrupt chunk: %v; want a non-retryable Corrupt error", err)
	}
	id := victim[strings.LastIndex(victim, "/")+1:]
	if !strings.Contains(app.Error(), id) {
		t.Fatalf("the error does not name the chunk %s: %v", id, app.Error())
	}
	got, err := os.ReadFile(filepath.Join(dst, "keep-me"))
	if err != nil || string(got) != "production data" {
		t.Fatalf("the target was touched by a failed restore: %q, %v", got, err)
	}
	entries, _ := os.ReadDir(dst)
	if len(entries) != 1 {
		t.Fatalf("the target holds %d entries after a failed restore, want only keep-me", len(entries))
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".drorch-*"))
	if len(leftovers) > 0 {
		t.Fatalf("a failed restore left staging behind: %v", leftovers)
	}
}

// Bad credentials and a bucket that cannot be created fail at once with a
// clear, non-retryable error, not an endless retry loop.
func TestStoreAccessErrorsAreNotRetried(t *testing.T) {
	cases := []struct {
		name     string
		opts     stackOptions
		addUser  bool
		wantType string
		wantText string
	}{
		{
			name:     "wrong secret key",
			opts:     stackOptions{overrides: func(site string, st map[string]string) { st["secretKey"] = "wrong-secret-key-123" }},
			wantType: "AccessDenied",
			wantText: "access denied",
		},
		{
			name: "missing bucket without permission to create it",
			opts: stackOptions{bucket: "drorch-missing", overrides: func(site string, st map[string]string) {
				st["accessKey"], st["secretKey"] = "limited-user", "limited-user-secret"
			}},
			addUser:  true,
			wantText: "drorch-missing",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, tc.opts)
			if tc.addUser {
				policy := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject","s3:PutObject","s3:ListBucket"],"Resource":["arn:aws:s3:::drorch-missing","arn:aws:s3:::drorch-missing/*"]}]}`
				s.minio["primary"].AddUser(t, "limited-user", "limited-user-secret", policy)
			}
			s.startWorker()
			genTree(t, s.source("primary"), treeSpec{seed: 3, dataBytes: 1 << 20, files: 3})
			start := time.Now()
			err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || !app.NonRetryable() {
				t.Fatalf("backup: %v; want a non-retryable error", err)
			}
			if tc.wantType != "" && app.Type() != tc.wantType {
				t.Errorf("error type %q, want %q (%v)", app.Type(), tc.wantType, app)
			}
			if !strings.Contains(strings.ToLower(app.Error()), tc.wantText) {
				t.Errorf("error %q does not say %q", app.Error(), tc.wantText)
			}
			t.Logf("failed after %s with: %v", time.Since(start).Round(time.Millisecond), app)
			requireNoSecrets(t, s)
		})
	}
}

// A file written to throughout the backup is never stored torn: the backup
// re-reads it (retry) or stops (fail), and names it.
func TestFileChangingDuringBackupIsNotStoredTorn(t *testing.T) {
	for _, policy := range []string{"fail", "retry"} {
		t.Run(policy, func(t *testing.T) {
			s := newStack(t, stackOptions{onChange: policy})
			s.startWorker()
			src := s.source("primary")
			genTree(t, src, treeSpec{seed: 5, dataBytes: 4 << 20, files: 5})
			busy := filepath.Join(src, "busy.log")
			if err := os.WriteFile(busy, bytes.Repeat([]byte{'x'}, 64<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				f, err := os.OpenFile(busy, os.O_WRONLY, 0)
				if err != nil {
					return
				}
				defer f.Close()
				for i := int64(0); ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					f.WriteAt([]byte{byte(i)}, (i*7919)%(64<<20))
					time.Sleep(time.Millisecond)
				}
			}()
			err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan}, nil)
			close(stop)
			<-done
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || !app.NonRetryable() || app.Type() != "SourceChanged" {
				t.Fatalf("backup of a file that keeps changing: %v; want a non-retryable SourceChanged error", err)
			}
			if !strings.Contains(app.Error(), "busy.log") {
				t.Fatalf("the error does not name the file: %v", app)
			}
			if policy == "retry" && !strings.Contains(app.Error(), "re-reads") {
				t.Fatalf("with retry, the error should say it re-read the file: %v", app)
			}
			// Nothing was committed.
			var pts workflows.PointsResult
			if err := s.run(workflows.OpPoints, workflows.Points, workflows.PointsInput{Plan: plan, Site: "primary"}, &pts); err != nil {
				t.Fatal(err)
			}
			if len(pts.Points) != 0 {
				t.Fatalf("a failed backup left restore points: %+v", pts.Points)
			}
		})
	}
}
