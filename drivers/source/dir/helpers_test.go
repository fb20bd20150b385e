package dir

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// spec is one entry of a test tree, in the order Scan must report it.
type spec struct {
	path   string
	typ    source.Type
	mode   fs.FileMode
	data   string // files
	target string // symlinks
}

// richTree has every kind of entry and name Scan must handle. Its order is
// Scan's: depth first, siblings in byte order ("a-x" after "a/…", although
// the path "a-x" sorts before "a/b").
var richTree = []spec{
	{path: ".", typ: source.TypeDir, mode: 0o755},
	{path: "-dash", typ: source.TypeFile, mode: 0o644, data: "leading dash"},
	{path: "a", typ: source.TypeDir, mode: 0o750},
	{path: "a/b", typ: source.TypeDir, mode: 0o700},
	{path: "a/b/c.txt", typ: source.TypeFile, mode: 0o600, data: "hello c"},
	{path: "a/empty", typ: source.TypeDir, mode: 0o755},
	{path: "a-x", typ: source.TypeFile, mode: 0o644, data: "after a/"},
	{path: "abs", typ: source.TypeSymlink, mode: 0o777, target: "/etc/passwd"},
	{path: "dangling", typ: source.TypeSymlink, mode: 0o777, target: "does/not/exist"},
	{path: "empty.txt", typ: source.TypeFile, mode: 0o644},
	{path: "exec", typ: source.TypeFile, mode: 0o755 | fs.ModeSetuid, data: "#!/bin/sh\nexit 0\n"},
	{path: "fifo", typ: source.TypeOther, mode: 0o644},
	{path: "link-dir", typ: source.TypeSymlink, mode: 0o777, target: "a"},
	{path: "link-file", typ: source.TypeSymlink, mode: 0o777, target: "a/b/c.txt"},
	{path: "ro", typ: source.TypeDir, mode: 0o555},
	{path: "ro/f", typ: source.TypeFile, mode: 0o444, data: "read-only"},
	{path: "ro/sub", typ: source.TypeDir, mode: 0o555},
	{path: "ro/sub/g", typ: source.TypeFile, mode: 0o640, data: "deep in read-only"},
	{path: "sgid", typ: source.TypeDir, mode: 0o775 | fs.ModeSetgid},
	{path: "tmp", typ: source.TypeDir, mode: 0o777 | fs.ModeSticky},
	{path: "with\nnewline and spaces ", typ: source.TypeFile, mode: 0o640, data: "nl"},
	{path: "ünïcødé", typ: source.TypeDir, mode: 0o755},
	{path: "ünïcødé/日本.txt", typ: source.TypeFile, mode: 0o644, data: "日本語"},
	{path: "\xff\xfe", typ: source.TypeFile, mode: 0o600, data: "not UTF-8"},
}

// owners gives some entries other owners when the tests run as root.
var owners = map[string][2]int{
	"a/b/c.txt": {1234, 5678},
	"sgid":      {42, 43},
	"abs":       {7, 8},
	"exec":      {0, 100},
}

// mtimeOf gives entry i a distinct past mtime with nanoseconds.
func mtimeOf(i int) time.Time {
	return time.Date(2019, 3, 4, 5, 6, 7, 0, time.UTC).
		Add(time.Duration(i) * time.Hour).
		Add(time.Duration(i*111_111+7) * time.Nanosecond)
}

// build creates the tree under root (which must not exist, or be an empty
// directory) and returns the entries Scan must report for it.
func build(t *testing.T, root string, tree []spec) []source.Entry {
	t.Helper()
	p := func(rel string) string { return join(root, rel) }
	for _, s := range tree {
		var err error
		switch s.typ {
		case source.TypeDir:
			err = os.Mkdir(p(s.path), 0o700)
			if s.path == "." && os.IsExist(err) {
				err = nil
			}
		case source.TypeFile:
			err = os.WriteFile(p(s.path), []byte(s.data), 0o600)
		case source.TypeSymlink:
			err = os.Symlink(s.target, p(s.path))
		case source.TypeOther:
			err = unix.Mkfifo(p(s.path), 0o600)
		}
		if err != nil {
			t.Fatalf("build %q: %v", s.path, err)
		}
	}
	root0 := os.Geteuid() == 0
	// Owners, modes and times deepest first, so that filling a directory or
	// making it read-only does not disturb what was set.
	want := make([]source.Entry, len(tree))
	for i := len(tree) - 1; i >= 0; i-- {
		s := tree[i]
		full := p(s.path)
		e := source.Entry{Path: s.path, Type: s.typ, Mode: s.mode, Target: s.target, ModTime: mtimeOf(i),
			UID: os.Geteuid(), GID: os.Getegid()}
		if s.typ == source.TypeFile {
			e.Size = int64(len(s.data))
		}
		if o, ok := owners[s.path]; ok && root0 {
			e.UID, e.GID = o[0], o[1]
			if err := os.Lchown(full, o[0], o[1]); err != nil {
				t.Fatal(err)
			}
		}
		if s.typ != source.TypeSymlink {
			if err := unix.Chmod(full, unixMode(s.mode)); err != nil {
				t.Fatalf("chmod %q: %v", s.path, err)
			}
		}
		ts := timespecs(e.ModTime)
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, full, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("utimes %q: %v", s.path, err)
		}
		want[i] = e
	}
	// The group of a new entry may come from a setgid parent; take what the
	// file system did rather than guessing it.
	for i := range want {
		var st unix.Stat_t
		if err := unix.Lstat(p(want[i].Path), &st); err != nil {
			t.Fatal(err)
		}
		want[i].GID = int(st.Gid)
	}
	return want
}

