package dir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// stageHalf begins restore id into target, writes every other file of src,
// and leaves it as a crashed process would (Close, nothing removed).
func stageHalf(t *testing.T, src, target *Dir, id string) source.Restore {
	t.Helper()
	r, err := target.Begin(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	replay(t, src, r, func(source.Entry) bool { n++; return n%2 == 0 })
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	return r
}

// leftovers lists the restore bookkeeping (.drorch-*) in dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n.Name(), ".drorch-") {
			out = append(out, n.Name())
		}
	}
	return out
}

// A restore whose process died leaves its staging; the next restore into the
// same target, with another id, removes it when it begins. A live one, and
// one for a sibling target in the same parent, are left alone.
func TestBeginSweepsStaleStaging(t *testing.T) {
	for _, inside := range []bool{false, true} {
		tmp := tempDir(t)
		build(t, filepath.Join(tmp, "src"), richTree)
		src := mustNew(t, filepath.Join(tmp, "src"))
		parent := filepath.Join(tmp, "parent")
		if err := os.Mkdir(parent, 0o755); err != nil {
			t.Fatal(err)
		}
		build(t, filepath.Join(parent, "target"), oldTree)
		target := mustNew(t, filepath.Join(parent, "target"))
		target.forceStageInside = inside
		sibling := mustNew(t, filepath.Join(parent, "sibling"))
		base := parent
		if inside {
			base = target.path
		}

		stageHalf(t, src, target, "dead").Close()
		live := stageHalf(t, src, target, "live")
		siblingStale := stageHalf(t, src, sibling, "other")
		siblingStale.Close()

		r, err := target.Begin(context.Background(), "next")
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(leftovers(t, base), " ")
		for _, want := range []string{".drorch-owner-live", ".drorch-staging-live", ".drorch-owner-next"} {
			if !strings.Contains(got, want) {
				t.Errorf("inside=%v: %s is gone after the sweep: %s", inside, want, got)
			}
		}
		if strings.Contains(got, "-dead") {
			t.Errorf("inside=%v: the dead restore's staging was not swept: %s", inside, got)
		}
		if !inside && !strings.Contains(got, ".drorch-staging-other") {
			t.Errorf("the sibling target's staging was swept: %s", got)
		}
		if err := live.Abort(); err != nil {
			t.Fatal(err)
		}
		replay(t, src, r, nil)
		if err := r.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
		sameTreeIgnoringSibling(t, src, target)
	}
}

// sameTreeIgnoringSibling is sameTree where the parent may still hold a
// sibling target's staging.
func sameTreeIgnoringSibling(t *testing.T, src, dst *Dir) {
	t.Helper()
	sameEntries(t, scanAll(t, dst), withoutOther(scanAll(t, src)))
	for _, n := range leftovers(t, filepath.Dir(dst.path)) {
		if !strings.HasSuffix(n, "-other") {
			t.Errorf("leftover %s", n)
		}
	}
	if left := leftovers(t, dst.path); len(left) > 0 {
		t.Errorf("leftovers in the target: %v", left)
	}
}

// A stale restore that had passed its commit point (its tree is in place) is
// finished by the sweep: the previous content it kept is removed, and the
// target holds its tree until the new restore replaces it.
func TestBeginSweepFinishesAStaleCommit(t *testing.T) {
	for _, c := range commitSteps {
		if !c.afterCommit {
			continue
		}
		t.Run(c.String(), func(t *testing.T) {
			src, target, _ := crashIn(t, c)
			r, err := target.Begin(context.Background(), "r2")
			if err != nil {
				t.Fatal(err)
			}
			base := filepath.Dir(target.path)
			if c.inside {
				base = target.path
			}
			if left := leftovers(t, base); len(left) != 1 || left[0] != ".drorch-owner-r2" {
				t.Fatalf("after the sweep: %v", left)
			}
			if err := r.Abort(); err != nil {
				t.Fatal(err)
			}
			if c.inside {
				// The new restore's own bookkeeping in the target moved
				// its mtime.
				want := withoutOther(scanAll(t, src))
				got := scanAll(t, target)
				got[0].ModTime = want[0].ModTime
				sameEntries(t, got, want)
				noLeftovers(t, target)
				return
			}
			sameTree(t, src, target)
		})
	}
}

