package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/repo"
)

// A wrong password at an old primary that answers is a refusal, not
// darkness: the unplanned failover stops before the target is opened,
// undoes what the fence may have applied, and says how to go on.
func TestUnplannedFailoverStopsWhenTheFenceIsRefused(t *testing.T) {
	refused := temporal.NewNonRetryableApplicationError("set postgres 10.0.0.1:5432/app read-only at site primary: password authentication failed for user \"drorch\"", "AuthFailed", nil)
	e := newSwitchEnv(t, switchPlan, map[string]error{"read-only primary": refused})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	var app *temporal.ApplicationError
	require.True(t, errors.As(e.GetWorkflowError(), &app))
	require.Equal(t, "AuthFailed", app.Type())
	require.True(t, app.NonRetryable())
	for _, want := range []string{"fence primary", "postgres 10.0.0.1:5432/app", "password authentication failed", "answered and refused", "--force"} {
		require.Contains(t, app.Error(), want)
	}
	require.Equal(t, []string{"read-write primary", "report primary"}, e.log,
		"nothing at the target is touched; the fence's undo runs, and the report stays at the old primary")
}

// Forced, the refused fence is recorded and the failover goes on; the old
// site's store answers, so it learns the new epoch.
func TestUnplannedFailoverForcedPastARefusedFence(t *testing.T) {
	refused := temporal.NewNonRetryableApplicationError("set postgres 10.0.0.1:5432/app read-only at site primary: password authentication failed", "AuthFailed", nil)
	e := newSwitchEnv(t, switchPlan, map[string]error{"read-only primary": refused})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned, Force: true})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.False(t, rep.Fenced)
	require.Contains(t, rep.FenceNote, "refused, not fenced (forced)")
	require.Contains(t, rep.FenceNote, "password authentication failed")
	require.Len(t, rep.Notes, 1)
	require.Contains(t, rep.Notes[0], "forced")
	require.Equal(t, []string{
		"epoch secondary active=secondary", "epoch primary active=secondary",
		"restore secondary p1", "read-write secondary", "dns secondary", "report secondary",
	}, e.log)
}

// A dark database at a site whose worker and store answer: not fenced, but
// the old site's epoch is raised (before, a failed fence skipped it).
func TestUnplannedFailoverRaisesTheEpochWhereTheStoreAnswers(t *testing.T) {
	dark := temporal.NewApplicationError("set postgres 10.0.0.1:5432/app read-only at site primary: unreachable: connection refused", "Unreachable")
	e := newSwitchEnv(t, switchPlan, map[string]error{"read-only primary": dark})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.False(t, rep.Fenced)
	require.Contains(t, rep.FenceNote, "unreachable, not fenced")
	require.Empty(t, rep.Notes)
	require.Equal(t, []string{
		"epoch secondary active=secondary", "epoch primary active=secondary",
		"restore secondary p1", "read-write secondary", "dns secondary", "report secondary",
	}, e.log)
	require.Equal(t, uint64(4), e.epochs["primary"].Epoch)
}

// A site with no worker is dark for the whole run: decided once, while its
// state is read, and neither fenced nor asked for its epoch again.
func TestUnplannedFailoverDecidesANoWorkerSiteDarkOnce(t *testing.T) {
	noWorker := temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
	e := newSwitchEnv(t, switchPlan, map[string]error{"state primary": noWorker})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Contains(t, rep.FenceNote, "no worker at site primary took a task within 10s")
	require.Equal(t, []string{
		"epoch secondary active=secondary", "restore secondary p1", "read-write secondary", "dns secondary", "report secondary",
	}, e.log, "no fence and no epoch is tried at a site found without a worker")
}

// A planned failover whose fence fails part-way is undone: the undo was
// registered before the fence, so the resources already read-only are made
// read-write again and the report says compensated.
func TestPlannedFailoverUndoesAFenceThatFailedPartWay(t *testing.T) {
	refused := temporal.NewNonRetryableApplicationError("set exec lb-mode read-only at site primary: exit status 77: refused", "AccessDenied", nil)
	e := newSwitchEnv(t, switchPlan, map[string]error{"read-only primary": refused})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files"})
	require.Error(t, e.GetWorkflowError())
	require.Equal(t, []string{"read-write primary", "report primary"}, e.log, "the fence's undo runs though the fence failed")
}

// A target that is not wholly read-only is refused before anything
// changes, unless forced.
func TestFailoverRefusesAWritableStandby(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state activities.ResourceState
		want  string
	}{
		{"read-write", activities.ResourceState{Resource: "postgres 10.0.0.2:5432/app", Mode: access.ReadWrite}, "postgres 10.0.0.2:5432/app is read-write"},
		{"partial", activities.ResourceState{Resource: "postgres 10.0.0.2:5432/app", Error: "postgres 10.0.0.2:5432/app: partly read-only: role(s) app can log in"}, "role(s) app can log in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newSwitchEnv(t, switchPlan, nil)
			e.access = map[string][]activities.ResourceState{"secondary": {tc.state}}
			e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
			var app *temporal.ApplicationError
			require.True(t, errors.As(e.GetWorkflowError(), &app))
			require.Equal(t, "StandbyWritable", app.Type())
			require.Contains(t, app.Error(), tc.want)
			require.Contains(t, app.Error(), "--force")
			require.Equal(t, []string{"report primary"}, e.log)
		})
	}
	t.Run("forced", func(t *testing.T) {
		e := newSwitchEnv(t, switchPlan, nil)
		e.access = map[string][]activities.ResourceState{"secondary": {{Resource: "postgres 10.0.0.2:5432/app", Mode: access.ReadWrite}}}
		e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned, Force: true})
		require.NoError(t, e.GetWorkflowError())
		var rep SwitchReport
		require.NoError(t, e.GetWorkflowResult(&rep))
		require.Len(t, rep.Notes, 1)
		require.Contains(t, rep.Notes[0], "forced: site secondary is the standby of plan files, but postgres 10.0.0.2:5432/app is read-write")
	})
}

