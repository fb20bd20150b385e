package dir

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/testenv"
)

// A clone on XFS holds the tree as it was: contents, modes, owners, times
// and symlinks; a later write to the original does not reach it; and
// RemoveTree removes it even with read-only directories.
func TestCloneKeepsTheTree(t *testing.T) {
	skipUnprivilegedRerun(t)
	mnt := testenv.MountXFS(t, 300)
	src := filepath.Join(mnt, "src")
	old := time.Date(2021, 5, 6, 7, 8, 9, 123456789, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "sub", "ro"), 0o755))
	must(os.WriteFile(filepath.Join(src, "sub", "a.db"), []byte("version 1"), 0o640))
	must(os.Chown(filepath.Join(src, "sub", "a.db"), 1234, 5678))
	must(os.Chmod(filepath.Join(src, "sub", "a.db"), os.ModeSetuid|0o750)) // after chown, which clears setuid
	must(os.Symlink("sub/a.db", filepath.Join(src, "link")))
	must(syscall.Mkfifo(filepath.Join(src, "fifo"), 0o600))
	must(os.Chmod(filepath.Join(src, "sub", "ro"), 0o555))
	for _, p := range []string{"sub/a.db", "sub/ro", "sub"} {
		must(os.Chtimes(filepath.Join(src, p), old, old))
	}

	dst := filepath.Join(mnt, ".clone")
	must(Clone(context.Background(), src, dst))
	root := CloneRoot(dst)
	must(os.WriteFile(filepath.Join(src, "sub", "a.db"), []byte("version 2"), 0o640))
	if b, err := os.ReadFile(filepath.Join(root, "sub", "a.db")); err != nil || string(b) != "version 1" {
		t.Fatalf("clone holds %q, %v; want the file as it was", b, err)
	}
	for p, want := range map[string]os.FileMode{"sub": os.ModeDir | 0o755, "sub/ro": os.ModeDir | 0o555, "sub/a.db": os.ModeSetuid | 0o750} {
		fi, err := os.Lstat(filepath.Join(root, p))
		must(err)
		if fi.Mode() != want || !fi.ModTime().Equal(old) {
			t.Errorf("%s: mode %v mtime %v, want %v %v", p, fi.Mode(), fi.ModTime(), want, old)
		}
	}
	if st := statOf(t, filepath.Join(root, "sub", "a.db")); st.Uid != 1234 || st.Gid != 5678 {
		t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
	}
	if target, err := os.Readlink(filepath.Join(root, "link")); err != nil || target != "sub/a.db" {
		t.Errorf("link = %q, %v", target, err)
	}
	if _, err := os.Lstat(filepath.Join(root, "fifo")); !os.IsNotExist(err) {
		t.Errorf("the FIFO was cloned: %v", err)
	}
	must(RemoveTree(dst))
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Fatalf("clone left after RemoveTree: %v", err)
	}

	// A single file (a disk image) clones to the root itself.
	img := filepath.Join(mnt, "disk.img")
	must(os.WriteFile(img, []byte("disk"), 0o600))
	must(Clone(context.Background(), img, dst))
	if b, err := os.ReadFile(CloneRoot(dst)); err != nil || string(b) != "disk" {
		t.Fatalf("single-file clone: %q, %v", b, err)
	}
}

// Without reflinks the clone fails with a permanent NoReflink error naming
// the file system and the file, and leaves nothing.
func TestCloneWithoutReflinks(t *testing.T) {
	skipUnprivilegedRerun(t)
	mnt := testenv.MountTmpfs(t)
	src := filepath.Join(mnt, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "a"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(mnt, ".clone")
	err := Clone(context.Background(), src, dst)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != ReasonNoReflink {
		t.Fatalf("err = %v, want a permanent %s error", err, ReasonNoReflink)
	}
	for _, want := range []string{"tmpfs", filepath.Join(src, "a"), "XFS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q: %v", want, err)
		}
	}
	if _, err := os.Lstat(dst); !os.IsNotExist(err) {
		t.Fatalf("a partial clone was left: %v", err)
	}
}

func statOf(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}

// skipUnprivilegedRerun skips a test that mounts file systems in the run
// TestAsUnprivilegedUser makes as uid 65534: the run as root has tested it.
func skipUnprivilegedRerun(t *testing.T) {
	if os.Getenv("DRORCH_DIR_UNPRIVILEGED") != "" {
		t.Skip("mounts need root: tested by the run as root")
	}
}
