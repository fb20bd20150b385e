package dir

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// Commit applies the directories' modes, owners and times (deepest first, so
// that finishing a child does not change its parent's mtime afterwards), makes
// the staged tree durable (fsync of each directory, then syncfs), and swaps it
// into place:
//
//	beside:  record the staging's identity in the owner file, exchange
//	         .drorch-staging-<id> and target in one renameat2(RENAME_EXCHANGE)
//	         (the commit point; the target's path is never empty), rename the
//	         previous content, now under the staging's name, to
//	         .drorch-old-<id>, remove old. Where the file system refuses the
//	         exchange (EINVAL, ENOSYS): target → .drorch-old-<id>,
//	         .drorch-staging-<id> → target, remove old; between the two
//	         renames nothing is at the target's path.
//	inside:  target's children → .drorch-old-<id>/, the root's attributes →
//	         .drorch-root-<id>, .drorch-staging-<id> → .drorch-commit-<id>
//	         (the commit point), its children → target, remove old and the
//	         empty commit directory, apply and remove the root's attributes
//
// Each step can be interrupted: Commit on a new Restore with the same id looks
// at what is there and finishes the swap, or reports that it is done when
// nothing is staged and the target exists. When it returns an error before the
// commit point, a target replaced beside holds its previous content; one
// staged inside may have part of it in .drorch-old-<id>, until Commit is
// retried or Abort puts it back.
//
// Directory attributes are those of the Dir entries of this attempt, which is
// why the caller replays every Dir entry before committing.
func (r *restore) Commit(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	if r.inside {
		err = r.commitInside(ctx)
	} else {
		err = r.commitBeside(ctx)
	}
	if err != nil {
		return err
	}
	if err := r.dropOwner(); err != nil {
		return err
	}
	r.finished = true
	r.release()
	return nil
}

// errNoExchange stands for the file system's refusal of RENAME_EXCHANGE in
// tests that exercise the fallback.
var errNoExchange = unix.EINVAL

func (r *restore) commitBeside(ctx context.Context) error {
	b := r.baseFD
	hasStaging, err := r.has(r.staging)
	if err != nil {
		return err
	}
	hasTarget, err := r.has(r.target)
	if err != nil {
		return err
	}
	hasOld, err := r.has(r.old)
	if err != nil {
		return err
	}
	if !hasStaging {
		switch {
		case hasTarget: // committed already; finish the clean-up
			r.committing = true
			return r.removeOld(b)
		case hasOld:
			if err := unix.Renameat(b, r.old, b, r.target); err != nil {
				return fsError("commit: put previous content back at", r.d.path, err)
			}
			return drivers.Permanentf(drivers.ReasonInvalidInput,
				"commit restore %s into %s: nothing staged; the previous content was put back", r.id, show(r.d.path))
		default:
			return drivers.Permanentf(drivers.ReasonInvalidInput,
				"commit restore %s into %s: nothing staged", r.id, show(r.d.path))
		}
	}
	if err := r.applyDirs(ctx); err != nil {
		return err
	}
	if err := unix.Syncfs(b); err != nil {
		return fsError("commit: sync file system of", r.basePath, err)
	}
	if err := r.step("beside:synced"); err != nil {
		return err
	}
	if hasTarget && hasOld {
		// Left by an earlier restore with this id that completed but for
		// this clean-up: the target holds newer content.
		if err := removeTree(b, r.old); err != nil {
			return fsError("commit: remove", r.inBase(r.old), err)
		}
	}
	if hasTarget {
		swapped, err := r.exchange()
		if err != nil {
			return err
		}
		if swapped {
			return r.finishExchange()
		}
	}
	if hasTarget {
		if err := unix.Renameat(b, r.target, b, r.old); err != nil {
			return fsError("commit: move previous content aside from", r.d.path, err)
		}
		if err := r.step("beside:moved-aside"); err != nil {
			return err
		}
	}
	if err := unix.Renameat(b, r.staging, b, r.target); err != nil {
		err = fsError("commit: move staged tree to", r.d.path, err)
		// Never leave the target's path empty when it can be avoided.
		if targetNow, _ := r.has(r.target); !targetNow {
			if back := unix.Renameat(b, r.old, b, r.target); back != nil && back != unix.ENOENT {
				return fmt.Errorf("%w; putting the previous content back also failed: %w", err, fsError("rename", r.inBase(r.old), back))
			}
		}
		return err
	}
	r.committing = true
	if err := unix.Fsync(b); err != nil {
		return fsError("commit: sync", r.basePath, err)
	}
	if err := r.step("beside:moved-in"); err != nil {
		return err
	}
	return r.removeOld(b)
}

