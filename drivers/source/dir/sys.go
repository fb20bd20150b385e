package dir

import (
	"io"
	"io/fs"
	"slices"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers/source"
)

const (
	// openDir opens a directory below another without following a symlink.
	openDir = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	// openRead opens a regular file for reading without following a symlink;
	// O_NONBLOCK keeps a FIFO swapped in since the scan from blocking the open.
	openRead = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
)

// retry runs f again while it fails with EINTR.
func retry(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

func openat(dirfd int, name string, flags int, mode uint32) (int, error) {
	var fd int
	err := retry(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags, mode)
		return err
	})
	return fd, err
}

func lstatat(dirfd int, name string, st *unix.Stat_t) error {
	return unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
}

// entryType maps a stat mode to an entry type.
func entryType(mode uint32) source.Type {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return source.TypeFile
	case unix.S_IFDIR:
		return source.TypeDir
	case unix.S_IFLNK:
		return source.TypeSymlink
	}
	return source.TypeOther
}

// fileMode keeps the permission bits plus setuid, setgid and sticky.
func fileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&unix.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if mode&unix.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if mode&unix.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// unixMode is the inverse of fileMode.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= unix.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= unix.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= unix.S_ISVTX
	}
	return u
}

func entryFromStat(path string, st *unix.Stat_t) source.Entry {
	e := source.Entry{
		Path:    path,
		Type:    entryType(st.Mode),
		Mode:    fileMode(st.Mode),
		UID:     int(st.Uid),
		GID:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
	}
	if e.Type == source.TypeFile {
		e.Size = st.Size
	}
	return e
}

// readNames returns the names in the open directory fd, sorted in byte order.
func readNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil, err
	}
	var names []string
	err := eachNames(fd, 32<<10, func(batch []string) bool {
		names = append(names, batch...)
		return true
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// eachNames reads the open directory fd from where it stands, a buffer of
// bufSize at a time, and calls fn with each batch of names (without . and
// ..) until fn returns false or the directory ends.
func eachNames(fd, bufSize int, fn func(names []string) bool) error {
	buf := make([]byte, bufSize)
	var names []string
	for {
		var n int
		err := retry(func() (err error) {
			n, err = unix.ReadDirent(fd, buf)
			return err
		})
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		if !fn(names) {
			return nil
		}
	}
}

// readlinkat reads a symlink's target whatever its length.
func readlinkat(dirfd int, name string, sizeHint int64) (string, error) {
	size := 256
	if sizeHint >= int64(size) {
		size = int(sizeHint) + 1
	}
	for {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		size *= 2
	}
}

// timespecs gives atime = mtime = t, as restores set them.
func timespecs(t time.Time) [2]unix.Timespec {
	ts := unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
	return [2]unix.Timespec{ts, ts}
}

// futimens sets the times of an open file by descriptor (utimensat with a NULL
// path), which x/sys/unix does not wrap with nanosecond precision.
func futimens(fd int, ts *[2]unix.Timespec) error {
	return retry(func() error {
		_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(ts)), 0, 0, 0)
		if e != 0 {
			return e
		}
		return nil
	})
}
