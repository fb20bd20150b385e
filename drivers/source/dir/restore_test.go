package dir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// oldTree is what a target holds before a restore replaces it.
var oldTree = []spec{
	{path: ".", typ: source.TypeDir, mode: 0o700},
	{path: "a", typ: source.TypeDir, mode: 0o755},
	{path: "a/old", typ: source.TypeFile, mode: 0o644, data: "old content"},
	{path: "gone", typ: source.TypeDir, mode: 0o555},
	{path: "gone/file", typ: source.TypeFile, mode: 0o444, data: "old"},
	{path: "link", typ: source.TypeSymlink, mode: 0o777, target: "a"},
	{path: "zzz", typ: source.TypeFile, mode: 0o600, data: "old"},
}

// readOnlyTree is a read-only directory full of files.
var readOnlyTree = []spec{
	{path: ".", typ: source.TypeDir, mode: 0o555},
	{path: "f1", typ: source.TypeFile, mode: 0o444, data: "one"},
	{path: "f2", typ: source.TypeFile, mode: 0o644, data: "two"},
	{path: "sub", typ: source.TypeDir, mode: 0o555},
	{path: "sub/f3", typ: source.TypeFile, mode: 0o400, data: "three"},
}

// snapshot is a tree's entries and file contents, to show it did not change.
type snapshot struct {
	entries []source.Entry
	files   map[string]string
}

func snap(t *testing.T, d *Dir) snapshot {
	t.Helper()
	s := snapshot{entries: scanAll(t, d), files: map[string]string{}}
	for _, e := range s.entries {
		if e.Type == source.TypeFile {
			b, err := os.ReadFile(join(d.path, e.Path))
			if err != nil {
				t.Fatal(err)
			}
			s.files[e.Path] = string(b)
		}
	}
	return s
}

