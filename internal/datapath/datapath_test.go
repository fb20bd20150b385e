package datapath_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/source/dir"
	"github.com/drorch/drorch/drivers/store/s3"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/internal/testenv"
)

// The engine backs up a tree into a repository on a real MinIO and restores
// it into a target directory, byte for byte, with no Temporal anywhere:
// progress goes to a Reporter that keeps nothing.
func TestBackupAndRestoreWithoutTemporal(t *testing.T) {
	r := newRepo(t)
	tmp := t.TempDir()
	srcPath, dstPath := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
	const smallFiles = 200
	writeTree(t, srcPath, smallFiles)
	man, up := backup(t, r, srcPath, true)
	// The small files share chunks (format v2): far fewer chunks than files.
	if up.ChunksNew == 0 || up.ChunksNew >= smallFiles {
		t.Errorf("the upload stored %d new chunks for %d small files and 2 large ones; want a few dozen at most", up.ChunksNew, smallFiles)
	}
	restore(t, r, man, dstPath)
	sameTree(t, srcPath, dstPath)
	holeKept(t, dstPath)
}

// A restore of many small files whose runs cut into chunks of one id (here
// identical files of zeros: preallocated or empty-filled files are common)
// holds a bounded number of them in memory, not every file of a chunk id.
func TestRestoreOfRepeatedSmallFilesKeepsMemoryBounded(t *testing.T) {
	r := newRepo(t)
	tmp := t.TempDir()
	srcPath, dstPath := filepath.Join(tmp, "src"), filepath.Join(tmp, "dst")
	const files, size = 3000, 120 << 10 // 352 MiB of zeros, a few distinct chunks
	if err := os.MkdirAll(srcPath, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range files {
		f, err := os.Create(filepath.Join(srcPath, fmt.Sprintf("%05d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	man, up := backup(t, r, srcPath, false)
	t.Logf("%d files of %d KiB: %d chunks", files, size>>10, up.ChunksNew)
	// Little garbage slack, so that the heap in use is close to what is
	// held: the peak then tells a bounded restore from one that gathers.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	stop := sampleHeap(5 * time.Millisecond)
	restore(t, r, man, dstPath)
	peak := stop()
	t.Logf("heap in use at most %d MiB during the restore", peak>>20)
	if limit := uint64(200 << 20); peak > limit {
		t.Errorf("the restore's heap reached %d MiB (limit %d MiB) for %d MiB of small files", peak>>20, limit>>20, files*size>>20)
	}
	sameTree(t, srcPath, dstPath)
}

// sampleHeap samples the heap in use every interval until the returned
// stop is called, which returns the most it saw.
func sampleHeap(interval time.Duration) (stop func() uint64) {
	var peak uint64
	done, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-time.After(interval):
			}
		}
	}()
	return func() uint64 {
		close(done)
		<-sampled
		return peak
	}
}

// newRepo opens a keyed repository on a new MinIO.
func newRepo(t *testing.T) *repo.Repo {
	t.Helper()
	ctx := context.Background()
	m := testenv.StartMinIO(t)
	st, err := s3.New(s3.Config{
		Endpoint: m.Endpoint, Bucket: "datapath", Insecure: true,
		AccessKey: secret.New("test", m.AccessKey), SecretKey: secret.New("test", m.SecretKey),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := repo.New(st, "files", bytes.Repeat([]byte{0x5a}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// backup lists the tree at srcPath into pieces, uploads them, assembles the
// manifest and commits it; withLegacy also checks legacyRecords.
func backup(t *testing.T, r *repo.Repo, srcPath string, withLegacy bool) (*repo.Manifest, datapath.UploadResult) {
	t.Helper()
	ctx := context.Background()
	src, err := dir.New(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	const op = "backup-test"
	pieces := 0
	sp := datapath.Splitter{Emit: func(p datapath.Piece) error {
		err := r.PutStaging(ctx, op, datapath.PieceName(pieces), p)
		pieces++
		return err
	}}
	var index int64
	if err := src.Scan(ctx, func(e source.Entry) error {
		index++
		return sp.AddEntry(index-1, e)
	}); err != nil {
		t.Fatal(err)
	}
	if err := sp.Flush(); err != nil {
		t.Fatal(err)
	}
	u := datapath.NewUploader(r, nil, datapath.Discard{})
	u.Source, u.OnChange = src, "fail"
	if err := u.Upload(ctx, op, 0, pieces, datapath.UploadResult{}); err != nil {
		t.Fatalf("upload: %v", err)
	}
	snap := time.Now().UTC()
	man := r.NewManifest(repo.NewPointID(snap, "test"), "here", "dir", snap, 1)
	if err := datapath.AddUploaded(ctx, r, op, pieces, man); err != nil {
		t.Fatal(err)
	}
	man.ComputeTotals()
	if withLegacy {
		legacyRecords(t, r, op, pieces, man)
	}
	if err := r.CommitPoint(ctx, man, nil); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if err := r.DeleteStaging(ctx, op); err != nil {
		t.Fatal(err)
	}
	return man, u.Result()
}

// restore restores the committed point man, as read back from the
// repository, into dstPath.
func restore(t *testing.T, r *repo.Repo, man *repo.Manifest, dstPath string) {
	t.Helper()
	ctx := context.Background()
	got, err := r.OpenPoint(ctx, man.Point)
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := dir.New(dstPath)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := tgt.Begin(ctx, "restore-test")
	if err != nil {
		t.Fatal(err)
	}
	w := &datapath.Restorer{Repo: r, Target: rs, Reporter: datapath.Discard{}, Local: tgt, Interval: time.Second}
	if err := w.Run(ctx, got, 0, datapath.RestoreStats{}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if err := rs.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	rs.Close()
	if res := w.Result(); res.Files != got.Meta.Totals.Files {
		t.Errorf("the restorer wrote %d files, the point holds %d", res.Files, got.Meta.Totals.Files)
	}
}

// writeTree writes small files in two directories, a 9 MiB file with a hole
// of 6 MiB in its middle, a file of 300 KiB and a symlink.
func writeTree(t *testing.T, root string, small int) {
	t.Helper()
	for i := range small {
		p := filepath.Join(root, fmt.Sprintf("d%d", i%2), fmt.Sprintf("small-%03d", i))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := []byte(strings.Repeat(fmt.Sprintf("small file %d\n", i), 1+i*7))
		if err := os.WriteFile(p, data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(filepath.Join(root, "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 7 << 20} {
		if _, err := f.WriteAt(randomBytes(t, 2<<20), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "medium.bin"), randomBytes(t, 300<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("d0/small-000", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// sameTree checks that dst holds src's entries with the same type, mode,
// bytes and symlink targets, and that the sparse file kept its hole.
func sameTree(t *testing.T, src, dst string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		q := filepath.Join(dst, rel)
		a, err := os.Lstat(p)
		if err != nil {
			return err
		}
		b, err := os.Lstat(q)
		if err != nil {
			t.Errorf("%s: not restored: %v", rel, err)
			return nil
		}
		n++
		if a.Mode() != b.Mode() {
			t.Errorf("%s: mode %v, want %v", rel, b.Mode(), a.Mode())
		}
		switch {
		case a.Mode()&fs.ModeSymlink != 0:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				t.Errorf("%s: symlink to %q, want %q", rel, lb, la)
			}
		case a.Mode().IsRegular():
			x, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			y, err := os.ReadFile(q)
			if err != nil {
				return err
			}
			if !bytes.Equal(x, y) {
				t.Errorf("%s: restored bytes differ (%d bytes, want %d)", rel, len(y), len(x))
			}
			if !a.ModTime().Equal(b.ModTime()) {
				t.Errorf("%s: modification time %v, want %v", rel, b.ModTime(), a.ModTime())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 200 {
		t.Fatalf("compared only %d entries", n)
	}
}

// holeKept checks that the restored sparse.img of writeTree kept its hole.
func holeKept(t *testing.T, dst string) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dst, "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	if blocks := fi.Sys().(*syscall.Stat_t).Blocks * 512; blocks >= fi.Size()-(4<<20) {
		t.Errorf("sparse.img: %d bytes allocated of %d: its hole of 5 MiB was written", blocks, fi.Size())
	}
}

// legacyRecords checks that the records of uploaded pieces an older worker
// wrote (uploaded-NNNNNN, before format v2) are read as well: a copy of
// op's records with piece 0's under the legacy name gives the same entries.
func legacyRecords(t *testing.T, r *repo.Repo, op string, pieces int, want *repo.Manifest) {
	t.Helper()
	ctx := context.Background()
	const legacyOp = "backup-legacy"
	for i := range pieces {
		var up datapath.Uploaded
		if err := r.GetStaging(ctx, op, datapath.UploadedName(i), &up); err != nil {
			t.Fatal(err)
		}
		name := datapath.UploadedName
		if i == 0 {
			name = datapath.LegacyUploadedName
		}
		if err := r.PutStaging(ctx, legacyOp, name(i), up); err != nil {
			t.Fatal(err)
		}
	}
	got := r.NewManifest(want.Point, want.Site, want.Source, want.Snapshot, want.Epoch)
	if err := datapath.AddUploaded(ctx, r, legacyOp, pieces, got); err != nil {
		t.Fatalf("a legacy record: %v", err)
	}
	if len(got.Entries) != len(want.Entries) || got.Entries[1].Path != want.Entries[1].Path {
		t.Errorf("with piece 0's record under its legacy name: %d entries, want %d", len(got.Entries), len(want.Entries))
	}
	if err := r.DeleteStaging(ctx, legacyOp); err != nil {
		t.Fatal(err)
	}
}
