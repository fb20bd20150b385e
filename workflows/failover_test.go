package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

// switchEnv mocks every activity of a failover and records what was done to
// which site, in order.
type switchEnv struct {
	*testsuite.TestWorkflowEnvironment
	mu     sync.Mutex
	log    []string
	epochs map[string]repo.Epoch                 // each site's epoch.json
	lags   []time.Duration                       // how old each backup's snapshot is when it ends, in turn; then 0
	access map[string][]activities.ResourceState // what AccessStatus reports at each site
}

func (e *switchEnv) did(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

// newSwitchEnv mocks the activities; fail makes the named steps fail, and
// standby, when given, is the point the secondary's standby target holds.
func newSwitchEnv(t *testing.T, info activities.PlanInfo, fail map[string]error, standby ...string) *switchEnv {
	var s testsuite.WorkflowTestSuite
	e := &switchEnv{TestWorkflowEnvironment: s.NewTestWorkflowEnvironment(), epochs: map[string]repo.Epoch{"primary": {Epoch: 3}, "secondary": {Epoch: 3}}}
	e.RegisterActivity(&activities.Activities{})
	grantClaims(e.TestWorkflowEnvironment)
	e.OnActivity(act.SettleTarget, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SettleTargetInput) (activities.SettleTargetResult, error) {
		if len(standby) > 0 && in.Site == "secondary" {
			return activities.SettleTargetResult{Standby: standby[0]}, nil
		}
		return activities.SettleTargetResult{}, nil
	}).Maybe()
	for _, wf := range All {
		e.RegisterWorkflow(wf)
	}
	pointTime := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	e.OnActivity(act.Describe, mock.Anything, mock.Anything).Return(info, nil)
	e.OnActivity(act.GetSiteState, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SiteStateInput) (activities.SiteState, error) {
		if err := fail["state "+in.Site]; err != nil {
			return activities.SiteState{}, err
		}
		if in.Point == "missing" {
			return activities.SiteState{}, temporal.NewNonRetryableApplicationError("site "+in.Site+": manifest missing not found", "NotFound", nil)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		st := activities.SiteState{Site: in.Site, Epoch: e.epochs[in.Site], Latest: "p1", LatestTime: pointTime}
		if in.Site == "secondary" && len(standby) > 0 {
			st.Standby = standby[0]
		}
		return st, nil
	})
	e.OnActivity(act.AccessStatus, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.AccessStatusInput) ([]activities.ResourceState, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.access[in.Site], fail["status "+in.Site]
	})
	e.OnActivity(act.SetAccess, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SetAccessInput) ([]activities.ResourceState, error) {
		key := string(in.Mode) + " " + in.Site
		if err := fail[key]; err != nil {
			return nil, err
		}
		e.did(key)
		return nil, nil
	})
	e.OnActivity(act.SetEpoch, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SetEpochInput) (repo.Epoch, error) {
		if err := fail["epoch "+in.Site]; err != nil {
			return repo.Epoch{}, err
		}
		what := "epoch " + in.Site + " active=" + in.Active
		if in.Primary != "" {
			what += " primary=" + in.Primary
		}
		e.did(what)
		e.mu.Lock()
		defer e.mu.Unlock()
		n := max(e.epochs[in.Site].Epoch, in.Min) + 1
		if in.Adopt > 0 {
			n = in.Adopt
		}
		ep := repo.Epoch{Epoch: n, Site: in.Site, Active: in.Active, Primary: in.Primary, Secondary: in.Secondary}
		e.epochs[in.Site] = ep
		return ep, nil
	})
	e.OnActivity(act.MarkStandby, mock.Anything, mock.Anything).Return(nil)
	e.OnActivity(act.SwitchDNS, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SwitchDNSInput) ([]activities.RecordState, error) {
		if err := fail["dns "+in.To]; err != nil {
			return nil, err
		}
		e.did("dns " + in.To)
		return []activities.RecordState{{Record: "app.example.test. A", Values: []string{"192.0.2.2"}}}, nil
	})
	e.OnActivity(act.RunHooks, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.RunHooksInput) error {
		e.did("hooks " + in.Step + " " + in.Phase)
		return nil
	})
	e.OnActivity(act.SaveReport, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SaveReportInput) error {
		e.did("report " + in.Site)
		return nil
	})
	e.OnWorkflow(Backup, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in BackupInput) (BackupResult, error) {
		if err := fail["backup "+in.Site]; err != nil {
			return BackupResult{}, err
		}
		e.did("backup " + in.Site)
		var lag time.Duration
		e.mu.Lock()
		if len(e.lags) > 0 {
			lag, e.lags = e.lags[0], e.lags[1:]
		}
		e.mu.Unlock()
		return BackupResult{Point: "p2", Snapshot: workflow.Now(ctx).Add(-lag)}, nil
	})
	e.OnWorkflow(Transmit, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in TransmitInput) (TransmitResult, error) {
		e.did("transmit " + in.From + ">" + in.To + " " + in.Point)
		return TransmitResult{Point: in.Point}, nil
	})
	e.OnWorkflow(Restore, mock.Anything, mock.Anything).Return(func(_ workflow.Context, in RestoreInput) (RestoreResult, error) {
		e.did("restore " + in.Site + " " + in.Point)
		return RestoreResult{Point: in.Point, Snapshot: pointTime.Add(time.Hour)}, nil
	})
	return e
}

