package dir

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers/source"
)

// makeSparse creates a file of size bytes holding data only in islands.
func makeSparse(t *testing.T, path string, size int64, islands []source.Region) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range islands {
		buf := make([]byte, r.Length)
		rand.Read(buf)
		if _, err := f.WriteAt(buf, r.Offset); err != nil {
			t.Fatal(err)
		}
	}
}

// reportsHoles tells whether the file system under dir reports holes: lseek
// SEEK_DATA on a file starting with a hole must skip it.
func reportsHoles(t *testing.T, dir string) bool {
	t.Helper()
	path := filepath.Join(dir, "probe")
	makeSparse(t, path, 8<<20, []source.Region{{Offset: 4 << 20, Length: 4096}})
	defer os.Remove(path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
	return err == nil && off == 4<<20
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func TestSparseFile(t *testing.T) {
	const size = 1 << 30
	islands := []source.Region{
		{Offset: 64 << 20, Length: 8 << 10},
		{Offset: 512<<20 + 12<<10, Length: 4 << 10},
		{Offset: 1000 << 20, Length: 4 << 10}, // then a 24 MiB trailing hole
	}
	tmp := tempDir(t)
	if !reportsHoles(t, tmp) {
		t.Skipf("the file system of %s does not report holes", tmp)
	}
	img := filepath.Join(tmp, "disk.img")
	makeSparse(t, img, size, islands)
	src := mustNew(t, img)

	f, err := src.Open(context.Background(), ".")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	regions := func(off, n int64) []source.Region {
		t.Helper()
		rs, err := f.Regions(off, n)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	for _, c := range []struct {
		name   string
		off, n int64
		want   []source.Region
	}{
		{"whole file", 0, size, islands},
		{"inside one island", islands[0].Offset + 100, 1000, []source.Region{{Offset: islands[0].Offset + 100, Length: 1000}}},
		{"clipped at both ends", islands[0].Offset + 4096, islands[1].Offset + 100 - (islands[0].Offset + 4096),
			[]source.Region{{Offset: islands[0].Offset + 4096, Length: 4096}, {Offset: islands[1].Offset, Length: 100}}},
		{"a hole", 0, islands[0].Offset, nil},
		{"the trailing hole", islands[2].Offset + islands[2].Length, size, nil},
		{"past the end", size, 1 << 20, nil},
		{"empty range", islands[0].Offset, 0, nil},
	} {
		if got := regions(c.off, c.n); !slices.Equal(got, c.want) {
			t.Errorf("%s: regions %v, want %v", c.name, got, c.want)
		}
	}

	// Restore it over an existing file: only the islands are written.
	dst := filepath.Join(tmp, "restored.img")
	if err := os.WriteFile(dst, []byte("an older image"), 0o644); err != nil {
		t.Fatal(err)
	}
	target := mustNew(t, dst)
	restoreAll(t, src, target, "sparse")
	sameTree(t, src, target)
	if got := allocated(t, dst); got >= 10<<20 {
		t.Errorf("restored image allocates %d bytes, want < 10 MiB", got)
	}
	rf, err := target.Open(context.Background(), ".")
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	if got, err := rf.Regions(0, size); err != nil || !slices.Equal(got, islands) {
		t.Errorf("restored regions %v (%v), want %v", got, err, islands)
	}
}
