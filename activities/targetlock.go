package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// The swap of a restore into its target is the one moment a restore
// changes what an application may read. The plan lock keeps two restores of
// one target apart while their workflows run, but an activity whose worker
// was paused or partitioned may still be running after its workflow was
// cancelled (a zombie). So the swap itself happens under a host-level lock
// beside the target (flock(2) on ".<name>.drorch-lock" in its parent), after
// the epoch is read again, and a failover that opens the target for writes
// first takes that lock once (SettleTarget): a zombie either swapped before
// the failover looked at the target, or it sees the new epoch and refuses.

// reasonSuperseded is the error type of a restore that a switch overtook.
const reasonSuperseded = "Superseded"

// targetPath is the directory a restore at site writes: to, or the plan's
// source there. The swap lock sits in its parent; a --to path's parent is
// resolved, so that two spellings of one directory share one lock.
func (a *Activities) targetPath(plan, site, to string) (string, error) {
	if to != "" {
		c := filepath.Clean(to)
		return filepath.Join(resolvePath(filepath.Dir(c)), filepath.Base(c)), nil
	}
	sc, _, err := a.sourceAt(plan, site)
	if err != nil {
		return "", err
	}
	return filepath.Clean(sc.Path), nil
}

// lockTarget takes the swap lock of the target at path, waiting while
// another process holds it, until ctx ends.
func lockTarget(ctx context.Context, path string) (unlock func(), err error) {
	name := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".drorch-lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the swap lock of %s: %w", path, err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for the swap lock %s (held by another restore): %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkSuperseded refuses to swap a restore into the plan's own target at
// site once the site's epoch has moved past the one the restore started
// with: a switch happened meanwhile, and the target may now be the plan's
// active, writable data.
func checkSuperseded(ctx context.Context, r *repo.Repo, site string, started uint64, what string) error {
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return err
	}
	if ep.Epoch <= started {
		return nil
	}
	by := "a switch"
	if ep.Active == site {
		by = "failover"
	}
	return drivers.Permanentf(reasonSuperseded, "%s: superseded by %s to epoch %d (%s): the target at site %s is no longer this restore's to replace; nothing was swapped in",
		what, by, ep.Epoch, ep.Reason, site)
}

// SettleTargetInput names the plan's own target at a site.
type SettleTargetInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
}

// SettleTargetResult is what the target holds once settled.
type SettleTargetResult struct {
	Standby string `json:"standby,omitempty"` // the point the standby target holds, "" if unknown
	// StandbyTook is how long restoring Standby took, when recorded.
	StandbyTook time.Duration `json:"standbyTook,omitempty"`
}

// SettleTarget waits until no restore is swapping into the plan's own
// target at the site, then reads which point it holds. A failover runs it
// after raising the epoch: from then on no restore started under an older
// epoch can swap in.
func (a *Activities) SettleTarget(ctx context.Context, in SettleTargetInput) (SettleTargetResult, error) {
	path, err := a.targetPath(in.Plan, in.Site, "")
	if err != nil {
		return SettleTargetResult{}, temporalError(err)
	}
	// Without the target's parent no restore can be swapping into it; a
	// source without a path (exec) has no swap at all.
	if _, err := os.Stat(filepath.Dir(path)); err == nil && path != "." {
		unlock, err := lockTarget(ctx, path)
		if err != nil {
			return SettleTargetResult{}, temporalError(err)
		}
		unlock()
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return SettleTargetResult{}, temporalError(err)
	}
	var sb standbyState
	if err := r.GetStaging(ctx, "standby", "state", &sb); err != nil && !drivers.IsNotFound(err) {
		return SettleTargetResult{}, temporalError(err)
	}
	return SettleTargetResult{Standby: a.standbyMark(in.Plan, in.Site, sb.Point), StandbyTook: sb.Took}, nil
}

// swap moves a staged restore into its target under the target's swap
// lock, unless the activity was cancelled meanwhile and, for the plan's own
// target, no switch has overtaken it. The standby mark is cleared first:
// the target holds no known point until the workflow records the new one.
func (a *Activities) swap(ctx context.Context, in RestoreDataInput, r *repo.Repo, rs source.Restore) error {
	path, err := a.targetPath(in.Plan, in.Site, in.To)
	if err != nil {
		return err
	}
	unlock, err := lockTarget(ctx, path)
	if err != nil {
		return err
	}
	defer unlock()
	// Refused here, the staging is removed by RestoreData: no attempt follows.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("restore into %s cancelled before the swap: %w", path, err)
	}
	if in.To == "" {
		if err := checkSuperseded(ctx, r, in.Site, in.SiteEpoch, "restore "+in.Point+" into "+path); err != nil {
			return err
		}
		if err := r.PutStaging(ctx, "standby", "state", standbyState{Updated: time.Now().UTC()}); err != nil {
			return err
		}
	}
	if err := rs.Commit(ctx); err != nil {
		return fmt.Errorf("move the restore into place at %s: %w", path, err)
	}
	return nil
}
