package workflows

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
)

// threeSiteProtectEnv runs Protect on a warm three-site plan (primary
// active, standbys secondary and remote) scheduled every hour. The sites in
// dark do not answer (no worker takes their tasks); the others answer with
// their newest point made now. Its log lists the children started, with
// the (workflow) time they started at, relative to the run's start.
type protectLog struct {
	env   *testsuite.TestWorkflowEnvironment
	start time.Time
	log   map[string]time.Duration
}

func threeSiteProtectEnv(t *testing.T, dark map[string]bool, delay map[string]time.Duration) *protectLog {
	info := threeSitePlan
	info.Standby, info.Objectives.RPO, info.Interval = config.StandbyWarm, 2*time.Hour, time.Hour
	now := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	var env *testsuite.TestWorkflowEnvironment
	env = protectEnvWith(t, info, now, func(in activities.SiteStateInput) (activities.SiteState, error) {
		if dark[in.Site] {
			return activities.SiteState{}, temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return activities.SiteState{Site: in.Site, Latest: "p2", LatestTime: env.Now()}, nil
	})
	l := &protectLog{env: env, start: now, log: map[string]time.Duration{}}
	// step records a child's start and takes delay[name] (workflow time).
	var mu sync.Mutex
	step := func(ctx workflow.Context, name string) {
		mu.Lock()
		l.log[name] = workflow.Now(ctx).Sub(now)
		mu.Unlock()
		if d := delay[name]; d > 0 {
			_ = workflow.Sleep(ctx, d)
		}
	}
	env.OnWorkflow(Backup, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in BackupInput) (BackupResult, error) {
		step(ctx, "backup "+in.Site)
		return BackupResult{Point: "p2"}, nil
	}).Maybe()
	env.OnWorkflow(Transmit, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in TransmitInput) (TransmitResult, error) {
		step(ctx, "transmit "+in.To)
		return TransmitResult{Point: in.Point, BytesCopied: 10}, nil
	}).Maybe()
	env.OnWorkflow(Forget, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in ForgetInput) (ForgetResult, error) {
		step(ctx, "forget "+in.Site)
		return ForgetResult{}, nil
	}).Maybe()
	env.OnWorkflow(Restore, mock.Anything, mock.Anything).Return(func(ctx workflow.Context, in RestoreInput) (RestoreResult, error) {
		step(ctx, "refresh "+in.Site)
		return RestoreResult{Point: in.Point, Duration: Duration(time.Second)}, nil
	}).Maybe()
	return l
}

// A dark standby is not sent to at all: the other standby is transmitted
// to, pruned and refreshed, the dark one is recorded as failed (so the run
// is ProtectIncomplete and the RPO breach shows), and the run ends within
// seconds of workflow time, not after the dark site's step limits.
func TestProtectSkipsADarkStandby(t *testing.T) {
	l := threeSiteProtectEnv(t, map[string]bool{"remote": true}, nil)
	l.env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files"})
	err := l.env.GetWorkflowError()
	require.Error(t, err)
	require.Equal(t, "ProtectIncomplete", errorType(err))
	res := l.result(t)
	for _, want := range []string{"backup primary", "forget primary", "transmit secondary", "forget secondary", "refresh secondary"} {
		require.Contains(t, l.log, want)
	}
	for _, never := range []string{"transmit remote", "forget remote", "refresh remote"} {
		require.NotContains(t, l.log, never, "nothing is sent to the dark standby")
	}
	require.Len(t, res.Failures, 1)
	require.Contains(t, res.Failures[0], "dark: remote did not answer (no worker took the task within 10s)")
	sec, remote := res.Sites[1], res.Sites[2]
	require.Equal(t, "secondary", sec.Site)
	require.True(t, sec.Refreshed)
	require.Equal(t, "done", sec.Retention)
	require.Empty(t, sec.Error)
	require.Equal(t, "remote", remote.Site)
	require.Equal(t, "skipped", remote.Retention)
	require.Contains(t, remote.Error, "dark: remote")
	require.True(t, res.RPOBreached, "the dark standby's RPO cannot be measured")
	require.Less(t, res.Duration.D(), time.Minute)
}

