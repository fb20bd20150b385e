package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// Restore writes a restore point held at a site into a target: the plan's
// source at that site, or another path. Every chunk is verified before it is
// written, and the target is replaced only once the whole point is staged.
func Restore(ctx workflow.Context, in RestoreInput) (res RestoreResult, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpRestore, in.Plan)
	defer func() { t.finish(err) }()
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
	// One restore at a time into a target; a failover takes it over.
	if claimsOn(ctx) {
		target := "the plan's target at " + site
		if in.To != "" {
			target = in.To + " at " + site
		} else if err := noSwitch(ctx, in.Plan, "restore into "+target); err != nil {
			// The plan's own data is the switch's to change while it runs.
			return res, err
		}
		c, cerr := acquire(ctx, in.Plan, ClaimRefuse, "restore into "+target, ResTarget(site, cleanPath(in.To)))
		if cerr != nil {
			return res, cerr
		}
		defer c.release()
		// err is the named result: a revoked claim says who took over.
		defer func() { err = c.superseded(err) }()
		ctx = c.Ctx
	}
	var a *activities.Activities
	op, _ := opID(ctx, OpRestore)
	res = RestoreResult{Plan: in.Plan, Site: site}

	var prep activities.PrepareRestoreResult
	if err := t.step(ctx, "prepare", func() error {
		return workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), a.PrepareRestore,
			activities.PrepareRestoreInput{Plan: in.Plan, Site: site, Point: in.Point, To: in.To}).Get(ctx, &prep)
	}); err != nil {
		return res, err
	}
	res.Point, res.Snapshot, res.Target = prep.Point, prep.Snapshot, prep.Target

	var data activities.RestoreDataResult
	if err := t.step(ctx, "restore", func() error {
		return workflow.ExecuteActivity(longCtx(ctx, siteQueue(ctx, site)), a.RestoreData,
			activities.RestoreDataInput{Plan: in.Plan, Site: site, Op: op, Point: prep.Point, To: in.To, SiteEpoch: prep.SiteEpoch, KeepSetuid: in.KeepSetuid}).Get(ctx, &data)
	}); err != nil {
		return res, err
	}
	res.Entries, res.Files, res.Bytes, res.BytesWritten, res.Chunks = data.Entries, data.Files, data.Bytes, data.BytesWritten, data.Chunks
	res.ChunksLocal, res.BytesLocal = data.ChunksLocal, data.BytesLocal
	if in.To == "" {
		// The site's own target now holds this point: a failover to the
		// site need not restore it again.
		if err := workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), a.MarkStandby,
			activities.MarkStandbyInput{Plan: in.Plan, Site: site, Point: prep.Point}).Get(ctx, nil); err != nil {
			workflow.GetLogger(ctx).Warn("standby state not recorded", "error", err)
		}
	}
	res.Duration = workflow.Now(ctx).Sub(started)
	workflow.GetLogger(ctx).Info("restore completed", "plan", in.Plan, "site", site, "point", res.Point, "target", res.Target)
	return res, nil
}

// Points lists the restore points of a plan at a site. It runs as a workflow
// so that the CLI needs no store credentials: the site's worker reads them.
func Points(ctx workflow.Context, in PointsInput) (res PointsResult, err error) {
	t, info, err := begin(ctx, OpPoints, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	def := in.Site
	if def == "" {
		if def, err = activeSite(ctx, info); err != nil {
			return res, err
		}
	}
	site, err := siteOf(info, in.Site, def, "site")
	if err != nil {
		return res, err
	}
	if err := upsert(ctx, t, site); err != nil {
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
var All = []any{Backup, Transmit, Restore, Points, Failover, Failback, PermanentFailover, Status, Drill, Check, PlanLock}