var switchPlan = activities.PlanInfo{Plan: "files", Primary: "primary", Secondary: "secondary", Active: "primary"}

func TestPlannedFailover(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, nil)
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, []string{
		"read-only primary",
		"backup primary", "transmit primary>secondary p2",
		"epoch secondary active=secondary", "epoch primary active=secondary",
		"restore secondary p2",
		"read-write secondary", "dns secondary",
		"report secondary",
	}, e.log, "a planned failover fences, syncs, raises the epoch, restores, opens the target and then switches DNS")
	require.Equal(t, "completed", rep.Outcome)
	require.True(t, rep.Fenced)
	require.Equal(t, "p2", rep.Point)
	require.Equal(t, "secondary", rep.To)
	require.Equal(t, uint64(4), rep.Epoch)
	require.True(t, rep.Restored)
}

func TestUnplannedFailoverGoesOnWithoutTheDarkSite(t *testing.T) {
	dark := temporal.NewApplicationError("postgres 10.0.0.1:5432: connection refused", "Unreachable")
	e := newSwitchEnv(t, switchPlan, map[string]error{"read-only primary": dark, "state primary": dark})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.False(t, rep.Fenced)
	require.Contains(t, rep.FenceNote, "not fenced")
	require.Equal(t, "p1", rep.Point, "with no final sync, the latest point at the target is used")
	require.Equal(t, []string{
		"epoch secondary active=secondary",
		"restore secondary p1",
		"read-write secondary", "dns secondary", "report secondary",
	}, e.log)
}

func TestPlannedFailoverNeedsTheActiveSite(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, map[string]error{"status primary": temporal.NewApplicationError("connection refused", "Unreachable")})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
	require.Error(t, e.GetWorkflowError())
	require.NotContains(t, e.log, "read-only primary", "nothing is fenced when preflight fails")
}

func TestFailureAfterFencingCompensates(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, map[string]error{"dns secondary": temporal.NewNonRetryableApplicationError("zone example.test does not exist", "NotFound", nil)})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
	err := e.GetWorkflowError()
	require.Error(t, err)
	var app *temporal.ApplicationError
	require.True(t, errors.As(err, &app))
	require.Contains(t, app.Error(), "zone example.test does not exist")
	require.Equal(t, []string{
		"read-only primary",
		"backup primary", "transmit primary>secondary p2",
		"epoch secondary active=secondary", "epoch primary active=secondary",
		"restore secondary p2",
		"read-write secondary",
		// undone, last first: no plan is left with both sites read-write
		"read-only secondary",
		"epoch primary active=primary", "epoch secondary active=primary",
		"read-write primary",
		"report primary",
	}, e.log)
}

