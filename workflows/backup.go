package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

// versionSourceHooks: a backup runs its source's pre hooks before the
// snapshot and its post hooks when it ends, committed or not.
const versionSourceHooks = "source-hooks"

// Backup takes a restore point of a plan at its active site (DESIGN §1):
// prepare the repository, snapshot the source, upload the chunks the
// repository lacks, and commit the manifest last.
func Backup(ctx workflow.Context, in BackupInput) (res BackupResult, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpBackup, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	site, err := atSite(ctx, t, info, in.Site)
	if err != nil {
		return res, err
	}
	if err := noSwitch(ctx, in.Plan, "backup at "+site); err != nil {
		return res, err
	}
	var a *activities.Activities
	short, long := shortCtx(ctx, siteQueue(ctx, site)), longCtx(ctx, siteQueue(ctx, site))
	op, suffix := opID(ctx, OpBackup)
	res = BackupResult{Plan: in.Plan, Site: site}

	var prep activities.PrepareSiteResult
	if err := t.step(ctx, "prepare", func() error {
		return workflow.ExecuteActivity(short, a.PrepareSite, activities.PrepareSiteInput{Plan: in.Plan, Site: site}).Get(ctx, &prep)
	}); err != nil {
		return res, err
	}
	res.Epoch, res.Repository = prep.Epoch, prep.Repository

	if workflow.GetVersion(ctx, versionSourceHooks, workflow.DefaultVersion, 1) >= 1 {
		var pre activities.SourceHooksResult
		if err := t.step(ctx, "pre hooks", func() error {
			return workflow.ExecuteActivity(hooksCtx(ctx, site), a.SourceHooks, activities.SourceHooksInput{Plan: in.Plan, Site: site, Phase: "pre"}).Get(ctx, &pre)
		}); err != nil {
			// A failing attempt ran the post hooks itself. A backup
			// cancelled meanwhile waits for the attempt (it sees no cancel:
			// it does not heartbeat); one that passed comes back as a
			// success, so the deferred post hooks below thaw it.
			return res, err
		}
		if !pre.Hooks {
			t.p.Steps = t.p.Steps[:len(t.p.Steps)-1] // a step that did nothing is noise in the progress
		}
		if pre.Post {
			defer func() { res.HookWarnings = append(res.HookWarnings, postHooks(ctx, in.Plan, site, err == nil)...) }()
		}
	}
	fromSnapshot, err := sourceSnapshot(ctx, t, in.Plan, site, op)
	if err != nil {
		return res, err
	}
	if fromSnapshot { // removed before the post hooks run (defers run last first)
		defer func() {
			res.HookWarnings = append(res.HookWarnings, removeSourceSnapshot(ctx, in.Plan, site, op, err == nil)...)
		}()
	}

	var snap activities.SnapshotResult
	if err := t.step(ctx, "snapshot", func() error {
		return workflow.ExecuteActivity(long, a.Snapshot, activities.SnapshotInput{Plan: in.Plan, Site: site, Op: op, FromSnapshot: fromSnapshot}).Get(ctx, &snap)
	}); err != nil {
		cleanup(ctx, in.Plan, site, op)
		return res, err
	}
	res.Snapshot, res.Source, res.Skipped = snap.Snapshot, snap.Source, snap.Skipped
	res.Point = repo.NewPointID(snap.Snapshot, suffix)

	var up activities.UploadResult
	if err := t.step(ctx, "upload", func() error {
		upIn := activities.UploadInput{Plan: in.Plan, Site: site, Op: op, Pieces: snap.Pieces, Bytes: snap.Bytes, Full: in.Full, FromSnapshot: fromSnapshot}
		// A file tree's pieces upload as ranges over the site's workers; a
		// database's or a command's stream is one activity, as before.
		if workflow.GetVersion(ctx, changeParallelUpload, workflow.DefaultVersion, 1) >= 1 && snap.Kind == "" {
			var err error
			up, err = parallelUpload(ctx, t, info, upIn)
			return err
		}
		return workflow.ExecuteActivity(long, a.Upload, upIn).Get(ctx, &up)
	}); err != nil {
		cleanup(ctx, in.Plan, site, op)
		return res, err
	}
	res.BytesRead, res.BytesNew, res.Uploaded = up.BytesRead, up.BytesNew, up.BytesStored
	res.Chunks, res.ChunksNew, res.Reread = up.Chunks, up.ChunksNew, up.Reread
	res.Unchanged, res.BytesUnchanged, res.Parent = up.Unchanged, up.BytesUnchanged, up.Parent

	var commit activities.CommitResult
	if err := t.step(ctx, "commit", func() error {
		return workflow.ExecuteActivity(metaCtx(ctx, siteQueue(ctx, site)), a.Commit, activities.CommitInput{
			Plan: in.Plan, Site: site, Op: op, Point: res.Point, Snapshot: snap.Snapshot, Pieces: snap.Pieces, Epoch: prep.Epoch,
		}).Get(ctx, &commit)
	}); err != nil {
		cleanup(ctx, in.Plan, site, op)
		return res, err
	}
	res.Totals = commit.Totals
	res.Duration = Duration(workflow.Now(ctx).Sub(started))
	workflow.GetLogger(ctx).Info("backup committed", "plan", in.Plan, "site", site, "point", res.Point,
		"bytesRead", res.BytesRead, "bytesNew", res.BytesNew, "chunksNew", res.ChunksNew)
	return res, nil
}

// postHooks runs the source's post hooks at the end of a backup, also a
// failed or cancelled one (a disconnected context): they thaw what the pre
// hooks froze. Their failures are the backup's warnings.
func postHooks(ctx workflow.Context, plan, site string, ok bool) []string {
	var a *activities.Activities
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	var post activities.SourceHooksResult
	err := workflow.ExecuteActivity(hooksCtx(dctx, site), a.SourceHooks,
		activities.SourceHooksInput{Plan: plan, Site: site, Phase: "post", OK: ok}).Get(dctx, &post)
	if err != nil {
		post.Warnings = append(post.Warnings, "post hooks not run: "+err.Error())
	}
	for _, w := range post.Warnings {
		workflow.GetLogger(ctx).Warn("post hook failed", "plan", plan, "site", site, "warning", w)
	}
	return post.Warnings
}

// hooksCtx is for a source's hooks: they may take as long as their
// timeouts allow, and a pre hook that keeps failing fails the backup after
// a few attempts rather than holding it for hours with its error unseen.
func hooksCtx(ctx workflow.Context, site string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              siteQueue(ctx, site),
		ScheduleToStartTimeout: WorkerWaitLimit,
		StartToCloseTimeout:    time.Hour,
		WaitForCancellation:    true, // the post hooks run after the pre hooks, never beside them
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumAttempts: 3},
	})
}
