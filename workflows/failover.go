package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
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
	view := readView(ctx, info)
	forcedView := ""
	if view.unknown != "" {
		if !forceMinority(ctx, info, view, in.Force) {
			return rep, activeUnknown(in.Plan, view, "a failover needs to know which site it fails over from; retry once the silent site answers")
		}
		forcedView = fmt.Sprintf("forced: the active site %s was taken from the highest epoch (%d) of the sites that answered, though %s", view.info.Active, view.info.Epoch, view.unknown)
	}
	info = view.info
	from := info.Active
	to, err := failoverTarget(ctx, info, view, in.To)
	if err != nil {
		return rep, err
	}
	if err := upsert(ctx, t, to); err != nil {
		return rep, err
	}
	if err := claimTargets(ctx, in.Plan, in.Mode+" failover to "+to, to); err != nil {
		return rep, err
	}
	f := &failover{switchRun: newSwitchRun(ctx, t, info, OpFailover, in.Mode, from, to, started), in: in}
	f.force = in.Force
	f.silent = view.silent
	if forcedView != "" {
		f.note(forcedView)
	}
	err = f.run()
	rep = f.finish(err)
	workflow.GetLogger(ctx).Info("failover "+rep.Outcome, "plan", in.Plan, "from", from, "to", to, "rto", rep.RTO, "rpo", rep.RPO, "fenced", rep.Fenced)
	return rep, err
}

// failoverTarget is the site a failover from the active site makes active:
// the one the input names (since changeThreeSites), which must be another
// of the plan's sites; else, of two sites, the other one; of three or more,
// the first of its sites in order (primary, then secondaries) that is not
// active and answered when the run began.
func failoverTarget(ctx workflow.Context, info activities.PlanInfo, view planView, to string) (string, error) {
	from := info.Active
	if !threeSites(ctx) {
		return other(info, from), nil
	}
	if to != "" {
		site, err := siteOf(info, to, "", "to")
		if err != nil {
			return "", err
		}
		if site == from {
			return "", invalidInput(fmt.Sprintf("to: %s is the active site of plan %s already: name another of its sites (%s)", site, info.Plan, siteList(info)))
		}
		return site, nil
	}
	sites := info.SiteNames()
	if len(sites) < 3 {
		return other(info, from), nil
	}
	var dark []string
	for _, site := range sites {
		if site == from {
			continue
		}
		if why := view.silent[site]; why != nil {
			dark = append(dark, site+": "+silence(why, info))
			continue
		}
		return site, nil
	}
	return "", temporal.NewNonRetryableApplicationError(fmt.Sprintf("no standby site of plan %s answered (%s): nothing to fail over to; run it again once one answers",
		info.Plan, strings.Join(dark, "; ")), "Unreachable", nil)
}