func (s snapshot) check(t *testing.T, d *Dir) {
	t.Helper()
	now := snap(t, d)
	sameEntries(t, now.entries, s.entries)
	for p, want := range s.files {
		if now.files[p] != want {
			t.Errorf("%q: %q, want %q", p, now.files[p], want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name   string
		tree   []spec
		target func(t *testing.T, path string) // prepares the target
		inside bool
	}{
		{name: "into an existing directory", tree: richTree,
			target: func(t *testing.T, path string) { build(t, path, oldTree) }},
		{name: "into a missing target and parent", tree: richTree},
		{name: "over a file", tree: richTree,
			target: func(t *testing.T, path string) { os.WriteFile(path, []byte("x"), 0o644) }},
		{name: "a read-only directory", tree: readOnlyTree,
			target: func(t *testing.T, path string) { build(t, path, oldTree) }},
		{name: "staged inside an existing directory", tree: richTree, inside: true,
			target: func(t *testing.T, path string) { build(t, path, oldTree) }},
		{name: "staged inside, read-only", tree: readOnlyTree, inside: true,
			target: func(t *testing.T, path string) { build(t, path, oldTree) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tmp := tempDir(t)
			src := filepath.Join(tmp, "src")
			build(t, src, c.tree)
			dst := filepath.Join(tmp, "parent", "target")
			if c.target != nil {
				if err := os.Mkdir(filepath.Dir(dst), 0o755); err != nil {
					t.Fatal(err)
				}
				c.target(t, dst)
			}
			target := mustNew(t, dst)
			target.forceStageInside = c.inside
			restoreAll(t, mustNew(t, src), target, "r1")
			sameTree(t, mustNew(t, src), target)
		})
	}
}

func TestRoundTripSingleFile(t *testing.T) {
	tmp := tempDir(t)
	img := filepath.Join(tmp, "disk.img")
	makeSparse(t, img, 16<<20, []source.Region{{Offset: 0, Length: 4096}, {Offset: 8 << 20, Length: 64 << 10}})
	if err := os.Chmod(img, 0o640); err != nil {
		t.Fatal(err)
	}
	src := mustNew(t, img)
	for _, prepare := range []func(path string) error{
		func(path string) error { return os.WriteFile(path, []byte("older image"), 0o600) },
		func(path string) error { return os.MkdirAll(filepath.Join(path, "a dir"), 0o755) },
	} {
		dst := filepath.Join(tempDir(t), "vm.img")
		if err := prepare(dst); err != nil {
			t.Fatal(err)
		}
		target := mustNew(t, dst)
		restoreAll(t, src, target, "img")
		sameTree(t, src, target)
	}
}

func TestStageInsideRefusesSingleFile(t *testing.T) {
	tmp := tempDir(t)
	img := filepath.Join(tmp, "disk.img")
	if err := os.WriteFile(img, []byte("image"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := mustNew(t, filepath.Join(tmp, "mnt"))
	target.forceStageInside = true
	r, err := target.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.File(scanAll(t, mustNew(t, img))[0])
	wantPermanent(t, err, drivers.ReasonInvalidInput)
	if err := r.Abort(); err != nil {
		t.Fatal(err)
	}
}

func TestBeginRejectsBadIDs(t *testing.T) {
	target := mustNew(t, filepath.Join(tempDir(t), "target"))
	for _, id := range []string{"", "a/b", "../x", "a b", "ü", "x\n", strings.Repeat("a", 65)} {
		_, err := target.Begin(context.Background(), id)
		wantPermanent(t, err, drivers.ReasonInvalidInput)
	}
	r, err := target.Begin(context.Background(), "Run-1.2_3")
	if err != nil {
		t.Fatal(err)
	}
	r.Abort()
}

func TestBeginRefusesSymlinkTarget(t *testing.T) {
	tmp := tempDir(t)
	link := filepath.Join(tmp, "link")
	if err := os.Symlink(tmp, link); err != nil {
		t.Fatal(err)
	}
	_, err := mustNew(t, link).Begin(context.Background(), "r1")
	wantPermanent(t, err, drivers.ReasonInvalidConfig)
}

func TestRestoreRefusesPathEscapes(t *testing.T) {
	for _, inside := range []bool{false, true} {
		tmp := tempDir(t)
		outside := filepath.Join(tmp, "outside")
		if err := os.Mkdir(outside, 0o755); err != nil {
			t.Fatal(err)
		}
		victim := filepath.Join(outside, "victim")
		if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		target := mustNew(t, filepath.Join(tmp, "target"))
		target.forceStageInside = inside
		r, err := target.Begin(context.Background(), "r1")
		if err != nil {
			t.Fatal(err)
		}
		dir := func(p string) source.Entry { return source.Entry{Path: p, Type: source.TypeDir, Mode: 0o755} }
		file := func(p string) source.Entry { return source.Entry{Path: p, Type: source.TypeFile, Mode: 0o644, Size: 4} }
		link := func(p, to string) source.Entry {
			return source.Entry{Path: p, Type: source.TypeSymlink, Mode: 0o777, Target: to}
		}
		if err := r.Dir(dir(".")); err != nil {
			t.Fatal(err)
		}
		refused := func(p string) {
			t.Helper()
			wantPermanent(t, r.Dir(dir(p)), drivers.ReasonInvalidInput)
			wantPermanent(t, r.Symlink(link(p, "x")), drivers.ReasonInvalidInput)
			_, err := r.File(file(p))
			wantPermanent(t, err, drivers.ReasonInvalidInput)
		}
		for _, p := range []string{"../x", "/etc/x", outside + "/x", "a/../../x", "..", "a//x", "./x", "x/", "x/.", ""} {
			refused(p)
		}
		// Symlinks written by this restore are never followed.
		for _, l := range []source.Entry{link("a", outside), link("rel", "../../outside"), link("self", ".")} {
			if err := r.Symlink(l); err != nil {
				t.Fatal(err)
			}
			refused(l.Path + "/x")
			refused(l.Path + "/sub/x")
		}
		// Nor is a file a directory.
		w, err := r.File(file("f"))
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		refused("f/x")
		// A file staged where a symlink to the outside was replaces the
		// link; it does not write through it.
		if err := r.Symlink(link("v", victim)); err != nil {
			t.Fatal(err)
		}
		w, err = r.File(file("v"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.WriteAt([]byte("evil"), 0); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Abort(); err != nil {
			t.Fatal(err)
		}
		names, _ := os.ReadDir(outside)
		if b, _ := os.ReadFile(victim); string(b) != "keep" || len(names) != 1 {
			t.Fatalf("inside=%v: something was written outside the staging: %v, victim %q", inside, names, b)
		}
	}
}

// Begin, write half, drop the Restore: the target is unchanged. Begin again
// with the same id: what was written is kept and the restore completes.
func TestInterruptedRestoreResumes(t *testing.T) {
	for _, inside := range []bool{false, true} {
		tmp := tempDir(t)
		srcPath := filepath.Join(tmp, "src")
		build(t, srcPath, richTree)
		src := mustNew(t, srcPath)
		dst := filepath.Join(tmp, "target")
		build(t, dst, oldTree)
		target := mustNew(t, dst)
		target.forceStageInside = inside
		before := snap(t, target)

		r, err := target.Begin(context.Background(), "r1")
		if err != nil {
			t.Fatal(err)
		}
		if r.(interface{ Resumed() bool }).Resumed() {
			t.Fatal("a first attempt reports it resumed")
		}
		written := map[string]bool{}
		n := 0
		replay(t, src, r, func(e source.Entry) bool {
			n++
			if n%2 == 0 {
				return true // not reached before the "crash"
			}
			written[e.Path] = true
			return false
		})
		staging := filepath.Join(filepath.Dir(dst), ".drorch-staging-r1")
		if inside {
			staging = filepath.Join(dst, ".drorch-staging-r1")
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(staging, "ro"), &st); err != nil || st.Mode&0o7777 != 0o700 {
			t.Errorf("a staged directory has mode %o (%v), want 0700 until Commit", st.Mode&0o7777, err)
		}
		// The process dies here: no Commit, no Abort.
		r.Close()
		if inside {
			// What the restore stages inside the target is hidden under
			// one name, removed from the comparison.
			before.checkIgnoring(t, target, ".drorch-staging-r1")
		} else {
			before.check(t, target)
		}

		r2, err := target.Begin(context.Background(), "r1")
		if err != nil {
			t.Fatal(err)
		}
		if !r2.(interface{ Resumed() bool }).Resumed() {
			t.Fatal("a second attempt does not report it resumed")
		}
		replay(t, src, r2, func(e source.Entry) bool { return written[e.Path] })
		if err := r2.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		sameTree(t, src, target)
	}
}

// checkIgnoring compares with the snapshot, leaving out the entries under
// name, the restore's other bookkeeping (.drorch-*) and the root's mtime,
// which creating or removing them changed.
func (s snapshot) checkIgnoring(t *testing.T, d *Dir, name string) {
	t.Helper()
	now := snap(t, d)
	var entries []source.Entry
	for _, e := range now.entries {
		if e.Path != name && !strings.HasPrefix(e.Path, name+"/") && !strings.HasPrefix(e.Path, ".drorch-") {
			entries = append(entries, e)
		}
	}
	if len(entries) > 0 && len(s.entries) > 0 {
		entries[0].ModTime = s.entries[0].ModTime
	}
	sameEntries(t, entries, s.entries)
	for p, want := range s.files {
		if now.files[p] != want {
			t.Errorf("%q: %q, want %q", p, now.files[p], want)
		}
	}
}

type commitStep struct {
	step        string
	inside      bool
	fallback    bool // the file system refuses RENAME_EXCHANGE
	afterCommit bool // the staged tree is in place: Abort refuses
	done        bool // indistinguishable from a completed restore
}

func (c commitStep) String() string {
	if c.fallback {
		return c.step + "(two renames)"
	}
	return c.step
}

var commitSteps = []commitStep{
	{step: "beside:synced"},
	{step: "beside:exchanged", afterCommit: true},
	{step: "beside:moved-in", afterCommit: true},
	{step: "beside:synced", fallback: true},
	{step: "beside:moved-aside", fallback: true},
	{step: "beside:moved-in", fallback: true, afterCommit: true},
	{step: "inside:synced", inside: true},
	{step: "inside:moving-aside", inside: true},
	{step: "inside:moved-aside", inside: true},
	{step: "inside:committed", inside: true, afterCommit: true},
	{step: "inside:moving-in", inside: true, afterCommit: true},
	{step: "inside:moved-in", inside: true, afterCommit: true},
	{step: "inside:removed-old", inside: true, afterCommit: true},
	{step: "inside:removed-commit", inside: true, afterCommit: true},
	// Only the target's own attributes were left to set: the state looks
	// like a completed restore, and the next attempt starts afresh.
	{step: "inside:removed-mark", inside: true, done: true},
}

var errCrash = errors.New("simulated crash")

// crashIn runs a restore of a fresh rich tree over a fresh old tree whose
// Commit stops at step; it returns the source and target.
func crashIn(t *testing.T, c commitStep) (src, target *Dir, before snapshot) {
	t.Helper()
	tmp := tempDir(t)
	build(t, filepath.Join(tmp, "src"), richTree)
	src = mustNew(t, filepath.Join(tmp, "src"))
	dst := filepath.Join(tmp, "parent", "target")
	if err := os.Mkdir(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	build(t, dst, oldTree)
	target = mustNew(t, dst)
	target.forceStageInside = c.inside
	target.noExchange = c.fallback
	before = snap(t, target)
	reached := false
	target.stepHook = func(s string) error {
		if s == c.step {
			reached = true
			return errCrash
		}
		return nil
	}
	r, err := target.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	replay(t, src, r, nil)
	if err := r.Commit(context.Background()); !errors.Is(err, errCrash) || !reached {
		t.Fatalf("commit: %v, want the simulated crash at %s", err, c)
	}
	r.Close() // the process dies
	target.stepHook = nil
	return src, target, before
}

// A Commit cut short at any step is finished by the next attempt, which
// replays directories and symlinks and rewrites files only if the staging was
// lost (it was moved into place already).
func TestCommitResumesAfterCrashAtEachStep(t *testing.T) {
	for _, c := range commitSteps {
		t.Run(c.String(), func(t *testing.T) {
			src, target, _ := crashIn(t, c)
			r, err := target.Begin(context.Background(), "r1")
			if err != nil {
				t.Fatal(err)
			}
			resumed := r.(interface{ Resumed() bool }).Resumed()
			replay(t, src, r, func(source.Entry) bool { return resumed })
			if err := r.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameTree(t, src, target)
		})
	}
}

// After a crash in Commit a caller that knows it reached Commit may call it
// again without replaying anything.
func TestCommitAloneFinishesAfterTheCommitPoint(t *testing.T) {
	for _, c := range commitSteps {
		if !c.afterCommit {
			continue
		}
		t.Run(c.String(), func(t *testing.T) {
			src, target, _ := crashIn(t, c)
			r, err := target.Begin(context.Background(), "r1")
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Commit(context.Background()); err != nil {
				t.Fatal(err)
			}
			sameTree(t, src, target)
		})
	}
}

// Abort after a Commit cut short before the commit point puts the target
// back as it was; after it, Abort refuses.
func TestAbortAfterInterruptedCommit(t *testing.T) {
	for _, c := range commitSteps {
		t.Run(c.String(), func(t *testing.T) {
			_, target, before := crashIn(t, c)
			r, err := target.Begin(context.Background(), "r1")
			if err != nil {
				t.Fatal(err)
			}
			err = r.Abort()
			if c.done {
				if err != nil {
					t.Fatal(err)
				}
				noLeftovers(t, target)
				return
			}
			if c.afterCommit {
				wantPermanent(t, err, drivers.ReasonInvalidInput)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			before.checkRootMtimeAside(t, target, c.inside)
			noLeftovers(t, target)
		})
	}
}

// checkRootMtimeAside compares with the snapshot; staging inside the target
// changes the root's mtime, which is the one thing it cannot put back.
func (s snapshot) checkRootMtimeAside(t *testing.T, d *Dir, inside bool) {
	t.Helper()
	if !inside {
		s.check(t, d)
		return
	}
	s.checkIgnoring(t, d, ".drorch-staging-r1")
}

func TestAbortLeavesTargetUntouched(t *testing.T) {
	tmp := tempDir(t)
	build(t, filepath.Join(tmp, "src"), richTree)
	src := mustNew(t, filepath.Join(tmp, "src"))
	dst := filepath.Join(tmp, "target")
	build(t, dst, oldTree)
	target := mustNew(t, dst)
	before := snap(t, target)
	r, err := target.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	replay(t, src, r, nil)
	if err := r.Abort(); err != nil {
		t.Fatal(err)
	}
	before.check(t, target)
	noLeftovers(t, target)
	if err := r.Dir(source.Entry{Path: ".", Type: source.TypeDir}); err == nil {
		t.Fatal("a finished restore accepted an entry")
	}
}

func TestCommitWhenDoneOrEmpty(t *testing.T) {
	ctx := context.Background()
	tmp := tempDir(t)
	build(t, filepath.Join(tmp, "src"), richTree)
	src := mustNew(t, filepath.Join(tmp, "src"))
	target := mustNew(t, filepath.Join(tmp, "target"))

	// Nothing staged and no target: nothing to commit.
	r, err := target.Begin(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	wantPermanent(t, r.Commit(ctx), drivers.ReasonInvalidInput)
	r.Abort()

	restoreAll(t, src, target, "r1")
	// Committed already: Commit again reports done, and a new attempt knows
	// it starts afresh.
	r, err = target.Begin(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if r.(interface{ Resumed() bool }).Resumed() {
		t.Error("Begin after a completed restore reports it resumed")
	}
	if err := r.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, target)
}

// A resumed attempt replaces what was staged under a path with an entry of
// another kind.
func TestRestoreReplacesStagedEntries(t *testing.T) {
	ctx := context.Background()
	tmp := tempDir(t)
	target := mustNew(t, filepath.Join(tmp, "target"))
	r := mustBegin(t, target, "r1")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(p, data string) {
		t.Helper()
		w, err := r.File(source.Entry{Path: p, Type: source.TypeFile, Mode: 0o444, Size: int64(len(data)), ModTime: mtimeOf(1)})
		must(err)
		_, err = w.WriteAt([]byte(data), 0)
		must(err)
		must(w.Close())
	}
	dir := func(p string) error {
		return r.Dir(source.Entry{Path: p, Type: source.TypeDir, Mode: 0o555, ModTime: mtimeOf(2)})
	}
	link := func(p, to string) error {
		return r.Symlink(source.Entry{Path: p, Type: source.TypeSymlink, Mode: 0o777, Target: to, ModTime: mtimeOf(3)})
	}
	must(dir("."))
	must(dir("x"))
	file("x/f", "in x")
	must(link("y", "x"))
	file("z", "a read-only file")
	must(link("v", "x"))
	must(dir("w"))
	// The next attempt: x became a file, y a directory, the read-only file z
	// a symlink, v points elsewhere, and w/f is written twice.
	r.Close()
	r = mustBegin(t, target, "r1")
	must(dir("."))
	file("x", "now a file")
	must(dir("y"))
	must(link("z", "x"))
	must(link("v", "w"))
	must(dir("w"))
	must(dir("w")) // twice is fine
	file("w/f", "again")
	file("w/f", "and again")
	must(r.Commit(ctx))
	got := scanAll(t, target)
	want := []string{".:dir", "v:symlink", "w:dir", "w/f:file", "x:file", "y:dir", "z:symlink"}
	var paths []string
	for _, e := range got {
		paths = append(paths, e.Path+":"+string(e.Type))
	}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("entries %q, want %q", paths, want)
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "target", "w", "f")); string(b) != "and again" {
		t.Fatalf("w/f holds %q", b)
	}
	if to, _ := os.Readlink(filepath.Join(tmp, "target", "v")); to != "w" {
		t.Fatalf("v points to %q, want w", to)
	}
}

// A file gets its size whether or not the writes reach it: one whose end
// is a hole (or zero bytes, not written) is extended, one written to its
// end in any order is not touched.
func TestFileSizeWithUnwrittenEnd(t *testing.T) {
	ctx := context.Background()
	tmp := tempDir(t)
	target := mustNew(t, filepath.Join(tmp, "target"))
	r := mustBegin(t, target, "r1")
	if err := r.Dir(source.Entry{Path: ".", Type: source.TypeDir, Mode: 0o755, ModTime: mtimeOf(1)}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		size   int64
		writes []int64 // offsets of 4-byte writes, in this order
	}{
		{"empty", 0, nil},
		{"hole-at-end", 1 << 20, []int64{0}},
		{"only-a-hole", 4096, nil},
		{"written-backwards", 12, []int64{8, 4, 0}},
	} {
		w, err := r.File(source.Entry{Path: c.name, Type: source.TypeFile, Mode: 0o644, Size: c.size, ModTime: mtimeOf(2)})
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range c.writes {
			if _, err := w.WriteAt([]byte("abcd"), off); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{"empty": 0, "hole-at-end": 1 << 20, "only-a-hole": 4096, "written-backwards": 12} {
		st, err := os.Stat(filepath.Join(tmp, "target", name))
		if err != nil || st.Size() != want {
			t.Errorf("%s: %v, size %d, want %d", name, err, st.Size(), want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "target", "written-backwards")); string(b) != "abcdabcdabcd" {
		t.Errorf("written-backwards holds %q", b)
	}
}

// Empty tells a restore whether the target has files to take chunks from.
func TestEmpty(t *testing.T) {
	tmp := tempDir(t)
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path  string
		empty bool
	}{
		{filepath.Join(tmp, "absent"), true},
		{filepath.Join(tmp, "emptydir"), true},
		{filepath.Join(tmp, "volume"), true}, // a mount point with a restore staged inside
		{tmp, false},
		{file, false},
	} {
		if strings.HasSuffix(c.path, "dir") || strings.HasSuffix(c.path, "volume") {
			if err := os.Mkdir(c.path, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if strings.HasSuffix(c.path, "volume") {
			for _, name := range []string{"lost+found", ".drorch-owner-r1", ".drorch-staging-r1"} {
				if err := os.Mkdir(filepath.Join(c.path, name), 0o700); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := mustNew(t, c.path).Empty(context.Background())
		if err != nil || got != c.empty {
			t.Errorf("Empty(%s) = %v, %v; want %v", c.path, got, err, c.empty)
		}
	}
}

func TestIsMountPoint(t *testing.T) {
	if isMountPoint(tempDir(t)) {
		t.Error("a temporary directory is reported as a mount point")
	}
	if _, err := os.Stat("/proc/self"); err == nil && !isMountPoint("/proc") {
		t.Error("/proc is not reported as a mount point")
	}
}

// The restore activity writes files in parallel.
func TestRestoreWritesFilesConcurrently(t *testing.T) {
	ctx := context.Background()
	tmp := tempDir(t)
	var tree []spec
	tree = append(tree, spec{path: ".", typ: source.TypeDir, mode: 0o755})
	for _, d := range []string{"d1", "d2", "d3"} {
		tree = append(tree, spec{path: d, typ: source.TypeDir, mode: 0o555})
		for i := range 20 {
			tree = append(tree, spec{path: d + "/f" + strings.Repeat("x", i), typ: source.TypeFile, mode: 0o444,
				data: strings.Repeat(d, 1000*i)})
		}
	}
	build(t, filepath.Join(tmp, "src"), tree)
	src := mustNew(t, filepath.Join(tmp, "src"))
	target := mustNew(t, filepath.Join(tmp, "target"))
	r, err := target.Begin(ctx, "par")
	if err != nil {
		t.Fatal(err)
	}
	replay(t, src, r, func(source.Entry) bool { return true })
	files := make(chan source.Entry)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			var err error
			for e := range files {
				if err == nil {
					err = copyFile(ctx, src, r, e)
				}
			}
			errs <- err
		}()
	}
	for _, e := range scanAll(t, src) {
		if e.Type == source.TypeFile {
			files <- e
		}
	}
	close(files)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, target)
}

// Without write permission on the target's parent, a directory target is
// staged inside, and a file target cannot be replaced.
func TestUnwritableParent(t *testing.T) {
	if !unprivileged() {
		t.Skip("root can write anywhere")
	}
	ctx := context.Background()
	tmp := tempDir(t)
	build(t, filepath.Join(tmp, "src"), richTree)
	src := mustNew(t, filepath.Join(tmp, "src"))
	parent := filepath.Join(tmp, "parent")
	if err := os.Mkdir(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	build(t, filepath.Join(parent, "target"), oldTree)
	if err := os.WriteFile(filepath.Join(parent, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(parent, 0o555); err != nil {
		t.Fatal(err)
	}
	target := mustNew(t, filepath.Join(parent, "target"))
	restoreAll(t, src, target, "r1")
	sameTree(t, src, target)

	_, err := mustNew(t, filepath.Join(parent, "file")).Begin(ctx, "r1")
	wantPermanent(t, err, drivers.ReasonAccessDenied)
}
