package workflows

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/internal/repo"
)

// failedOver is the plan after a failover to the secondary.
func failedOver(e *switchEnv) {
	e.epochs["primary"] = repo.Epoch{Epoch: 4, Active: "secondary"}
	e.epochs["secondary"] = repo.Epoch{Epoch: 4, Active: "secondary"}
}

func TestFailbackSyncsUntilCaughtUpThenCompletesOnSignal(t *testing.T) {
	info := switchPlan
	info.Failback.LagThreshold, info.Failback.Interval = 5*time.Minute, 30*time.Second
	e := newSwitchEnv(t, info, nil)
	failedOver(e)
	e.lags = []time.Duration{0, 10 * time.Minute, time.Minute} // preserve, round 1 (behind), round 2 (caught up)
	var waiting string
	e.RegisterDelayedCallback(func() {
		v, err := e.QueryWorkflow(QueryProgress)
		require.NoError(t, err)
		var p Progress
		require.NoError(t, v.Get(&p))
		waiting = p.Waiting
		e.UpdateWorkflow(UpdateComplete, "complete", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { t.Errorf("complete refused: %v", err) }, OnComplete: func(any, error) {},
		}, CompleteSignal{By: "ops"})
	}, 10*time.Minute)
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError())
	require.Contains(t, waiting, "caught up", "once caught up it waits for the operator")
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, "completed", rep.Outcome)
	require.Equal(t, "secondary", rep.From)
	require.Equal(t, "primary", rep.To)
	require.Equal(t, "p2", rep.Preserved)
	require.GreaterOrEqual(t, rep.Rounds, 2)
	require.Equal(t, uint64(5), rep.Epoch)
	require.Equal(t, Duration(0), rep.RPO, "the final sync runs after the active site is read-only")
	sync := []string{"backup secondary", "transmit secondary>primary p2", "restore primary p2"}
	want := []string{"read-only primary", "backup primary", "epoch primary active=secondary"}
	for i := 0; i < rep.Rounds; i++ {
		want = append(want, sync...)
	}
	want = append(want, "read-only secondary")
	want = append(want, sync...)
	want = append(want,
		"epoch primary active=primary", "epoch secondary active=primary",
		"read-write primary", "dns primary",
		"backup primary", "transmit primary>secondary p2",
		"report primary")
	require.Equal(t, want, e.log)
	require.Equal(t, "primary", e.epochs["secondary"].Active)
}

func TestFailbackAutoComplete(t *testing.T) {
	info := switchPlan
	info.Failback.LagThreshold, info.Failback.Interval = 5*time.Minute, 30*time.Second
	e := newSwitchEnv(t, info, nil)
	failedOver(e)
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files", AutoComplete: true})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, 1, rep.Rounds)
	require.Contains(t, e.log, "dns primary")
}

func TestFailbackNeedsAFailover(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, nil)
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files"})
	var app *temporal.ApplicationError
	require.True(t, errors.As(e.GetWorkflowError(), &app))
	require.Equal(t, "InvalidInput", app.Type())
	require.Contains(t, app.Error(), "active at its primary primary")
	require.Empty(t, e.log)
}

func TestFailbackFailureWhileCompletingIsUndone(t *testing.T) {
	info := switchPlan
	info.Failback.LagThreshold, info.Failback.Interval = 5*time.Minute, 30*time.Second
	e := newSwitchEnv(t, info, map[string]error{"dns primary": temporal.NewNonRetryableApplicationError("TSIG refused", "AuthFailed", nil)})
	failedOver(e)
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files", AutoComplete: true})
	require.ErrorContains(t, e.GetWorkflowError(), "TSIG refused")
	n := len(e.log)
	require.Equal(t, []string{
		"read-write primary",
		"read-only primary", "epoch secondary active=secondary", "epoch primary active=secondary", "read-write secondary",
		"report secondary",
	}, e.log[n-6:], "the secondary is the only writable site again")
	require.Equal(t, "secondary", e.epochs["primary"].Active)
}

func TestFailbackFailureWhileSyncingLeavesTheActiveSiteAlone(t *testing.T) {
	info := switchPlan
	info.Failback.LagThreshold, info.Failback.Interval = 5*time.Minute, 30*time.Second
	e := newSwitchEnv(t, info, map[string]error{"backup secondary": temporal.NewNonRetryableApplicationError("source missing", "NotFound", nil)})
	failedOver(e)
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files", AutoComplete: true})
	require.Error(t, e.GetWorkflowError())
	require.NotContains(t, e.log, "read-only secondary")
	require.NotContains(t, e.log, "read-write primary", "the returning primary stays read-only")
}

func TestLongFailbackContinuesAsNew(t *testing.T) {
	info := switchPlan
	info.Failback.LagThreshold, info.Failback.Interval = 5*time.Minute, 30*time.Second
	e := newSwitchEnv(t, info, nil)
	failedOver(e)
	for range runsPerFailback + 1 {
		e.lags = append(e.lags, time.Hour)
	}
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files"})
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(e.GetWorkflowError(), &can), "got %v", e.GetWorkflowError())
	var next FailbackInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	require.NotNil(t, next.Resume)
	require.Equal(t, runsPerFailback, next.Resume.Rounds)
	require.Equal(t, "p2", next.Resume.Preserved)
	require.Less(t, len(next.Resume.Steps), 10, "the carried steps stay few")
}

func TestPermanentFailover(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, nil)
	failedOver(e)
	e.ExecuteWorkflow(PermanentFailover, PermanentFailoverInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError())
	require.Equal(t, []string{
		"read-only primary",
		"epoch secondary active=secondary primary=secondary", "epoch primary active=secondary primary=secondary",
		"report secondary",
	}, e.log)
	require.Equal(t, "primary", e.epochs["primary"].Secondary)

	// The roles hold from now on: nothing to fail back, and a failover goes
	// from the new primary to the old one, keeping the roles.
	e2 := newSwitchEnv(t, switchPlan, nil)
	e2.epochs = e.epochs
	e2.ExecuteWorkflow(Failback, FailbackInput{Plan: "files"})
	require.ErrorContains(t, e2.GetWorkflowError(), "active at its primary secondary")

	e3 := newSwitchEnv(t, switchPlan, nil)
	e3.epochs = e.epochs
	e3.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
	require.NoError(t, e3.GetWorkflowError())
	require.Contains(t, e3.log, "epoch primary active=primary primary=secondary")
}

func TestPermanentFailoverNeedsAFailover(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, nil)
	e.ExecuteWorkflow(PermanentFailover, PermanentFailoverInput{Plan: "files"})
	require.ErrorContains(t, e.GetWorkflowError(), "fail over first")
}
