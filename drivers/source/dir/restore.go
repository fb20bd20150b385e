package dir

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// Names of what a restore keeps next to (or inside) the target, followed by
// the restore id. They are fixed so that a resumed attempt, or a Commit after a
// crash, finds what the last one left.
const (
	stagingPrefix = ".drorch-staging-" // the tree being written
	oldPrefix     = ".drorch-old-"     // the target's previous content, until removed
	commitPrefix  = ".drorch-commit-"  // staging inside a target, once committed
	rootPrefix    = ".drorch-root-"    // the root's attributes, staging inside a target
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Begin starts, or resumes, the restore with the given id, which must match
// [A-Za-z0-9._-]{1,64}. A restore in progress with the same id keeps what it
// staged.
//
// The staged tree is written where the final move is a rename on the same file
// system. That is normally beside the target, in its parent directory (created
// if missing): <parent>/.drorch-staging-<id>, with the previous content moved to
// <parent>/.drorch-old-<id> at Commit.
//
// A target directory that is a mount point cannot be renamed (EBUSY), and one
// whose parent is not writable cannot be replaced by a rename either; such a
// target is kept and the restore is staged inside it, in
// <target>/.drorch-staging-<id>. Commit then moves the target's children aside
// into <target>/.drorch-old-<id> and the staged children into the target. The
// swap is then not one atomic rename, but each step is resumable.
//
// Begin records who owns the staging in <base>/.drorch-owner-<id> and holds
// an exclusive lock on it until Commit, Abort or Close (or the process's
// death). It then sweeps what stale restores into the same target left (see
// sweep): a cancelled, fenced or crashed restore's staging, or the previous
// content that a Commit cut short did not remove yet.
//
// One restore at a time per target: two ids restoring into the same target
// concurrently would each replace the other's result.
func (d *Dir) Begin(ctx context.Context, id string) (source.Restore, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !idPattern.MatchString(id) {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput,
			"begin restore into %s: restore id %s must match [A-Za-z0-9._-]{1,64}", show(d.path), show(id))
	}
	var st unix.Stat_t
	exists := true
	if err := unix.Lstat(d.path, &st); err == unix.ENOENT {
		exists = false
	} else if err != nil {
		return nil, fsError("begin restore: stat", d.path, err)
	}
	if exists && entryType(st.Mode) == source.TypeSymlink {
		return nil, d.rootSymlinkError("begin restore into")
	}
	r := d.newRestore(id)
	var err error
	if d.stageInside(exists && entryType(st.Mode) == source.TypeDir, id) {
		err = r.openInside(ctx, exists)
	} else {
		err = r.openBeside(ctx)
	}
	if err != nil {
		r.release()
		return nil, err
	}
	return r, nil
}

func (d *Dir) newRestore(id string) *restore {
	return &restore{
		d:        d,
		id:       id,
		staging:  stagingPrefix + id,
		old:      oldPrefix + id,
		commit:   commitPrefix + id,
		rootMark: rootPrefix + id,
		owner:    ownerPrefix + id,
		root:     os.Geteuid() == 0,
		dirty:    map[string]struct{}{},
	}
}

// stageInside decides where to stage; see Begin.
func (d *Dir) stageInside(targetIsDir bool, id string) bool {
	if d.path == "/" || d.forceStageInside {
		return true
	}
	if !targetIsDir {
		return false
	}
	// A restore under way stays where it started.
	parent := filepath.Dir(d.path)
	if present(filepath.Join(parent, stagingPrefix+id)) || present(filepath.Join(parent, oldPrefix+id)) {
		return false
	}
	for _, prefix := range []string{stagingPrefix, commitPrefix, oldPrefix, rootPrefix, ownerPrefix} {
		if present(filepath.Join(d.path, prefix+id)) {
			return true
		}
	}
	if isMountPoint(d.path) {
		return true
	}
	return unix.Faccessat(unix.AT_FDCWD, parent, unix.W_OK|unix.X_OK, unix.AT_EACCESS) != nil
}

func present(path string) bool {
	var st unix.Stat_t
	return unix.Lstat(path, &st) == nil
}

