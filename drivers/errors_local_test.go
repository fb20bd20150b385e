package drivers

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestLocalPermanent(t *testing.T) {
	path := func(errno syscall.Errno) error {
		return fmt.Errorf("read %q: %w", "disk.img", &fs.PathError{Op: "read", Path: "/srv/data/disk.img", Err: errno})
	}
	for _, tc := range []struct {
		name   string
		err    error
		reason string // "" when it must stay retryable
	}{
		{"EIO reading a file", path(syscall.EIO), ReasonIOError},
		{"ENOSPC writing a restore", path(syscall.ENOSPC), ReasonNoSpace},
		{"EDQUOT", path(syscall.EDQUOT), ReasonNoSpace},
		{"EROFS", path(syscall.EROFS), ReasonReadOnlyFS},
		{"EACCES", path(syscall.EACCES), ReasonAccessDenied},
		{"EPERM", path(syscall.EPERM), ReasonAccessDenied},
		{"EXDEV", &os.LinkError{Op: "rename", Old: "a", New: "b", Err: syscall.EXDEV}, ReasonInvalidConfig},
		{"EINTR passes", path(syscall.EINTR), ""},
		{"EMFILE passes", path(syscall.EMFILE), ""},
		{"ESTALE (NFS) passes", path(syscall.ESTALE), ""},
		{"a firewall's EPERM on a connection is the network's", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EPERM)}, ""},
		{"an unreachable site", fmt.Errorf("put: %w: %w", ErrUnreachable, syscall.EACCES), ""},
		{"no errno", errors.New("boom"), ""},
	} {
		reason, advice, ok := LocalPermanent(tc.err)
		if ok != (tc.reason != "") || reason != tc.reason {
			t.Errorf("%s: LocalPermanent = %q, %v; want %q", tc.name, reason, ok, tc.reason)
		}
		if ok && advice == "" {
			t.Errorf("%s: no advice for the operator", tc.name)
		}
	}
}
