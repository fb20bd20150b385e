package dir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
)

// ReasonNoReflink is the permanent-error reason for a reflink snapshot of a
// tree whose file system cannot share extents between files.
const ReasonNoReflink = "NoReflink"

// reflinkFilesystems is what the error about a missing reflink support
// offers instead.
const reflinkFilesystems = "XFS made with reflink=1 (the default since xfsprogs 5.1), btrfs, bcachefs, OCFS2 or ZFS 2.2+ with block cloning"

// Clone makes a copy-on-write clone of the tree (or single file) at src in
// dst (read it at CloneRoot(dst)); dst must not exist and must be on the same file system: each
// regular file shares its extents with the original through the FICLONE
// ioctl, so the clone costs no data blocks and each file in it is the file
// as it was at one instant (FICLONE holds the inode's lock). Directories,
// symlinks, permissions, owners (as root) and modification times are kept;
// devices, FIFOs and sockets are left out, as a backup skips them anyway.
//
// A file system without reflinks gives a permanent ReasonNoReflink error
// naming its type and the path. On any error the partial clone is removed.
func Clone(ctx context.Context, src, dst string) (err error) {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return fmt.Errorf("reflink clone: %w", err)
	}
	defer func() {
		if err != nil {
			_ = RemoveTree(dst)
		}
	}()
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("reflink clone: %w", err)
	}
	root := CloneRoot(dst)
	if fi.Mode().IsRegular() {
		return cloneFile(src, root, fi) // a single-file source, such as a disk image
	}
	type dirTimes struct {
		path string
		fi   fs.FileInfo
	}
	var dirs []dirTimes // set after their children are in place
	err = filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(root, rel)
		fi, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, dirTimes{to, fi})
			return nil
		case fi.Mode().IsRegular():
			return cloneFile(p, to, fi)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			return keepMeta(to, fi, true)
		}
		return nil // device, FIFO or socket
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := keepMeta(dirs[i].path, dirs[i].fi, false); err != nil {
			return err
		}
	}
	return nil
}

// CloneRoot is where the clone Clone made at dst is read: dst/tree, so that
// dst's own permissions and times are not the source's.
func CloneRoot(dst string) string { return filepath.Join(dst, "tree") }

func cloneFile(from, to string, fi fs.FileInfo) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENOSYS) {
			return drivers.Permanentf(ReasonNoReflink,
				"snapshot: reflink: the %s file system of %s cannot make reflink copies (FICLONE: %v); reflinks need %s, or use snapshot commands (docs/snapshots.md)",
				FSType(from), show(from), err, reflinkFilesystems)
		}
		return fmt.Errorf("reflink %s: %w", show(from), err)
	}
	if err := keepMeta(to, fi, false); err != nil {
		return err
	}
	return out.Close()
}

// keepMeta gives the clone p the owner, permissions and times of fi.
func keepMeta(p string, fi fs.FileInfo, link bool) error {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st != nil {
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
			return err
		}
	}
	if !link {
		if err := unix.Chmod(p, uint32(fi.Mode().Perm())|uint32(specialBits(fi.Mode()))); err != nil {
			return err
		}
	}
	var at unix.Timespec
	if st != nil {
		at = unix.NsecToTimespec(syscall.TimespecToNsec(st.Atim))
	}
	ts := []unix.Timespec{at, unix.NsecToTimespec(fi.ModTime().UnixNano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func specialBits(m fs.FileMode) uint32 {
	var b uint32
	if m&fs.ModeSetuid != 0 {
		b |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		b |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		b |= unix.S_ISVTX
	}
	return b
}

// RemoveTree removes a clone, also one whose directories were made
// read-only by the permissions they copy. A missing tree is no error.
func RemoveTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			_ = os.Chmod(q, 0o700)
		}
		return nil
	})
	return os.RemoveAll(p)
}

// SameFilesystem reports whether a and b are on the same mounted file
// system.
func SameFilesystem(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev, nil
}

// FSType names the type of the file system p is on, for messages.
func FSType(p string) string {
	var s unix.Statfs_t
	if err := unix.Statfs(p, &s); err != nil {
		return "unknown"
	}
	switch uint32(s.Type) {
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.EXT4_SUPER_MAGIC: // also ext2 and ext3
		return "ext4"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	case 0x2fc12fc1:
		return "zfs"
	case 0xca451a4e:
		return "bcachefs"
	case unix.F2FS_SUPER_MAGIC:
		return "f2fs"
	}
	return fmt.Sprintf("unknown (type 0x%x)", uint32(s.Type))
}