// isMountPoint reports whether path is the root of a mount. statx tells
// directly (also for bind mounts of the same device); older kernels fall back
// to comparing the device with the parent's.
func isMountPoint(path string) bool {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx)
	if err == nil && stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0
	}
	var st, pst unix.Stat_t
	if unix.Lstat(path, &st) != nil || unix.Stat(filepath.Dir(path), &pst) != nil {
		return false
	}
	return st.Dev != pst.Dev
}

// openBeside prepares staging in the target's parent directory.
func (r *restore) openBeside(ctx context.Context) error {
	parent := filepath.Dir(r.d.path)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fsError("begin restore: create parent directory", parent, err)
	}
	// The configured path may lead through symlinks; that is where the
	// operator put the target, so they are followed up to the parent.
	fd, err := openat(unix.AT_FDCWD, parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fsError("begin restore: open parent directory", parent, err)
	}
	r.setBase(fd, parent)
	r.target = filepath.Base(r.d.path)
	if err := unix.Faccessat(fd, ".", unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
		err = fsError("begin restore: parent directory", parent, err)
		return drivers.Permanentf(drivers.ReasonAccessDenied,
			"begin restore into %s: cannot stage beside it: %w", show(r.d.path), err)
	}
	if err := r.claim(); err != nil {
		return err
	}
	if err := r.sweep(ctx); err != nil {
		return err
	}
	return r.inspectBeside()
}

// inspectBeside finds where an earlier attempt with this id stopped.
func (r *restore) inspectBeside() error {
	fd := r.baseFD
	hasTarget, err := r.has(r.target)
	if err != nil {
		return err
	}
	hasStaging, err := r.has(r.staging)
	if err != nil {
		return err
	}
	hasOld, err := r.has(r.old)
	if err != nil {
		return err
	}
	if hasStaging && hasTarget && r.swapped() {
		// Commit exchanged the staged tree with the target and stopped
		// before it gave the previous content, now under the staging's
		// name, the name that says so.
		if hasOld {
			if err := removeTree(fd, r.old); err != nil {
				return fsError("begin restore: remove", r.inBase(r.old), err)
			}
		}
		if err := unix.Renameat(fd, r.staging, fd, r.old); err != nil {
			return fsError("begin restore: rename", r.inBase(r.staging), err)
		}
		if err := unix.Fsync(fd); err != nil {
			return fsError("begin restore: sync", r.basePath, err)
		}
		hasStaging, hasOld = false, true
	}
	r.resumed = hasStaging
	if !hasStaging && hasOld {
		if hasTarget {
			// The staged tree was moved into place; only removing the old
			// content is left. Entries written now are already in place.
			r.committing = true
			r.resumed = true
			return nil
		}
		// The target was moved aside and nothing is staged to replace it
		// (none of our own steps leaves this): put it back.
		if err := unix.Renameat(fd, r.old, fd, r.target); err != nil {
			return fsError("begin restore: put previous content back at", r.d.path, err)
		}
		if err := unix.Fsync(fd); err != nil {
			return fsError("begin restore: sync", r.basePath, err)
		}
	}
	return nil
}

// swapped reports whether the target is the tree Commit recorded as staged
// before exchanging it with the target.
func (r *restore) swapped() bool {
	if r.prev.StagedIno == 0 {
		return false
	}
	var st unix.Stat_t
	if lstatat(r.baseFD, r.target, &st) != nil {
		return false
	}
	return uint64(st.Dev) == r.prev.StagedDev && st.Ino == r.prev.StagedIno
}

// openInside prepares staging inside the target directory.
func (r *restore) openInside(ctx context.Context, targetExists bool) error {
	if !targetExists {
		if err := os.Mkdir(r.d.path, 0o755); err != nil && !os.IsExist(err) {
			return fsError("begin restore: create", r.d.path, err)
		}
	}
	fd, err := openat(unix.AT_FDCWD, r.d.path, openDir, 0)
	if err != nil {
		return fsError("begin restore: open", r.d.path, err)
	}
	r.setBase(fd, r.d.path)
	r.inside = true
	if err := r.claim(); err != nil {
		return err
	}
	if err := r.sweep(ctx); err != nil {
		return err
	}
	return r.inspectInside()
}

