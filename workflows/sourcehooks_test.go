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

// The post hooks run when a backup ends: after a failed upload with ok
// false, and their failures become the result's warnings, not its error.
func TestBackupRunsPostHooksWhenItEnds(t *testing.T) {
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "committed", true: "upload failed"}[fail], func(t *testing.T) {
			env := newEnvWithHooks(t)
			var a *activities.Activities
			var phases []string
			var postOK bool
			env.OnActivity(a.SourceHooks, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SourceHooksInput) (activities.SourceHooksResult, error) {
				phases = append(phases, in.Phase)
				if in.Phase == "pre" {
					return activities.SourceHooksResult{Hooks: true, Post: true}, nil
				}
				postOK = in.OK
				return activities.SourceHooksResult{Warnings: []string{"post hook 1 at primary: thaw: exit status 1"}}, nil
			})
			env.OnActivity(a.SourceSnapshot, mock.Anything, mock.Anything).Return(activities.SourceSnapshotResult{}, nil)
			env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
			env.OnActivity(a.PrepareSite, mock.Anything, mock.Anything).Return(activities.PrepareSiteResult{Epoch: 1}, nil)
			env.OnActivity(a.Snapshot, mock.Anything, mock.Anything).Return(func(context.Context, activities.SnapshotInput) (activities.SnapshotResult, error) {
				phases = append(phases, "snapshot")
				return activities.SnapshotResult{Pieces: 1, Snapshot: time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)}, nil
			})
			if fail {
				env.OnActivity(a.Upload, mock.Anything, mock.Anything).Return(activities.UploadResult{},
					temporal.NewNonRetryableApplicationError("source gone", "NotFound", nil))
				env.OnActivity(a.Cleanup, mock.Anything, mock.Anything).Return(nil)
			} else {
				env.OnActivity(a.Upload, mock.Anything, mock.Anything).Return(activities.UploadResult{}, nil)
				env.OnActivity(a.Commit, mock.Anything, mock.Anything).Return(activities.CommitResult{}, nil)
			}

			env.ExecuteWorkflow(Backup, BackupInput{Plan: "files"})
			require.Equal(t, []string{"pre", "snapshot", "post"}, phases)
			require.Equal(t, !fail, postOK)
			if fail {
				require.ErrorContains(t, env.GetWorkflowError(), "source gone")
				return
			}
			require.NoError(t, env.GetWorkflowError())
			var res BackupResult
			require.NoError(t, env.GetWorkflowResult(&res))
			require.Equal(t, []string{"post hook 1 at primary: thaw: exit status 1"}, res.HookWarnings)
		})
	}
}
