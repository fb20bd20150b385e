package workflows

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/repo"
)

// fakeSite is the restore points of one site, as the mocked activities
// see them.
type fakeSite struct {
	mu     sync.Mutex
	points []repo.RetentionPoint
}

// takePoint is the daily cycle's stand-in for a backup.
func (s *fakeSite) takePoint(_ context.Context, at time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := repo.NewPointID(at, fmt.Sprintf("d%d", len(s.points)))
	s.points = append(s.points, repo.RetentionPoint{ID: id, Time: at})
	return id, nil
}

// dailyCycle takes a point at 02:00 each day for days days, each followed
// by a Forget, as a protect schedule would.
func dailyCycle(ctx workflow.Context, days int) ([]ForgetResult, error) {
	var out []ForgetResult
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: time.Minute})
	for d := 0; d < days; d++ {
		now := workflow.Now(ctx)
		next := time.Date(now.Year(), now.Month(), now.Day()+1, 2, 0, 0, 0, time.UTC)
		if err := workflow.Sleep(ctx, next.Sub(now)); err != nil {
			return out, err
		}
		if err := workflow.ExecuteActivity(actx, "takePoint", workflow.Now(ctx)).Get(ctx, nil); err != nil {
			return out, err
		}
		var res ForgetResult
		cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{WorkflowID: fmt.Sprintf("forget-%d", d)})
		if err := workflow.ExecuteChildWorkflow(cctx, Forget, ForgetInput{Plan: "files", Site: "secondary"}).Get(ctx, &res); err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// TestForgetTwentyDays: 20 simulated days of daily backups, each followed
// by Forget with the default policy, leave today's point and the 14 days
// before it.
func TestForgetTwentyDays(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	site := &fakeSite{}
	env.RegisterActivityWithOptions(site.takePoint, activity.RegisterOptions{Name: "takePoint"})
	env.RegisterActivity(&activities.Activities{})
	grantClaims(env)
	t.Cleanup(func() { env.AssertExpectations(t) })
	env.SetStartTime(time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC))
	env.RegisterWorkflow(Forget)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.QueryLockClaims, mock.Anything, mock.Anything).Return([]activities.LockClaim{}, nil)
	env.OnActivity(a.ApplyRetention, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ApplyRetentionInput) (activities.ApplyRetentionResult, error) {
		site.mu.Lock()
		defer site.mu.Unlock()
		ds := repo.ApplyRetention(site.points, config.DefaultRetention, env.Now(), time.UTC, nil, nil)
		res := activities.ApplyRetentionResult{Decisions: ds, Forgotten: []string{}}
		var kept []repo.RetentionPoint
		for i, d := range ds {
			if d.Keep {
				kept = append(kept, site.points[i])
			} else {
				res.Forgotten = append(res.Forgotten, d.Point)
			}
		}
		site.points = kept
		return res, nil
	})
	env.OnActivity(a.CollectGarbage, mock.Anything, mock.Anything).Return(repo.GCResult{}, nil)
	env.OnActivity(a.CollectWAL, mock.Anything, mock.Anything).Return(repo.WALResult{}, nil)

	env.ExecuteWorkflow(dailyCycle, 20)
	require.NoError(t, env.GetWorkflowError())
	var results []ForgetResult
	require.NoError(t, env.GetWorkflowResult(&results))
	require.Len(t, results, 20)
	var days []int
	for _, p := range site.points {
		days = append(days, p.Time.Day())
	}
	slices.Sort(days)
	// Day 20 is Nov 21 (the first point is taken on Nov 2): kept are Nov 7 … 21.
	var want []int
	for d := 7; d <= 21; d++ {
		want = append(want, d)
	}
	require.Equal(t, want, days, "the points left after 20 days")
	last := results[19]
	require.Len(t, last.Kept, 15)
	require.Len(t, last.Forgotten, 1, "each day forgets the point that fell out of the 15 days")
	require.Empty(t, results[13].Forgotten, "nothing is forgotten before there are more than 15 points")
	require.Len(t, results[14].Forgotten, 0)
	require.Len(t, results[15].Forgotten, 1)
}

