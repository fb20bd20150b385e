package drivers

import (
	"errors"
	"net"
	"net/url"
	"syscall"
)

// Reasons for permanent errors of the local file system, as LocalPermanent
// gives them.
const (
	ReasonIOError    = "IOError"    // EIO: the device or file system failed a read or write
	ReasonNoSpace    = "NoSpace"    // ENOSPC, EDQUOT: full, or over quota
	ReasonReadOnlyFS = "ReadOnlyFS" // EROFS: mounted read-only
)

// localAdvice says, per errno, why no retry can fix it and what to do. An
// errno not listed (EINTR, EAGAIN, ENOMEM, EMFILE, ESTALE, ETIMEDOUT…) may
// pass and stays transient.
var localAdvice = map[syscall.Errno]struct{ reason, advice string }{
	syscall.EIO: {ReasonIOError, "the disk or file system reported an I/O error (EIO), which retrying does not fix: " +
		"check the device (dmesg, SMART, the storage array or the network file system), repair or replace it, then run the operation again"},
	syscall.ENOSPC:       {ReasonNoSpace, "the file system is full (ENOSPC): free space or grow it, then run the operation again"},
	syscall.EDQUOT:       {ReasonNoSpace, "the disk quota is exhausted (EDQUOT): raise the quota or free space, then run the operation again"},
	syscall.EROFS:        {ReasonReadOnlyFS, "the file system is mounted read-only (EROFS): remount it read-write, or choose another path, then run the operation again"},
	syscall.EACCES:       {ReasonAccessDenied, "permission denied (EACCES): give the worker's user access to the path, then run the operation again"},
	syscall.EPERM:        {ReasonAccessDenied, "operation not permitted (EPERM): the worker's user lacks the privilege (ownership, immutable attribute, capability); fix it, then run the operation again"},
	syscall.ENAMETOOLONG: {ReasonInvalidInput, "a file name is too long for this file system (ENAMETOOLONG): restore into a file system that takes it"},
	syscall.EFBIG:        {ReasonInvalidInput, "a file is too large for this file system (EFBIG): restore into a file system that takes it"},
	syscall.EXDEV:        {ReasonInvalidConfig, "a rename crossed file systems (EXDEV): the staging area and the target must be on one file system"},
}

// LocalPermanent reports whether err (or an error it wraps) is a local
// file-system error that no retry can fix, with its reason and advice for
// the operator. A permanent error keeps its own class; ENOENT is the
// drivers' ErrNotFound, not this. An errno inside a network error (a
// firewall's EPERM, EACCES) is the network's and stays as it is: a site
// that cannot be reached is not a local fault.
func LocalPermanent(err error) (reason, advice string, ok bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) || IsUnreachable(err) {
		return "", "", false
	}
	var opErr *net.OpError
	var urlErr *url.Error
	if errors.As(err, &opErr) || errors.As(err, &urlErr) {
		return "", "", false
	}
	a, ok := localAdvice[errno]
	return a.reason, a.advice, ok
}
