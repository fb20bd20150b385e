package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/workflows"
)

// manyEntriesTree writes dirs directories of perDir small files each (some
// empty), with a file above ChunkMin every 997 files: a tree whose entries
// fill several parts of a v3 point.
func manyEntriesTree(t *testing.T, root string, seed uint64, dirs, perDir int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed*131+5))
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	for d := range dirs {
		dp := filepath.Join(root, fmt.Sprintf("d%03d", d))
		if err := os.MkdirAll(dp, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range perDir {
			var size int64
			switch {
			case n%997 == 5:
				size = 300<<10 + rng.Int64N(64<<10)
			case n%17 == 0:
				size = 0
			default:
				size = 1 + rng.Int64N(300)
			}
			p := filepath.Join(dp, fmt.Sprintf("f%03d", f))
			b := make([]byte, size)
			fillRandom(rng, b)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			mt := base.Add(time.Duration(n) * time.Second)
			if err := os.Chtimes(p, mt, mt); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
}

// A restore of a point whose entries span several parts is streamed: the
// worker killed mid-way, the next attempt rechecks the files reported
// finished (rewriting one damaged after the kill, in a later part than the
// first), walks on from the resume point, and the result is byte for byte
// the source.
func TestWorkerKilledDuringManyPartsRestore(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	src := s.source("primary")
	began := time.Now()
	manyEntriesTree(t, src, 31, 300, 100) // 30,300 entries
	entries := scanOrder(t, src)
	w := s.spawnWorker()
	t.Logf("tree written in %s", time.Since(began))
	bk := s.backup()
	t.Logf("backup done at %s", time.Since(began))

	p, err := siteRepo(t, s, "primary").OpenPoint(context.Background(), bk.Point)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Chunked() || len(p.Parts) < 3 || p.Meta.Totals.Entries != int64(len(entries)) {
		t.Fatalf("point %s: version %d, %d parts, %d entries; want a v3 point of %d entries in 3 parts or more",
			bk.Point, p.Meta.Version, len(p.Parts), p.Meta.Totals.Entries, len(entries))
	}
	firstPart := int(p.Parts[0].Count)

	to := filepath.Join(s.dir, "restored")
	letGo := holdSwap(t, to)
	run := s.start(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to})
	// Once half the tree is staged, the store freezes: the restore stalls
	// mid-way, and the worker is killed once a heartbeat names a resume
	// point past the first part.
	stagedHalf := func() bool {
		for _, b := range restoreBookkeeping(t, s.dir) {
			if _, err := os.Stat(filepath.Join(b, "d150")); err == nil {
				return true
			}
		}
		return false
	}
	waitFor(t, "the restore to stage half the tree", 5*time.Minute, stagedHalf)
	s.minio["primary"].Pause(t)
	waitFor(t, "a restore heartbeat past the first part", 5*time.Minute, func() bool { return s.resumePoint(run) > firstPart+200 })
	time.Sleep(3 * time.Second) // a checkpoint or two more, as far as the frozen store lets it go
	w.kill()
	letGo()
	s.minio["primary"].Resume(t)
	t.Logf("killed at %s", time.Since(began))
	next := s.resumePoint(run)
	if !s.running(run) {
		t.Fatalf("the restore ended before the worker was killed")
	}
	var stagingDir string
	for _, b := range restoreBookkeeping(t, s.dir) {
		if strings.Contains(filepath.Base(b), ".drorch-staging-") {
			stagingDir = b
		}
	}
	if stagingDir == "" {
		t.Fatal("no staging beside the target after the kill")
	}
	if next >= len(entries) {
		t.Fatalf("the restore reached its end (resume point %d) before it was killed", next)
	}
	// The last small file before the resume point, in a later part than the
	// first, gets other bytes of the same size and mtime.
	victim := -1
	for i := firstPart; i < next; i++ {
		if e := entries[i]; e.Type == "file" && e.Size > 20 && e.Size < 1024 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no small file between the first part's end %d and resume point %d", firstPart, next)
	}
	vpath := filepath.Join(stagingDir, filepath.FromSlash(entries[victim].Path))
	fi, err := os.Stat(vpath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(vpath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damaged"), 3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Chtimes(vpath, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries in %d parts (%d in the first); killed the worker at resume point %d; damaged %q (entry %d)",
		len(entries), len(p.Parts), firstPart, next, entries[victim].Path, victim)

	w2 := s.spawnWorker()
	var res workflows.RestoreResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("restore after the worker was killed: %v\n%s", err, s.logs.Tail(3000))
	}
	t.Logf("restored at %s", time.Since(began))
	requireSameTree(t, src, to)
	if res.Entries != int64(len(entries)) {
		t.Errorf("the restore reports %d entries, the point holds %d", res.Entries, len(entries))
	}
	log := string(w2.log.Bytes())
	if !strings.Contains(log, "failed its check") || !strings.Contains(log, entries[victim].Path) {
		t.Errorf("the resumed restore did not report the damaged file %q it wrote again:\n%s", entries[victim].Path, tailLines(log, 20))
	}
	if n := strings.Count(log, "failed its check"); n != 1 {
		t.Errorf("the resumed restore reported %d files failing their check, want the 1 damaged:\n%s", n, tailLines(log, 20))
	}
	if left := restoreBookkeeping(t, s.dir); len(left) > 0 {
		t.Errorf("the restore left %v behind", left)
	}
}