func TestForgetKeepsEverythingWhileATargetIsInUse(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.QueryLockClaims, mock.Anything, mock.Anything).Return([]activities.LockClaim{
		{Resource: ResTarget("primary", "/restore/here"), Holder: "drorch/files/restore-x", What: "restore into /restore/here"},
		{Resource: ResTarget("secondary", ""), Holder: "other-site", What: "restore at the other site"},
	}, nil)
	env.OnActivity(a.ApplyRetention, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ApplyRetentionInput) (activities.ApplyRetentionResult, error) {
		require.Contains(t, in.KeepAll, "restore into /restore/here")
		require.NotContains(t, in.KeepAll, "other site")
		return activities.ApplyRetentionResult{Forgotten: []string{}}, nil
	}).Once()
	env.OnActivity(a.CollectGarbage, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CollectGarbageInput) (repo.GCResult, error) {
		require.NotEmpty(t, in.NoSweep, "a run while a point may be read must not delete")
		return repo.GCResult{NoSweep: in.NoSweep}, nil
	}).Once()
	env.OnActivity(a.CollectWAL, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CollectWALInput) (repo.WALResult, error) {
		require.NotEmpty(t, in.NoSweep, "a run while a point may be read must not delete WAL")
		return repo.WALResult{NoSweep: in.NoSweep}, nil
	}).Once()
	env.ExecuteWorkflow(Forget, ForgetInput{Plan: "files", Site: "primary"})
	require.NoError(t, env.GetWorkflowError())
	var res ForgetResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.Contains(t, res.InUse, "restore into")
}

// A forget whose retention/<site> a switch takes over stops before it
// deletes anything: its step is waited for until cancelled, garbage
// collection never runs, and it fails as superseded.
func TestForgetRevokedStopsBeforeDeleting(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.QueryLockClaims, mock.Anything, mock.Anything).Return([]activities.LockClaim{}, nil)
	var called atomic.Bool
	env.OnActivity(a.ApplyRetention, mock.Anything, mock.Anything).Return(func(ctx context.Context, _ activities.ApplyRetentionInput) (activities.ApplyRetentionResult, error) {
		called.Store(true)
		<-ctx.Done()
		return activities.ApplyRetentionResult{}, ctx.Err()
	}).Once()
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalRevoke, ClaimRevoke{By: "drorch/files/switch", What: "unplanned failover to secondary", Resource: []string{ResRetention("secondary")}})
	}, time.Second)
	env.ExecuteWorkflow(Forget, ForgetInput{Plan: "files", Site: "secondary"})
	require.ErrorContains(t, env.GetWorkflowError(), "superseded: unplanned failover to secondary (workflow drorch/files/switch) took over retention/secondary")
	require.True(t, called.Load())
	// The test environment does not wait for a cancelled activity: check
	// that Forget's steps ask Temporal to.
	env = newEnv(t)
	env.ExecuteWorkflow(func(ctx workflow.Context) (bool, error) {
		return workflow.GetActivityOptions(stopCtx(ctx, "primary")).WaitForCancellation, nil
	})
	var waits bool
	require.NoError(t, env.GetWorkflowResult(&waits))
	require.True(t, waits, "the claim would be let go before the step stopped")
}

// recordClaims grants every claim and records the requests.
func recordClaims(t *testing.T) (*testsuite.TestWorkflowEnvironment, *[]ClaimRequest) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Activities{})
	var mu sync.Mutex
	var reqs []ClaimRequest
	var a *activities.Activities
	env.OnActivity(a.RequestClaim, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.RequestClaimInput) error {
		var req ClaimRequest
		b, _ := json.Marshal(in.Request)
		_ = json.Unmarshal(b, &req)
		mu.Lock()
		reqs = append(reqs, req)
		mu.Unlock()
		env.RegisterDelayedCallback(func() {
			_ = env.SignalWorkflowByID(req.Holder, SignalClaimReply, ClaimReply{ID: req.ID, Granted: true})
		}, 0)
		return nil
	}).Maybe()
	env.OnSignalExternalWorkflow(mock.Anything, mock.Anything, mock.Anything, mock.Anything, mock.Anything).Return(nil).Maybe()
	env.OnActivity(a.GetSiteState, mock.Anything, mock.Anything).Return(activities.SiteState{}, nil).Maybe()
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil).Maybe()
	return env, &reqs
}

