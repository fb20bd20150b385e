package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// MountXFS makes an XFS file system with reflinks (mkfs.xfs -m reflink=1)
// in an image file of sizeMB MiB in a temporary directory, loop-mounts it
// and returns its mount point; it is unmounted when the test ends. It needs
// root and mkfs.xfs (Debian xfsprogs): without them the test is skipped,
// except in CI (CI=true), where it fails.
func MountXFS(t testing.TB, sizeMB int) string {
	t.Helper()
	needRoot(t, "a loop-mounted XFS file system")
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		unavailable(t, "testenv: mkfs.xfs not found: install xfsprogs (go tool task tools:debian)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(sizeMB) << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v\n%s", err, out)
	}
	return mount(t, filepath.Join(dir, "mnt"), "-o", "loop", img)
}

// MountTmpfs mounts a small tmpfs, a file system without reflinks, and
// returns its mount point; it needs root like MountXFS.
func MountTmpfs(t testing.TB) string {
	t.Helper()
	needRoot(t, "a tmpfs mount")
	return mount(t, filepath.Join(t.TempDir(), "tmpfs"), "-t", "tmpfs", "-o", "size=64m", "drorch-test")
}

func mount(t testing.TB, at string, args ...string) string {
	t.Helper()
	if err := os.Mkdir(at, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", append(args, at)...).CombinedOutput(); err != nil {
		unavailable(t, "testenv: mount %v %s: %v\n%s", args, at, err, out)
	}
	// Cleanups run last first: this one runs before TempDir's removal.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", at).CombinedOutput(); err != nil {
			if out2, err2 := exec.Command("umount", "-l", at).CombinedOutput(); err2 != nil {
				t.Errorf("umount %s: %v\n%s%s", at, err, out, out2)
			}
		}
	})
	return at
}

func needRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "testenv: %s needs root", what)
	}
}
