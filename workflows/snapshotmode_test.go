package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/activities"
)

// A source with a snapshot mode is read from its view: made after the pre
// hooks, listed and uploaded from, and removed when the backup ends (after
// the commit, or after a failure with ok false), before the post hooks.
func TestBackupReadsTheSourceSnapshot(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "committed", true: "upload failed"}[fail], func(t *testing.T) {
			env := newEnvWithHooks(t)
			var a *activities.Activities
			var steps []string
			var removeOK bool
			env.OnActivity(a.SourceHooks, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SourceHooksInput) (activities.SourceHooksResult, error) {
				steps = append(steps, in.Phase)
				return activities.SourceHooksResult{Hooks: true, Post: true}, nil
			})
			env.OnActivity(a.SourceSnapshot, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SourceSnapshotInput) (activities.SourceSnapshotResult, error) {
				steps = append(steps, in.Phase)
				if in.Phase == "remove" {
					removeOK = in.OK
					return activities.SourceSnapshotResult{Mode: "reflink", Warnings: []string{"clone not removed"}}, nil
				}
				return activities.SourceSnapshotResult{Mode: "reflink", Path: "/srv/.drorch-snapshot-files-backup-1/tree"}, nil
			})
			env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
			env.OnActivity(a.PrepareSite, mock.Anything, mock.Anything).Return(activities.PrepareSiteResult{Epoch: 1}, nil)
			env.OnActivity(a.Snapshot, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SnapshotInput) (activities.SnapshotResult, error) {
				require.True(t, in.FromSnapshot)
				steps = append(steps, "list")
				return activities.SnapshotResult{Pieces: 1, Snapshot: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}, nil
			})
			env.OnActivity(a.Upload, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.UploadInput) (activities.UploadResult, error) {
				require.True(t, in.FromSnapshot)
				steps = append(steps, "upload")
				if fail {
					return activities.UploadResult{}, temporal.NewNonRetryableApplicationError("disk gone", "NotFound", nil)
				}
				return activities.UploadResult{}, nil
			})
			env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil).Maybe()
			env.OnActivity(a.Commit, mock.Anything, mock.Anything).Return(func(context.Context, activities.CommitInput) (activities.CommitResult, error) {
				steps = append(steps, "commit")
				return activities.CommitResult{}, nil
			}).Maybe()

			env.ExecuteWorkflow(Backup, BackupInput{Plan: "files"})
			if fail {
				require.ErrorContains(t, env.GetWorkflowError(), "disk gone")
				require.Equal(t, []string{"pre", "create", "list", "upload", "remove", "post"}, steps)
				require.False(t, removeOK)
				return
			}
			require.NoError(t, env.GetWorkflowError())
			require.Equal(t, []string{"pre", "create", "list", "upload", "commit", "remove", "post"}, steps)
			require.True(t, removeOK)
			var res BackupResult
			require.NoError(t, env.GetWorkflowResult(&res))
			require.Equal(t, []string{"clone not removed"}, res.HookWarnings)
		})
	}
}
