package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/workflows"
)

// smallTree writes n small files of odd names, modes and sizes 0..300 KiB
// (most of a few KiB, as trees of sources and documents are) under
// root/small, with past mtimes with nanoseconds.
func smallTree(t *testing.T, root string, seed uint64, n int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed*31+7))
	names := []string{"a.txt", "ünï cødé.md", "line\nbreak", "\xff\xfe-not-utf8", "tab\there", "quote\"d", ".hidden", "日本語.go", "sp ace", "x"}
	modes := []os.FileMode{0o644, 0o600, 0o755, 0o444, 0o640}
	dirs := []string{"small", "small/src", "small/src/deep/er", "small/ünï", "small/many"}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Date(2025, 3, 1, 8, 0, 0, 0, time.UTC)
	for i := range n {
		var size int64
		switch {
		case i%300 == 7:
			size = 256<<10 + rng.Int64N(44<<10) // just above ChunkMin: chunked alone
		case i%100 == 3:
			size = rng.Int64N(300 << 10)
		case i%10 == 1:
			size = rng.Int64N(64 << 10)
		case i%50 == 9:
			size = 0
		default:
			size = rng.Int64N(4 << 10)
		}
		p := filepath.Join(root, dirs[i%len(dirs)], fmt.Sprintf("%04d-%s", i, names[i%len(names)]))
		writeRandom(t, rng, p, size)
		if err := os.Chmod(p, modes[i%len(modes)]); err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(i)*time.Minute + time.Duration(rng.IntN(1e9)))
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
	}
}

// Small files (format v2): 3,000 files under 300 KiB beside a few large ones
// back up as a few dozen chunk objects, transmit, and restore byte for byte
// at the other site; a second backup after changing 3 files and adding 2
// stores a few chunks; a restore over the tree fetches almost nothing.
func TestSmallFilesShareChunks(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	src, dst := s.source("primary"), s.source("secondary")
	genTree(t, src, treeSpec{seed: 5, dataBytes: 12 << 20, files: 12}) // large files, links, empty files
	const n = 3000
	smallTree(t, src, 9, n)

	first := s.backup()
	objs := s.chunkObjects("primary")
	t.Logf("first backup: %d chunk objects for %d small files and the rest; %+v", len(objs), n, first)
	if len(objs) > n/20 {
		t.Fatalf("%d chunk objects for %d small files: want far fewer objects than files", len(objs), n)
	}
	s.transmit()
	if got := s.chunkObjects("secondary"); len(got) != len(objs) {
		t.Fatalf("the secondary holds %d chunk objects, the primary %d", len(got), len(objs))
	}
	r1 := s.restore("secondary", "")
	requireSameTree(t, src, dst)
	if r1.ChunksLocal != 0 {
		t.Fatalf("the first restore into an empty target took %d chunks from it", r1.ChunksLocal)
	}
	t.Logf("first restore: %d chunks fetched", r1.Chunks)
	if r1.Chunks > int64(len(objs))+int64(len(objs))/2 {
		t.Errorf("the restore fetched %d chunks for %d objects: slices of one chunk should share a fetch", r1.Chunks, len(objs))
	}

	// Change 3 small files (same size, new bytes and mtime) and add 2.
	rng := rand.New(rand.NewPCG(3, 4))
	changed := 0
	err := filepath.Walk(filepath.Join(src, "small", "many"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Size() < 100 || changed >= 3 || fi.Mode().Perm()&0o200 == 0 {
			return err
		}
		writeRandom(t, rng, p, fi.Size())
		changed++
		return nil
	})
	if err != nil || changed != 3 {
		t.Fatalf("changed %d files: %v", changed, err)
	}
	writeRandom(t, rng, filepath.Join(src, "small", "src", "new-1.txt"), 1234)
	writeRandom(t, rng, filepath.Join(src, "small", "ünï", "new-2 ☃"), 40<<10)
	second := s.backup()
	objs2 := s.chunkObjects("primary")
	t.Logf("second backup: %d new chunk objects; %+v", len(objs2)-len(objs), second)
	if newObjs := len(objs2) - len(objs); newObjs < 1 || newObjs > 6 {
		t.Fatalf("the second backup stored %d new chunk objects after changing 3 small files and adding 2: want a few", newObjs)
	}
	if second.Unchanged < n-10 {
		t.Errorf("the second backup read %d files again; want only the changed ones", int64(n)-second.Unchanged)
	}
	s.transmit()
	r2 := s.restore("secondary", "")
	requireSameTree(t, src, dst)
	fetched := r2.Chunks - r2.ChunksLocal
	t.Logf("restore over the tree: %d of %d chunks fetched, %d taken from the target", fetched, r2.Chunks, r2.ChunksLocal)
	if fetched > 8 || r2.ChunksLocal < n/2 {
		t.Fatalf("the restore over the tree fetched %d chunks and took %d from the target; want (almost) everything from the target", fetched, r2.ChunksLocal)
	}

	// A drill-style full backup reads everything again: the run cuts the
	// same chunks where nothing changed.
	var full workflows.BackupResult
	if err := s.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan, Full: true}, &full); err != nil {
		t.Fatal(err)
	}
	if newObjs := len(s.chunkObjects("primary")) - len(objs2); newObjs > 6 {
		t.Fatalf("a full backup of an unchanged tree stored %d new chunk objects", newObjs)
	}
}

