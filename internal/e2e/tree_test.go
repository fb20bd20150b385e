package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"
)

// treeSpec says what genTree makes.
type treeSpec struct {
	seed       uint64
	dataBytes  int64 // total bytes of the regular files (random, incompressible)
	files      int   // how many of them
	sparseSize int64 // size of a sparse disk image, 0 for none
}

// genTree writes a tree with every kind of entry a backup must keep: nested
// and empty directories, empty files, symlinks (relative, absolute,
// dangling), unicode and awkward names, unusual modes, past mtimes with
// nanoseconds, and optionally a large sparse image with a few data islands.
func genTree(t *testing.T, root string, spec treeSpec) {
	t.Helper()
	rng := rand.New(rand.NewPCG(spec.seed, spec.seed^0x9e3779b97f4a7c15))
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	dirs := []string{"", "docs", "docs/2026", "docs/2026/11", "media", "ünïcødé 日本語", "with space", "-leading-dash", "deep/a/b/c/d/e/f"}
	for _, d := range dirs {
		must(os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	must(os.MkdirAll(filepath.Join(root, "empty-dir"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "empty-dir-0700"), 0o700))
	names := []string{"report.pdf", "data.bin", "ファイル.txt", "naïve café.doc", "line\nbreak", "tab\there", "back\\slash", "quote\"d", "star*", "emoji-🚀.txt", ".hidden"}
	// Sizes: a tenth of the files are large and hold 60% of the bytes, the
	// rest are small (0 to twice their average); the last file takes what
	// is left, so the total is exact.
	bigSize := spec.dataBytes * 6 / 10 / int64(max(spec.files/10, 1))
	smallAvg := spec.dataBytes * 4 / 10 / int64(max(spec.files-spec.files/10, 1))
	remaining := spec.dataBytes
	for i := 0; i < spec.files; i++ {
		size := int64(rng.Int64N(2*smallAvg + 1))
		if i%10 == 0 {
			size = bigSize
		}
		size = min(size, remaining)
		if i == spec.files-1 {
			size = remaining
		}
		remaining -= size
		dir := dirs[i%len(dirs)]
		name := fmt.Sprintf("%03d-%s", i, names[i%len(names)])
		writeRandom(t, rng, filepath.Join(root, dir, name), size)
	}
	must(os.WriteFile(filepath.Join(root, "docs", "empty-file"), nil, 0o644))
	must(os.WriteFile(filepath.Join(root, "secret-0600"), []byte("only me\n"), 0o600))
	must(os.WriteFile(filepath.Join(root, "setuid-tool"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(root, "setuid-tool"), 0o4755|fs.ModeSetuid))
	must(syscall.Chmod(filepath.Join(root, "setuid-tool"), 0o4755))
	must(os.Symlink("docs/empty-file", filepath.Join(root, "link-relative")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "link-absolute")))
	must(os.Symlink("../nowhere/at/all", filepath.Join(root, "docs", "link-dangling")))
	must(os.Symlink("docs/2026", filepath.Join(root, "link-to-dir")))
	if spec.sparseSize > 0 {
		p := filepath.Join(root, "media", "disk.img")
		f, err := os.Create(p)
		must(err)
		must(f.Truncate(spec.sparseSize))
		island := make([]byte, 3<<20)
		for _, off := range []int64{0, spec.sparseSize / 3, spec.sparseSize - int64(len(island))} {
			fillRandom(rng, island)
			_, err := f.WriteAt(island, off)
			must(err)
		}
		must(f.Close())
	}
	// Past mtimes with nanoseconds, set last and deepest first so that
	// creating children does not change them afterwards.
	var paths []string
	must(filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			paths = append(paths, p)
		}
		return err
	}))
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	base := time.Date(2024, 2, 29, 12, 34, 56, 0, time.UTC)
	for i, p := range paths {
		mt := base.Add(time.Duration(i)*time.Hour + time.Duration(rng.IntN(1e9)))
		ts := []syscall.Timespec{syscall.NsecToTimespec(mt.UnixNano()), syscall.NsecToTimespec(mt.UnixNano())}
		must(utimesNoFollow(p, ts))
	}
}

func writeRandom(t *testing.T, rng *rand.Rand, p string, size int64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for size > 0 {
		n := min(size, int64(len(buf)))
		fillRandom(rng, buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			t.Fatal(err)
		}
		size -= n
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func fillRandom(rng *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := rng.Uint64()
		b[i], b[i+1], b[i+2], b[i+3], b[i+4], b[i+5], b[i+6], b[i+7] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
}

// node is what a user sees of one entry.
type node struct {
	Type   string
	Mode   uint32 // st_mode permission and special bits
	Size   int64
	MTime  int64 // ns
	Target string
	SHA    string
	Blocks int64
}

// readTree describes every entry under root by its relative path.
func readTree(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		n := node{Mode: st.Mode & 0o7777, MTime: st.Mtim.Nano(), Blocks: st.Blocks}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			n.Type = "dir"
		case syscall.S_IFLNK:
			n.Type = "symlink"
			n.Target, err = os.Readlink(p)
			if err != nil {
				return err
			}
		case syscall.S_IFREG:
			n.Type, n.Size = "file", st.Size
			n.SHA = fileSHA(t, p)
		default:
			n.Type = "other"
		}
		if rel == "." {
			n.MTime = 0 // the root's own mtime is the target directory's business
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileSHA(t *testing.T, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// requireSameTree fails unless want and got hold the same entries with the
// same type, mode, size, mtime, symlink target and bytes. A regular file may
// lack the setuid and setgid bits it has in want: a restore from a repository
// without a key leaves them out (TestKeylessRestoreLeavesOutSetuid checks
// when exactly).
func requireSameTree(t *testing.T, wantRoot, gotRoot string) {
	t.Helper()
	want, got := readTree(t, wantRoot), readTree(t, gotRoot)
	var diffs bytes.Buffer
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			fmt.Fprintf(&diffs, "missing %q\n", p)
			continue
		}
		w.Blocks, g.Blocks = 0, 0
		if w.Type == "file" && g.Mode == w.Mode&^(syscall.S_ISUID|syscall.S_ISGID) {
			g.Mode = w.Mode
		}
		if w != g {
			fmt.Fprintf(&diffs, "%q differs:\n  want %+v\n  got  %+v\n", p, w, g)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			fmt.Fprintf(&diffs, "unexpected %q\n", p)
		}
	}
	if diffs.Len() > 0 {
		t.Fatalf("restored tree %s differs from %s:\n%s", gotRoot, wantRoot, diffs.String())
	}
}

func utimesNoFollow(p string, ts []syscall.Timespec) error {
	return utimensat(p, ts)
}
