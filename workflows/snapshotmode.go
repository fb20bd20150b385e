package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// versionSourceSnapshot: a backup of a dir source with a snapshot mode
// (reflink, or create/path/remove commands) makes the point-in-time view
// after the pre hooks, lists and reads the view instead of the live tree,
// and removes it as it ends, committed or not, before the post hooks.
const versionSourceSnapshot = "source-snapshot"

// sourceSnapshot makes the source's point-in-time view when it has a
// snapshot mode, and reports whether it did: the backup then reads the view
// and removes it as it ends (removeSourceSnapshot).
//
// The view lives from before the Snapshot activity lists it until after
// Commit: Snapshot and Upload are separate activities, each possibly
// retried, and Upload reads every file from it. So it is made and removed
// by the workflow, in activities of its own, never inside Snapshot.
func sourceSnapshot(ctx workflow.Context, t *tracker, plan, site, op string) (bool, error) {
	if workflow.GetVersion(ctx, versionSourceSnapshot, workflow.DefaultVersion, 1) < 1 {
		return false, nil
	}
	var a *activities.Activities
	var view activities.SourceSnapshotResult
	if err := t.step(ctx, "source snapshot", func() error {
		return workflow.ExecuteActivity(snapshotCtx(ctx, site), a.SourceSnapshot,
			activities.SourceSnapshotInput{Plan: plan, Site: site, Op: op, Phase: "create"}).Get(ctx, &view)
	}); err != nil {
		// A failing attempt removed what it made; a cancelled one too.
		return false, err
	}
	if view.Mode == "" {
		t.p.Steps = t.p.Steps[:len(t.p.Steps)-1] // the live tree: a step that did nothing is noise
		return false, nil
	}
	workflow.GetLogger(ctx).Info("reading the source's snapshot", "plan", plan, "site", site, "mode", view.Mode, "path", view.Path)
	return true, nil
}

// removeSourceSnapshot drops the view at the end of a backup, also a failed
// or cancelled one (a disconnected context). Its failures are warnings.
func removeSourceSnapshot(ctx workflow.Context, plan, site, op string, ok bool) []string {
	var a *activities.Activities
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var out activities.SourceSnapshotResult
	err := workflow.ExecuteActivity(snapshotCtx(dctx, site), a.SourceSnapshot,
		activities.SourceSnapshotInput{Plan: plan, Site: site, Op: op, Phase: "remove", OK: ok}).Get(dctx, &out)
	if err != nil {
		out.Warnings = append(out.Warnings, "source snapshot not removed: "+err.Error())
	}
	for _, w := range out.Warnings {
		workflow.GetLogger(ctx).Warn("source snapshot removal failed", "plan", plan, "site", site, "warning", w)
	}
	return out.Warnings
}

// snapshotCtx is for making and dropping a source's view: a clone of a
// large tree or a snapshot command may take long, so the activity
// heartbeats; it fails the backup after a few attempts.
func snapshotCtx(ctx workflow.Context, site string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              siteQueue(ctx, site),
		ScheduleToStartTimeout: WorkerWaitLimit,
		StartToCloseTimeout:    6 * time.Hour,
		HeartbeatTimeout:       time.Minute,
		WaitForCancellation:    true, // removal never runs beside a create still going
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumAttempts: 3},
	})
}
