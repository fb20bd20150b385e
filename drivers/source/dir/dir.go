// Package dir is the source driver for a file tree or a single file such as a
// raw disk image: it scans and reads it for backup (sparse-aware, never
// following symlinks) and restores into it by staging beside the target and
// renaming the staged tree into place at commit.
//
// Every file system operation below the configured path is made relative to an
// open directory and refuses to follow symbolic links (openat with O_NOFOLLOW),
// so a symlink swapped into the tree, or one written earlier by a restore,
// can never redirect a read or a write outside the tree.
package dir

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// ReasonNoSpace is the permanent-error reason for a full file system or an
// exhausted quota: retrying cannot help until an operator makes room.
const ReasonNoSpace = "NoSpace"

// Dir is a file tree, or a single file, at an absolute path. It is both a
// source (backup reads it) and a target (restore replaces it).
type Dir struct {
	path string

	// forceStageInside makes Begin stage inside the target directory, as it
	// does for a mount point; tests use it because they cannot mount.
	forceStageInside bool
	// stepHook, when set, is called at each step of Commit; an error it
	// returns stops Commit there, as a crash would. Tests only.
	stepHook func(step string) error
	// noExchange makes Commit act as on a file system that refuses
	// RENAME_EXCHANGE. Tests only.
	noExchange bool
}

var (
	_ source.Source = (*Dir)(nil)
	_ source.Target = (*Dir)(nil)
)

// New returns the Dir at path, which must be absolute and clean.
func New(path string) (*Dir, error) {
	if path == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return nil, drivers.Permanentf(drivers.ReasonInvalidConfig,
			"dir: path %s must be absolute and clean (e.g. %s)", show(path), show(filepath.Clean("/"+path)))
	}
	if strings.IndexByte(path, 0) >= 0 {
		return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "dir: path %s contains a NUL byte", show(path))
	}
	return &Dir{path: path}, nil
}

// Describe names the tree for messages: "dir <path>".
func (d *Dir) Describe() string { return "dir " + d.path }

// show renders a path for a message: as is when it is plain printable text,
// quoted when it holds bytes that would garble a log line (newlines, invalid
// UTF-8, leading or trailing spaces).
func show(p string) string {
	if p == "" {
		return `""`
	}
	if !utf8.ValidString(p) || strings.TrimSpace(p) != p {
		return strconv.Quote(p)
	}
	for _, r := range p {
		if !unicode.IsPrint(r) {
			return strconv.Quote(p)
		}
	}
	return p
}

// join returns the absolute path of the entry rel below root, for messages.
func join(root, rel string) string {
	if rel == "." || rel == "" {
		return root
	}
	if root == "/" {
		return "/" + rel
	}
	return root + "/" + rel
}

// splitPath checks an entry path as Scan produces it ("." or slash-separated
// names, none of them empty, "." or "..") and returns its components (none
// for the root). Anything else could name a place outside the tree.
func splitPath(p string) ([]string, error) {
	if p == "." {
		return nil, nil
	}
	bad := func(why string) error {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "entry path %s: %s", show(p), why)
	}
	if p == "" {
		return nil, bad("empty")
	}
	if strings.HasPrefix(p, "/") {
		return nil, bad("absolute; paths are relative to the root")
	}
	if strings.IndexByte(p, 0) >= 0 {
		return nil, bad("contains a NUL byte")
	}
	comps := strings.Split(p, "/")
	for _, c := range comps {
		switch c {
		case "":
			return nil, bad("has an empty component")
		case ".":
			return nil, bad(`has a "." component`)
		case "..":
			return nil, bad(`has a ".." component`)
		}
	}
	return comps, nil
}

// classifiedError keeps an error's message while also matching a class such as
// drivers.ErrNotFound with errors.Is.
type classifiedError struct {
	err   error
	class error
}

func (e *classifiedError) Error() string   { return e.err.Error() }
func (e *classifiedError) Unwrap() []error { return []error{e.err, e.class} }

// fsError wraps err from operation op on path and classifies it: absent →
// drivers.ErrNotFound; denied or read-only → permanent AccessDenied; full →
// permanent NoSpace; a name too long → permanent InvalidInput; anything else
// is left transient.
func fsError(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return fmt.Errorf("%s %s: %w", op, show(path), err)
	}
	wrapped := fmt.Errorf("%s %s: %w", op, show(path), errno)
	switch errno {
	case unix.ENOENT:
		return &classifiedError{err: wrapped, class: drivers.ErrNotFound}
	case unix.EACCES, unix.EPERM:
		return drivers.Permanent(drivers.ReasonAccessDenied, wrapped)
	case unix.EROFS:
		return drivers.Permanent(drivers.ReasonAccessDenied, wrapped)
	case unix.ENOSPC, unix.EDQUOT:
		return drivers.Permanent(ReasonNoSpace, wrapped)
	case unix.ENAMETOOLONG:
		return drivers.Permanent(drivers.ReasonInvalidInput, wrapped)
	}
	return wrapped
}

// errnoIs reports whether err is, or wraps, one of the given errnos.
func errnoIs(err error, errnos ...syscall.Errno) bool {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return false
	}
	for _, want := range errnos {
		if e == want {
			return true
		}
	}
	return false
}
