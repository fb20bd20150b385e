package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// DrillInput starts a drill: a non-disruptive test of recovery.
//
//	temporal workflow start --type Drill --task-queue drorch --input '{"plan":"files"}'
type DrillInput struct {
	Plan    string `json:"plan"`
	Point   string `json:"point,omitempty"`   // default: the latest valid point at the standby
	Sandbox string `json:"sandbox,omitempty"` // default: the plan's drill sandbox at the standby
}

// versionDrillReport: a drill stores its report at the drill's site
// (staging/drills/), where `drorch status` reads the last drill.
const versionDrillReport = "drill-report"

// DrillReport is a drill's verdict.
type DrillReport struct {
	Plan      string         `json:"plan"`
	Site      string         `json:"site"`
	Sandbox   string         `json:"sandbox"`
	Point     string         `json:"point"`
	PointTime time.Time      `json:"pointTime,omitzero"`
	Passed    bool           `json:"passed"`
	Problems  []string       `json:"problems,omitempty"`
	Restored  RestoreResult  `json:"restored"`
	Verified  int64          `json:"chunksVerified"`
	RTO       Duration       `json:"rto"` // restore + verification + recovery steps: what a failover to this point would take, DNS aside
	Started   time.Time      `json:"started"`
	Finished  time.Time      `json:"finished"`
	Steps     []StepProgress `json:"steps"`
}

// Drill restores a restore point at the standby site into a sandbox, reads
// every byte back against the manifest, runs the recovery plan's drill steps,
// removes the sandbox and reports pass or fail with the RTO it implies.
// Production is never touched: no access mode, epoch or DNS record changes,
// and the sandbox may not overlap a source. A drill that finds bad data
// completes with Passed false; it fails only when it cannot run.
func Drill(ctx workflow.Context, in DrillInput) (rep DrillReport, err error) {
	t, info, err := begin(ctx, OpDrill, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return rep, err
	}
	active, err := activeSite(ctx, info)
	if err != nil {
		return rep, err
	}
	site := other(info, active)
	if err := upsert(ctx, t, site); err != nil {
		return rep, err
	}
	rep = DrillReport{Plan: in.Plan, Site: site, Sandbox: in.Sandbox, Point: in.Point, Started: workflow.Now(ctx), Steps: []StepProgress{}}
	if rep.Sandbox == "" {
		rep.Sandbox = info.Sandboxes[site]
	}
	if rep.Sandbox == "" {
		return rep, invalidInput(fmt.Sprintf("plan %s has no source at %s to derive a drill sandbox from: give one", in.Plan, site))
	}
	// The sandbox is this drill's from clearing it to removing it.
	if claimsOn(ctx) {
		c, err := acquire(ctx, in.Plan, ClaimRefuse, "drill in "+rep.Sandbox+" at "+site, ResTarget(site, cleanPath(rep.Sandbox)))
		if err != nil {
			return rep, err
		}
		defer c.release()
		if err := noForget(ctx, in.Plan, "drill in "+rep.Sandbox+" at "+site, site); err != nil {
			return rep, err
		}
	}
	op, _ := opID(ctx, OpDrill)
	sctx := shortCtx(ctx, siteQueue(ctx, site))
	remove := func() error {
		return workflow.ExecuteActivity(sctx, act.RemoveTarget, activities.RemoveTargetInput{Plan: in.Plan, Path: rep.Sandbox}).Get(ctx, nil)
	}
	// Clearing the sandbox first also refuses one that overlaps production.
	if err := t.step(ctx, "prepare sandbox", remove); err != nil {
		return rep, err
	}
	started := workflow.Now(ctx)
	err = t.step(ctx, "restore", func() error {
		c := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
			WorkflowID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/" + op + "/restore",
			TaskQueue:  workflow.GetInfo(ctx).TaskQueueName,
		})
		return workflow.ExecuteChildWorkflow(c, Restore, RestoreInput{Plan: in.Plan, Site: site, Point: in.Point, To: rep.Sandbox}).Get(ctx, &rep.Restored)
	})
	if err == nil {
		rep.Point, rep.PointTime = rep.Restored.Point, rep.Restored.Snapshot
		var v activities.VerifyTargetResult
		err = t.step(ctx, "verify", func() error {
			return workflow.ExecuteActivity(longCtx(ctx, siteQueue(ctx, site)), act.VerifyTarget,
				activities.VerifyTargetInput{Plan: in.Plan, Site: site, Point: rep.Point, Path: rep.Sandbox}).Get(ctx, &v)
		})
		rep.Verified = v.Chunks
		rep.Problems = append(rep.Problems, v.Errors...)
	}
	if err == nil {
		err = runSteps(ctx, t, info, "drill", site)
	}
	rep.RTO = Duration(workflow.Now(ctx).Sub(started))
	if err != nil {
		rep.Problems = append(rep.Problems, errorMessage(err))
	}
	rep.Passed = len(rep.Problems) == 0
	// Always clean up, whatever happened, and report what did.
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	if cerr := workflow.ExecuteActivity(shortCtx(dctx, siteQueue(ctx, site)), act.RemoveTarget,
		activities.RemoveTargetInput{Plan: in.Plan, Path: rep.Sandbox}).Get(dctx, nil); cerr != nil {
		rep.Problems = append(rep.Problems, "cleanup: "+errorMessage(cerr))
	}
	rep.Finished = workflow.Now(ctx)
	rep.Steps = t.p.Steps
	if workflow.GetVersion(dctx, versionDrillReport, workflow.DefaultVersion, 1) >= 1 {
		// Stored at the drill's site, where status finds the last drill.
		if serr := workflow.ExecuteActivity(shortCtx(dctx, siteQueue(ctx, site)), act.SaveReport, activities.SaveReportInput{
			Kind: activities.ReportDrill, Plan: in.Plan, Site: site, ID: rep.Finished.UTC().Format("20060102T150405.000Z") + "-" + op, Report: rep,
		}).Get(dctx, nil); serr != nil {
			workflow.GetLogger(ctx).Warn("drill report not stored", "site", site, "error", serr)
		}
	}
	workflow.GetLogger(ctx).Info("drill finished", "plan", in.Plan, "site", site, "passed", rep.Passed, "rto", rep.RTO)
	return rep, nil
}
