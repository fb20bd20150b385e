package workflows

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/repo"
)

// protectEnv is a test environment whose Protect children are mocks.
// Every site answers with no epoch (the configured primary is active) and,
// once the cycle ran, with its newest point aged age.
func protectEnv(t *testing.T, info activities.PlanInfo, now time.Time, age time.Duration) *testsuite.TestWorkflowEnvironment {
	return protectEnvWith(t, info, now, func(in activities.SiteStateInput) (activities.SiteState, error) {
		return activities.SiteState{Site: in.Site, Latest: "p2", LatestTime: now.Add(-age)}, nil
	})
}

// protectEnvWith is protectEnv with the sites answering state.
func protectEnvWith(t *testing.T, info activities.PlanInfo, now time.Time, state func(activities.SiteStateInput) (activities.SiteState, error)) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Activities{})
	grantClaims(env)
	t.Cleanup(func() { env.AssertExpectations(t) })
	env.SetStartTime(now)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, activities.DescribeInput{Plan: "files"}).Return(info, nil).Once()
	env.OnActivity(a.GetSiteState, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SiteStateInput) (activities.SiteState, error) {
		return state(in)
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
			env.OnWorkflow(Backup, mock.Anything, BackupInput{Plan: "files", Site: "primary"}).Return(BackupResult{Point: "p2", BytesRead: 100, BytesNew: 10}, nil).Once()
			env.OnWorkflow(Transmit, mock.Anything, TransmitInput{Plan: "files", From: "primary", To: "secondary", Point: "p2"}).Return(TransmitResult{Point: "p2", BytesCopied: 10}, nil).Once()
			env.OnWorkflow(Restore, mock.Anything, RestoreInput{Plan: "files", Site: "secondary", Point: "p2", Refresh: true}).Return(RestoreResult{Point: "p2", Duration: Duration(3 * time.Second)}, nil).Once()
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

// A warm refresh never writes over a target that holds data of its own.
func TestRefreshRefusal(t *testing.T) {
	roles := activities.PlanInfo{Primary: "primary", Secondary: "secondary", Active: "primary"}
	afterFailover := activities.PlanInfo{Primary: "primary", Secondary: "secondary", Active: "secondary"}
	for _, c := range []struct {
		name   string
		roles  activities.PlanInfo
		site   string
		st     *activities.SiteState
		refuse string
	}{
		{"fresh secondary", roles, "secondary", &activities.SiteState{}, ""},
		{"refreshed secondary", roles, "secondary", &activities.SiteState{StandbyKnown: true, Standby: "p1"}, ""},
		{"secondary that took writes", roles, "secondary", &activities.SiteState{StandbyKnown: true}, "has taken writes"},
		{"primary after a failover", afterFailover, "primary", &activities.SiteState{}, "is the plan's primary"},
		{"primary synced by a switchover", afterFailover, "primary", &activities.SiteState{StandbyKnown: true, Standby: "p9"}, ""},
		{"the active site", afterFailover, "secondary", &activities.SiteState{StandbyKnown: true, Standby: "p1"}, "is the plan's active site"},
		{"unreadable", roles, "secondary", nil, "cannot be read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := refreshRefusal(c.roles, c.site, c.st)
			if c.refuse == "" && got != "" || c.refuse != "" && !strings.Contains(got, c.refuse) {
				t.Errorf("refreshRefusal = %q, want %q", got, c.refuse)
			}
		})
	}
}

// After an unplanned failover the old primary is a standby whose target
// holds its own writes: the cycle protects from the new active site and
// leaves the old primary's data alone, without failing.
func TestProtectDoesNotRefreshTheOldPrimary(t *testing.T) {
	info := plan
	info.Standby = "warm"
	now := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	env := protectEnvWith(t, info, now, func(in activities.SiteStateInput) (activities.SiteState, error) {
		return activities.SiteState{Site: in.Site, Latest: "p2", LatestTime: now, Epoch: repo.Epoch{Epoch: 2, Site: "secondary", Active: "secondary"}}, nil
	})
	env.OnWorkflow(Backup, mock.Anything, BackupInput{Plan: "files", Site: "secondary"}).Return(BackupResult{Point: "p2"}, nil).Once()
	env.OnWorkflow(Transmit, mock.Anything, TransmitInput{Plan: "files", From: "secondary", To: "primary", Point: "p2"}).Return(TransmitResult{Point: "p2"}, nil).Once()
	env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files", SkipRetention: true})
	require.NoError(t, env.GetWorkflowError())
	var res ProtectResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Equal(t, "secondary", res.Active)
	require.Len(t, res.Sites, 2)
	old := res.Sites[1]
	require.Equal(t, "primary", old.Site)
	require.False(t, old.Refreshed)
	require.Contains(t, old.RefreshSkipped, "is the plan's primary")
	require.Empty(t, res.Failures)
}

// A switch begun after the cycle started refuses its transmit and
// retention: those steps wait for the next cycle, and the run does not
// fail for it.
func TestProtectDefersStepsASwitchRefuses(t *testing.T) {
	info := plan
	now := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	env := protectEnv(t, info, now, time.Minute)
	refused := temporal.NewNonRetryableApplicationError("plan files: transmit from primary to secondary refused: a planned failover of the plan is running", "ClaimRefused", nil)
	env.OnWorkflow(Backup, mock.Anything, BackupInput{Plan: "files", Site: "primary"}).Return(BackupResult{Point: "p2"}, nil).Once()
	env.OnWorkflow(Transmit, mock.Anything, mock.Anything).Return(TransmitResult{}, refused).Once()
	env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files", SkipRetention: true})
	require.NoError(t, env.GetWorkflowError())
	var res ProtectResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Empty(t, res.Failures)
	require.Contains(t, res.Sites[1].Deferred, "transmit: plan files: transmit from primary to secondary refused")
}
