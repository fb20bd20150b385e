package workflows

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/repo"
)

// threeSitePlan is a plan with a same-city standby and a remote one.
var threeSitePlan = activities.PlanInfo{Plan: "files", Primary: "primary", Secondary: "secondary",
	Secondaries: []string{"secondary", "remote"}, Active: "primary"}

func newThreeSiteEnv(t *testing.T, fail map[string]error) *switchEnv {
	e := newSwitchEnv(t, threeSitePlan, fail)
	e.epochs["remote"] = e.epochs["primary"]
	return e
}

// With no --to, a failover takes the first standby in order that answers:
// the same-city standby is dark, so the remote site takes over; the dark
// one is left alone and the epoch is raised at the two that answer.
func TestFailoverTakesTheFirstStandbyThatAnswers(t *testing.T) {
	noWorker := temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
	e := newThreeSiteEnv(t, map[string]error{"state secondary": noWorker})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, "remote", rep.To)
	require.Equal(t, []string{
		"read-only primary",
		"epoch remote active=remote", "epoch primary active=remote",
		"restore remote p1", "read-write remote", "dns remote", "report remote",
	}, e.log, "the dark standby is neither opened, closed nor asked for its epoch")
	require.Equal(t, uint64(4), e.epochs["remote"].Epoch)
	require.Equal(t, uint64(4), e.epochs["primary"].Epoch)
	require.Equal(t, uint64(3), e.epochs["secondary"].Epoch)
	require.Len(t, rep.Notes, 1)
	require.Contains(t, rep.Notes[0], "epoch 4 not recorded at secondary")
}

// --to names the target; the epoch reaches every site, the third standby
// stays as it was (read-only), and the final sync goes to the target.
func TestFailoverToANamedSite(t *testing.T) {
	e := newThreeSiteEnv(t, nil)
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", To: "remote"})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, []string{
		"read-only primary",
		"backup primary", "transmit primary>remote p2",
		"epoch remote active=remote", "epoch primary active=remote", "epoch secondary active=remote",
		"restore remote p2", "read-write remote", "dns remote", "report remote",
	}, e.log)
	for _, site := range []string{"primary", "secondary", "remote"} {
		require.Equal(t, uint64(4), e.epochs[site].Epoch, site)
		require.Equal(t, "remote", e.epochs[site].Active, site)
	}
}

func TestFailoverToRefusesABadTarget(t *testing.T) {
	for _, c := range []struct {
		plan activities.PlanInfo
		to   string
		want string
	}{
		{threeSitePlan, "primary", "to: primary is the active site of plan files already: name another of its sites (primary, secondary and remote)"},
		{threeSitePlan, "elsewhere", `to: plan files has no site "elsewhere"; its sites are primary, secondary and remote`},
		{switchPlan, "primary", "to: primary is the active site of plan files already: name another of its sites (primary and secondary)"},
	} {
		e := newSwitchEnv(t, c.plan, nil)
		e.epochs["remote"] = e.epochs["primary"]
		e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", To: c.to})
		err := e.GetWorkflowError()
		require.Error(t, err)
		require.Contains(t, err.Error(), c.want)
		require.Equal(t, "InvalidInput", errorType(err))
		require.Empty(t, e.log, "nothing is done")
	}
}

// Two of three sites dark (the regional disaster): the one that answers
// cannot tell which site is active, so the failover stops; forced, the
// remote site takes over and the report says what was forced.
func TestFailoverWithAMinorityOfSitesNeedsForce(t *testing.T) {
	noWorker := temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
	dark := map[string]error{"state primary": noWorker, "state secondary": noWorker}
	e := newThreeSiteEnv(t, dark)
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned})
	err := e.GetWorkflowError()
	require.Error(t, err)
	require.Contains(t, err.Error(), "only 1 of its 3 sites told their epoch")
	require.Empty(t, e.log)

	e = newThreeSiteEnv(t, dark)
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", Mode: ModeUnplanned, Force: true})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, "remote", rep.To)
	require.Equal(t, []string{"epoch remote active=remote", "restore remote p1", "read-write remote", "dns remote", "report remote"}, e.log)
	notes := rep.Notes
	require.Len(t, notes, 4, "%q", notes)
	require.Contains(t, notes[0], "forced: the active site primary was taken from the highest epoch")
	require.Contains(t, notes[3], "forced: epoch 4 is recorded at 1 of plan files's 3 sites")
}