// exchange swaps the staged tree and the target in one step. It reports false
// when the file system cannot (the caller then falls back to two renames).
// The staging's identity is recorded first, durably: after a crash right
// after the exchange, Begin tells by it that the target is the restored tree
// and the staging's name holds the previous content.
func (r *restore) exchange() (bool, error) {
	b := r.baseFD
	var st unix.Stat_t
	if err := lstatat(b, r.staging, &st); err != nil {
		return false, fsError("commit: stat", r.inBase(r.staging), err)
	}
	r.record.StagedDev, r.record.StagedIno = uint64(st.Dev), st.Ino
	if err := r.writeOwner(); err != nil {
		return false, err
	}
	var err error = errNoExchange
	if !r.d.noExchange {
		err = unix.Renameat2(b, r.staging, b, r.target, unix.RENAME_EXCHANGE)
	}
	if errnoIs(err, unix.EINVAL, unix.ENOSYS, unix.EOPNOTSUPP) {
		return false, nil
	}
	if err != nil {
		return false, fsError("commit: exchange the staged tree with", r.d.path, err)
	}
	r.committing = true
	if err := unix.Fsync(b); err != nil {
		return true, fsError("commit: sync", r.basePath, err)
	}
	return true, r.step("beside:exchanged")
}

// finishExchange gives the previous content, under the staging's name since
// the exchange, the old name and removes it.
func (r *restore) finishExchange() error {
	b := r.baseFD
	if err := unix.Renameat(b, r.staging, b, r.old); err != nil {
		return fsError("commit: rename the previous content to", r.inBase(r.old), err)
	}
	if err := unix.Fsync(b); err != nil {
		return fsError("commit: sync", r.basePath, err)
	}
	if err := r.step("beside:moved-in"); err != nil {
		return err
	}
	return r.removeOld(b)
}

// removeOld removes the target's previous content, kept in dirfd, once the
// restored tree is in place.
func (r *restore) removeOld(dirfd int) error {
	if err := removeTree(dirfd, r.old); err != nil {
		return fmt.Errorf("commit restore %s: the restored tree is in place at %s, but removing the previous content failed: %w",
			r.id, show(r.d.path), fsError("remove", r.inBase(r.old), err))
	}
	if err := unix.Fsync(r.baseFD); err != nil {
		return fsError("commit: sync", r.basePath, err)
	}
	return nil
}

func (r *restore) commitInside(ctx context.Context) error {
	t := r.baseFD
	hasStaging, err := r.has(r.staging)
	if err != nil {
		return err
	}
	hasCommit, err := r.has(r.commit)
	if err != nil {
		return err
	}
	if hasStaging && hasCommit {
		// A staging made after the commit point cannot be newer than the
		// committed tree, which is complete.
		if err := removeTree(t, r.staging); err != nil {
			return fsError("commit: remove", r.inBase(r.staging), err)
		}
		hasStaging = false
	}
	if hasStaging {
		if err := r.applyDirs(ctx); err != nil {
			return err
		}
		if err := unix.Syncfs(t); err != nil {
			return fsError("commit: sync file system of", r.basePath, err)
		}
		if err := r.step("inside:synced"); err != nil {
			return err
		}
		if err := r.moveAside(); err != nil {
			return err
		}
		if err := r.writeRootMark(); err != nil {
			return err
		}
		if err := r.step("inside:moved-aside"); err != nil {
			return err
		}
		if err := unix.Renameat(t, r.staging, t, r.commit); err != nil {
			return fsError("commit: rename", r.inBase(r.staging), err)
		}
		r.committing = true
		if err := unix.Fsync(t); err != nil {
			return fsError("commit: sync", r.basePath, err)
		}
		if err := r.step("inside:committed"); err != nil {
			return err
		}
		hasCommit = true
	}
	if hasCommit {
		r.committing = true
		if err := r.moveIn(); err != nil {
			return err
		}
	} else if err := removeTree(t, r.old); err != nil {
		// Done already, or nothing was staged: either way only the last
		// Commit's clean-up can be left.
		return fsError("commit: remove", r.inBase(r.old), err)
	}
	// The owner file is in the target: removing it changes the target's
	// mtime, which finishRoot sets last.
	if err := r.unlinkOwner(); err != nil {
		return err
	}
	return r.finishRoot()
}

