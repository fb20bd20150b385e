// Package source defines what can be protected: a data set that can be read as a
// tree of entries at backup and written back at restore.
package source

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"time"
)

// Type is the kind of an entry.
type Type string

const (
	TypeFile    Type = "file"
	TypeDir     Type = "dir"
	TypeSymlink Type = "symlink"
	// TypeOther is a device, FIFO or socket: reported by Scan, never stored.
	TypeOther Type = "other"
)

// Entry is one node of a source tree.
type Entry struct {
	// Path is slash-separated and relative to the source root; "." is the root
	// itself (a directory, or the single file of a single-file source).
	Path    string
	Type    Type
	Mode    fs.FileMode // permission bits plus setuid, setgid and sticky
	UID     int
	GID     int
	Size    int64 // regular files only
	ModTime time.Time
	Target  string // symlinks only
}

// Region is a stretch of a file that holds data; what lies between regions is a
// hole that reads as zeros.
type Region struct {
	Offset int64
	Length int64
}

// Source reads a data set.
type Source interface {
	// Describe names the source for messages, e.g. "dir /srv/data".
	Describe() string

	// Check verifies that the source exists and can be read.
	Check(ctx context.Context) error

	// Scan calls fn for every entry: the root first, then parents before their
	// children, siblings in lexical byte order of their names. Entries of
	// TypeOther are passed to fn so the caller can report them.
	Scan(ctx context.Context, fn func(Entry) error) error

	// Open opens the regular file at path for reading.
	Open(ctx context.Context, path string) (File, error)
}

// File is an open regular file of a source.
type File interface {
	io.ReaderAt
	io.Closer

	// Regions returns the data regions within [off, off+n) in order, clipped to
	// that range. A file system without hole reporting returns one region.
	Regions(off, n int64) ([]Region, error)

	// Changed reports whether the file differs from e as scanned: its size or
	// modification time is not the same any more.
	Changed(e Entry) (bool, error)

	// Stat returns the open file's current size and modification time, so a
	// file that changed while it was read can be read again as it now is.
	Stat() (size int64, modTime time.Time, err error)
}

// Target is where a restore writes.
type Target interface {
	// Describe names the target for messages, e.g. "dir /srv/data".
	Describe() string

	// Begin starts, or resumes, the restore with the given id. Nothing is
	// visible at the target's path until Commit. It claims the staging for
	// this process until Commit, Abort or Close (a live earlier attempt of
	// the same id makes it fail with a retryable error), and sweeps what
	// restores with other ids into the same target left behind when no
	// live process owns it any more.
	Begin(ctx context.Context, id string) (Restore, error)
}

// Restore stages a tree beside the target and moves it into place at Commit.
// Entries arrive root first, parents before children. Writing an entry again
// (after a resumed attempt) replaces what was staged for it.
//
// Durability: Sync makes the data and attributes of every file whose
// FileWriter was closed before it, and the directory entries staged so far,
// durable (a driver may make a file durable at Close already); a caller
// reports a file finished (to a later attempt that will skip it) only after
// its Close and then a Sync. A later attempt still checks what it skips,
// through Staged.
type Restore interface {
	// Dir creates a directory. Its mode and mtime are applied at Commit, so that
	// read-only directories can still be filled.
	Dir(e Entry) error
	// Symlink creates a symbolic link.
	Symlink(e Entry) error
	// File creates (or truncates) a regular file to be filled by WriteAt.
	File(e Entry) (FileWriter, error)
	// Sync makes every directory entry staged so far, and the files whose
	// FileWriter was closed before it, durable: they survive a crash.
	Sync() error
	// Staged opens the regular file an earlier attempt staged at path, so a
	// resumed restore can check it before skipping it. It returns
	// ErrInPlace once the staged tree is in place (a Commit cut short after
	// its commit point): nothing is staged any more, and what is in place
	// was made durable before it was moved there.
	Staged(path string) (File, error)
	// Commit applies directory modes and times and atomically replaces whatever
	// is at the target's path with the staged tree. It is idempotent: calling it
	// again after a crash finishes the move or reports that it is done.
	Commit(ctx context.Context) error
	// Abort removes everything staged. The target's path is left untouched.
	Abort() error
	// Close gives up the restore without removing anything: a later attempt
	// with the same id resumes it, and until one does, a restore with
	// another id into the same target may sweep it as stale. It releases
	// the restore's claim on its staging and is a no-op after Commit or
	// Abort.
	Close() error
	// Resumed reports whether Begin found this restore's staging from an
	// earlier attempt (or a commit already under way). Only then may the
	// caller skip files an earlier attempt wrote.
	Resumed() bool
}

// ErrInPlace is returned by Restore.Staged once the staged tree has been
// moved into place.
var ErrInPlace = errors.New("the restored tree is in place already")

// FileWriter fills one staged regular file. Regions never written stay holes.
type FileWriter interface {
	io.WriterAt
	// Close sets the file's final size (so trailing holes exist), mode, owner
	// (when permitted) and modification time. The next Restore.Sync makes
	// its data and attributes durable.
	Close() error
}
