package workflows

import (
	"fmt"
	"path"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// versionClaims gates the plan lock's claims in workflows started before
// it existed, so that their histories still replay (docs/versioning.md).
const versionClaims = "claims"

// claimsOn reports whether this run takes claims: every run started by
// this code does; runs recorded before claims existed do not.
func claimsOn(ctx workflow.Context) bool {
	return workflow.GetVersion(ctx, versionClaims, workflow.DefaultVersion, 1) >= 1
}

// changeRetentionClaims (workflow.GetVersion) gates the retention claims
// of readers of restore points: a restore or drill checks, once it holds
// its target, that no forget runs at its site; a switch takes
// retention/<site> over with the target it restores (docs/concurrency.md,
// "Points in use are not forgotten").
const changeRetentionClaims = "retention-claims"

// noForget refuses a reader of the restore points at site, once it holds
// its target, while a forget runs there (holding nothing): either the
// forget, which asks for the claims after it holds retention/<site>, sees
// the reader's target, or the reader sees the forget.
func noForget(ctx workflow.Context, plan, what, site string) error {
	if !claimsOn(ctx) || workflow.GetVersion(ctx, changeRetentionClaims, workflow.DefaultVersion, 1) < 1 {
		return nil
	}
	_, err := acquire(ctx, plan, ClaimCheck, what, ResRetention(site))
	return err
}

// cleanPath is the lexical form of a target path that claims are keyed by.
func cleanPath(p string) string {
	if p == "" {
		return ""
	}
	return path.Clean(p)
}

// claimReplyWait bounds the wait for the lock's answer to a request that
// does not wait for a holder.
const claimReplyWait = 2 * time.Minute

// claim is a granted claim of the plan lock: Ctx is cancelled when another
// operation takes the resources over (see ClaimPreempt).
type claim struct {
	Ctx     workflow.Context
	plan    string
	holder  string
	res     []string
	revoked *ClaimRevoke
	held    bool
}

// acquire asks the plan lock for resources in mode and waits for its
// answer: a refusal is a non-retryable ClaimRefused error naming the holder.
// With ClaimPreempt it waits until the holders have let go. The caller
// releases the claim when it is done (release is a no-op for ClaimCheck).
func acquire(ctx workflow.Context, plan, mode, what string, resources ...string) (*claim, error) {
	info := workflow.GetInfo(ctx)
	// Claims belong to the operation: its root workflow (a server too old
	// to name the root names the parent, which for drorch's one level of
	// children is the same).
	owner := info.WorkflowExecution.ID
	if info.RootWorkflowExecution != nil {
		owner = info.RootWorkflowExecution.ID
	} else if info.ParentWorkflowExecution != nil {
		owner = info.ParentWorkflowExecution.ID
	}
	req := ClaimRequest{
		ID:     fmt.Sprintf("%s/%d", info.WorkflowExecution.RunID, info.GetCurrentHistoryLength()),
		Holder: info.WorkflowExecution.ID, Owner: owner, Resources: resources, Mode: mode, What: what,
	}
	c := &claim{Ctx: ctx, plan: plan, holder: req.Holder, res: resources}
	// Listen for a revocation before the request can be granted.
	if mode == ClaimRefuse {
		var cancel workflow.CancelFunc
		c.Ctx, cancel = workflow.WithCancel(ctx)
		revokes := workflow.GetSignalChannel(ctx, SignalRevoke)
		workflow.Go(ctx, func(gctx workflow.Context) {
			var rv ClaimRevoke
			if revokes.Receive(gctx, &rv) {
				c.revoked = &rv
				cancel()
			}
		})
	}
	actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: info.TaskQueueName, StartToCloseTimeout: 30 * time.Second, ScheduleToCloseTimeout: claimReplyWait,
		RetryPolicy: retryPolicy,
	})
	if err := workflow.ExecuteActivity(actx, act.RequestClaim, activities.RequestClaimInput{
		LockID: lockID(ctx, plan), LockType: "PlanLock", Queue: info.TaskQueueName, Signal: SignalClaim,
		Request: req, Start: PlanLockInput{Plan: plan}, Plan: plan,
	}).Get(ctx, nil); err != nil {
		return nil, wrap(err, "plan %s: ask the plan lock for %s", plan, strings.Join(resources, ", "))
	}
	replies := workflow.GetSignalChannel(ctx, SignalClaimReply)
	var reply ClaimReply
	timedOut := false
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	var timer workflow.Future
	if mode != ClaimPreempt {
		timer = workflow.NewTimer(tctx, claimReplyWait)
	}
	for reply.ID != req.ID && !timedOut && ctx.Err() == nil {
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(replies, func(ch workflow.ReceiveChannel, _ bool) { ch.Receive(ctx, &reply) })
		if timer != nil {
			sel.AddFuture(timer, func(workflow.Future) { timedOut = true })
		}
		sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) {})
		sel.Select(ctx)
	}
	switch {
	case ctx.Err() != nil:
		c.withdraw(req.ID)
		return nil, temporal.NewCanceledError("cancelled while waiting for " + strings.Join(resources, ", "))
	case timedOut:
		c.withdraw(req.ID)
		return nil, temporal.NewApplicationError(fmt.Sprintf("plan %s: the plan lock (workflow %s) did not answer within %s", plan, lockID(ctx, plan), claimReplyWait), "ClaimTimeout")
	case !reply.Granted:
		return nil, temporal.NewNonRetryableApplicationError(reply.Error, "ClaimRefused", nil)
	}
	c.held = mode != ClaimCheck
	return c, nil
}

