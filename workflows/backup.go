package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

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
	site, err := siteOrActive(ctx, info, in.Site, "site")
	if err != nil {
		return res, err
	}
	if err := upsert(ctx, t, site); err != nil {
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

	var snap activities.SnapshotResult
	if err := t.step(ctx, "snapshot", func() error {
		return workflow.ExecuteActivity(long, a.Snapshot, activities.SnapshotInput{Plan: in.Plan, Site: site, Op: op}).Get(ctx, &snap)
	}); err != nil {
		cleanup(ctx, in.Plan, site, op)
		return res, err
	}
	res.Snapshot, res.Source, res.Skipped = snap.Snapshot, snap.Source, snap.Skipped
	res.Point = repo.NewPointID(snap.Snapshot, suffix)

	var up activities.UploadResult
	if err := t.step(ctx, "upload", func() error {
		return workflow.ExecuteActivity(long, a.Upload, activities.UploadInput{Plan: in.Plan, Site: site, Op: op, Pieces: snap.Pieces, Bytes: snap.Bytes, Full: in.Full}).Get(ctx, &up)
	}); err != nil {
		cleanup(ctx, in.Plan, site, op)
		return res, err
	}
	res.BytesRead, res.BytesNew, res.Uploaded = up.BytesRead, up.BytesNew, up.BytesStored
	res.Chunks, res.ChunksNew, res.Reread = up.Chunks, up.ChunksNew, up.Reread
	res.Unchanged, res.BytesUnchanged, res.Parent = up.Unchanged, up.BytesUnchanged, up.Parent

	var commit activities.CommitResult
	if err := t.step(ctx, "commit", func() error {
		return workflow.ExecuteActivity(short, a.Commit, activities.CommitInput{
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