// writeRootMark records the root entry's mode, owner and times in the target,
// before the commit point: the target receives them last, after every move
// in or out of it (which changes its mtime), and the record survives a crash
// in between.
func (r *restore) writeRootMark() error {
	root, ok := r.rootDir()
	if !ok {
		// Committing without a replay: the staging root carries them.
		var st unix.Stat_t
		if err := lstatat(r.baseFD, r.staging, &st); err != nil {
			return fsError("commit: stat", r.inBase(r.staging), err)
		}
		root = entryFromStat(".", &st)
	}
	text := fmt.Sprintf("%o %d %d %d %d\n", unixMode(root.Mode), root.UID, root.GID, root.ModTime.Unix(), root.ModTime.Nanosecond())
	path := r.inBase(r.rootMark)
	fd, err := openat(r.baseFD, r.rootMark, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fsError("commit: create", path, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(text)); err != nil {
		return fsError("commit: write", path, err)
	}
	if err := unix.Fsync(fd); err != nil {
		return fsError("commit: sync", path, err)
	}
	return nil
}

// finishRoot gives the target the root entry's mode, owner and times once
// nothing else will change it, and removes the record of them.
func (r *restore) finishRoot() error {
	t := r.baseFD
	path := r.inBase(r.rootMark)
	root, fromReplay := r.rootDir()
	fd, err := openat(t, r.rootMark, openRead, 0)
	if err == unix.ENOENT {
		if fromReplay && r.committing {
			// The record was removed, but perhaps not yet applied.
			return setAttrs(t, root, r.root, r.d.path)
		}
		return nil
	}
	if err != nil {
		return fsError("commit: open", path, err)
	}
	buf := make([]byte, 256)
	n, err := unix.Read(fd, buf)
	unix.Close(fd)
	if err != nil {
		return fsError("commit: read", path, err)
	}
	if !fromReplay {
		var mode uint32
		var sec, nsec int64
		if _, err := fmt.Sscanf(string(buf[:max(n, 0)]), "%o %d %d %d %d", &mode, &root.UID, &root.GID, &sec, &nsec); err != nil {
			return drivers.Permanentf(drivers.ReasonCorrupt, "commit: %s does not hold the root's attributes: %v", show(path), err)
		}
		root.Mode = fileMode(mode)
		root.ModTime = time.Unix(sec, nsec)
	}
	if err := unix.Unlinkat(t, r.rootMark, 0); err != nil {
		return fsError("commit: remove", path, err)
	}
	if err := r.step("inside:removed-mark"); err != nil {
		return err
	}
	if err := setAttrs(t, root, r.root, r.d.path); err != nil {
		return err
	}
	return unix.Fsync(t)
}

// moveAside moves every child of the target (but the restore's own
// entries) into old. It can be repeated: what was moved is no longer there.
func (r *restore) moveAside() error {
	t := r.baseFD
	ofd, err := r.openOld()
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	names, err := r.listBase()
	if err != nil {
		return err
	}
	moved := 0
	for _, name := range names {
		if name == r.staging || name == r.old || name == r.commit || name == r.rootMark || name == r.owner {
			continue
		}
		if err := renameReplacing(t, name, ofd, name); err != nil {
			return fsError("commit: move aside", r.inBase(name), err)
		}
		if moved++; moved == 1 {
			if err := r.step("inside:moving-aside"); err != nil {
				return err
			}
		}
	}
	if err := unix.Fsync(ofd); err != nil {
		return fsError("commit: sync", r.inBase(r.old), err)
	}
	return unix.Fsync(t)
}

// moveIn moves the committed children into the target, then removes the
// previous content and the empty commit directory.
func (r *restore) moveIn() error {
	t := r.baseFD
	cfd, err := openat(t, r.commit, openDir, 0)
	if err != nil {
		return fsError("commit: open", r.inBase(r.commit), err)
	}
	defer unix.Close(cfd)
	var st unix.Stat_t
	if err := unix.Fstat(cfd, &st); err != nil {
		return fsError("commit: stat", r.inBase(r.commit), err)
	}
	if !r.root && st.Mode&0o300 != 0o300 {
		if err := unix.Fchmod(cfd, 0o700); err != nil {
			return fsError("commit: make writable", r.inBase(r.commit), err)
		}
	}
	names, err := readNames(cfd)
	if err != nil {
		return fsError("commit: list", r.inBase(r.commit), err)
	}
	var ofd = -1
	defer func() {
		if ofd >= 0 {
			unix.Close(ofd)
		}
	}()
	for _, name := range names {
		err := renameDir(cfd, name, t, name)
		if errnoIs(err, unix.EEXIST, unix.ENOTEMPTY, unix.EISDIR, unix.ENOTDIR) {
			// Something was created in the target after its content was
			// moved aside: it goes aside too.
			if ofd < 0 {
				if ofd, err = r.openOld(); err != nil {
					return err
				}
			}
			if err := renameReplacing(t, name, ofd, name); err != nil {
				return fsError("commit: move aside", r.inBase(name), err)
			}
			err = renameDir(cfd, name, t, name)
		}
		if err != nil {
			return fsError("commit: move into place", join(r.inBase(r.commit), name), err)
		}
		if name == names[0] {
			if err := r.step("inside:moving-in"); err != nil {
				return err
			}
		}
	}
	if err := unix.Fsync(t); err != nil {
		return fsError("commit: sync", r.basePath, err)
	}
	if err := r.step("inside:moved-in"); err != nil {
		return err
	}
	// Moving a directory to another parent may touch its times; give the
	// top-level directories theirs again.
	for _, a := range r.dirs {
		if a.path == "." || strings.Contains(a.path, "/") {
			continue
		}
		ts := timespecs(a.entry().ModTime)
		if err := unix.UtimesNanoAt(t, a.path, ts[:], unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fsError("commit: set times of", join(r.basePath, a.path), err)
		}
	}
	if err := removeTree(t, r.old); err != nil {
		return fmt.Errorf("commit restore %s: the restored tree is in place at %s, but removing the previous content failed: %w",
			r.id, show(r.d.path), fsError("remove", r.inBase(r.old), err))
	}
	if err := r.step("inside:removed-old"); err != nil {
		return err
	}
	if err := unix.Unlinkat(t, r.commit, unix.AT_REMOVEDIR); err != nil {
		return fsError("commit: remove", r.inBase(r.commit), err)
	}
	return r.step("inside:removed-commit")
}

// openOld opens (creating it if needed) the directory that keeps the target's
// previous content when staging inside the target.
func (r *restore) openOld() (int, error) {
	t := r.baseFD
	if err := unix.Mkdirat(t, r.old, 0o700); err != nil && err != unix.EEXIST {
		return -1, fsError("commit: create", r.inBase(r.old), err)
	}
	fd, err := openat(t, r.old, openDir, 0)
	if errnoIs(err, unix.ENOTDIR, unix.ELOOP) {
		if err := removeTree(t, r.old); err != nil {
			return -1, fsError("commit: remove", r.inBase(r.old), err)
		}
		return r.openOld()
	}
	if err != nil {
		return -1, fsError("commit: open", r.inBase(r.old), err)
	}
	return fd, nil
}

// listBase lists base through a descriptor of its own, so that concurrent
// uses of the base descriptor do not share a directory offset.
func (r *restore) listBase() ([]string, error) {
	fd, err := openat(r.baseFD, ".", openDir, 0)
	if err != nil {
		return nil, fsError("commit: open", r.basePath, err)
	}
	defer unix.Close(fd)
	names, err := readNames(fd)
	if err != nil {
		return nil, fsError("commit: list", r.basePath, err)
	}
	return names, nil
}

// renameReplacing renames, first removing a leftover at the destination (from
// an earlier restore with this id whose clean-up did not finish).
func renameReplacing(fromfd int, from string, tofd int, to string) error {
	err := renameDir(fromfd, from, tofd, to)
	if errnoIs(err, unix.EEXIST, unix.ENOTEMPTY, unix.EISDIR, unix.ENOTDIR) {
		if err := removeTree(tofd, to); err != nil {
			return err
		}
		err = renameDir(fromfd, from, tofd, to)
	}
	return err
}

// rootDir returns the root's Dir entry of this attempt, if it was given.
func (r *restore) rootDir() (source.Entry, bool) {
	for i := len(r.dirs) - 1; i >= 0; i-- {
		if r.dirs[i].path == "." {
			return r.dirs[i].entry(), true
		}
	}
	return source.Entry{}, false
}

// applyDirs gives the staged directories of this attempt their mode, owner
// and times, children before parents. It sorts them in place: a copy would
// double what a tree of many directories holds.
func (r *restore) applyDirs(ctx context.Context) error {
	depth := func(a dirAttrs) int {
		if a.path == "." {
			return 0
		}
		return strings.Count(a.path, "/") + 1
	}
	slices.SortStableFunc(r.dirs, func(a, b dirAttrs) int { return depth(b) - depth(a) })
	for _, a := range r.dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := a.entry()
		comps, err := splitPath(e.Path)
		if err != nil {
			return err
		}
		parent, name, err := r.parentOf(comps)
		if err != nil {
			return err
		}
		path := r.staged(e.Path)
		fd, err := openat(parent, name, openDir, 0)
		if err != nil {
			return fsError("commit: open directory", path, err)
		}
		err = setAttrs(fd, e, r.root, path)
		if err == nil {
			if err = unix.Fsync(fd); err != nil {
				err = fsError("commit: sync", path, err)
			}
		}
		unix.Close(fd)
		if err != nil {
			return err
		}
	}
	return nil
}