func mustNew(t *testing.T, path string) *Dir {
	t.Helper()
	d, err := New(path)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// mustBegin begins restore id into d.
func mustBegin(t *testing.T, d *Dir, id string) source.Restore {
	t.Helper()
	r, err := d.Begin(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func scanAll(t *testing.T, d *Dir) []source.Entry {
	t.Helper()
	var got []source.Entry
	if err := d.Scan(context.Background(), func(e source.Entry) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatalf("scan %s: %v", d.path, err)
	}
	return got
}

// sameEntries compares entries field by field, owners only when they could
// be restored (running as root).
func sameEntries(t *testing.T, got, want []source.Entry) {
	t.Helper()
	n := max(len(got), len(want))
	for i := 0; i < n; i++ {
		if i >= len(got) {
			t.Errorf("missing entry %q", want[i].Path)
			continue
		}
		if i >= len(want) {
			t.Errorf("unexpected entry %q", got[i].Path)
			continue
		}
		g, w := got[i], want[i]
		if !g.ModTime.Equal(w.ModTime) {
			t.Errorf("entry %q: mtime %v, want %v", w.Path, g.ModTime, w.ModTime)
		}
		g.ModTime, w.ModTime = time.Time{}, time.Time{}
		if g != w {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

// withoutOther drops the entries a restore does not recreate.
func withoutOther(es []source.Entry) []source.Entry {
	var out []source.Entry
	for _, e := range es {
		if e.Type != source.TypeOther {
			out = append(out, e)
		}
	}
	return out
}

// replay writes the source's entries into r as the restore activity does,
// copying files region by region; skip says which files were written by an
// earlier attempt.
func replay(t *testing.T, src *Dir, r source.Restore, skip func(source.Entry) bool) {
	t.Helper()
	ctx := context.Background()
	for _, e := range scanAll(t, src) {
		var err error
		switch e.Type {
		case source.TypeDir:
			err = r.Dir(e)
		case source.TypeSymlink:
			err = r.Symlink(e)
		case source.TypeFile:
			if skip != nil && skip(e) {
				continue
			}
			err = copyFile(ctx, src, r, e)
		}
		if err != nil {
			t.Fatalf("replay %q: %v", e.Path, err)
		}
	}
}

func copyFile(ctx context.Context, src *Dir, r source.Restore, e source.Entry) error {
	f, err := src.Open(ctx, e.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	w, err := r.File(e)
	if err != nil {
		return err
	}
	regions, err := f.Regions(0, e.Size)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for _, reg := range regions {
		for off := reg.Offset; off < reg.Offset+reg.Length; {
			n := min(int64(len(buf)), reg.Offset+reg.Length-off)
			if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if _, err := w.WriteAt(buf[:n], off); err != nil {
				return err
			}
			off += n
		}
	}
	return w.Close()
}

// restoreAll runs a whole restore of src into dst.
func restoreAll(t *testing.T, src, dst *Dir, id string) {
	t.Helper()
	r, err := dst.Begin(context.Background(), id)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	replay(t, src, r, nil)
	if err := r.Commit(context.Background()); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// sameTree checks that dst holds exactly src's entries (but those a restore
// skips) with the same bytes.
func sameTree(t *testing.T, src, dst *Dir) {
	t.Helper()
	want := withoutOther(scanAll(t, src))
	got := scanAll(t, dst)
	sameEntries(t, got, want)
	for _, e := range want {
		if e.Type == source.TypeFile {
			sameBytes(t, join(src.path, e.Path), join(dst.path, e.Path))
		}
	}
	noLeftovers(t, dst)
}

func sameBytes(t *testing.T, a, b string) {
	t.Helper()
	fa, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 1<<20), make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(ba)) {
		na, ea := io.ReadFull(fa, ba)
		nb, _ := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%q and %q differ in the MiB at %d", a, b, off)
		}
		if ea != nil {
			return
		}
	}
}

// noLeftovers checks that no restore directory is left beside or inside dst.
func noLeftovers(t *testing.T, dst *Dir) {
	t.Helper()
	for _, dir := range []string{filepath.Dir(dst.path), dst.path} {
		names, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, unix.ENOTDIR) {
				continue
			}
			t.Fatal(err)
		}
		for _, n := range names {
			if strings.HasPrefix(n.Name(), ".drorch-") {
				t.Errorf("leftover %s", filepath.Join(dir, n.Name()))
			}
		}
	}
}

func wantPermanent(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want a permanent %s error", reason)
	}
	if got, ok := drivers.IsPermanent(err); !ok || got != reason {
		t.Fatalf("error %q: reason %q (permanent %v), want %s", err, got, ok, reason)
	}
}

// unprivileged reports whether the tests run without root's override of file
// permissions.
func unprivileged() bool { return os.Geteuid() != 0 }

// tempDir is t.TempDir, whose removal first makes every directory in it
// writable again: an unprivileged run cannot remove read-only trees otherwise.
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	return dir
}
