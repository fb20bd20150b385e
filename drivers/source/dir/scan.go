package dir

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// rootSymlinkError refuses a configured path that is itself a symlink: backing
// up the link and restoring over it would both surprise (a restore would replace
// the link with a directory, leaving the data it pointed to in place).
func (d *Dir) rootSymlinkError(op string) error {
	target, _ := os.Readlink(d.path)
	return drivers.Permanentf(drivers.ReasonInvalidConfig,
		"%s %s: is a symbolic link to %s; configure the path it points to", op, show(d.path), show(target))
}

// Check verifies that the path exists and can be read: a directory is opened
// and listed, a file opened. A missing path wraps drivers.ErrNotFound; denied
// access is permanent (AccessDenied); a symlink, device, FIFO or socket at the
// path is permanent (InvalidConfig).
func (d *Dir) Check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(d.path, &st); err != nil {
		return fsError("check", d.path, err)
	}
	switch entryType(st.Mode) {
	case source.TypeSymlink:
		return d.rootSymlinkError("check")
	case source.TypeOther:
		return drivers.Permanentf(drivers.ReasonInvalidConfig,
			"check %s: not a regular file or a directory", show(d.path))
	case source.TypeDir:
		fd, err := openat(unix.AT_FDCWD, d.path, openDir, 0)
		if err != nil {
			return fsError("check: open directory", d.path, err)
		}
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		if _, err := unix.ReadDirent(fd, buf); err != nil {
			return fsError("check: list directory", d.path, err)
		}
	default:
		fd, err := openat(unix.AT_FDCWD, d.path, openRead, 0)
		if err != nil {
			return fsError("check: open file", d.path, err)
		}
		unix.Close(fd)
	}
	return nil
}

// Scan calls fn for every entry: the root ("."), then, for a directory, a
// depth-first walk with parents before children and siblings in byte order of
// their names. Symlinks are reported, never followed. Devices, FIFOs and sockets
// are reported as source.TypeOther. An entry that vanishes while the walk
// reaches it is skipped; a directory that cannot be read fails the scan
// (permanent AccessDenied when permission is denied). Memory is bounded by the
// tree's depth times the width of its directories; one descriptor is held open
// per level of depth.
func (d *Dir) Scan(ctx context.Context, fn func(source.Entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(d.path, &st); err != nil {
		return fsError("scan", d.path, err)
	}
	switch entryType(st.Mode) {
	case source.TypeSymlink:
		return d.rootSymlinkError("scan")
	case source.TypeDir:
	default:
		return fn(entryFromStat(".", &st))
	}
	fd, err := openat(unix.AT_FDCWD, d.path, openDir, 0)
	if err != nil {
		return fsError("scan: open directory", d.path, err)
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return fsError("scan: stat", d.path, err)
	}
	if err := fn(entryFromStat(".", &st)); err != nil {
		return err
	}
	return d.walk(ctx, fd, ".", fn)
}

// walk reports the children of the open directory dirfd, whose path is rel.
func (d *Dir) walk(ctx context.Context, dirfd int, rel string, fn func(source.Entry) error) error {
	names, err := readNames(dirfd)
	if err != nil {
		return fsError("scan: list directory", join(d.path, rel), err)
	}
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		child := name
		if rel != "." {
			child = rel + "/" + name
		}
		if err := d.visit(ctx, dirfd, name, child, fn); err != nil {
			return err
		}
	}
	return nil
}

// visit reports one child and, for a directory, walks it. The child is looked
// at again when its type changes under us (a file replaced by a directory
// between the stat and the open), a few times at most.
func (d *Dir) visit(ctx context.Context, dirfd int, name, rel string, fn func(source.Entry) error) error {
	const attempts = 3
	for attempt := 1; ; attempt++ {
		var st unix.Stat_t
		err := lstatat(dirfd, name, &st)
		if err == unix.ENOENT {
			return nil // gone since the directory was listed
		}
		if err != nil {
			return fsError("scan: stat", join(d.path, rel), err)
		}
		changed := func() error {
			if attempt < attempts {
				return nil
			}
			return fmt.Errorf("scan %s: keeps changing type while being read", show(join(d.path, rel)))
		}
		switch entryType(st.Mode) {
		case source.TypeDir:
			cfd, err := openat(dirfd, name, openDir, 0)
			if err == unix.ENOENT {
				return nil
			}
			if errnoIs(err, unix.ENOTDIR, unix.ELOOP) {
				if err := changed(); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fsError("scan: open directory", join(d.path, rel), err)
			}
			err = d.visitDir(ctx, cfd, rel, fn)
			unix.Close(cfd)
			return err
		case source.TypeSymlink:
			e := entryFromStat(rel, &st)
			e.Target, err = readlinkat(dirfd, name, st.Size)
			if err == unix.ENOENT {
				return nil
			}
			if err == unix.EINVAL { // no longer a symlink
				if err := changed(); err != nil {
					return err
				}
				continue
			}
			if err != nil {
				return fsError("scan: read symlink", join(d.path, rel), err)
			}
			return fn(e)
		default:
			return fn(entryFromStat(rel, &st))
		}
	}
}

// visitDir reports the open directory fd as it is now, then its children.
func (d *Dir) visitDir(ctx context.Context, fd int, rel string, fn func(source.Entry) error) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fsError("scan: stat", join(d.path, rel), err)
	}
	if err := fn(entryFromStat(rel, &st)); err != nil {
		return err
	}
	return d.walk(ctx, fd, rel, fn)
}

