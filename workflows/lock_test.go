package workflows

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
)

// lockEnv runs the plan lock with the signals it sends recorded.
type lockEnv struct {
	*testsuite.TestWorkflowEnvironment
	mu      sync.Mutex
	replies map[string]ClaimReply // by request id
	revoked map[string]ClaimRevoke
	running map[string]bool // holders WorkflowRunning says are running
	gone    map[string]bool // holders a signal cannot reach
}

func newLockEnv(t *testing.T) *lockEnv {
	var s testsuite.WorkflowTestSuite
	e := &lockEnv{TestWorkflowEnvironment: s.NewTestWorkflowEnvironment(), replies: map[string]ClaimReply{}, revoked: map[string]ClaimRevoke{}, running: map[string]bool{}, gone: map[string]bool{}}
	e.RegisterActivity(&activities.Activities{})
	e.OnSignalExternalWorkflow(mock.Anything, mock.Anything, "", SignalClaimReply, mock.Anything).Return(func(_, holder, _, _ string, arg any) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		r := arg.(ClaimReply)
		e.replies[r.ID] = r
		if e.gone[holder] {
			return errors.New("workflow execution already completed")
		}
		return nil
	}).Maybe()
	e.OnSignalExternalWorkflow(mock.Anything, mock.Anything, "", SignalRevoke, mock.Anything).Return(func(_, holder, _, _ string, arg any) error {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.revoked[holder] = arg.(ClaimRevoke)
		return nil
	}).Maybe()
	e.OnActivity(act.WorkflowRunning, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.WorkflowRunningInput) (bool, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.running[in.WorkflowID], nil
	}).Maybe()
	return e
}

func (e *lockEnv) at(d time.Duration, f func()) { e.RegisterDelayedCallback(f, d) }

func (e *lockEnv) claim(id, holder, owner, mode string, res ...string) {
	e.SignalWorkflow(SignalClaim, ClaimRequest{ID: id, Holder: holder, Owner: owner, Mode: mode, What: holder, Resources: res})
}

func (e *lockEnv) reply(id string) (ClaimReply, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.replies[id]
	return r, ok
}

func TestPlanLock(t *testing.T) {
	e := newLockEnv(t)
	e.running["restore-a"], e.running["switch"] = true, true
	e.at(time.Second, func() { e.claim("1", "restore-a", "restore-a", ClaimRefuse, ResTarget("secondary", "")) })
	// A second restore of the same target is refused, naming the first.
	e.at(2*time.Second, func() { e.claim("2", "restore-b", "restore-b", ClaimRefuse, ResTarget("secondary", "")) })
	// Another target is free.
	e.at(3*time.Second, func() { e.claim("3", "restore-c", "restore-c", ClaimRefuse, ResTarget("secondary", "/tmp/x")) })
	// A failover takes the switch, and its target from restore-a.
	e.at(4*time.Second, func() { e.claim("4", "switch", "switch", ClaimRefuse, ResSwitch) })
	e.at(5*time.Second, func() { e.claim("5", "switch", "switch", ClaimPreempt, ResTarget("secondary", "")) })
	// A backup is refused while the switch runs; the switch's own is not.
	e.at(6*time.Second, func() { e.claim("6", "backup", "backup", ClaimCheck, ResSwitch) })
	e.at(7*time.Second, func() { e.claim("7", "switch/backup", "switch", ClaimCheck, ResSwitch) })
	// A second switch under another id is refused.
	e.at(8*time.Second, func() { e.claim("8", "other-switch", "other-switch", ClaimRefuse, ResSwitch) })
	var waiting LockState
	e.at(9*time.Second, func() {
		_, granted := e.reply("5")
		require.False(t, granted, "the failover waits until the restore has let go")
		v, err := e.QueryWorkflow(QueryClaims)
		require.NoError(t, err)
		require.NoError(t, v.Get(&waiting))
		e.SignalWorkflow(SignalRelease, ClaimRelease{Holder: "restore-a"})
	})
	// A holder that is gone (terminated) blocks no one.
	e.at(20*time.Second, func() { e.claim("9", "drill-x", "drill-x", ClaimRefuse, ResTarget("secondary", "/tmp/x")) })
	e.at(21*time.Second, func() { e.SignalWorkflow(SignalRelease, ClaimRelease{Holder: "switch"}) })
	e.at(22*time.Second, func() { e.claim("10", "backup2", "backup2", ClaimCheck, ResSwitch) })
	e.ExecuteWorkflow(PlanLock, PlanLockInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError(), "an idle lock ends")

	granted := func(id string) bool { r, ok := e.reply(id); return ok && r.Granted }
	require.True(t, granted("1"))
	r2, _ := e.reply("2")
	require.False(t, r2.Granted)
	require.Contains(t, r2.Error, "refused")
	require.Contains(t, r2.Error, "held by restore-a (workflow restore-a")
	require.True(t, granted("3"))
	require.True(t, granted("4"))
	require.Equal(t, "switch", e.revoked["restore-a"].By)
	require.Len(t, waiting.Waiting, 1)
	require.True(t, granted("5"), "granted once the restore released it")
	r6, _ := e.reply("6")
	require.Contains(t, r6.Error, "a switch of the plan is running")
	require.True(t, granted("7"), "a switch's own backup runs")
	r8, _ := e.reply("8")
	require.Contains(t, r8.Error, "workflow switch")
	require.True(t, granted("9"), "restore-c has ended without releasing: its claim is dropped")
	require.True(t, granted("10"))
}