// withdraw tells the lock that a request is no longer wanted (and gives
// back what it may have granted meanwhile).
func (c *claim) withdraw(request string) {
	dctx, _ := workflow.NewDisconnectedContext(c.Ctx)
	_ = workflow.SignalExternalWorkflow(dctx, lockID(dctx, c.plan), "", SignalRelease,
		ClaimRelease{Holder: c.holder, Resources: c.res, Request: request}).Get(dctx, nil)
}

// release gives back every claim this workflow holds; it runs after a
// cancellation too. A lock that is not running holds nothing, so failing
// to signal it is harmless.
func (c *claim) release() {
	if c == nil || !c.held {
		return
	}
	c.held = false
	dctx, _ := workflow.NewDisconnectedContext(c.Ctx)
	_ = workflow.SignalExternalWorkflow(dctx, lockID(dctx, c.plan), "", SignalRelease, ClaimRelease{Holder: c.holder}).Get(dctx, nil)
}

// superseded turns the error of work cut short by a revocation into a
// Superseded error that says who took over; other errors pass unchanged.
func (c *claim) superseded(err error) error {
	if err == nil || c == nil || c.revoked == nil {
		return err
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("superseded: %s (workflow %s) took over %s",
		c.revoked.What, c.revoked.By, strings.Join(c.revoked.Resource, ", ")), "Superseded", nil)
}

// noSwitch refuses to start a backup or transmit of plan while a switch of
// the plan runs, unless this run is part of that switch: the switch fences
// and raises epochs under it, and its own backups and transmits are the
// ones that count.
func noSwitch(ctx workflow.Context, plan, what string) error {
	if !claimsOn(ctx) {
		return nil
	}
	_, err := acquire(ctx, plan, ClaimCheck, what, ResSwitch)
	return err
}

// claimSwitch takes the plan's switch claim, refused while another switch
// of the plan runs. It is held by the workflow id, across continue-as-new;
// the caller calls release when the switch ends (not when it continues as
// new). A switch reads the plan's state only once it holds the claim, so
// that it never acts on what another switch was changing.
func claimSwitch(ctx workflow.Context, plan, what string) (release func(), err error) {
	if !claimsOn(ctx) {
		return func() {}, nil
	}
	sw, err := acquire(ctx, plan, ClaimRefuse, what, ResSwitch)
	if err != nil {
		return func() {}, err
	}
	return sw.release, nil
}

// claimTargets takes the plan's own target at site (and retention/<site>)
// for a switch that is
// about to restore it or open it for writes, taking it from a restore or
// refresh that holds it (which then fails as superseded). The switch's
// release gives it back.
func claimTargets(ctx workflow.Context, plan, what, site string) error {
	if !claimsOn(ctx) {
		return nil
	}
	res := []string{ResTarget(site, "")}
	if workflow.GetVersion(ctx, changeRetentionClaims, workflow.DefaultVersion, 1) >= 1 {
		// A forget running at site stops before it deletes anything.
		res = append(res, ResRetention(site))
	}
	_, err := acquire(ctx, plan, ClaimPreempt, what, res...)
	return err
}