// Empty reports whether the directory is absent or holds no entry of its
// own: a file system's lost+found and drorch's own .drorch-* names (a
// restore staged inside the target) do not count. A path that is not a
// directory (a single-file plan's file) is not empty. It reads names only
// until it finds one that counts.
func (d *Dir) Empty(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	fd, err := openat(unix.AT_FDCWD, d.path, openDir, 0)
	switch {
	case err == unix.ENOENT:
		return true, nil
	case errnoIs(err, unix.ENOTDIR, unix.ELOOP):
		return false, nil
	case err != nil:
		return false, fsError("open", d.path, err)
	}
	defer unix.Close(fd)
	empty := true
	err = eachNames(fd, 8<<10, func(names []string) bool {
		for _, name := range names {
			if name != "lost+found" && !strings.HasPrefix(name, ".drorch-") {
				empty = false
				return false
			}
		}
		return true
	})
	if err != nil {
		return false, fsError("read directory", d.path, err)
	}
	return empty, nil
}

// Open opens the regular file at path (as Scan reported it) for reading. Each
// directory on the way is opened without following symlinks, so a component
// replaced by a symlink since the scan fails with a permanent SourceChanged
// error instead of reading elsewhere; so does a path that is no longer a
// regular file. A file that has vanished wraps drivers.ErrNotFound.
func (d *Dir) Open(ctx context.Context, path string) (source.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	comps, err := splitPath(path)
	if err != nil {
		return nil, err
	}
	full := join(d.path, path)
	changed := func(why string) error {
		return drivers.Permanentf(drivers.ReasonSourceChanged, "open %s: %s since the scan", show(full), why)
	}
	var fd int
	if len(comps) == 0 {
		fd, err = openat(unix.AT_FDCWD, d.path, openRead, 0)
	} else {
		dirfd, derr := openat(unix.AT_FDCWD, d.path, openDir, 0)
		for i := 0; derr == nil && i < len(comps)-1; i++ {
			var next int
			next, derr = openat(dirfd, comps[i], openDir, 0)
			unix.Close(dirfd)
			dirfd = next
		}
		if errnoIs(derr, unix.ENOTDIR, unix.ELOOP) {
			return nil, changed("a directory on its path was replaced by a file or a symlink")
		}
		if derr != nil {
			return nil, fsError("open", full, derr)
		}
		fd, err = openat(dirfd, comps[len(comps)-1], openRead, 0)
		unix.Close(dirfd)
	}
	if err == unix.ELOOP {
		return nil, changed("it was replaced by a symlink")
	}
	if err != nil {
		return nil, fsError("open", full, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fsError("open: stat", full, err)
	}
	if entryType(st.Mode) != source.TypeFile {
		unix.Close(fd)
		return nil, changed("it is no longer a regular file")
	}
	return &file{f: os.NewFile(uintptr(fd), full), path: full}, nil
}

// file is an open regular file of the tree. Its methods are safe for
// concurrent use: ReadAt is pread and Regions uses absolute seeks only.
type file struct {
	f    *os.File
	path string

	closeOnce sync.Once
	closeErr  error
}

func (f *file) ReadAt(p []byte, off int64) (int, error) { return f.f.ReadAt(p, off) }

func (f *file) Close() error {
	f.closeOnce.Do(func() { f.closeErr = f.f.Close() })
	return f.closeErr
}

// control runs fn with the file's descriptor, which stays valid meanwhile even
// if Close is called concurrently.
func (f *file) control(fn func(fd int) error) error {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Regions finds the data regions in [off, off+n) with lseek SEEK_DATA and
// SEEK_HOLE. A file system that cannot report holes yields one region, clipped
// to the file's size.
func (f *file) Regions(off, n int64) ([]source.Region, error) {
	if off < 0 || n < 0 {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "regions of %s: negative range [%d, +%d)", show(f.path), off, n)
	}
	if n == 0 {
		return nil, nil
	}
	end := off + n
	var regions []source.Region
	err := f.control(func(fd int) error {
		for pos := off; pos < end; {
			data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
			if err == unix.ENXIO { // no data at or after pos
				return nil
			}
			if errnoIs(err, unix.EINVAL, unix.EOPNOTSUPP) {
				return f.wholeRange(fd, off, end, &regions)
			}
			if err != nil {
				return err
			}
			if data >= end {
				return nil
			}
			hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
			if err == unix.ENXIO { // truncated meanwhile
				return nil
			}
			if err != nil {
				return err
			}
			start := max(data, off)
			stop := min(hole, end)
			if stop > start {
				regions = append(regions, source.Region{Offset: start, Length: stop - start})
			}
			pos = hole
		}
		return nil
	})
	if err != nil {
		return nil, fsError("find data regions of", f.path, err)
	}
	return regions, nil
}

// wholeRange reports [off, end) clipped to the file's size as one region.
func (f *file) wholeRange(fd int, off, end int64, regions *[]source.Region) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	*regions = (*regions)[:0]
	if stop := min(end, st.Size); stop > off {
		*regions = append(*regions, source.Region{Offset: off, Length: stop - off})
	}
	return nil
}

// Changed reports whether the open file's size or modification time (to the
// nanosecond) differs from e's.
func (f *file) Changed(e source.Entry) (bool, error) {
	size, modTime, err := f.Stat()
	if err != nil {
		return false, err
	}
	return size != e.Size || !modTime.Equal(e.ModTime), nil
}

// Stat returns the open file's current size and modification time.
func (f *file) Stat() (int64, time.Time, error) {
	var st unix.Stat_t
	if err := f.control(func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return 0, time.Time{}, fsError("stat", f.path, err)
	}
	return st.Size, time.Unix(st.Mtim.Sec, st.Mtim.Nsec), nil
}
