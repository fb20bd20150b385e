package dir

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ownerPrefix names, followed by the restore id, the file that says who owns
// a restore's staging. The owner holds an exclusive flock on it for as long as
// it works on the staging; the kernel drops the lock when the process dies, so
// a staging whose owner file is not locked has no live owner.
const ownerPrefix = ".drorch-owner-"

// ownerRecord is the content of an owner file.
type ownerRecord struct {
	ID      string    `json:"id"`
	Target  string    `json:"target"` // the target's configured path
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	// StagedDev and StagedIno identify the staging's root from the moment
	// Commit is about to exchange it with the target. A target with this
	// identity after a crash is the restored tree, and the staging's name
	// holds the previous content.
	StagedDev uint64 `json:"stagedDev,omitempty"`
	StagedIno uint64 `json:"stagedIno,omitempty"`
}

func (o ownerRecord) String() string {
	if o.PID == 0 {
		return "an unknown process"
	}
	return fmt.Sprintf("process %d on %s since %s", o.PID, o.Host, o.Started.Format(time.RFC3339))
}

// lockOwner opens the owner file name in dirfd and locks it without waiting.
// It returns the open file and its previous record; held is true when another
// open file holds the lock (then the file is closed and the record is the
// holder's). With create false an absent file is reported as ENOENT.
func lockOwner(dirfd int, name string, create bool) (f *os.File, prev ownerRecord, held bool, err error) {
	flags := unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC
	if create {
		flags |= unix.O_CREAT
	}
	for {
		fd, err := openat(dirfd, name, flags, 0o600)
		if err != nil {
			return nil, ownerRecord{}, false, err
		}
		prev = readOwner(fd)
		if err := retry(func() error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) }); err != nil {
			unix.Close(fd)
			if err == unix.EWOULDBLOCK {
				return nil, prev, true, nil
			}
			return nil, ownerRecord{}, false, err
		}
		// Its last holder may have removed the file between our open and
		// our lock: a lock on a removed file protects nothing.
		var have, now unix.Stat_t
		if err := unix.Fstat(fd, &have); err != nil {
			unix.Close(fd)
			return nil, ownerRecord{}, false, err
		}
		err = lstatat(dirfd, name, &now)
		if err == nil && now.Dev == have.Dev && now.Ino == have.Ino {
			// Read again under the lock: the holder may have written it last.
			return os.NewFile(uintptr(fd), name), readOwner(fd), false, nil
		}
		unix.Close(fd)
		if err != nil && err != unix.ENOENT {
			return nil, ownerRecord{}, false, err
		}
		if err == unix.ENOENT && !create {
			return nil, ownerRecord{}, false, unix.ENOENT
		}
	}
}

func readOwner(fd int) ownerRecord {
	buf := make([]byte, 4096)
	n, err := unix.Pread(fd, buf, 0)
	var o ownerRecord
	if err == nil && n > 0 {
		_ = json.Unmarshal(buf[:n], &o) // unreadable: an unknown owner
	}
	return o
}

// writeOwner replaces the record in the owner file and makes it durable.
func (r *restore) writeOwner() error {
	b, err := json.Marshal(r.record)
	if err != nil {
		return err
	}
	path := r.inBase(r.owner)
	fd := int(r.ownerFile.Fd())
	if err := unix.Ftruncate(fd, 0); err != nil {
		return fsError("restore: write", path, err)
	}
	if _, err := unix.Pwrite(fd, b, 0); err != nil {
		return fsError("restore: write", path, err)
	}
	if err := unix.Fsync(fd); err != nil {
		return fsError("restore: sync", path, err)
	}
	return nil
}

// claim takes the restore's owner file, creating it, and records this process
// as its owner, durably, before anything is staged. A live holder (another
// attempt of the same restore that has not noticed it was replaced, on this
// host or one sharing the file system) makes it fail with a retryable error:
// two attempts must never write one staging.
func (r *restore) claim() error {
	f, prev, held, err := lockOwner(r.baseFD, r.owner, true)
	if err != nil {
		return fsError("begin restore: lock", r.inBase(r.owner), err)
	}
	if held {
		return fmt.Errorf("begin restore %s into %s: an earlier attempt of this restore (%s) still holds %s; retrying once it stops",
			r.id, show(r.d.path), prev, show(r.inBase(r.owner)))
	}
	r.ownerFile, r.prev = f, prev
	host, _ := os.Hostname()
	r.record = ownerRecord{
		ID: r.id, Target: r.d.path, Host: host, PID: os.Getpid(), Started: time.Now().UTC(),
		// Kept until Commit writes them anew: they still tell a swapped
		// tree from a staged one.
		StagedDev: prev.StagedDev, StagedIno: prev.StagedIno,
	}
	if err := r.writeOwner(); err != nil {
		return err
	}
	if err := unix.Fsync(r.baseFD); err != nil {
		return fsError("begin restore: sync", r.basePath, err)
	}
	return nil
}

// dropOwner removes the owner file once nothing of the restore is left, then
// releases the lock.
func (r *restore) dropOwner() error {
	if r.ownerFile == nil {
		return nil
	}
	if err := r.unlinkOwner(); err != nil {
		return err
	}
	if err := unix.Fsync(r.baseFD); err != nil {
		return fsError("restore: sync", r.basePath, err)
	}
	r.ownerFile.Close()
	r.ownerFile = nil
	return nil
}

// unlinkOwner removes the owner file, keeping the lock until dropOwner.
func (r *restore) unlinkOwner() error {
	if err := unix.Unlinkat(r.baseFD, r.owner, 0); err != nil && err != unix.ENOENT {
		return fsError("restore: remove", r.inBase(r.owner), err)
	}
	return nil
}

// sweep finishes or removes what stale restores into the same target left in
// base: restores with another id whose owner file is not locked, so no
// process works on them. One past its commit point (its tree is in place) is
// finished, as its own Commit would; any other is aborted, which puts back
// what it had moved aside and removes its staging. Owner files that name
// another target (a sibling staged in the same parent) and live owners are
// left alone, and so is staging without an owner file, whose target cannot be
// known.
func (r *restore) sweep(ctx context.Context) error {
	names, err := r.listBase()
	if err != nil {
		return err
	}
	for _, name := range names {
		id, ok := strings.CutPrefix(name, ownerPrefix)
		if !ok || id == r.id || !idPattern.MatchString(id) {
			continue
		}
		if err := r.sweepOne(ctx, id); err != nil {
			return fmt.Errorf("begin restore %s into %s: sweep the stale restore %s: %w", r.id, show(r.d.path), id, err)
		}
	}
	return nil
}

func (r *restore) sweepOne(ctx context.Context, id string) error {
	f, prev, held, err := lockOwner(r.baseFD, ownerPrefix+id, false)
	if err == unix.ENOENT || held {
		return nil // gone meanwhile, or alive
	}
	if err != nil {
		return fsError("lock", r.inBase(ownerPrefix+id), err)
	}
	if prev.Target != r.d.path {
		f.Close()
		return nil
	}
	dup, err := unix.FcntlInt(uintptr(r.baseFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		f.Close()
		return fsError("open", r.basePath, err)
	}
	s := r.d.newRestore(id)
	s.setBase(dup, r.basePath)
	s.target, s.inside = r.target, r.inside
	s.ownerFile, s.prev, s.record = f, prev, prev
	defer s.release()
	if s.inside {
		err = s.inspectInside()
	} else {
		err = s.inspectBeside()
	}
	if err != nil {
		return err
	}
	if s.committing {
		return s.Commit(ctx)
	}
	return s.Abort()
}