// inspectInside finds where an earlier attempt with this id stopped.
func (r *restore) inspectInside() error {
	hasCommit, err := r.has(r.commit)
	if err != nil {
		return err
	}
	hasStaging, err := r.has(r.staging)
	if err != nil {
		return err
	}
	hasMark, err := r.has(r.rootMark)
	if err != nil {
		return err
	}
	// Past the commit point the staging is renamed to commit, and once that
	// is emptied and removed only the record of the root's attributes is
	// left; before it, the record may exist beside the staging.
	r.committing = hasCommit || (hasMark && !hasStaging)
	r.resumed = r.committing || hasStaging
	return nil
}

// Resumed reports whether Begin found what an earlier attempt with the same id
// staged (or had already moved into place). Only then may the caller skip
// files it recorded as written (after checking them, see Staged); a restore
// that starts afresh, for instance because the earlier attempt's Commit
// completed, needs every file again.
func (r *restore) Resumed() bool { return r.resumed }

// step marks a point of Commit for tests that simulate a crash there.
func (r *restore) step(name string) error {
	if r.d.stepHook == nil {
		return nil
	}
	return r.d.stepHook(name)
}

// restore stages one restore; see Begin. Its methods are safe for concurrent
// use; each FileWriter is independent of the others.
type restore struct {
	d  *Dir
	id string

	// inside: staged inside the target (a mount point) rather than beside it.
	inside bool
	// base is the directory holding staging and old: the target's parent, or
	// the target itself when staging inside.
	base     *os.File
	baseFD   int
	basePath string
	// Names in base.
	target, staging, old, commit, rootMark, owner string
	root                                          bool // running as root: restore owners

	// ownerFile is the locked owner file (see claim); prev is the record an
	// earlier attempt left in it, record what this one wrote.
	ownerFile    *os.File
	prev, record ownerRecord

	// resumed: Begin found what an earlier attempt with this id staged (or
	// committed), so files written then need not be written again.
	resumed bool

	mu sync.Mutex
	// committing: the staged tree has been moved into place already, so
	// entries written now are in place and only Commit's clean-up is left.
	committing bool
	finished   bool
	// chain caches the open staged directories on the path of the last entry
	// (chain[0] is the staging root); entries arrive parents first, so the
	// next entry's parent is usually here already.
	chain []stagedDir
	// dirs are the directories of this attempt, whose mode, owner and times
	// Commit applies: one per directory of the tree, so kept compact.
	dirs []dirAttrs
	// dirty are the directories that gained or lost an entry since the last
	// Sync: staged paths relative to the staging root, "" for base.
	dirty map[string]struct{}
}

type stagedDir struct {
	name string
	f    *os.File // keeps fd open (and closes it if the restore is dropped)
	fd   int
}

func (r *restore) setBase(fd int, path string) {
	r.base = os.NewFile(uintptr(fd), path)
	r.baseFD = fd
	r.basePath = path
}

// release closes every descriptor the restore holds, which releases its lock
// on the owner file.
func (r *restore) release() {
	r.resetChain()
	if r.ownerFile != nil {
		r.ownerFile.Close()
		r.ownerFile = nil
	}
	if r.base != nil {
		r.base.Close()
		r.base = nil
	}
}

// Close gives up the restore, keeping what it staged for a later attempt with
// the same id (or for another restore into the target to sweep).
func (r *restore) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.finished {
		r.finished = true
		r.release()
	}
	return nil
}

func (r *restore) resetChain() {
	for _, d := range r.chain {
		d.f.Close()
	}
	r.chain = nil
}

// has reports whether name exists in base.
func (r *restore) has(name string) (bool, error) {
	var st unix.Stat_t
	err := lstatat(r.baseFD, name, &st)
	if err == unix.ENOENT {
		return false, nil
	}
	if err != nil {
		return false, fsError("restore: stat", r.inBase(name), err)
	}
	return true, nil
}

func (r *restore) inBase(name string) string { return join(r.basePath, name) }

// staged is the path of a staged entry, for messages.
func (r *restore) staged(rel string) string { return join(r.inBase(r.staging), rel) }