// A restore whose target a failover takes over stops and fails as
// superseded, naming the failover.
func TestRestoreRevokedIsSuperseded(t *testing.T) {
	env := newEnv(t)
	var a *activities.Activities
	env.OnActivity(a.Describe, mock.Anything, mock.Anything).Return(plan, nil)
	env.OnActivity(a.PrepareRestore, mock.Anything, mock.Anything).Return(activities.PrepareRestoreResult{}, nil).Maybe()
	env.OnActivity(a.RestoreData, mock.Anything, mock.Anything).Return(func(ctx context.Context, _ activities.RestoreDataInput) (activities.RestoreDataResult, error) {
		<-ctx.Done()
		return activities.RestoreDataResult{}, ctx.Err()
	}).Maybe()
	env.RegisterDelayedCallback(func() {
		env.SignalWorkflow(SignalRevoke, ClaimRevoke{By: "drorch/files/switch", What: "unplanned failover to secondary", Resource: []string{"target/secondary"}})
	}, 0)
	env.ExecuteWorkflow(Restore, RestoreInput{Plan: "files", Site: "secondary"})
	err := env.GetWorkflowError()
	require.ErrorContains(t, err, "superseded: unplanned failover to secondary (workflow drorch/files/switch) took over target/secondary")
}

// A preempting requester that is gone by the time it is granted (its
// workflow terminated while it waited) neither keeps the target nor makes
// the lock loop: the target goes to the next request.
func TestPlanLockGrantToAGoneRequester(t *testing.T) {
	e := newLockEnv(t)
	e.running["restore-a"], e.running["next"] = true, true
	e.gone["failover"] = true
	e.at(time.Second, func() { e.claim("1", "restore-a", "restore-a", ClaimRefuse, ResTarget("secondary", "")) })
	e.at(2*time.Second, func() { e.claim("2", "failover", "failover", ClaimPreempt, ResTarget("secondary", "")) })
	e.at(3*time.Second, func() { e.SignalWorkflow(SignalRelease, ClaimRelease{Holder: "restore-a"}) })
	e.at(4*time.Second, func() { e.claim("3", "next", "next", ClaimRefuse, ResTarget("secondary", "")) })
	e.at(5*time.Second, func() { e.SignalWorkflow(SignalRelease, ClaimRelease{Holder: "next"}) })
	e.ExecuteWorkflow(PlanLock, PlanLockInput{Plan: "files"})
	require.NoError(t, e.GetWorkflowError())
	r, _ := e.reply("3")
	require.True(t, r.Granted, "the target is free once the gone requester's grant could not be delivered: %+v", r)
}