// forceMinority reports whether a forced failover may go on although the
// active site cannot be told: a plan of three or more sites of which only a
// minority answered (since changeThreeSites) — the regional disaster that
// takes the primary and the same-city standby down together, where the
// operator, not a majority, says the remote site is to take over.
func forceMinority(ctx workflow.Context, info activities.PlanInfo, view planView, force bool) bool {
	n := len(info.SiteNames())
	return force && n > 2 && threeSites(ctx) && len(view.silent) < n
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
		if workflow.GetVersion(ctx, changeStandbyWritable, workflow.DefaultVersion, 1) >= 1 {
			return f.standbyReadOnly()
		}
		return nil
	}); err != nil {
		return err
	}

	// Fence the old active site. The RPO is counted to the fence, or to the
	// start when the old site is dark.
	fenceAt := rep.Started
	if workflow.GetVersion(ctx, changeFence, workflow.DefaultVersion, 1) >= 1 {
		if err := f.fence(); err != nil {
			return err
		}
		if rep.Fenced {
			fenceAt = workflow.Now(ctx)
		}
	} else {
		err := f.t.step(ctx, "fence "+f.from, func() error { return f.setAccess(f.fenceCtx(), f.from, access.ReadOnly) })
		switch {
		case err == nil:
			rep.Fenced = true
			fenceAt = workflow.Now(ctx)
			f.onUndoAccess(f.from, access.ReadWrite)
		case f.in.Mode == ModeUnplanned:
			rep.FenceNote = "unreachable, not fenced: " + errorMessage(err)
		default:
			return wrap(err, "fence %s", f.from)
		}
	}

	// Planned: a final backup and transmit after fencing lose nothing.
	point := f.in.Point
	synced := "" // the final sync's point: what the old site's target holds
	if f.in.Mode == ModePlanned && point == "" {
		if err := f.t.step(ctx, "final sync", func() error {
			var b BackupResult
			if err := f.child(OpBackup, Backup, BackupInput{Plan: f.in.Plan, Site: f.from}, &b); err != nil {
				return err
			}
			point, synced = b.Point, b.Point
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
			target.Standby, target.StandbyTook = st.Standby, st.StandbyTook
		}
		if point == target.Standby && point != "" {
			if workflow.GetVersion(ctx, changeTimeSaved, workflow.DefaultVersion, 1) >= 1 {
				// What the warm refresh that put the point there took.
				rep.TimeSaved = Duration(target.StandbyTook)
			}
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
	rep.RPO = Duration(max(fenceAt.Sub(rep.PointTime), 0))
	if !restored.RecoveredTo.IsZero() && workflow.GetVersion(ctx, changePostgresSource, workflow.DefaultVersion, 1) >= 1 {
		// A postgres standby recovered past its base backup, through the
		// shipped WAL: the data lost is what came after its last replayed
		// transaction.
		rep.RecoveredTo = restored.RecoveredTo
		rep.RPO = Duration(max(fenceAt.Sub(restored.RecoveredTo), 0))
	}

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
	rep.RTO = Duration(workflow.Now(ctx).Sub(rep.Started))
	markSynced(ctx, f.switchRun, f.from, synced)
	return nil
}

// changePostgresSource (workflow.GetVersion): a failover whose restore
// recovered a postgres server counts its RPO to the last transaction the
// server replayed (SwitchReport.recoveredTo), not to the base backup.
const changePostgresSource = "postgres-source"

// changeStandbyAfterSync (workflow.GetVersion): a switch whose final sync
// took the old active site's whole data (a planned failover, a completed
// failback) records that site's target as a standby holding the synced
// point, so that the protection cycle refreshes it again (refreshOK).
const changeStandbyAfterSync = "standby-after-sync"

// markSynced records that site's target holds point, the final sync's,
// once the switch has completed; nothing when there was no final sync.
func markSynced(ctx workflow.Context, s *switchRun, site, point string) {
	if point == "" || workflow.GetVersion(ctx, changeStandbyAfterSync, workflow.DefaultVersion, 1) < 1 {
		return
	}
	if err := workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), act.MarkStandby,
		activities.MarkStandbyInput{Plan: s.info.Plan, Site: site, Point: point}).Get(ctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("standby state of the old active site not recorded: the protection cycle will not refresh it", "site", site, "error", err)
	}
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

// fence makes the old active site read-only (since changeFence). Its undo is
// registered before it is applied, so a fence that fails part-way (the
// first resource read-only, the second refusing) is undone with the rest.
// Planned, the fence must succeed. Unplanned, a site that does not answer
// (no worker within the darkness bound, a resource that cannot be reached)
// is recorded as not fenced and the failover goes on; a site that answers
// and refuses stops the failover before anything at the target becomes
// writable, unless the operator forces it.
func (f *failover) fence() error {
	ctx, rep := f.ctx, f.rep
	if why := f.silent[f.from]; f.in.Mode == ModeUnplanned && noWorker(why) {
		rep.FenceNote = fmt.Sprintf("unreachable, not fenced: no worker at site %s took a task within %s", f.from, darkAfter(f.info))
		return nil
	}
	f.onUndoAccess(f.from, access.ReadWrite)
	err := f.t.step(ctx, "fence "+f.from, func() error { return f.setAccess(f.fenceCtx(), f.from, access.ReadOnly) })
	switch {
	case err == nil:
		rep.Fenced = true
		return nil
	case f.in.Mode == ModePlanned || temporal.IsCanceledError(err):
		return wrap(err, "fence %s", f.from)
	case unanswered(err):
		// Nothing to undo at a site that does not answer; trying would
		// hold the compensation of a later failure for as long as it is dark.
		f.undo = f.undo[:len(f.undo)-1]
		rep.FenceNote = "unreachable, not fenced: " + errorMessage(err)
		return nil
	case f.in.Force:
		rep.FenceNote = "refused, not fenced (forced): " + errorMessage(err)
		f.note(fmt.Sprintf("forced: %s answered but refused its fence, and the failover went on: %s may still take writes until it is fenced by other means", f.from, f.from))
		return nil
	}
	return wrap(err, "fence %s: the site answered and refused, so it is not dark and may still take writes; the failover stopped before %s became writable "+
		"(fix what the fence needs and run it again, or run drorch failover --force to go on without the fence)", f.from, f.to)
}

// standbyReadOnly refuses a target whose access resources are not all
// read-only (since changeStandbyWritable): a standby that takes writes is
// not one to restore over, and writes there would be lost or would split
// the plan in two. Forced, it is noted and the failover goes on.
func (f *failover) standbyReadOnly() error {
	var open []string
	for _, r := range f.access[f.to] {
		switch {
		case r.Error != "":
			open = append(open, r.Error)
		case r.Mode != access.ReadOnly:
			open = append(open, r.Resource+" is "+string(r.Mode))
		}
	}
	if len(open) == 0 {
		return nil
	}
	msg := fmt.Sprintf("site %s is the standby of plan %s, but %s", f.to, f.in.Plan, strings.Join(open, "; "))
	if f.in.Force {
		f.note("forced: " + msg)
		return nil
	}
	return temporal.NewNonRetryableApplicationError(msg+": something may be writing there, and the failover would restore over it; "+
		"find out what writes there and make the site read-only, or run drorch failover --force to fail over all the same", "StandbyWritable", nil)
}
