package workflows

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

// The status update answers from the lock's run: ages per site, the
// objective and its breach, the last drill; a site that fails is reported
// unreachable; and the lock still ends once idle.
func TestLockStatusUpdate(t *testing.T) {
	e := newLockEnv(t)
	start := e.Now()
	e.OnActivity(act.Describe, mock.Anything, mock.Anything).Return(activities.PlanInfo{
		Plan: "files", Primary: "a", Secondary: "b", Secondaries: []string{"b", "c"}, Active: "a",
		Objectives: activities.ObjectivesInfo{RPO: time.Hour, RTO: 5 * time.Minute},
	}, nil)
	e.OnActivity(act.GetSiteState, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.SiteStateInput) (activities.SiteState, error) {
		switch in.Site {
		case "a":
			return activities.SiteState{Site: "a", Epoch: repo.Epoch{Epoch: 3, Active: "a"}, Latest: "p2", LatestTime: start.Add(-10 * time.Minute)}, nil
		case "b":
			return activities.SiteState{Site: "b", Epoch: repo.Epoch{Epoch: 2, Active: "a"}, Latest: "p1", LatestTime: start.Add(-2 * time.Hour)}, nil
		}
		return activities.SiteState{}, errors.New("site c does not answer")
	})
	e.OnActivity(act.AccessStatus, mock.Anything, mock.Anything).Return([]activities.ResourceState{}, nil)
	e.OnActivity(act.ListReports, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ListReportsInput) ([]json.RawMessage, error) {
		if in.Kind == activities.ReportDrill && in.Site == "b" {
			b, _ := json.Marshal(DrillReport{Site: "b", Point: "p1", Passed: true, RTO: Duration(3 * time.Second), Finished: start.Add(-time.Hour)})
			return []json.RawMessage{b}, nil
		}
		return []json.RawMessage{}, nil
	})
	var res StatusResult
	var uerr error
	e.at(time.Second, func() {
		e.UpdateWorkflow(UpdateStatus, "s1", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { uerr = err },
			OnComplete: func(v any, err error) {
				uerr = err
				if err == nil {
					res = v.(StatusResult)
				}
			},
		}, StatusInput{Plan: "files"})
	})
	e.ExecuteWorkflow(PlanLock, PlanLockInput{Plan: "files"})
	require.True(t, e.IsWorkflowCompleted(), "the idle lock ends after answering")
	require.NoError(t, e.GetWorkflowError())
	require.NoError(t, uerr)
	require.Equal(t, "a", res.Active)
	require.Equal(t, uint64(3), res.Epoch)
	require.Equal(t, []string{"b", "c"}, res.Standbys)
	require.Len(t, res.Sites, 3)
	require.InDelta(t, (10 * time.Minute).Seconds(), res.Sites[0].Age.Seconds(), 2)
	require.False(t, res.Sites[0].Breached, "the active site is not measured against the RPO")
	require.InDelta(t, (2 * time.Hour).Seconds(), res.Sites[1].Age.Seconds(), 2)
	require.True(t, res.Sites[1].Breached)
	require.False(t, res.Sites[2].Reachable)
	require.Contains(t, res.Sites[2].Error, "site c does not answer")
	require.True(t, res.Breached)
	require.Equal(t, Duration(time.Hour), res.Objectives.RPO)
	require.Equal(t, res.Sites[1].Age, res.RPO)
	require.NotNil(t, res.LastDrill)
	require.True(t, res.LastDrill.Passed)
	require.Equal(t, "b", res.LastDrill.Site)
}

// A status update for another plan is refused by the validator.
func TestLockStatusUpdateRefusesOtherPlan(t *testing.T) {
	e := newLockEnv(t)
	var uerr error
	e.at(time.Second, func() {
		e.UpdateWorkflow(UpdateStatus, "s1", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { uerr = err }, OnComplete: func(any, error) {},
		}, StatusInput{Plan: "db"})
	})
	e.ExecuteWorkflow(PlanLock, PlanLockInput{Plan: "files"})
	require.Error(t, uerr)
	require.Contains(t, uerr.Error(), `status of plan "db"`)
}
