package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers/access"
)

// Failover makes the plan's standby site active (DESIGN §1): preflight, fence
// the old active site, (planned) a final backup and transmit, raise the
// epoch, restore the standby unless it is warm at the point, run the
// recovery plan, open the new site for writes and repoint DNS. A failure
// after fencing undoes, in reverse, the steps it is safe to undo, so the
// plan never ends with both sites read-write; the report says what was done.
func Failover(ctx workflow.Context, in FailoverInput) (rep SwitchReport, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpFailover, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return rep, err
	}
	if in.Mode == "" {
		in.Mode = ModePlanned
	}
	if in.Mode != ModePlanned && in.Mode != ModeUnplanned {
		return rep, invalidInput(fmt.Sprintf("mode %q: want %q or %q", in.Mode, ModePlanned, ModeUnplanned))
	}
	release, err := claimSwitch(ctx, in.Plan, in.Mode+" failover")
	defer release()
	if err != nil {
		return rep, err
	}
	info = current(ctx, info)
	from := info.Active
	to := other(info, from)
	if err := upsert(ctx, t, to); err != nil {
		return rep, err
	}
	if err := claimTargets(ctx, in.Plan, in.Mode+" failover to "+to, to); err != nil {
		return rep, err
	}
	f := &failover{switchRun: newSwitchRun(ctx, t, info, OpFailover, in.Mode, from, to, started), in: in}
	err = f.run()
	rep = f.finish(err)
	workflow.GetLogger(ctx).Info("failover "+rep.Outcome, "plan", in.Plan, "from", from, "to", to, "rto", rep.RTO, "rpo", rep.RPO, "fenced", rep.Fenced)
	return rep, err
}

// failover holds a failover's state between its steps.
type failover struct {
	*switchRun
	in FailoverInput
}

func (f *failover) run() error {
	ctx, rep := f.ctx, f.rep
	// Preflight: the target's repository and resources answer; planned, the
	// old active site's too (both sides agree on who is active).
	var target activities.SiteState
	if err := f.t.step(ctx, "preflight", func() error {
		states, err := f.preflight("target", f.to)
		if err != nil {
			return err
		}
		target = states[f.to]
		if f.in.Mode == ModePlanned {
			if _, err := f.preflight("a planned failover needs the active", f.from); err != nil {
				return err
			}
		}
		if f.in.Point != "" {
			// The point asked for is there, before anything changes.
			if err := workflow.ExecuteActivity(f.check(f.to), act.GetSiteState, activities.SiteStateInput{Plan: f.in.Plan, Site: f.to, Point: f.in.Point}).Get(ctx, nil); err != nil {
				return wrap(err, "restore point %s", f.in.Point)
			}
		}
		if f.in.Mode == ModeUnplanned && target.Latest == "" && f.in.Point == "" {
			return invalidInput(fmt.Sprintf("site %s holds no restore point of plan %s: nothing to fail over to", f.to, f.in.Plan))
		}
		return nil
	}); err != nil {
		return err
	}

	// Fence the old active site. The RPO is counted to the fence, or to the
	// start when the old site is dark.
	fenceAt := rep.Started
	err := f.t.step(ctx, "fence "+f.from, func() error { return f.setAccess(f.fenceCtx(), f.from, access.ReadOnly) })
	switch {
	case err == nil:
		rep.Fenced = true
		fenceAt = workflow.Now(ctx)
		f.onUndo("make "+f.from+" read-write again", f.undoAccess(f.from, access.ReadWrite))
	case f.in.Mode == ModeUnplanned:
		rep.FenceNote = "unreachable, not fenced: " + errorMessage(err)
	default:
		return wrap(err, "fence %s", f.from)
	}

	// Planned: a final backup and transmit after fencing lose nothing.
	point := f.in.Point
	if f.in.Mode == ModePlanned && point == "" {
		if err := f.t.step(ctx, "final sync", func() error {
			var b BackupResult
			if err := f.child(OpBackup, Backup, BackupInput{Plan: f.in.Plan, Site: f.from}, &b); err != nil {
				return err
			}
			point = b.Point
			return f.child(OpTransmit, Transmit, TransmitInput{Plan: f.in.Plan, From: f.from, To: f.to, Point: b.Point}, nil)
		}); err != nil {
			return err
		}
	}

	// Raise the epoch at the new active site (and at the old one when it
	// answers), so the old site can never overwrite the new one.
	if err := f.epoch(fmt.Sprintf("%s failover from %s to %s", f.in.Mode, f.from, f.to), !rep.Fenced); err != nil {
		return err
	}

	// Bring the target up: restore unless the standby already holds the point.
	var restored RestoreResult
	if err := f.t.step(ctx, "restore "+f.to, func() error {
		if point == "" {
			point = target.Latest
		}
		// No restore started under the old epoch can swap in from here on:
		// what the standby holds now is what it will hold.
		if claimsOn(ctx) {
			var st activities.SettleTargetResult
			if err := workflow.ExecuteActivity(f.site(f.to), act.SettleTarget, activities.SettleTargetInput{Plan: f.in.Plan, Site: f.to}).Get(ctx, &st); err != nil {
				return err
			}
			target.Standby = st.Standby
		}
		if point == target.Standby && point != "" {
			return nil
		}
		rep.Restored = true
		return f.child(OpRestore, Restore, RestoreInput{Plan: f.in.Plan, Site: f.to, Point: point}, &restored)
	}); err != nil {
		return err
	}
	rep.Point = point
	if rep.Restored {
		rep.PointTime = restored.Snapshot
	} else {
		rep.PointTime = target.LatestTime
	}
	rep.RPO = max(fenceAt.Sub(rep.PointTime), 0)

	if err := runSteps(ctx, f.t, f.info, "failover", f.to); err != nil {
		return err
	}

	// Open the target for writes, then point the name at it.
	if err := f.readWrite(f.to); err != nil {
		return err
	}
	if err := f.dns(f.to); err != nil {
		return err
	}
	rep.RTO = workflow.Now(ctx).Sub(rep.Started)
	return nil
}

// fenceCtx bounds fencing: planned, the old site must answer; unplanned, a
// dark site is given a minute for its worker to pick the task up and three
// tries, then the failover goes on without it.
func (f *failover) fenceCtx() workflow.Context {
	if f.in.Mode == ModePlanned {
		return workflow.WithActivityOptions(f.ctx, workflow.ActivityOptions{
			TaskQueue: siteQueue(f.ctx, f.from), StartToCloseTimeout: 5 * time.Minute,
			ScheduleToCloseTimeout: 15 * time.Minute, RetryPolicy: retryPolicy,
		})
	}
	return f.reachable(f.from)
}
