package dir

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
)

func TestErrorClasses(t *testing.T) {
	for _, c := range []struct {
		errno    unix.Errno
		notFound bool
		reason   string
	}{
		{errno: unix.ENOENT, notFound: true},
		{errno: unix.EACCES, reason: drivers.ReasonAccessDenied},
		{errno: unix.EPERM, reason: drivers.ReasonAccessDenied},
		{errno: unix.EROFS, reason: drivers.ReasonAccessDenied},
		{errno: unix.ENOSPC, reason: ReasonNoSpace},
		{errno: unix.EDQUOT, reason: ReasonNoSpace},
		{errno: unix.ENAMETOOLONG, reason: drivers.ReasonInvalidInput},
		{errno: unix.EIO},
	} {
		err := fsError("create file", "/srv/data/a b\n", fmt.Errorf("wrapped: %w", c.errno))
		if got := drivers.IsNotFound(err); got != c.notFound {
			t.Errorf("%v: not found %v", c.errno, got)
		}
		reason, _ := drivers.IsPermanent(err)
		if reason != c.reason {
			t.Errorf("%v: reason %q, want %q", c.errno, reason, c.reason)
		}
		if !errors.Is(err, c.errno) {
			t.Errorf("%v: the errno is not kept", c.errno)
		}
		if want := `create file "/srv/data/a b\n": ` + c.errno.Error(); err.Error() != want {
			t.Errorf("message %q, want %q", err, want)
		}
	}
}