// Before the commit point, the sweep aborts a stale restore: the target's
// previous content is back in place.
func TestBeginSweepAbortsAStaleCommit(t *testing.T) {
	for _, c := range commitSteps {
		if c.afterCommit || c.done {
			continue
		}
		t.Run(c.String(), func(t *testing.T) {
			_, target, before := crashIn(t, c)
			r, err := target.Begin(context.Background(), "r2")
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Abort(); err != nil {
				t.Fatal(err)
			}
			before.checkRootMtimeAside(t, target, c.inside)
			noLeftovers(t, target)
		})
	}
}

// Two attempts of one restore never write its staging at once: while the
// first holds it, the second is refused with a retryable error naming the
// holder.
func TestSecondAttemptWaitsForTheFirst(t *testing.T) {
	tmp := tempDir(t)
	target := mustNew(t, filepath.Join(tmp, "target"))
	first, err := target.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = target.Begin(context.Background(), "r1")
	if err == nil {
		t.Fatal("a second attempt began while the first holds the staging")
	}
	if _, permanent := drivers.IsPermanent(err); permanent || !strings.Contains(err.Error(), "still holds") ||
		!strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("second attempt: %v (permanent %v), want a retryable error naming the holder", err, permanent)
	}
	first.Close()
	second, err := target.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatalf("after the first attempt closed: %v", err)
	}
	if err := second.Abort(); err != nil {
		t.Fatal(err)
	}
	if left := leftovers(t, tmp); len(left) > 0 {
		t.Fatalf("leftovers %v", left)
	}
}

// The exchange keeps something at the target's path at every step of
// Commit; only the two-rename fallback has a moment without it.
func TestCommitNeverLeavesTheTargetPathEmpty(t *testing.T) {
	for _, fallback := range []bool{false, true} {
		tmp := tempDir(t)
		build(t, filepath.Join(tmp, "src"), richTree)
		src := mustNew(t, filepath.Join(tmp, "src"))
		build(t, filepath.Join(tmp, "target"), oldTree)
		target := mustNew(t, filepath.Join(tmp, "target"))
		target.noExchange = fallback
		var empty []string
		target.stepHook = func(step string) error {
			if _, err := os.Lstat(target.path); err != nil {
				empty = append(empty, step)
			}
			return nil
		}
		restoreAll(t, src, target, "r1")
		sameTree(t, src, target)
		want := ""
		if fallback {
			want = "beside:moved-aside"
		}
		if got := strings.Join(empty, " "); got != want {
			t.Errorf("fallback=%v: the target's path was empty at %q, want %q", fallback, got, want)
		}
	}
}

// Staged reads back what an earlier attempt wrote, so it can be checked; a
// damaged file shows it. After the commit point it says the tree is in place.
func TestStagedReadsWhatAnEarlierAttemptWrote(t *testing.T) {
	tmp := tempDir(t)
	build(t, filepath.Join(tmp, "src"), richTree)
	src := mustNew(t, filepath.Join(tmp, "src"))
	target := mustNew(t, filepath.Join(tmp, "target"))
	r := stageHalf(t, src, target, "r1")
	r.Close()
	if err := os.Truncate(filepath.Join(tmp, ".drorch-staging-r1", "-dash"), 3); err != nil {
		t.Fatal(err)
	}
	r, err := target.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	f, err := r.Staged("-dash")
	if err != nil {
		t.Fatal(err)
	}
	size, _, err := f.Stat()
	f.Close()
	if err != nil || size != 3 {
		t.Fatalf("staged -dash: size %d, %v; want the truncated 3", size, err)
	}
	if _, err := r.Staged("a/b/c.txt"); !errors.Is(err, drivers.ErrNotFound) {
		t.Fatalf("a file never staged: %v, want not found", err)
	}
	if _, err := r.Staged("link-dir"); err == nil {
		t.Fatal("a staged symlink opened as a file")
	}
	replay(t, src, r, nil)
	if err := r.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, target)

	_, target2, _ := crashIn(t, commitSteps[1]) // beside:exchanged
	r2, err := target2.Begin(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Staged("-dash"); !errors.Is(err, source.ErrInPlace) {
		t.Fatalf("after the commit point: %v, want ErrInPlace", err)
	}
	if err := r2.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
}
