package workflows

import (
	"fmt"
	"strings"

	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

// OpPin is the operation of drorch points pin and unpin.
const OpPin = "pin"

// ResRetention is the resource Forget claims at a site: one retention run
// per repository at a time.
func ResRetention(site string) string { return "retention/" + site }

// ForgetInput applies the plan's retention policy at one site.
type ForgetInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	DryRun bool   `json:"dryRun,omitempty"` // show what would be kept and forgotten, change nothing
}

// ForgetResult is what Forget kept, forgot and freed.
type ForgetResult struct {
	Plan      string   `json:"plan"`
	Site      string   `json:"site"`
	DryRun    bool     `json:"dryRun,omitempty"`
	Kept      []string `json:"kept"`      // point ids
	Forgotten []string `json:"forgotten"` // point ids
	// Decisions is the policy's decision for each point, newest first,
	// with the rules that keep it.
	Decisions []repo.Decision `json:"decisions"`
	Policy    string          `json:"policy"`
	// InUse says why every point was kept: an operation that may read one
	// runs at the site.
	InUse string `json:"inUse,omitempty"`
	// Frees is the bytes of chunks deleted (a dry run: that would be);
	// FreesLater those of the unnamed chunks marked, which a run at least
	// repo.GCMargin later deletes.
	Frees      int64         `json:"frees"`
	FreesLater int64         `json:"freesLater"`
	GC         repo.GCResult `json:"gc"`
	// WAL is what WAL retention kept and deleted (a dry run: would
	// delete), for a repository that holds WAL files (change id
	// wal-retention; docs/format.md, "WAL retention").
	WAL      *repo.WALResult `json:"wal,omitempty"`
	Duration Duration        `json:"duration"`
}

// versionWALRetention: after collecting garbage, Forget deletes the WAL
// files no kept base backup needs (CollectWAL) and reports them in
// ForgetResult.WAL.
const versionWALRetention = "wal-retention"

// Forget applies the plan's retention policy at one site and collects the
// garbage it leaves (docs/format.md, "Garbage collection"). It does not run
// while a switch of the plan runs, one at a time per site, and keeps every
// point while a restore, drill or switch holds a target at the site.
func Forget(ctx workflow.Context, in ForgetInput) (res ForgetResult, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpForget, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	site, err := atSite(ctx, t, info, in.Site)
	if err != nil {
		return res, err
	}
	res = ForgetResult{Plan: in.Plan, Site: site, DryRun: in.DryRun}
	what := "forget at " + site
	if err := noSwitch(ctx, in.Plan, what); err != nil {
		return res, err
	}
	if !in.DryRun {
		c, cerr := acquire(ctx, in.Plan, ClaimRefuse, what, ResRetention(site))
		if cerr != nil {
			return res, cerr
		}
		defer c.release()
		// Revoked by a switch that takes retention/<site> over: it fails
		// as superseded, once its step has stopped (stopCtx).
		defer func() { err = c.superseded(err) }()
		ctx = c.Ctx
	}
	var a *activities.Activities
	var claims []activities.LockClaim
	if err := t.step(ctx, "claims", func() error {
		return workflow.ExecuteActivity(shortCtx(ctx, workflow.GetInfo(ctx).TaskQueueName), a.QueryLockClaims,
			activities.QueryLockClaimsInput{LockID: lockID(ctx, in.Plan), Query: QueryClaims}).Get(ctx, &claims)
	}); err != nil {
		return res, err
	}
	res.InUse = inUse(claims, site)
	var ret activities.ApplyRetentionResult
	if err := t.step(ctx, "retention", func() error {
		return workflow.ExecuteActivity(stopCtx(ctx, site), a.ApplyRetention, activities.ApplyRetentionInput{
			Plan: in.Plan, Site: site, DryRun: in.DryRun, KeepAll: res.InUse,
		}).Get(ctx, &ret)
	}); err != nil {
		return res, err
	}
	res.Decisions, res.Policy, res.Forgotten, res.Kept = ret.Decisions, ret.Policy, ret.Forgotten, []string{}
	for _, d := range ret.Decisions {
		if d.Keep {
			res.Kept = append(res.Kept, d.Point)
		}
	}
	if err := t.step(ctx, "collect garbage", func() error {
		gin := activities.CollectGarbageInput{Plan: in.Plan, Site: site, DryRun: in.DryRun, NoSweep: res.InUse}
		if in.DryRun {
			gin.Forgotten = ret.Forgotten
		}
		return workflow.ExecuteActivity(stopCtx(ctx, site), a.CollectGarbage, gin).Get(ctx, &res.GC)
	}); err != nil {
		return res, err
	}
	res.Frees, res.FreesLater = res.GC.Freed, res.GC.MarkedBytes
	if workflow.GetVersion(ctx, versionWALRetention, workflow.DefaultVersion, 1) >= 1 {
		var wal repo.WALResult
		if err := t.step(ctx, "collect WAL", func() error {
			win := activities.CollectWALInput{Plan: in.Plan, Site: site, DryRun: in.DryRun, NoSweep: res.InUse}
			if in.DryRun {
				win.Forgotten = ret.Forgotten
			}
			return workflow.ExecuteActivity(stopCtx(ctx, site), a.CollectWAL, win).Get(ctx, &wal)
		}); err != nil {
			return res, err
		}
		if wal.Files > 0 {
			res.WAL = &wal
		}
	}
	res.Duration = Duration(workflow.Now(ctx).Sub(started))
	workflow.GetLogger(ctx).Info("forget done", "plan", in.Plan, "site", site, "dryRun", in.DryRun,
		"kept", len(res.Kept), "forgotten", len(res.Forgotten), "frees", res.Frees, "marked", res.GC.Marked)
	return res, nil
}

