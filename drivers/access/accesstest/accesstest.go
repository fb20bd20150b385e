// Package accesstest is the conformance suite every access driver passes
// against its real server.
package accesstest

import (
	"context"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/access"
)

// Run checks a: switching to each mode takes effect as a user sees it
// (canWrite asks the resource itself whether a write is accepted now, e.g.
// an INSERT in a new session), Status agrees, and setting a mode twice is a
// no-op.
func Run(t *testing.T, a access.Access, canWrite func(ctx context.Context) (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if a.Describe() == "" {
		t.Error("Describe is empty")
	}
	for _, step := range []access.Mode{access.ReadOnly, access.ReadOnly, access.ReadWrite, access.ReadWrite, access.ReadOnly, access.ReadWrite} {
		if err := a.SetMode(ctx, step); err != nil {
			t.Fatalf("SetMode(%s): %v", step, err)
		}
		got, err := a.Status(ctx)
		if err != nil {
			t.Fatalf("Status after SetMode(%s): %v", step, err)
		}
		if got != step {
			t.Fatalf("Status after SetMode(%s) = %s", step, got)
		}
		ok, err := canWrite(ctx)
		if err != nil {
			t.Fatalf("probing a write in mode %s: %v", step, err)
		}
		if want := step == access.ReadWrite; ok != want {
			t.Fatalf("in mode %s a write was accepted=%v", step, ok)
		}
	}
}