func (r *restore) usable() error {
	if r.finished {
		return drivers.Permanentf(drivers.ReasonInvalidInput,
			"restore %s into %s: already committed, aborted or closed", r.id, show(r.d.path))
	}
	return nil
}

func (r *restore) checkEntry(e source.Entry, want source.Type) ([]string, error) {
	if e.Type != want {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput,
			"restore %s: entry %s is a %s, not a %s", r.id, show(e.Path), e.Type, want)
	}
	return splitPath(e.Path)
}

// Dir stages a directory, 0700 until Commit gives it its mode, owner and
// times. An existing staged directory is kept; anything else staged at its
// path is replaced.
func (r *restore) Dir(e source.Entry) error {
	comps, err := r.checkEntry(e, source.TypeDir)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if !r.committing {
		parent, name, err := r.parentOf(comps)
		if err != nil {
			return err
		}
		if err := r.ensureDir(parent, name, e.Path); err != nil {
			return err
		}
	}
	r.dirs = append(r.dirs, dirAttrsOf(e))
	return nil
}

// dirAttrs are what Commit gives a staged directory: a restore holds one per
// directory of the tree, 48 bytes and its path (a source.Entry takes 104).
type dirAttrs struct {
	path     string
	mode     os.FileMode
	nsec     int32
	uid, gid int
	sec      int64
}

func dirAttrsOf(e source.Entry) dirAttrs {
	return dirAttrs{path: e.Path, mode: e.Mode, uid: e.UID, gid: e.GID, sec: e.ModTime.Unix(), nsec: int32(e.ModTime.Nanosecond())}
}

// entry is the directory's entry as Dir was given it (its time in UTC).
func (a dirAttrs) entry() source.Entry {
	return source.Entry{Path: a.path, Type: source.TypeDir, Mode: a.mode, UID: a.uid, GID: a.gid, ModTime: time.Unix(a.sec, int64(a.nsec)).UTC()}
}

// Symlink stages a symbolic link, replacing whatever was staged at its path,
// with its owner (when running as root) and modification time.
func (r *restore) Symlink(e source.Entry) error {
	comps, err := r.checkEntry(e, source.TypeSymlink)
	if err != nil {
		return err
	}
	if len(comps) == 0 {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "restore %s: the root cannot be a symlink", r.id)
	}
	if e.Target == "" || strings.IndexByte(e.Target, 0) >= 0 {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "restore %s: symlink %s has an invalid target %q", r.id, show(e.Path), e.Target)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if r.committing {
		return nil
	}
	parent, name, err := r.parentOf(comps)
	if err != nil {
		return err
	}
	if err := r.replacing(parent, name, e.Path, "restore: create symlink", func() error {
		return unix.Symlinkat(e.Target, parent, name)
	}); err != nil {
		return err
	}
	if r.root {
		if err := unix.Fchownat(parent, name, e.UID, e.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fsError("restore: set owner of symlink", r.staged(e.Path), err)
		}
	}
	ts := timespecs(e.ModTime)
	if err := unix.UtimesNanoAt(parent, name, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fsError("restore: set times of symlink", r.staged(e.Path), err)
	}
	return nil
}