func TestApprovalStep(t *testing.T) {
	info := switchPlan
	info.Steps = []activities.StepInfo{{Name: "check", Before: 1, Approval: time.Hour}, {Name: "drill-only", On: []string{"drill"}, Before: 1}}

	t.Run("approved", func(t *testing.T) {
		e := newSwitchEnv(t, info, nil)
		var early, wrong, ok error
		var released ApproveResult
		e.RegisterDelayedCallback(func() {
			e.UpdateWorkflow(UpdateApprove, "early", &testsuite.TestUpdateCallback{
				OnAccept: func() {}, OnReject: func(err error) { early = err }, OnComplete: func(any, error) {},
			}, ApproveUpdate{By: "ops"})
		}, 0)
		e.RegisterDelayedCallback(func() {
			v, err := e.QueryWorkflow(QueryProgress)
			require.NoError(t, err)
			var p Progress
			require.NoError(t, v.Get(&p))
			require.Contains(t, p.Waiting, "approval of step check")
			e.UpdateWorkflow(UpdateApprove, "wrong", &testsuite.TestUpdateCallback{
				OnAccept: func() {}, OnReject: func(err error) { wrong = err }, OnComplete: func(any, error) {},
			}, ApproveUpdate{Step: "other", By: "ops"})
			e.UpdateWorkflow(UpdateApprove, "right", &testsuite.TestUpdateCallback{
				OnAccept: func() {}, OnReject: func(err error) { ok = err },
				OnComplete: func(v any, err error) { released, _ = v.(ApproveResult) },
			}, ApproveUpdate{Step: "check", By: "ops"})
		}, 10*time.Minute)
		e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
		require.NoError(t, e.GetWorkflowError())
		require.ErrorContains(t, early, "waits for approval now", "an approve before the gate opens is refused, not kept for later")
		require.ErrorContains(t, wrong, "step other does not wait for approval; step check does")
		require.NoError(t, ok)
		require.Equal(t, "check", released.Step)
		require.Contains(t, e.log, "hooks check before")
		require.NotContains(t, e.log, "hooks drill-only before", "a drill-only step does not run in a failover")
	})
	t.Run("timed out", func(t *testing.T) {
		e := newSwitchEnv(t, info, nil)
		e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
		var app *temporal.ApplicationError
		require.True(t, errors.As(e.GetWorkflowError(), &app))
		require.Equal(t, "ApprovalTimeout", app.Type())
		require.Contains(t, e.log, "read-write primary", "the fenced site is reopened")
		require.NotContains(t, e.log, "dns secondary")
	})
}

func TestFailoverToAWarmStandbySkipsTheRestore(t *testing.T) {
	dark := temporal.NewApplicationError("connection refused", "Unreachable")
	e := newSwitchEnv(t, switchPlan, map[string]error{"read-only primary": dark, "state primary": dark}, "p1")
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.False(t, rep.Restored)
	require.Equal(t, "p1", rep.Point)
	require.NotContains(t, e.log, "restore secondary p1")
}

func TestFailoverToAMissingPointChangesNothing(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, nil)
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Point: "missing"})
	var app *temporal.ApplicationError
	require.True(t, errors.As(e.GetWorkflowError(), &app))
	require.Equal(t, "NotFound", app.Type())
	require.Contains(t, app.Error(), "restore point missing")
	require.Equal(t, []string{"report primary"}, e.log, "nothing is fenced or switched")
}

// A compensation that cannot make the new site read-only again does not
// reopen the old one: one writer, even when undoing.
func TestCompensationNeverLeavesTwoWriters(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, map[string]error{
		"dns secondary":       temporal.NewNonRetryableApplicationError("zone example.test does not exist", "NotFound", nil),
		"read-only secondary": temporal.NewNonRetryableApplicationError("password authentication failed", "AuthFailed", nil),
	})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
	require.Error(t, e.GetWorkflowError())
	require.Contains(t, e.log, "epoch primary active=primary", "the rest is undone")
	require.NotContains(t, e.log, "read-write primary", "the old site is not reopened while the new one may take writes")
}