// Abort removes everything staged and leaves the target's path as it was
// before Commit: content that a cut-short Commit had moved aside is put back.
// After the commit point it refuses (permanent InvalidInput): the restored
// tree is in place, and Commit finishes the clean-up.
func (r *restore) Abort() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.finished {
		return nil
	}
	if r.committing {
		return drivers.Permanentf(drivers.ReasonInvalidInput,
			"abort restore %s into %s: already committed; Commit finishes it", r.id, show(r.d.path))
	}
	b := r.baseFD
	if r.inside {
		if err := r.moveBack(); err != nil {
			return err
		}
	} else {
		hasOld, err := r.has(r.old)
		if err != nil {
			return err
		}
		hasTarget, err := r.has(r.target)
		if err != nil {
			return err
		}
		if hasOld && !hasTarget {
			if err := unix.Renameat(b, r.old, b, r.target); err != nil {
				return fsError("abort: put previous content back at", r.d.path, err)
			}
		}
	}
	r.resetChain()
	if err := removeTree(b, r.staging); err != nil {
		return fsError("abort: remove", r.inBase(r.staging), err)
	}
	if r.inside {
		if err := removeTree(b, r.rootMark); err != nil {
			return fsError("abort: remove", r.inBase(r.rootMark), err)
		}
	}
	if err := unix.Fsync(b); err != nil {
		return fsError("abort: sync", r.basePath, err)
	}
	if err := r.dropOwner(); err != nil {
		return err
	}
	r.finished = true
	r.release()
	return nil
}