// The standbys do not wait for each other: a slow transmit to one does not
// delay the other's refresh.
func TestProtectSlowStandbyDoesNotDelayTheOther(t *testing.T) {
	l := threeSiteProtectEnv(t, nil, map[string]time.Duration{"transmit remote": 40 * time.Minute})
	l.env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files"})
	require.NoError(t, l.env.GetWorkflowError())
	require.Less(t, l.log["refresh secondary"], time.Minute, "secondary's refresh waited for remote's transmit")
	require.GreaterOrEqual(t, l.log["refresh remote"], 40*time.Minute)
}

// A standby that hangs (its worker is up, its store never answers) is cut
// at the cycle's bound, the schedule's interval (an hour here), so the
// next cycle is not skipped for it; the other standby is done long before.
func TestProtectCutsAHungStandbyAtTheCycleBound(t *testing.T) {
	l := threeSiteProtectEnv(t, nil, map[string]time.Duration{"transmit remote": 7 * 24 * time.Hour})
	l.env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files"})
	err := l.env.GetWorkflowError()
	require.Error(t, err)
	require.Equal(t, "ProtectIncomplete", errorType(err))
	res := l.result(t)
	require.Len(t, res.Failures, 1)
	require.Contains(t, res.Failures[0], "transmit at remote failed: did not end within the cycle's bound (1h0m0s")
	require.True(t, res.Sites[1].Refreshed)
	require.Less(t, res.Duration.D(), time.Hour+2*time.Minute)
	require.NotContains(t, l.log, "refresh remote")
}

// The sites that answer name a dark site active: there is nothing to back
// up from, and the run says so at once.
func TestProtectWithTheActiveSiteDark(t *testing.T) {
	l := threeSiteProtectEnv(t, map[string]bool{"primary": true}, nil)
	l.env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files"})
	err := l.env.GetWorkflowError()
	require.Error(t, err)
	require.Equal(t, "ActiveDark", errorType(err))
	require.Contains(t, err.Error(), "its active site primary is dark (no worker took the task within 10s)")
	require.Empty(t, l.log)
}

// result is the run's ProtectResult, as its protect query answers: a failed
// run has no workflow result.
func (l *protectLog) result(t *testing.T) ProtectResult {
	v, err := l.env.QueryWorkflow(QueryProtect)
	require.NoError(t, err)
	var res ProtectResult
	require.NoError(t, v.Get(&res))
	return res
}

// A standby that answered when the cycle began but goes silent before its
// refresh is not waited for: the refresh is skipped within the darkness
// bound (its state cannot be read), not after hours of retries.
func TestProtectStandbyGoneDarkBeforeItsRefresh(t *testing.T) {
	info := threeSitePlan
	info.Standby, info.Interval = config.StandbyWarm, time.Hour
	now := time.Date(2026, 1, 10, 3, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	asked := map[string]int{}
	var env *testsuite.TestWorkflowEnvironment
	env = protectEnvWith(t, info, now, func(in activities.SiteStateInput) (activities.SiteState, error) {
		mu.Lock()
		asked[in.Site]++
		n := asked[in.Site]
		mu.Unlock()
		if in.Site == "remote" && n > 1 {
			return activities.SiteState{}, temporal.NewApplicationError("remote: dial tcp: connection refused", "Unreachable")
		}
		return activities.SiteState{Site: in.Site, Latest: "p2", LatestTime: env.Now()}, nil
	})
	env.OnWorkflow(Backup, mock.Anything, mock.Anything).Return(BackupResult{Point: "p2"}, nil)
	env.OnWorkflow(Transmit, mock.Anything, mock.Anything).Return(TransmitResult{Point: "p2"}, nil).Twice()
	env.OnWorkflow(Restore, mock.Anything, RestoreInput{Plan: "files", Site: "secondary", Point: "p2", Refresh: true}).Return(RestoreResult{Point: "p2"}, nil).Once()
	env.ExecuteWorkflow(Protect, ProtectInput{Plan: "files", SkipRetention: true})
	l := &protectLog{env: env}
	res := l.result(t)
	require.True(t, res.Sites[1].Refreshed)
	require.Contains(t, res.Sites[2].RefreshSkipped, "its state cannot be read")
	require.Less(t, res.Duration.D(), time.Minute)
}