func hasRequest(reqs []ClaimRequest, mode, resource string) bool {
	return slices.ContainsFunc(reqs, func(r ClaimRequest) bool { return r.Mode == mode && slices.Contains(r.Resources, resource) })
}

// A restore checks, once it holds its target, that no forget runs at its
// site; a pin holds retention/<site> while it writes.
func TestReadersAndPinsClaimRetention(t *testing.T) {
	env, reqs := recordClaims(t)
	var a *activities.Activities
	env.OnActivity(a.PrepareRestore, mock.Anything, mock.Anything).Return(activities.PrepareRestoreResult{}, fmt.Errorf("stop here")).Maybe()
	env.OnActivity(a.AccessStatus, mock.Anything, mock.Anything).Return([]activities.ResourceState{}, nil).Maybe()
	env.ExecuteWorkflow(Restore, RestoreInput{Plan: "files", Site: "secondary"})
	require.True(t, hasRequest(*reqs, ClaimRefuse, ResTarget("secondary", "")), "%+v", *reqs)
	require.True(t, hasRequest(*reqs, ClaimCheck, ResRetention("secondary")), "restore: %+v", *reqs)

	env, reqs = recordClaims(t)
	env.OnActivity(a.PinPoint, mock.Anything, mock.Anything).Return(nil).Once()
	env.ExecuteWorkflow(Pin, PinInput{Plan: "files", Site: "primary", Point: "p"})
	require.NoError(t, env.GetWorkflowError())
	require.True(t, hasRequest(*reqs, ClaimRefuse, ResRetention("primary")), "pin: %+v", *reqs)
}

// A switch asks for retention/<site> with the target it takes over, with
// preempt: a forget running there stops instead of refusing the switch.
func TestSwitchTakesRetentionOver(t *testing.T) {
	env, reqs := recordClaims(t)
	env.ExecuteWorkflow(func(ctx workflow.Context) error {
		return claimTargets(ctx, "files", "unplanned failover to secondary", "secondary")
	})
	require.NoError(t, env.GetWorkflowError())
	require.True(t, hasRequest(*reqs, ClaimPreempt, ResTarget("secondary", "")), "%+v", *reqs)
	require.True(t, hasRequest(*reqs, ClaimPreempt, ResRetention("secondary")), "%+v", *reqs)
}

// A dry run's WAL retention counts the points it would forget as gone, and
// its result is reported when the repository holds WAL.
func TestForgetReportsWAL(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.QueryLockClaims, mock.Anything, mock.Anything).Return([]activities.LockClaim{}, nil)
	env.OnActivity(a.ApplyRetention, mock.Anything, mock.Anything).Return(activities.ApplyRetentionResult{Forgotten: []string{"p1"}}, nil).Once()
	env.OnActivity(a.CollectGarbage, mock.Anything, mock.Anything).Return(repo.GCResult{}, nil).Once()
	env.OnActivity(a.CollectWAL, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CollectWALInput) (repo.WALResult, error) {
		require.True(t, in.DryRun)
		require.Equal(t, []string{"p1"}, in.Forgotten)
		return repo.WALResult{Files: 3, Deleted: 2, KeptFrom: "000000010000000000000003"}, nil
	}).Once()
	env.ExecuteWorkflow(Forget, ForgetInput{Plan: "files", Site: "primary", DryRun: true})
	require.NoError(t, env.GetWorkflowError())
	var res ForgetResult
	require.NoError(t, env.GetWorkflowResult(&res))
	require.NotNil(t, res.WAL)
	require.Equal(t, 2, res.WAL.Deleted)
	require.Equal(t, "000000010000000000000003", res.WAL.KeptFrom)
}
