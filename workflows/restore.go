package workflows

import (
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers/access"
)

// Restore writes a restore point held at a site into a target: the plan's
// source at that site, or another path. Every chunk is verified before it is
// written, and the target is replaced only once the whole point is staged.
func Restore(ctx workflow.Context, in RestoreInput) (res RestoreResult, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpRestore, in.Plan)
	defer func() { t.finish(err) }()
	var cl *claim // the target's, once held
	defer func() {
		// err is the named result: a revoked claim says who took over.
		err = cl.superseded(err)
		cl.release()
	}()
	if err != nil {
		return res, err
	}
	def := in.Site
	if def == "" {
		active, err := activeSite(ctx, info)
		if err != nil {
			return res, err
		}
		def = other(info, active)
	}
	site, err := siteOf(info, in.Site, def, "site")
	if err != nil {
		return res, err
	}
	if err := upsert(ctx, t, site); err != nil {
		return res, err
	}
	// One restore at a time into a target; a failover takes it over. The
	// plan's own target is claimed first; another path once the site's
	// worker has resolved it (two spellings of one directory are one target).
	claims := claimsOn(ctx)
	claim := func(target, key string) error {
		c, cerr := acquire(ctx, in.Plan, ClaimRefuse, "restore into "+target, ResTarget(site, key))
		if cerr != nil {
			return cerr
		}
		ctx = c.Ctx
		cl = c
		return noForget(ctx, in.Plan, "restore into "+target, site)
	}
	if claims && in.To == "" {
		target := "the plan's target at " + site
		if err := noSwitch(ctx, in.Plan, "restore into "+target); err != nil {
			// The plan's own data is the switch's to change while it runs.
			return res, err
		}
		if err := claim(target, ""); err != nil {
			return res, err
		}
		// A switch's own restores go into a target it has fenced; the
		// protection cycle's refresh is checked like a restore by hand, and
		// more (refreshOK), under the target's claim taken above.
		if !in.Force && (workflow.GetInfo(ctx).ParentWorkflowExecution == nil || in.Refresh) {
			if err := t.step(ctx, "check target", func() error {
				if in.Refresh {
					return refreshOK(ctx, info, site)
				}
				return refuseWritable(ctx, info, site, in.Site != "")
			}); err != nil {
				return res, err
			}
		}
	}
	var a *activities.Activities
	op, _ := opID(ctx, OpRestore)
	res = RestoreResult{Plan: in.Plan, Site: site}

	var prep activities.PrepareRestoreResult
	if err := t.step(ctx, "prepare", func() error {
		return workflow.ExecuteActivity(metaCtx(ctx, siteQueue(ctx, site)), a.PrepareRestore,
			activities.PrepareRestoreInput{Plan: in.Plan, Site: site, Point: in.Point, To: in.To, At: in.At}).Get(ctx, &prep)
	}); err != nil {
		return res, err
	}
	res.Point, res.Snapshot, res.Target = prep.Point, prep.Snapshot, prep.Target
	if claims && in.To != "" {
		key := prep.Resolved
		if key == "" {
			key = cleanPath(in.To) // a worker from before resolving
		}
		if err := claim(in.To+" at "+site, key); err != nil {
			return res, err
		}
	}

	var data activities.RestoreDataResult
	if err := t.step(ctx, "restore", func() error {
		return workflow.ExecuteActivity(longCtx(ctx, siteQueue(ctx, site)), a.RestoreData,
			activities.RestoreDataInput{Plan: in.Plan, Site: site, Op: op, Point: prep.Point, To: in.To, SiteEpoch: prep.SiteEpoch, KeepSetuid: in.KeepSetuid,
				At: in.At, Force: in.Force, Switch: workflow.GetInfo(ctx).ParentWorkflowExecution != nil && !in.Refresh}).Get(ctx, &data)
	}); err != nil {
		return res, err
	}
	res.Entries, res.Files, res.Bytes, res.BytesWritten, res.Chunks = data.Entries, data.Files, data.Bytes, data.BytesWritten, data.Chunks
	res.ChunksLocal, res.BytesLocal = data.ChunksLocal, data.BytesLocal
	res.RecoveredTo = data.RecoveredTo
	if in.To == "" {
		// The site's own target now holds this point: a failover to the
		// site need not restore it again.
		// Recorded while the target's claim is held, so that no switch
		// opens the site in between. A refresh records what it took: the
		// time a failover to the site saves.
		mark := activities.MarkStandbyInput{Plan: in.Plan, Site: site, Point: prep.Point}
		if in.Refresh {
			mark.Took = workflow.Now(ctx).Sub(started)
		}
		if err := workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), a.MarkStandby, mark).Get(ctx, nil); err != nil {
			workflow.GetLogger(ctx).Warn("standby state not recorded", "error", err)
		}
	}
	res.Duration = Duration(workflow.Now(ctx).Sub(started))
	workflow.GetLogger(ctx).Info("restore completed", "plan", in.Plan, "site", site, "point", res.Point, "target", res.Target)
	return res, nil
}

