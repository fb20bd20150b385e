package workflows

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

var plan = activities.PlanInfo{Plan: "files", Primary: "primary", Secondary: "secondary", Active: "primary"}

func newEnv(t *testing.T) *testsuite.TestWorkflowEnvironment {
	env := newEnvWithHooks(t)
	// The source has no hooks and no snapshot mode.
	env.OnActivity((*activities.Activities)(nil).SourceHooks, mock.Anything, mock.Anything).Return(activities.SourceHooksResult{}, nil).Maybe()
	env.OnActivity((*activities.Activities)(nil).SourceSnapshot, mock.Anything, mock.Anything).Return(activities.SourceSnapshotResult{}, nil).Maybe()
	return env
}

// newEnvWithHooks leaves the source's hooks and snapshot to the test.
func newEnvWithHooks(t *testing.T) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Activities{})
	grantClaims(env)
	// Both sites answer, with no epoch: the configured primary is active.
	env.OnActivity((*activities.Activities)(nil).GetSiteState, mock.Anything, mock.Anything).Return(activities.SiteState{}, nil).Maybe()
	t.Cleanup(func() { env.AssertExpectations(t) })
	return env
}

func TestBackupRunsItsStepsOnTheActiveSite(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	snap := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	env.OnActivity(a.Describe, mock.Anything, activities.DescribeInput{Plan: "files"}).Return(plan, nil).Once()
	env.OnActivity(a.PrepareSite, mock.Anything, activities.PrepareSiteInput{Plan: "files", Site: "primary"}).
		Return(activities.PrepareSiteResult{Repository: "s3://x/drorch/files", Epoch: 3}, nil).Once()
	var op string
	env.OnActivity(a.Snapshot, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SnapshotInput) (activities.SnapshotResult, error) {
		op = in.Op
		return activities.SnapshotResult{Snapshot: snap, Entries: 3, Files: 2, Bytes: 100, Pieces: 2}, nil
	}).Once()
	// Each piece is a range of its own, run on the site's data queue.
	var ranges [][2]int
	var rangesMu sync.Mutex // the two ranges' mocks run at once
	env.OnActivity(a.Upload, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.UploadInput) (activities.UploadResult, error) {
		require.Equal(t, op, in.Op)
		require.Equal(t, 2, in.Pieces)
		require.True(t, strings.HasSuffix(activity.GetInfo(ctx).TaskQueue, "-primary.data"), activity.GetInfo(ctx).TaskQueue)
		rangesMu.Lock()
		ranges = append(ranges, [2]int{in.From, in.To})
		rangesMu.Unlock()
		return activities.UploadResult{BytesRead: 50, BytesNew: 20, BytesStored: 10, Chunks: 2, ChunksNew: 1, Parent: "p0"}, nil
	}).Twice()
	env.OnActivity(a.Commit, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CommitInput) (activities.CommitResult, error) {
		require.Equal(t, uint64(3), in.Epoch, "the commit must check against the epoch the backup started with")
		require.Equal(t, "primary", in.Site)
		require.NoError(t, repo.ValidPointID(in.Point))
		return activities.CommitResult{Point: in.Point, Totals: repo.Totals{Entries: 3, Files: 2, Bytes: 100}}, nil
	}).Once()

	env.ExecuteWorkflow(Backup, BackupInput{Plan: "files"})
	require.NoError(t, env.GetWorkflowError())
	var res BackupResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "primary", res.Site)
	require.ElementsMatch(t, [][2]int{{0, 1}, {1, 2}}, ranges)
	require.Equal(t, int64(100), res.BytesRead, "the ranges' results are summed")
	require.Equal(t, int64(40), res.BytesNew)
	require.Equal(t, int64(2), res.ChunksNew)
	require.Equal(t, "p0", res.Parent)
	require.Equal(t, snap, res.Snapshot)
	pt, err := repo.PointTime(res.Point)
	require.NoError(t, err)
	require.Equal(t, snap, pt)

	v, err := env.QueryWorkflow(QueryProgress)
	require.NoError(t, err)
	var p Progress
	require.NoError(t, v.Get(&p))
	require.Equal(t, "done", p.Step)
	var names []string
	for _, s := range p.Steps {
		names = append(names, s.Name)
	}
	require.Equal(t, []string{"describe", "prepare", "snapshot", "upload", "commit"}, names)
}

