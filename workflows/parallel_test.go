package workflows

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/activities"
)

func TestSpansCoverEveryItemOnceInAtMostTwicePRanges(t *testing.T) {
	for _, c := range []struct{ n, p, want int }{
		{0, 4, 0}, {1, 4, 1}, {5, 4, 5}, {8, 4, 8}, {9, 4, 5}, {100, 4, 8}, {101, 4, 8}, {7, 1, 2}, {3, 0, 2},
	} {
		ss := spans(c.n, c.p)
		require.Len(t, ss, c.want, "spans(%d, %d)", c.n, c.p)
		next := 0
		for _, s := range ss {
			require.Equal(t, next, s.from, "spans(%d, %d): contiguous", c.n, c.p)
			require.Greater(t, s.to, s.from)
			next = s.to
		}
		require.Equal(t, c.n, next, "spans(%d, %d): every item", c.n, c.p)
	}
}

// A failing range stops the backup: the ranges still running are cancelled,
// no other starts, the staging is removed and the error is the failing
// range's. (That a cancelled range is waited for before the cleanup is
// WaitForCancellation's, which the test environment does not model.)
func TestBackupRangeFailureCancelsTheOthersThenCleansUp(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	info := plan
	info.Parallel = 2
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(info, nil)
	env.OnActivity(a.PrepareSite, mock.Anything, mock.Anything).Return(activities.PrepareSiteResult{Epoch: 1}, nil)
	env.OnActivity(a.Snapshot, mock.Anything, mock.Anything).Return(activities.SnapshotResult{Pieces: 8, Snapshot: time.Now()}, nil)
	var mu sync.Mutex
	var started []int
	env.OnActivity(a.Upload, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.UploadInput) (activities.UploadResult, error) {
		mu.Lock()
		started = append(started, in.From)
		mu.Unlock()
		if in.From == 0 {
			return activities.UploadResult{}, temporal.NewNonRetryableApplicationError("file \"x\" changed while it was read", "SourceChanged", nil)
		}
		for {
			activity.RecordHeartbeat(ctx)
			select {
			case <-ctx.Done():
				return activities.UploadResult{}, ctx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil).Once()

	env.ExecuteWorkflow(Backup, BackupInput{Plan: "files"})
	err := env.GetWorkflowError()
	require.Error(t, err)
	require.Contains(t, err.Error(), "changed while it was read")
	mu.Lock()
	defer mu.Unlock()
	// Range 2 may or may not have begun when range 0 failed; 4 and 6 never.
	require.Contains(t, started, 0)
	require.Subset(t, []int{0, 2}, started, "at most parallel (2) ranges run at once, and none starts after a failure")
}

func TestTransmitCopiesRangesOnTheDestinationsDataQueue(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	info := plan
	info.Parallel = 2
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(info, nil)
	env.OnActivity(a.PrepareTransmit, mock.Anything, mock.Anything).Return(activities.PointSummary{Point: "p1", Epoch: 1, Snapshot: time.Now(), Staged: 10}, nil)
	env.OnActivity(a.CheckDestination, mock.Anything, mock.Anything).Return(activities.CheckDestinationResult{}, nil)
	var mu sync.Mutex
	covered := make([]int, 10)
	env.OnActivity(a.CopyChunks, mock.Anything, mock.Anything).Return(func(ctx context.Context, in activities.CopyChunksInput) (activities.CopyChunksResult, error) {
		require.True(t, strings.HasSuffix(activity.GetInfo(ctx).TaskQueue, "-secondary.data"), activity.GetInfo(ctx).TaskQueue)
		mu.Lock()
		defer mu.Unlock()
		for i := in.ChunkFrom; i < in.ChunkTo; i++ {
			covered[i]++
		}
		n := int64(in.ChunkTo - in.ChunkFrom)
		return activities.CopyChunksResult{Chunks: n, ChunksCopied: n, BytesCopied: 100 * n}, nil
	}).Times(4)
	env.OnActivity(a.CommitTransmit, mock.Anything, mock.Anything).Return(activities.PointSummary{Point: "p1"}, nil).Once()
	env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil).Once()

	env.ExecuteWorkflow(Transmit, TransmitInput{Plan: "files"})
	require.NoError(t, env.GetWorkflowError())
	var res TransmitResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, covered, "every staged chunk is in exactly one range")
	require.Equal(t, int64(10), res.Chunks)
	require.Equal(t, int64(10), res.ChunksCopied)
	require.Equal(t, int64(1000), res.BytesCopied)
}