// refuseWritable refuses to restore over the plan's own data at site when
// that site takes writes: it is the plan's active site (asked only when the
// site was named; the default is the standby), or one of its access
// resources is read-write. Overwriting it would throw away what the
// application wrote there; --force says the operator means it.
func refuseWritable(ctx workflow.Context, info activities.PlanInfo, site string, named bool) error {
	refuse := func(why string) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"restore into the plan's own data at %s refused: %s; its data would be replaced. Restore elsewhere (--to PATH), or pass --force if that is what you mean", site, why), "TargetWritable", nil)
	}
	if named {
		if v := readView(ctx, info); v.unknown == "" && v.info.Active == site {
			return refuse(fmt.Sprintf("%s is the plan's active site", site))
		}
	}
	var states []activities.ResourceState
	if err := workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), act.AccessStatus, activities.AccessStatusInput{Plan: info.Plan, Site: site}).Get(ctx, &states); err != nil {
		return wrap(err, "read the access mode of %s before restoring into it", site)
	}
	for _, r := range states {
		if r.Mode == access.ReadWrite {
			return refuse(fmt.Sprintf("%s is read-write at %s: something may be writing there", r.Resource, site))
		}
	}
	return nil
}

// refreshOK refuses a warm-standby refresh of site's own target unless the
// site is a standby that holds nothing of its own: not the active site, not
// read-write, and not a site whose target has taken writes since it last
// held a restored point (its standby state cleared when a switch opened
// it), nor the plan's primary when nothing was ever restored into it. Such
// a site's data is recovered by a failback, which keeps it; a refresh would
// replace it with the active site's.
func refreshOK(ctx workflow.Context, info activities.PlanInfo, site string) error {
	v := readView(ctx, info)
	if v.unknown != "" {
		return temporal.NewNonRetryableApplicationError("warm standby refresh of "+site+" refused: the active site is not known: "+v.unknown, "ActiveUnknown", nil)
	}
	if why := refreshRefusal(v.info, site, siteStateOf(ctx, info, site)); why != "" {
		return temporal.NewNonRetryableApplicationError("warm standby refresh of "+site+" refused: "+why, "StandbyHoldsWrites", nil)
	}
	return refuseWritable(ctx, info, site, false)
}

// siteStateOf reads site's state; nil when it does not answer.
func siteStateOf(ctx workflow.Context, info activities.PlanInfo, site string) *activities.SiteState {
	var st activities.SiteState
	if err := workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), act.GetSiteState, activities.SiteStateInput{Plan: info.Plan, Site: site}).Get(ctx, &st); err != nil {
		return nil
	}
	return &st
}

// refreshRefusal says why a warm refresh must not write into site's target,
// given the plan's roles as the sites record them (roles) and the site's
// state; "" when it may.
func refreshRefusal(roles activities.PlanInfo, site string, st *activities.SiteState) string {
	switch {
	case st == nil:
		return "its state cannot be read"
	case roles.Active == site:
		return site + " is the plan's active site"
	case st.StandbyKnown && st.Standby == "":
		return site + " has taken writes as the active site since it last held a restored point; they would be lost. " +
			"A failback (drorch failback) recovers them, or a switchover records what the site holds; the refresh resumes after that"
	case !st.StandbyKnown && site == roles.Primary:
		return site + " is the plan's primary and holds its own data, never restored from a point; a failback recovers it"
	}
	return ""
}

// Points lists the restore points of a plan at a site. It runs as a workflow
// so that the CLI needs no store credentials: the site's worker reads them.
func Points(ctx workflow.Context, in PointsInput) (res PointsResult, err error) {
	t, info, err := begin(ctx, OpPoints, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	site, err := atSite(ctx, t, info, in.Site)
	if err != nil {
		return res, err
	}
	var a *activities.Activities
	res = PointsResult{Plan: in.Plan, Site: site}
	err = t.step(ctx, "list", func() error {
		return workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), a.ListPoints,
			activities.ListPointsInput{Plan: in.Plan, Site: site}).Get(ctx, &res.ListPointsResult)
	})
	return res, err
}

// All lists the workflows a worker registers.
var All = []any{Backup, Transmit, Restore, Points, Failover, Failback, PermanentFailover, Status, Drill, Check, PlanLock, Protect, Forget, Pin, ShipWAL}