// moveBack returns what moveAside moved into old to the target.
func (r *restore) moveBack() error {
	t := r.baseFD
	ofd, err := openat(t, r.old, openDir, 0)
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fsError("abort: open", r.inBase(r.old), err)
	}
	defer unix.Close(ofd)
	names, err := readNames(ofd)
	if err != nil {
		return fsError("abort: list", r.inBase(r.old), err)
	}
	for _, name := range names {
		if err := renameDir(ofd, name, t, name); err != nil {
			return fsError("abort: put back", join(r.inBase(r.old), name), err)
		}
	}
	if err := unix.Unlinkat(t, r.old, unix.AT_REMOVEDIR); err != nil {
		return fsError("abort: remove", r.inBase(r.old), err)
	}
	return nil
}

// removeTree removes name in dirfd and, when it is a directory, everything in
// it, never following symlinks. Directories without write or search
// permission for their owner are opened up first, so that a non-root owner can
// remove a read-only tree. An absent name is not an error.
func removeTree(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR && err != unix.EPERM {
		return err
	}
	unlinkErr := err
	fd, err := openat(dirfd, name, openDir, 0)
	if err == unix.EACCES {
		if unix.Fchmodat(dirfd, name, 0o700, 0) == nil {
			fd, err = openat(dirfd, name, openDir, 0)
		}
	}
	switch {
	case err == unix.ENOENT:
		return nil
	case errnoIs(err, unix.ENOTDIR, unix.ELOOP):
		return unlinkErr // not a directory: unlink was refused for a reason of its own
	case err != nil:
		return err
	}
	defer unix.Close(fd)
	for attempt := 0; ; attempt++ {
		names, err := readNames(fd)
		if err != nil {
			return err
		}
		opened := false
		for _, n := range names {
			err := removeTree(fd, n)
			if err == unix.EACCES && !opened {
				opened = true
				if unix.Fchmod(fd, 0o700) == nil {
					err = removeTree(fd, n)
				}
			}
			if err != nil {
				return err
			}
		}
		err = unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
		if err == unix.ENOTEMPTY && attempt < 3 {
			continue // filled concurrently; empty it again
		}
		if err == unix.ENOENT {
			err = nil
		}
		return err
	}
}

// renameDir renames, and when the kernel refuses to move a directory that its
// owner cannot write to another parent (its ".." entry changes), makes it
// writable for the move and puts its mode back after.
func renameDir(fromfd int, from string, tofd int, to string) error {
	err := unix.Renameat(fromfd, from, tofd, to)
	if err != unix.EACCES {
		return err
	}
	fd, oerr := openat(fromfd, from, openDir, 0)
	if oerr != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&0o200 != 0 {
		return err
	}
	if unix.Fchmod(fd, st.Mode&0o7777|0o200) != nil {
		return err
	}
	err = unix.Renameat(fromfd, from, tofd, to)
	if cerr := unix.Fchmod(fd, st.Mode&0o7777); err == nil {
		err = cerr
	}
	return err
}
