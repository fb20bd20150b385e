package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

const (
	seg1 = "000000010000000000000001"
	seg2 = "000000010000000000000002"
	seg3 = "000000010000000000000003"
)

func shipEnv(t *testing.T, epochs func() repo.Epoch) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivity(&activities.Activities{})
	t.Cleanup(func() { env.AssertExpectations(t) })
	var a *activities.Activities
	info := plan
	info.WAL = activities.WALInfo{Ship: true, ShipEvery: 5 * time.Second, MaxFiles: 2}
	env.OnActivity(a.Describe, mock.Anything, activities.DescribeInput{Plan: "files"}).Return(info, nil).Once()
	env.OnActivity(a.GetSiteState, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SiteStateInput) (activities.SiteState, error) {
		return activities.SiteState{Site: in.Site, Epoch: epochs()}, nil
	}).Maybe()
	return env
}

// continuedWith is the input a run that continued as new handed on.
func continuedWith(t *testing.T, env *testsuite.TestWorkflowEnvironment) ShipWALInput {
	t.Helper()
	var can *workflow.ContinueAsNewError
	require.True(t, errors.As(env.GetWorkflowError(), &can), "want continue-as-new, got %v", env.GetWorkflowError())
	require.Equal(t, "ShipWAL", can.WorkflowType.Name)
	var next ShipWALInput
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(can.Input, &next))
	return next
}

// TestShipWALShipsEachRoundAndContinuesAsNew: the first round of a run
// lists from the start, later ones from the last file shipped; the lag is
// the age of the oldest file not yet shipped, 0 once caught up; after
// Rounds rounds the run continues as new with its state.
func TestShipWALShipsEachRoundAndContinuesAsNew(t *testing.T) {
	env := shipEnv(t, func() repo.Epoch { return repo.Epoch{} })
	grantClaims(env)
	start := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	env.SetStartTime(start)
	var a *activities.Activities
	var afters []string
	env.OnActivity(a.CopyWAL, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CopyWALInput) (activities.CopyWALResult, error) {
		require.Equal(t, activities.CopyWALInput{Plan: "files", From: "primary", To: "secondary", After: in.After, Max: 2}, in)
		afters = append(afters, in.After)
		now := env.Now()
		if len(afters) == 1 {
			// Three files waiting, two shipped: seg3 was archived 30 s ago.
			return activities.CopyWALResult{Shipped: 2, Last: seg2, LastTime: now.Add(-40 * time.Second), Pending: 1, Behind: now.Add(-30 * time.Second), Checked: now}, nil
		}
		if len(afters) == 2 {
			return activities.CopyWALResult{Shipped: 1, Last: seg3, LastTime: now.Add(-35 * time.Second), Checked: now}, nil
		}
		return activities.CopyWALResult{Last: seg3, Checked: now}, nil
	}).Times(3)
	var mid WALStatus
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryWAL)
		require.NoError(t, err)
		require.NoError(t, v.Get(&mid))
	}, 2*time.Second)
	env.ExecuteWorkflow(ShipWAL, ShipWALInput{Plan: "files", Rounds: 3})

	require.Equal(t, []string{"", seg2, seg3}, afters)
	require.Equal(t, "primary", mid.Active)
	require.Len(t, mid.Standbys, 1)
	require.Equal(t, WALStandby{Site: "secondary", Last: seg2, LastTime: mid.Standbys[0].LastTime, LastShipped: mid.Standbys[0].Checked,
		Shipped: 2, Pending: 1, Behind: mid.Standbys[0].Behind, Lag: Duration(30 * time.Second), Checked: mid.Standbys[0].Checked}, mid.Standbys[0])

	next := continuedWith(t, env)
	require.Equal(t, "files", next.Plan)
	require.Equal(t, 3, next.Rounds)
	require.Len(t, next.Standbys, 1)
	sb := next.Standbys[0]
	require.Equal(t, seg3, sb.Last)
	require.Equal(t, int64(3), sb.Shipped)
	require.Zero(t, sb.Pending)
	require.Zero(t, sb.Lag, "caught up")
	require.True(t, sb.Behind.IsZero())
}

// TestShipWALHandsItsStateOn: a run continued as new starts from the state
// it was handed, and lists in full once (a file archived out of order is
// caught).
func TestShipWALHandsItsStateOn(t *testing.T) {
	env := shipEnv(t, func() repo.Epoch { return repo.Epoch{} })
	grantClaims(env)
	var a *activities.Activities
	var afters []string
	env.OnActivity(a.CopyWAL, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CopyWALInput) (activities.CopyWALResult, error) {
		afters = append(afters, in.After)
		return activities.CopyWALResult{Last: seg3, Checked: env.Now()}, nil
	}).Times(2)
	env.ExecuteWorkflow(ShipWAL, ShipWALInput{Plan: "files", Rounds: 2, Standbys: []WALStandby{{Site: "secondary", Last: seg3, Shipped: 7}}})
	require.Equal(t, []string{"", seg3}, afters)
	next := continuedWith(t, env)
	require.Equal(t, int64(7), next.Standbys[0].Shipped)
}

// TestShipWALSkipsWhileASwitchRuns: no WAL is shipped while the plan lock
// refuses, and the query says why.
func TestShipWALSkipsWhileASwitchRuns(t *testing.T) {
	env := shipEnv(t, func() repo.Epoch { return repo.Epoch{} })
	var a *activities.Activities
	env.OnActivity(a.RequestClaim, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.RequestClaimInput) error {
		var req ClaimRequest
		b, _ := json.Marshal(in.Request)
		_ = json.Unmarshal(b, &req)
		env.RegisterDelayedCallback(func() {
			_ = env.SignalWorkflowByID(req.Holder, SignalClaimReply, ClaimReply{ID: req.ID, Error: "failover drorch/files/switch holds switch"})
		}, 0)
		return nil
	})
	var st WALStatus
	env.RegisterDelayedCallback(func() {
		v, err := env.QueryWorkflow(QueryWAL)
		require.NoError(t, err)
		require.NoError(t, v.Get(&st))
	}, 7*time.Second)
	env.ExecuteWorkflow(ShipWAL, ShipWALInput{Plan: "files", Rounds: 2})
	continuedWith(t, env)
	require.Contains(t, st.Skipped, "a switch of the plan runs: failover drorch/files/switch holds switch")
	env.AssertNotCalled(t, "CopyWAL", mock.Anything, mock.Anything)
}

// TestShipWALFollowsTheRoles: the active site is the one the highest epoch
// names; when a round finds the epoch moved, the roles are read again and
// the next round ships from the new active site.
func TestShipWALFollowsTheRoles(t *testing.T) {
	epoch := repo.Epoch{}
	env := shipEnv(t, func() repo.Epoch { return epoch })
	grantClaims(env)
	var a *activities.Activities
	var rounds []string
	env.OnActivity(a.CopyWAL, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.CopyWALInput) (activities.CopyWALResult, error) {
		rounds = append(rounds, in.From+">"+in.To)
		if len(rounds) == 1 {
			epoch = repo.Epoch{Epoch: 2, Active: "secondary"} // a failover happened meanwhile
			return activities.CopyWALResult{RolesChanged: "site secondary is at epoch 2, not 0"}, nil
		}
		require.Equal(t, uint64(2), in.Epoch)
		return activities.CopyWALResult{Checked: env.Now()}, nil
	}).Times(2)
	env.ExecuteWorkflow(ShipWAL, ShipWALInput{Plan: "files", Rounds: 2})
	continuedWith(t, env)
	require.Equal(t, []string{"primary>secondary", "secondary>primary"}, rounds)
}