// A two-site plan fails over to its other site when --to names it.
func TestTwoSiteFailoverTo(t *testing.T) {
	e := newSwitchEnv(t, switchPlan, nil)
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", To: "secondary"})
	require.NoError(t, e.GetWorkflowError())
	require.Contains(t, e.log, "dns secondary")
}

// A permanent failover to the remote site makes it the primary, the old
// primary its first secondary and the same-city standby the second, and
// every later run reads those roles from the epoch.
func TestRolesOfAPermanentFailoverAmongThreeSites(t *testing.T) {
	info := withRoles(threeSitePlan, "remote", "remote", "primary")
	require.Equal(t, "remote", info.Primary)
	require.Equal(t, "primary", info.Secondary)
	require.Equal(t, []string{"remote", "primary", "secondary"}, info.SiteNames())
	require.Equal(t, "remote", info.Active)

	two := withRoles(switchPlan, "secondary", "secondary", "primary")
	require.Equal(t, []string{"secondary", "primary"}, two.SiteNames())
	require.Nil(t, two.Secondaries, "a two-site description keeps no list it did not have")

	e := newThreeSiteEnv(t, nil)
	for _, site := range []string{"primary", "secondary", "remote"} {
		ep := e.epochs[site]
		ep.Active = "remote"
		e.epochs[site] = ep
	}
	e.ExecuteWorkflow(PermanentFailover, PermanentFailoverInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError())
	require.Equal(t, []string{
		"read-only primary",
		"epoch remote active=remote primary=remote", "epoch primary active=remote primary=remote", "epoch secondary active=remote primary=remote",
		"report remote",
	}, e.log)
	require.Equal(t, "primary", e.epochs["secondary"].Secondary)
}

// Data recovery from the remote site returns the plan to its primary; the
// same-city standby is left alone until completion, when it learns the new
// epoch with the other two.
func TestFailbackFromTheRemoteSite(t *testing.T) {
	info := threeSitePlan
	info.Failback.LagThreshold, info.Failback.Interval, info.Failback.AutoComplete = 5*time.Minute, 30*time.Second, true
	e := newSwitchEnv(t, info, nil)
	for _, site := range []string{"primary", "secondary", "remote"} {
		e.epochs[site] = repo.Epoch{Epoch: 4, Active: "remote"}
	}
	e.ExecuteWorkflow(Failback, FailbackInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError())
	var rep SwitchReport
	require.NoError(t, e.GetWorkflowResult(&rep))
	require.Equal(t, "completed", rep.Outcome)
	require.Equal(t, "remote", rep.From)
	require.Equal(t, "primary", rep.To)
	for _, s := range e.log {
		require.NotRegexp(t, `^(read-only|read-write|backup|restore) secondary`, s, "the same-city standby is not touched")
	}
	require.Subset(t, e.log, []string{"transmit remote>primary p2", "epoch primary active=primary", "epoch remote active=primary", "epoch secondary active=primary", "dns primary"})
	for _, site := range []string{"primary", "secondary", "remote"} {
		require.Equal(t, uint64(5), e.epochs[site].Epoch, site)
		require.Equal(t, "primary", e.epochs[site].Active, site)
	}
}

// A failover to the remote site that fails after raising the epoch gives
// the active role back at every site that learnt it.
func TestThreeSiteFailoverUndoneEverywhere(t *testing.T) {
	e := newThreeSiteEnv(t, map[string]error{"dns remote": temporal.NewNonRetryableApplicationError("zone example.test does not exist", "NotFound", nil)})
	e.ExecuteWorkflow(Failover, FailoverInput{Plan: "files", To: "remote"})
	require.Error(t, e.GetWorkflowError())
	for _, site := range []string{"primary", "secondary", "remote"} {
		require.Equal(t, "primary", e.epochs[site].Active, site)
		require.Greater(t, e.epochs[site].Epoch, uint64(4), site)
	}
	require.Contains(t, e.log, "read-write primary")
	require.Contains(t, e.log, "read-only remote")
	require.NotContains(t, e.log, "read-only secondary")
	require.NotContains(t, e.log, "read-write secondary")
}