// A worker dies mid-restore of many small files; a finished file of slices is
// then damaged on disk, its size and mtime kept. The resumed attempt checks it
// whole (a slice cannot be checked alone), writes it again, and the restored
// tree is the source's.
func TestWorkerKilledDuringSmallFilesRestore(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	src := s.source("primary")
	genTree(t, src, treeSpec{seed: 11, dataBytes: 8 << 20, files: 4})
	smallTree(t, src, 12, 3000)
	entries := scanOrder(t, src)
	w := s.spawnWorker()
	s.backup()

	to := filepath.Join(s.dir, "restored")
	letGo := holdSwap(t, to)
	run := s.start(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", To: to})
	// Wait for most small files to be reported finished.
	waitFor(t, "a restore heartbeat naming finished small files", 5*time.Minute, func() bool { return s.resumePoint(run) > len(entries)/2 })
	w.kill()
	letGo()
	next := s.resumePoint(run)
	if !s.running(run) {
		t.Fatalf("the restore ended before the worker was killed")
	}
	var stagingDir string
	for _, p := range restoreBookkeeping(t, s.dir) {
		if strings.Contains(filepath.Base(p), ".drorch-staging-") {
			stagingDir = p
		}
	}
	if stagingDir == "" {
		t.Fatal("no staging beside the target after the kill")
	}
	// A small file reported finished gets other bytes, same size and mtime.
	victim := -1
	for i := 0; i < next; i++ {
		if e := entries[i]; e.Type == "file" && e.Size > 100 && e.Size < 64<<10 && strings.HasPrefix(e.Path, "small/") {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("no small file before resume point %d", next)
	}
	vpath := filepath.Join(stagingDir, filepath.FromSlash(entries[victim].Path))
	fi, err := os.Stat(vpath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(vpath, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(vpath, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("damaged"), 10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(vpath, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(vpath, fi.Mode().Perm()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(vpath, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the worker at resume point %d of %d entries; damaged %q", next, len(entries), entries[victim].Path)

	w2 := s.spawnWorker()
	var res workflows.RestoreResult
	if err := s.wait(run, &res); err != nil {
		t.Fatalf("restore after the worker was killed: %v\n%s", err, s.logs.Tail(3000))
	}
	requireSameTree(t, src, to)
	log := string(w2.log.Bytes())
	if !strings.Contains(log, "failed its check") || !strings.Contains(log, "its content has SHA-256") {
		t.Errorf("the resumed restore did not report the damaged small file it wrote again:\n%s", tailLines(log, 20))
	}
}

// A manifest whose slice or whole-file SHA-256 does not match what the chunks
// hold stops the restore with a non-retryable Corrupt error naming the file
// (and the chunk), and the target is not touched.
func TestRestoreCatchesABadSlice(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.startWorker()
	src := s.source("primary")
	smallTree(t, src, 21, 40)
	res := s.backup()
	r := siteRepo(t, s, "primary")
	ctx := context.Background()
	good, err := r.GetManifest(ctx, res.Point)
	if err != nil {
		t.Fatal(err)
	}
	if good.Version < repo.ManifestVersionSlices {
		t.Fatalf("a point of small files has manifest version %d, want %d or later (slices)", good.Version, repo.ManifestVersionSlices)
	}
	victim := -1
	for i, e := range good.Entries {
		if e.SHA256 != "" && e.Size > 100 && len(e.Chunks) == 1 {
			victim = i
			break
		}
	}
	if victim < 0 {
		t.Fatal("no file of one slice in the point")
	}
	path := good.Entries[victim].Path
	for _, c := range []struct {
		name   string
		change func(e *repo.Entry)
		want   []string
	}{
		{"sha256", func(e *repo.Entry) { e.SHA256 = strings.Repeat("ab", 32) }, []string{path, "SHA-256"}},
		{"slice past the chunk", func(e *repo.Entry) { e.Chunks[0].Off = repo.ChunkMax - e.Chunks[0].Size }, []string{path, e0(good, victim)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := r.GetManifest(ctx, res.Point)
			if err != nil {
				t.Fatal(err)
			}
			c.change(&m.Entries[victim])
			m.Point = repo.NewPointID(time.Now(), randomHex(4)) // a point of its own
			if err := r.PutManifest(ctx, m); err != nil {
				t.Fatal(err)
			}
			to := filepath.Join(s.dir, "restored-"+strings.ReplaceAll(c.name, " ", "-"))
			err = s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "primary", Point: m.Point, To: to}, nil)
			var app *temporal.ApplicationError
			if !errors.As(err, &app) || !app.NonRetryable() || app.Type() != "Corrupt" {
				t.Fatalf("restore: %v; want a non-retryable Corrupt error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(app.Error(), w) {
					t.Errorf("the error does not name %q: %v", w, app.Error())
				}
			}
			if _, err := os.Stat(to); !os.IsNotExist(err) {
				t.Errorf("a failed restore created the target: %v", err)
			}
		})
	}
}

// e0 is the chunk id of the first ref of entry i.
func e0(m *repo.Manifest, i int) string { return m.Entries[i].Chunks[0].ID.String() }
