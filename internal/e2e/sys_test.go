package e2e

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func utimensat(p string, ts []syscall.Timespec) error {
	uts := []unix.Timespec{unix.NsecToTimespec(ts[0].Nano()), unix.NsecToTimespec(ts[1].Nano())}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, uts, unix.AT_SYMLINK_NOFOLLOW)
}
