package workflows

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
)

// protectEnv is a test environment whose Protect children are mocks.
// Every site answers with no epoch (the configured primary is active) and,
// once the cycle ran, with its newest point aged age.
func protectEnv(t *testing.T, info activities.PlanInfo, now time.Time, age time.Duration) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Activities{})
	grantClaims(env)
	t.Cleanup(func() { env.AssertExpectations(t) })
	env.SetStartTime(now)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, activities.DescribeInput{Plan: "files"}).Return(info, nil).Once()
	env.OnActivity(a.GetSiteState, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SiteStateInput) (activities.SiteState, error) {
		return activities.SiteState{Site: in.Site, Latest: "p2", LatestTime: now.Add(-age)}, nil
	}).Maybe()
	return env
}

func TestProtectOutsideItsWindowIsSkipped(t *testing.T) {
	info := plan
	info.Window, info.TimeZone = "01:00-05:00", "Europe/Berlin"
	// 10:00 UTC is 11:00 in Berlin: outside the window.
	env := protectEnv(t, info, time.Date(2026, 1, 10, 10, 0, 0, 0, time.UTC), 0)
	env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files"})
	require.NoError(t, env.GetWorkflowError())
	var res ProtectResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Contains(t, res.Skipped, "outside the schedule's window 01:00-05:00 (Europe/Berlin): it is 11:00 there")
	require.Empty(t, res.Point)
}

func TestProtectRunsTheCycleAndMeasuresTheRPO(t *testing.T) {
	for _, tc := range []struct {
		name     string
		age      time.Duration // of the secondary's newest point at the end
		breached bool
	}{
		{"within the objective", 30 * time.Second, false},
		{"breached", 20 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := plan
			info.Standby, info.Objectives.RPO = config.StandbyWarm, 15*time.Minute
			// 03:00 UTC is 04:00 in Berlin: inside the window.
			now := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
			info.Window, info.TimeZone = "01:00-05:00", "Europe/Berlin"
			env := protectEnv(t, info, now, tc.age)
			var a *activities.Activities
			env.OnWorkflow(Backup, mock.Anything, BackupInput{Plan: "files", Site: "primary"}).Return(BackupResult{Point: "p2", BytesRead: 100, BytesNew: 10}, nil).Once()
			env.OnWorkflow(Transmit, mock.Anything, TransmitInput{Plan: "files", From: "primary", To: "secondary", Point: "p2"}).Return(TransmitResult{Point: "p2", BytesCopied: 10}, nil).Once()
			env.OnActivity(a.AccessStatus, mock.Anything, mock.Anything).Return([]activities.ResourceState{}, nil).Once()
			env.OnWorkflow(Restore, mock.Anything, RestoreInput{Plan: "files", Site: "secondary", Point: "p2"}).Return(RestoreResult{Point: "p2", Duration: Duration(3 * time.Second)}, nil).Once()
			env.OnActivity(a.MarkStandby, mock.Anything, activities.MarkStandbyInput{Plan: "files", Site: "secondary", Point: "p2", Took: 3 * time.Second}).Return(nil).Once()
			env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files", SkipRetention: true})
			require.NoError(t, env.GetWorkflowError())
			var res ProtectResult
			require.NoError(t, env.GetWorkflowResult(&res))
			require.Equal(t, "primary", res.Active)
			require.Equal(t, "p2", res.Point)
			require.Len(t, res.Sites, 2)
			require.Equal(t, ProtectSite{Site: "primary", Role: "active", Point: "p2", Retention: "skipped"}, res.Sites[0])
			sec := res.Sites[1]
			require.Equal(t, "p2", sec.Point)
			require.True(t, sec.Refreshed)
			require.Equal(t, Duration(3*time.Second), sec.RefreshTook)
			require.InDelta(t, tc.age.Seconds(), sec.RPO.Seconds(), 2)
			require.Equal(t, tc.breached, res.RPOBreached)
			require.Equal(t, int64(10), res.BytesCopied)
		})
	}
}