// File stages a regular file, replacing whatever was staged at its path with
// an empty file (0600 while being written) to be filled by the returned
// FileWriter. The root entry "." of a single-file restore point is the staging
// itself, one file. After the commit point (Begin found a Commit cut short
// there) every entry is in place already, and Dir, Symlink and File do not
// write.
func (r *restore) File(e source.Entry) (source.FileWriter, error) {
	comps, err := r.checkEntry(e, source.TypeFile)
	if err != nil {
		return nil, err
	}
	if e.Size < 0 {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "restore %s: file %s has a negative size", r.id, show(e.Path))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return nil, err
	}
	if r.committing {
		return discard{}, nil
	}
	if len(comps) == 0 && r.inside {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput,
			"restore %s: cannot replace directory %s by a single file: it is a mount point or its parent is not writable",
			r.id, show(r.d.path))
	}
	parent, name, err := r.parentOf(comps)
	if err != nil {
		return nil, err
	}
	path := r.staged(e.Path)
	var fd int
	err = r.replacing(parent, name, e.Path, "restore: create file", func() (err error) {
		fd, err = openat(parent, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &fileWriter{f: os.NewFile(uintptr(fd), path), e: e, path: path, root: r.root}, nil
}

// replacing runs create, which makes name in parent exclusively (O_EXCL,
// symlinkat), and records the change for Sync. When something is staged
// there already (by an earlier attempt), it is removed and create runs
// again: a fresh staging costs no unlink per entry. create's error is
// returned as op on the entry's staged path.
func (r *restore) replacing(parent int, name, rel, op string, create func() error) error {
	err := create()
	if err == unix.EEXIST {
		if err := r.removeStaged(parent, name, rel); err != nil {
			return err
		}
		err = create()
	}
	if err != nil {
		return fsError(op, r.staged(rel), err)
	}
	r.touch(rel)
	return nil
}

// parentOf returns the open staged directory that holds the entry comps and
// the entry's name in it; the root entry is the staging itself, in base.
func (r *restore) parentOf(comps []string) (int, string, error) {
	if len(comps) == 0 {
		return r.baseFD, r.staging, nil
	}
	fd, err := r.dirFD(comps[:len(comps)-1])
	return fd, comps[len(comps)-1], err
}

// dirFD returns an open descriptor of the staged directory comps (none: the
// staging root), walking from the staging root without following symlinks and
// creating missing directories 0700 on the way.
func (r *restore) dirFD(comps []string) (int, error) {
	keep := min(len(r.chain), len(comps)+1)
	for i := 1; i < keep; i++ {
		if r.chain[i].name != comps[i-1] {
			keep = i
			break
		}
	}
	for _, d := range r.chain[keep:] {
		d.f.Close()
	}
	r.chain = r.chain[:keep]
	if len(r.chain) == 0 {
		fd, err := r.openStagedDir(r.baseFD, r.staging, ".")
		if err != nil {
			return -1, err
		}
		r.chain = append(r.chain, stagedDir{f: os.NewFile(uintptr(fd), r.staged(".")), fd: fd})
	}
	for i := len(r.chain) - 1; i < len(comps); i++ {
		rel := strings.Join(comps[:i+1], "/")
		fd, err := r.openStagedDir(r.chain[i].fd, comps[i], rel)
		if err != nil {
			return -1, err
		}
		r.chain = append(r.chain, stagedDir{name: comps[i], f: os.NewFile(uintptr(fd), r.staged(rel)), fd: fd})
	}
	return r.chain[len(comps)].fd, nil
}

// openStagedDir opens the staged directory name in parent, creating it (0700)
// if missing. A symlink or file in its place is refused: following it could
// write outside the staging.
func (r *restore) openStagedDir(parent int, name, rel string) (int, error) {
	for attempt := 0; ; attempt++ {
		fd, err := openat(parent, name, openDir, 0)
		if err == nil {
			return fd, nil
		}
		if err == unix.ENOENT && attempt == 0 {
			if err := unix.Mkdirat(parent, name, 0o700); err != nil && err != unix.EEXIST {
				return -1, fsError("restore: create directory", r.staged(rel), err)
			}
			r.touch(rel)
			continue
		}
		if errnoIs(err, unix.ELOOP, unix.ENOTDIR) {
			return -1, drivers.Permanentf(drivers.ReasonInvalidInput,
				"restore %s: %s is staged as a symlink or file, not a directory; refusing to write through it",
				r.id, show(r.staged(rel)))
		}
		return -1, fsError("restore: open directory", r.staged(rel), err)
	}
}

// ensureDir makes name in parent a staged directory, writable by its owner so
// that a resumed attempt can fill it again after a Commit that set its final
// mode and then failed.
func (r *restore) ensureDir(parent int, name, rel string) error {
	err := unix.Mkdirat(parent, name, 0o700)
	if err == nil {
		r.touch(rel)
		return nil
	}
	if err != unix.EEXIST {
		return fsError("restore: create directory", r.staged(rel), err)
	}
	var st unix.Stat_t
	if err := lstatat(parent, name, &st); err != nil {
		return fsError("restore: stat", r.staged(rel), err)
	}
	if entryType(st.Mode) != source.TypeDir {
		if err := r.removeStaged(parent, name, rel); err != nil {
			return err
		}
		if err := unix.Mkdirat(parent, name, 0o700); err != nil {
			return fsError("restore: create directory", r.staged(rel), err)
		}
		r.touch(rel)
		return nil
	}
	if st.Mode&0o7777 == 0o700 {
		return nil
	}
	fd, err := openat(parent, name, openDir, 0)
	if err != nil {
		return fsError("restore: open directory", r.staged(rel), err)
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fsError("restore: make writable", r.staged(rel), err)
	}
	return nil
}

// removeStaged removes whatever is staged at name in parent, a whole tree if
// it is a directory.
func (r *restore) removeStaged(parent int, name, rel string) error {
	if rel == "." {
		// The cached descriptors are all below the staging root. (For any
		// other entry the chain holds only its ancestors: parentOf just
		// trimmed it to them.)
		r.resetChain()
	}
	if err := removeTree(parent, name); err != nil {
		return fsError("restore: replace", r.staged(rel), err)
	}
	r.touch(rel)
	return nil
}

// touch records that the directory holding the staged entry rel changed, so
// that Sync makes its entries durable.
func (r *restore) touch(rel string) {
	r.dirty[parentRel(rel)] = struct{}{}
}

// parentRel is the staged directory holding the entry rel: "." for the
// staging root, "" for base (which holds the staging root itself).
func parentRel(rel string) string {
	if rel == "." {
		return ""
	}
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return "."
}

// Sync makes everything staged and closed so far durable: the files'
// contents and attributes with one syncfs of the staging's file system
// (far cheaper than an fsync per file in a tree of many small files), then
// the entries of every staged directory changed since the last Sync (fsync
// of each such directory). A kernel older than 5.8 does not report a
// writeback error from syncfs; the recheck of a resumed restore reads every
// file it would skip back and rewrites what is wrong.
func (r *restore) Sync() error {
	r.mu.Lock()
	err := r.usable()
	base := r.baseFD
	r.mu.Unlock()
	if err != nil {
		return err
	}
	// The data and attributes of every file closed so far, in one call
	// (the staged tree is on the file system of the base directory), and
	// without the lock: the restore goes on staging files meanwhile.
	if err := unix.Syncfs(base); err != nil {
		return fsError("restore: sync file system of", r.basePath, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	dirty := make([]string, 0, len(r.dirty))
	for rel := range r.dirty {
		dirty = append(dirty, rel)
	}
	// Deepest first, so that no directory is synced before one it holds.
	slices.SortFunc(dirty, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, rel := range dirty {
		if err := r.syncDir(rel); err != nil {
			return err
		}
		delete(r.dirty, rel)
	}
	return nil
}

func (r *restore) syncDir(rel string) error {
	if rel == "" {
		if err := unix.Fsync(r.baseFD); err != nil {
			return fsError("restore: sync", r.basePath, err)
		}
		return nil
	}
	fd, err := r.openExisting(rel, openDir)
	if err == unix.ENOENT {
		return nil // replaced since: its parent is dirty too
	}
	if err != nil {
		return fsError("restore: open directory", r.staged(rel), err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		return fsError("restore: sync", r.staged(rel), err)
	}
	return nil
}

// openExisting opens the staged entry rel with flags, walking from the
// staging root without following symlinks or creating anything.
func (r *restore) openExisting(rel string, flags int) (int, error) {
	comps, err := splitPath(rel)
	if err != nil {
		return -1, err
	}
	if len(comps) == 0 {
		return openat(r.baseFD, r.staging, flags, 0)
	}
	dir, err := openat(r.baseFD, r.staging, openDir, 0)
	for i := 0; err == nil && i < len(comps)-1; i++ {
		var next int
		next, err = openat(dir, comps[i], openDir, 0)
		unix.Close(dir)
		dir = next
	}
	if err != nil {
		return -1, err
	}
	defer unix.Close(dir)
	return openat(dir, comps[len(comps)-1], flags, 0)
}

// Staged opens the regular file staged at path for reading (see
// source.Restore): a resumed restore checks what an earlier attempt wrote.
func (r *restore) Staged(path string) (source.File, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return nil, err
	}
	if r.committing {
		return nil, source.ErrInPlace
	}
	full := r.staged(path)
	fd, err := r.openExisting(path, openRead)
	if err != nil {
		if errnoIs(err, unix.ELOOP, unix.ENOTDIR) {
			return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "restore %s: %s is not a staged regular file", r.id, show(full))
		}
		return nil, fsError("restore: open", full, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fsError("restore: stat", full, err)
	}
	if entryType(st.Mode) != source.TypeFile {
		unix.Close(fd)
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "restore %s: %s is not a staged regular file", r.id, show(full))
	}
	return &file{f: os.NewFile(uintptr(fd), full), path: full}, nil
}

// fileWriter fills one staged file.
type fileWriter struct {
	f    *os.File
	e    source.Entry
	path string
	root bool

	end atomic.Int64 // the end of the furthest write: the file's size so far

	closeOnce sync.Once
	closeErr  error
}

// WriteAt may be called from several goroutines at once, at different
// offsets.
func (w *fileWriter) WriteAt(p []byte, off int64) (int, error) {
	n, err := w.f.WriteAt(p, off)
	for end := off + int64(n); ; {
		cur := w.end.Load()
		if end <= cur || w.end.CompareAndSwap(cur, end) {
			break
		}
	}
	if err != nil {
		return n, fsError("restore: write", w.path, err)
	}
	return n, nil
}

// writeBehindMin is the size from which Close starts a file's writeback at
// once. A smaller file is left to the next Sync (one syncfs for all of
// them): starting writeback file by file cost a restore of many small
// files a fifth of its time.
const writeBehindMin = 1 << 20

// Close sets the file's size (so trailing holes exist), owner (when running as
// root), mode (after the owner: chown clears setuid and setgid) and times,
// and starts writing the file back; Sync makes it durable.
func (w *fileWriter) Close() error {
	w.closeOnce.Do(func() {
		w.closeErr = w.finish()
		if err := w.f.Close(); err != nil && w.closeErr == nil {
			w.closeErr = fsError("restore: close", w.path, err)
		}
	})
	return w.closeErr
}

func (w *fileWriter) finish() error {
	rc, err := w.f.SyscallConn()
	if err != nil {
		return fsError("restore: finish", w.path, err)
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		// The file was created empty: writes up to its size leave
		// nothing to set (a trailing hole or zero chunk, not written,
		// does).
		if w.end.Load() != w.e.Size {
			if err := unix.Ftruncate(int(fd), w.e.Size); err != nil {
				ferr = fsError("restore: set size of", w.path, err)
				return
			}
		}
		if ferr = setAttrs(int(fd), w.e, w.root, w.path); ferr != nil {
			return
		}
		// Durable at the next Sync (one syncfs), which the caller waits
		// for before it reports the file finished: an fsync here blocked
		// a restore worker per file for the disk, a quarter of a
		// restore's time. Start a large file's writeback now, without
		// waiting, so that Sync has little left to flush.
		if w.e.Size >= writeBehindMin {
			_ = unix.SyncFileRange(int(fd), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		}
	})
	if err != nil {
		return fsError("restore: finish", w.path, err)
	}
	return ferr
}

// setAttrs gives the open file or directory fd e's owner (when root), mode and
// times, in that order: chown clears setuid and setgid, and both would change
// the times.
func setAttrs(fd int, e source.Entry, root bool, path string) error {
	if root {
		if err := unix.Fchown(fd, e.UID, e.GID); err != nil {
			return fsError("restore: set owner of", path, err)
		}
	}
	if err := unix.Fchmod(fd, unixMode(e.Mode)); err != nil {
		return fsError("restore: set mode of", path, err)
	}
	ts := timespecs(e.ModTime)
	if err := futimens(fd, &ts); err != nil {
		return fsError("restore: set times of", path, err)
	}
	return nil
}

// discard is the FileWriter of an entry that is in place already, written
// again after the staged tree was committed.
type discard struct{}

func (discard) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }
func (discard) Close() error                           { return nil }