func TestBackupFailureCleansStagingAndSaysWhy(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.PrepareSite, mock.Anything, mock.Anything).Return(activities.PrepareSiteResult{Epoch: 1}, nil)
	env.OnActivity(a.Snapshot, mock.Anything, mock.Anything).Return(activities.SnapshotResult{Pieces: 1, Snapshot: time.Now()}, nil)
	env.OnActivity(a.Upload, mock.Anything, mock.Anything).Return(activities.UploadResult{},
		temporal.NewNonRetryableApplicationError("file \"x\" changed while it was read", "SourceChanged", nil)).Once()
	env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil).Once()

	env.ExecuteWorkflow(Backup, BackupInput{Plan: "files"})
	err := env.GetWorkflowError()
	require.Error(t, err)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	require.Equal(t, "SourceChanged", app.Type())
	v, qerr := env.QueryWorkflow(QueryProgress)
	require.NoError(t, qerr)
	var p Progress
	require.NoError(t, v.Get(&p))
	require.Equal(t, "failed", p.Step)
	require.Contains(t, p.Error, "changed while it was read")
}

func TestInputErrorsAreNotRetried(t *testing.T) {
	for name, in := range map[string]BackupInput{
		"no plan":      {},
		"unknown site": {Plan: "files", Site: "moon"},
	} {
		t.Run(name, func(t *testing.T) {
			var s testsuite.WorkflowTestSuite
			env := s.NewTestWorkflowEnvironment()
			var a *activities.Activities
			env.RegisterActivity(a)
			env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil).Maybe()
			env.ExecuteWorkflow(Backup, in)
			var app *temporal.ApplicationError
			require.True(t, errors.As(env.GetWorkflowError(), &app))
			require.True(t, app.NonRetryable())
			require.Equal(t, "InvalidInput", app.Type())
		})
	}
}

func TestTransmitSkipsCopyWhenTheDestinationHasThePoint(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	snap := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.PrepareTransmit, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.PrepareTransmitInput) (activities.PointSummary, error) {
		require.Equal(t, "primary", in.From)
		return activities.PointSummary{Point: "p1", Snapshot: snap, Epoch: 2}, nil
	})
	env.OnActivity(a.CheckDestination, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CheckDestinationInput) (activities.CheckDestinationResult, error) {
		require.Equal(t, "secondary", in.To)
		require.Equal(t, uint64(2), in.Epoch)
		return activities.CheckDestinationResult{HasPoint: true}, nil
	})
	env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil).Once()

	env.ExecuteWorkflow(Transmit, TransmitInput{Plan: "files"})
	require.NoError(t, env.GetWorkflowError())
	var res TransmitResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.True(t, res.AlreadyThere)
	require.Equal(t, int64(0), res.ChunksCopied)
	require.Equal(t, "secondary", res.To)
}

func TestTransmitCopiesThenCommits(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.PrepareTransmit, mock.Anything, mock.Anything).Return(activities.PointSummary{Point: "p1", Epoch: 1, Snapshot: time.Now()}, nil)
	env.OnActivity(a.CheckDestination, mock.Anything, mock.Anything).Return(activities.CheckDestinationResult{}, nil)
	env.OnActivity(a.CopyChunks, mock.Anything, mock.Anything).Return(activities.CopyChunksResult{Chunks: 10, ChunksCopied: 4, BytesCopied: 400}, nil).Once()
	env.OnActivity(a.CommitTransmit, mock.Anything, mock.Anything).Return(activities.PointSummary{Point: "p1"}, nil).Once()
	env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil).Once()

	env.ExecuteWorkflow(Transmit, TransmitInput{Plan: "files", From: "secondary"})
	require.NoError(t, env.GetWorkflowError())
	var res TransmitResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "primary", res.To, "the default destination is the other site")
	require.Equal(t, int64(4), res.ChunksCopied)
}

func TestWorkflowIDIsReadable(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 1, 50, 123e6, time.FixedZone("x", 3600))
	require.Equal(t, "drorch/files/backup/2026-11-22T09:01:50.123Z", WorkflowID("files", OpBackup, at))
	require.Equal(t, "drorch/files/points/primary/2026-11-22T09:01:50.123Z", WorkflowID("files", OpPoints, at, "primary"))
}