// Which site is active, from what answers; a default that depends on it
// fails when it cannot be told, and a named site still works.
func TestActiveSiteFromWhatAnswers(t *testing.T) {
	silent := temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
	noBucket := temporal.NewNonRetryableApplicationError("bucket drorch does not exist", "NoSuchBucket", nil)
	denied := temporal.NewNonRetryableApplicationError("access denied: the access key or secret key is wrong", "AccessDenied", nil)
	names := func(active string, n uint64) activities.SiteState {
		return activities.SiteState{Epoch: repo.Epoch{Epoch: n, Active: active}}
	}
	type answer struct {
		state activities.SiteState
		err   error
	}
	for _, tc := range []struct {
		name               string
		primary, secondary answer
		want               string // the site Points lists at; "" for an error
		typ                string // the error's type; default ActiveUnknown
	}{
		{"both answer: the highest epoch", answer{state: names("primary", 3)}, answer{state: names("secondary", 4)}, "secondary", ""},
		{"no epoch anywhere: the configured primary", answer{}, answer{}, "primary", ""},
		{"the secondary is silent, the primary names itself", answer{state: names("primary", 3)}, answer{err: silent}, "", ""},
		{"the secondary is silent, nothing recorded at the primary", answer{}, answer{err: silent}, "", ""},
		{"the secondary is silent, the primary names it", answer{state: names("secondary", 4)}, answer{err: silent}, "secondary", ""},
		{"the primary is silent, the secondary names it", answer{err: silent}, answer{state: names("primary", 3)}, "primary", ""},
		{"the primary is silent, nothing recorded at the secondary", answer{err: silent}, answer{}, "primary", ""},
		{"the primary is silent, the secondary names itself", answer{err: silent}, answer{state: names("secondary", 4)}, "", ""},
		{"both silent", answer{err: silent}, answer{err: silent}, "", ""},
		{"a store without the bucket answers: no epoch", answer{err: silent}, answer{err: noBucket}, "primary", ""},
		{"both refuse: the refusal is what to fix", answer{err: denied}, answer{err: denied}, "", "AccessDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, named := range []string{"", "primary"} {
				var suite testsuite.WorkflowTestSuite
				env := suite.NewTestWorkflowEnvironment()
				var a *activities.Activities
				env.RegisterActivity(a)
				env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
				env.OnActivity(a.GetSiteState, mock.Anything, activities.SiteStateInput{Plan: "files", Site: "primary"}).Return(tc.primary.state, tc.primary.err)
				env.OnActivity(a.GetSiteState, mock.Anything, activities.SiteStateInput{Plan: "files", Site: "secondary"}).Return(tc.secondary.state, tc.secondary.err)
				var listed string
				env.OnActivity(a.ListPoints, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.ListPointsInput) (activities.ListPointsResult, error) {
					listed = in.Site
					return activities.ListPointsResult{}, nil
				}).Maybe()
				env.ExecuteWorkflow(Points, PointsInput{Plan: "files", Site: named})
				err := env.GetWorkflowError()
				switch {
				case named != "":
					require.NoError(t, err, "a named site works whatever answers")
					require.Equal(t, named, listed)
				case tc.want == "":
					var app *temporal.ApplicationError
					require.True(t, errors.As(err, &app), "error %v", err)
					typ := tc.typ
					if typ == "" {
						typ = "ActiveUnknown"
					}
					require.Equal(t, typ, app.Type())
					require.True(t, app.NonRetryable())
					require.Contains(t, app.Error(), "name the site explicitly")
					t.Log(app.Error())
				default:
					require.NoError(t, err)
					require.Equal(t, tc.want, listed)
				}
			}
		})
	}
}

func TestUnansweredAndNoWorker(t *testing.T) {
	for _, tc := range []struct {
		name               string
		err                error
		unanswered, worker bool
	}{
		{"schedule-to-start", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil), true, false},
		{"schedule-to-close", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_CLOSE, errors.New("dial tcp: i/o timeout")), true, true},
		{"unreachable", temporal.NewApplicationError("connection refused", "Unreachable"), true, true},
		{"wrong password", temporal.NewNonRetryableApplicationError("password authentication failed", "AuthFailed", nil), false, true},
		{"transient failure at a site that answers", temporal.NewApplicationError("sessions still open", ""), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.unanswered, unanswered(tc.err))
			require.Equal(t, !tc.worker, noWorker(tc.err))
		})
	}
	require.Equal(t, 10*time.Second, darkAfter(activities.PlanInfo{}), "a history from before darkAfter has the default")
	require.Equal(t, 3*time.Second, darkAfter(activities.PlanInfo{Failover: activities.FailoverInfo{DarkAfter: 3 * time.Second}}))
}