// stopCtx runs a step of Forget at site that, when a switch takes
// retention/<site> over (the claim is revoked, ctx cancelled), is waited
// for until it has stopped: the claim is let go only after that, so no
// manifest or chunk is deleted once the switch goes on.
func stopCtx(ctx workflow.Context, site string) workflow.Context {
	ctx = longCtx(ctx, siteQueue(ctx, site))
	o := workflow.GetActivityOptions(ctx)
	o.WaitForCancellation = true
	return workflow.WithActivityOptions(ctx, o)
}

// inUse says why every point at site must be kept, or "": a switch, or an
// operation that holds a target at site (a restore, drill or standby
// refresh), may be reading any point there, as the claims do not say which.
func inUse(claims []activities.LockClaim, site string) string {
	var why []string
	for _, c := range claims {
		if c.Resource == ResSwitch || c.Resource == ResTarget(site, "") || strings.HasPrefix(c.Resource, ResTarget(site, "")+"/") {
			why = append(why, fmt.Sprintf("%s (workflow %s)", c.What, c.Holder))
		}
	}
	if len(why) == 0 {
		return ""
	}
	return "in use by " + strings.Join(why, ", ")
}

// PinInput pins or unpins a restore point at a site.
type PinInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point"`
	Unpin bool   `json:"unpin,omitempty"`
}

// PinResult is the point pinned or unpinned.
type PinResult struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	Point  string `json:"point"`
	Pinned bool   `json:"pinned"`
}

// Pin pins (or unpins) a restore point at a site: retention never forgets
// a pinned point.
func Pin(ctx workflow.Context, in PinInput) (res PinResult, err error) {
	t, info, err := begin(ctx, OpPin, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	if in.Point == "" {
		return res, invalidInput("pin: name the restore point")
	}
	site, err := atSite(ctx, t, info, in.Site)
	if err != nil {
		return res, err
	}
	res = PinResult{Plan: in.Plan, Site: site, Point: in.Point, Pinned: !in.Unpin}
	if claimsOn(ctx) {
		// Not while a forget runs at site: it reads the pins once.
		c, err := acquire(ctx, in.Plan, ClaimRefuse, "pin "+in.Point+" at "+site, ResRetention(site))
		if err != nil {
			return res, err
		}
		defer c.release()
	}
	var a *activities.Activities
	err = t.step(ctx, "pin", func() error {
		return workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, site)), a.PinPoint, activities.PinPointInput{
			Plan: in.Plan, Site: site, Point: in.Point, Unpin: in.Unpin, By: workflow.GetInfo(ctx).WorkflowExecution.ID,
		}).Get(ctx, nil)
	})
	return res, err
}
