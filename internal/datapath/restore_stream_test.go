package datapath_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
)

// countingTarget is a source.Restore that keeps nothing: it counts the
// entries it is given, so that a test measures the restorer's memory alone.
// staged, when set, answers Staged, and the files written are listed.
type countingTarget struct {
	mu          sync.Mutex
	dirs, files int
	written     []string
	staged      func(path string) (source.File, error)
}

func (c *countingTarget) Dir(source.Entry) error     { c.dirs++; return nil }
func (c *countingTarget) Symlink(source.Entry) error { return nil }
func (c *countingTarget) File(e source.Entry) (source.FileWriter, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files++
	if c.staged != nil {
		c.written = append(c.written, e.Path)
	}
	return nopWriter{}, nil
}
func (c *countingTarget) Sync() error { return nil }
func (c *countingTarget) Staged(path string) (source.File, error) {
	if c.staged != nil {
		return c.staged(path)
	}
	return nil, errors.New("nothing staged")
}
func (c *countingTarget) Commit(context.Context) error   { return nil }
func (c *countingTarget) Abort() error                   { return nil }
func (c *countingTarget) Close() error                   { return nil }
func (c *countingTarget) Resumed() bool                  { return false }
func (nopWriter) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (nopWriter) Close() error                           { return nil }

type nopWriter struct{}

// stagedEmpty is a staged empty file modified at mtime.
type stagedEmpty struct {
	size  int64
	mtime time.Time
}

func (f stagedEmpty) ReadAt([]byte, int64) (int, error)             { return 0, io.EOF }
func (f stagedEmpty) Close() error                                  { return nil }
func (f stagedEmpty) Regions(int64, int64) ([]source.Region, error) { return nil, nil }
func (f stagedEmpty) Changed(source.Entry) (bool, error)            { return false, nil }
func (f stagedEmpty) Stat() (int64, time.Time, error)               { return f.size, f.mtime, nil }

// emptyFilesPoint commits a v3 point of n empty files, 1,000 to a
// directory.
func emptyFilesPoint(t *testing.T, r *repo.Repo, n int) *repo.Point {
	t.Helper()
	ctx := context.Background()
	mt := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	id := repo.NewPointID(time.Now(), fmt.Sprintf("n%d", n))
	w, err := r.NewPointWriter(ctx, r.NewManifest(id, "dc1", "dir", mt, 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	add := func(e repo.Entry) {
		if err := w.Add(ctx, &e); err != nil {
			t.Fatal(err)
		}
	}
	add(repo.Entry{Path: ".", Type: source.TypeDir, Mode: 0o755, ModTime: mt})
	for i := range n {
		if i%1000 == 0 {
			add(repo.Entry{Path: fmt.Sprintf("d%04d", i/1000), Type: source.TypeDir, Mode: 0o755, ModTime: mt})
		}
		add(repo.Entry{Path: fmt.Sprintf("d%04d/f%07d", i/1000, i), Type: source.TypeFile, Mode: 0o644, ModTime: mt})
	}
	if err := w.Commit(ctx, nil); err != nil {
		t.Fatal(err)
	}
	p, err := r.OpenPoint(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// restorePeak restores p into a target that keeps nothing and returns the
// most heap in use meanwhile, above what was in use before.
func restorePeak(t *testing.T, r *repo.Repo, p *repo.Point) uint64 {
	t.Helper()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := sampleHeap(2 * time.Millisecond)
	tgt := &countingTarget{}
	w := &datapath.Restorer{Repo: r, Target: tgt, Reporter: datapath.Discard{}, Interval: time.Second}
	err := w.Run(context.Background(), p, 0, datapath.RestoreStats{})
	peak := max(stop(), base)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := w.Result().Files; got != p.Meta.Totals.Files || int64(tgt.files) != got {
		t.Fatalf("the restorer wrote %d files (the target got %d), the point holds %d", got, tgt.files, p.Meta.Totals.Files)
	}
	return peak - base
}

// The restorer reads a point's entries as a stream: the heap it needs for a
// point ten times larger is about the same, where holding the entries would
// take some 200 bytes each (36 MiB more for 180,000 more entries).
func TestRestoreMemoryDoesNotGrowWithEntries(t *testing.T) {
	r := newRepo(t)
	small, large := emptyFilesPoint(t, r, 20_000), emptyFilesPoint(t, r, 200_000)
	if len(large.Parts) < 10 {
		t.Fatalf("the large point has %d parts; want its entries spread over many", len(large.Parts))
	}
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	s, l := restorePeak(t, r, small), restorePeak(t, r, large)
	t.Logf("heap above the baseline at most: %d KiB for 20,000 entries, %d KiB for 200,000 (%d parts)", s>>10, l>>10, len(large.Parts))
	if l > s+8<<20 {
		t.Errorf("restoring 200,000 entries took %d KiB of heap, 20,000 took %d KiB: memory grows with the entries", l>>10, s>>10)
	}
}

// A resumed restore replays every directory once, rechecks the files before
// its resume point, and writes only those that failed the check and the
// files from the resume point on.
func TestResumedRestoreWritesFromItsResumePoint(t *testing.T) {
	r := newRepo(t)
	p := emptyFilesPoint(t, r, 5000)
	mt := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	const next = 3002 // in the third directory
	var paths []string
	var dirs int
	if err := p.Entries(context.Background(), 0, func(_ int64, e *repo.Entry) error {
		paths = append(paths, e.Path)
		if e.Type == source.TypeDir {
			dirs++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	victim := paths[1500]
	tgt := &countingTarget{staged: func(path string) (source.File, error) {
		if path == victim {
			return stagedEmpty{size: 7, mtime: mt}, nil // torn: the check fails
		}
		return stagedEmpty{mtime: mt}, nil
	}}
	w := &datapath.Restorer{Repo: r, Target: tgt, Reporter: datapath.Discard{}, Interval: time.Second}
	done := datapath.RestoreStats{Files: 2990} // as the earlier attempt counted them
	if err := w.Run(context.Background(), p, next, done); err != nil {
		t.Fatal(err)
	}
	isFile := func(path string) bool { return strings.Contains(path, "/f") }
	want := []string{victim}
	for _, path := range paths[next:] {
		if isFile(path) {
			want = append(want, path)
		}
	}
	var before int64
	for _, path := range paths[:next] {
		if isFile(path) {
			before++
		}
	}
	slices.Sort(tgt.written)
	slices.Sort(want)
	if !slices.Equal(tgt.written, want) {
		t.Errorf("the resumed restore wrote %d files (first %q), want the %d from entry %d on and the damaged %q", len(tgt.written), tgt.written[:min(3, len(tgt.written))], len(want)-1, next, victim)
	}
	if tgt.dirs != dirs {
		t.Errorf("the resumed restore replayed %d directories, the point has %d", tgt.dirs, dirs)
	}
	res := w.Result()
	if res.FilesRechecked != before || res.FilesRewritten != 1 || res.Files != done.Files+int64(len(want)) {
		t.Errorf("result %+v: want %d files rechecked, 1 rewritten, %d files", res, before, done.Files+int64(len(want)))
	}
}
