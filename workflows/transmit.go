package workflows

import (
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers"
)

// changeTransmitNewestEpoch (workflow.GetVersion): a transmission of a plan
// with three sites or more refuses a point older than the newest epoch any
// site holds, so that a standby that missed a raise is not fed the old
// primary's points.
const changeTransmitNewestEpoch = "transmit-newest-epoch"

// Transmit makes a restore point of one site valid at another (DESIGN §1):
// verify the manifest at the source, prepare the destination and check its
// epoch, copy only the chunks it lacks, then write the manifest there last.
func Transmit(ctx workflow.Context, in TransmitInput) (res TransmitResult, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpTransmit, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	from, err := siteOrActive(ctx, info, in.From, "from")
	if err != nil {
		return res, err
	}
	to, err := siteOf(info, in.To, other(info, from), "to")
	if err != nil {
		return res, err
	}
	if from == to {
		return res, invalidInput("from and to are both " + from + ": a transmission needs two sites")
	}
	if err := upsert(ctx, t, to); err != nil {
		return res, err
	}
	if err := noSwitch(ctx, in.Plan, "transmit from "+from+" to "+to); err != nil {
		return res, err
	}
	var a *activities.Activities
	op, _ := opID(ctx, OpTransmit)
	res = TransmitResult{Plan: in.Plan, From: from, To: to}

	var point activities.PointSummary
	if err := t.step(ctx, "prepare-source", func() error {
		return workflow.ExecuteActivity(metaCtx(ctx, siteQueue(ctx, from)), a.PrepareTransmit,
			activities.PrepareTransmitInput{Plan: in.Plan, From: from, Op: op, Point: in.Point}).Get(ctx, &point)
	}); err != nil {
		cleanup(ctx, in.Plan, from, op)
		return res, err
	}
	res.Point, res.Snapshot, res.Bytes = point.Point, point.Snapshot, point.Totals.Bytes

	// With three sites or more, the destination may be a standby that was
	// dark when the plan's epoch was last raised, and still holds the old
	// one, which its own check below would accept. Every site's epoch is
	// consulted: a point older than the newest epoch any site holds is not
	// sent (docs/fencing.md, "Three sites or more").
	if len(info.Standbys()) > 1 && workflow.GetVersion(ctx, changeTransmitNewestEpoch, workflow.DefaultVersion, 1) >= 1 {
		if v := readView(ctx, info); v.info.Epoch > point.Epoch {
			cleanup(ctx, in.Plan, from, op)
			return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"restore point %s of plan %s was made at epoch %d, but the plan is at epoch %d (site %s active): refusing to send it from %s to %s; take a new backup at the active site",
				point.Point, in.Plan, point.Epoch, v.info.Epoch, v.info.Active, from, to), drivers.ReasonFenced, nil)
		}
	}

	var dest activities.CheckDestinationResult
	if err := t.step(ctx, "prepare-destination", func() error {
		return workflow.ExecuteActivity(shortCtx(ctx, siteQueue(ctx, to)), a.CheckDestination,
			activities.CheckDestinationInput{Plan: in.Plan, To: to, Point: point.Point, Epoch: point.Epoch}).Get(ctx, &dest)
	}); err != nil {
		cleanup(ctx, in.Plan, from, op)
		return res, err
	}
	res.AlreadyThere = dest.HasPoint

	if !dest.HasPoint {
		var cp activities.CopyChunksResult
		if err := t.step(ctx, "copy", func() error {
			cpIn := activities.CopyChunksInput{Plan: in.Plan, From: from, To: to, Op: op, Bytes: point.Totals.Bytes}
			// The chunk list copies as ranges over the destination's workers.
			if workflow.GetVersion(ctx, changeParallelCopy, workflow.DefaultVersion, 1) >= 1 && point.Staged > 0 {
				var err error
				cp, err = parallelCopy(ctx, t, info, point.Staged, cpIn)
				return err
			}
			return workflow.ExecuteActivity(longCtx(ctx, siteQueue(ctx, to)), a.CopyChunks, cpIn).Get(ctx, &cp)
		}); err != nil {
			cleanup(ctx, in.Plan, from, op)
			return res, err
		}
		res.Chunks, res.ChunksCopied, res.BytesCopied = cp.Chunks, cp.ChunksCopied, cp.BytesCopied

		if err := t.step(ctx, "commit", func() error {
			return workflow.ExecuteActivity(metaCtx(ctx, siteQueue(ctx, to)), a.CommitTransmit,
				activities.CommitTransmitInput{Plan: in.Plan, From: from, To: to, Op: op, Point: point.Point, Epoch: point.Epoch}).Get(ctx, nil)
		}); err != nil {
			cleanup(ctx, in.Plan, from, op)
			return res, err
		}
	}
	now := workflow.Now(ctx)
	res.RPO = Duration(now.Sub(point.Snapshot))
	cleanup(ctx, in.Plan, from, op)
	res.Duration = Duration(workflow.Now(ctx).Sub(started))
	workflow.GetLogger(ctx).Info("restore point transmitted", "plan", in.Plan, "from", from, "to", to,
		"point", res.Point, "chunksCopied", res.ChunksCopied, "rpo", res.RPO)
	return res, nil
}
