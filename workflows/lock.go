package workflows

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// The plan lock (docs/concurrency.md): one long-lived workflow per plan,
// drorch/<plan>/lock, grants exclusive claims on the plan's resources to
// the workflows that need them. Requests reach it by signal-with-start from
// an activity, grants and refusals go back to the requester by signal, as
// in Temporal's mutex sample. It survives worker crashes as every workflow
// does; a claim whose holder is gone (terminated, timed out) is dropped the
// next time someone needs the resource.

// Resources a claim names.
const (
	// ResSwitch is held by a switching workflow (failover, failback,
	// permanent failover) for its whole run: one switch per plan, whatever
	// workflow id it was started under.
	ResSwitch = "switch"
)

// ResTarget is the resource of a restore target at site: the plan's own
// target there (to "") or another path.
func ResTarget(site, to string) string {
	if to == "" {
		return "target/" + site
	}
	return "target/" + site + "/path:" + to
}

// Claim modes: what a request does when another operation holds one of
// its resources.
const (
	// ClaimRefuse fails at once, naming the holder.
	ClaimRefuse = "refuse"
	// ClaimPreempt revokes the holder's claim (its operation stops with a
	// Superseded error) and is granted once the holder has released it.
	ClaimPreempt = "preempt"
	// ClaimCheck is granted or refused like ClaimRefuse but holds nothing:
	// a backup or transmit asks it so that it does not start while a switch
	// of its plan runs.
	ClaimCheck = "check"
)

// Signal and query names of the plan lock and of its holders.
const (
	SignalClaim      = "drorch-claim"       // to the lock: ClaimRequest
	SignalRelease    = "drorch-release"     // to the lock: ClaimRelease
	SignalClaimReply = "drorch-claim-reply" // to the requester: ClaimReply
	SignalRevoke     = "drorch-revoke"      // to a holder: ClaimRevoke
	QueryClaims      = "claims"             // the lock's LockState
)

// LockWorkflowID is the id of plan's lock workflow for the installation
// whose workflows run on queue: drorch/<plan>/lock on the default queue,
// drorch/<plan>/lock/<queue> on another, so that installations sharing a
// namespace do not share locks.
func LockWorkflowID(plan, queue string) string {
	if queue == TaskQueue {
		return "drorch/" + plan + "/lock"
	}
	return "drorch/" + plan + "/lock/" + queue
}

// lockID is the id of plan's lock for the installation ctx runs in.
func lockID(ctx workflow.Context, plan string) string {
	return LockWorkflowID(plan, workflow.GetInfo(ctx).TaskQueueName)
}

// ClaimRequest asks the plan lock for resources.
type ClaimRequest struct {
	ID        string   `json:"id"`     // unique per request: the requester's run id and a sequence number
	Holder    string   `json:"holder"` // the requesting workflow's id
	Owner     string   `json:"owner"`  // the operation it belongs to: the root workflow's id
	Resources []string `json:"resources"`
	Mode      string   `json:"mode"`
	What      string   `json:"what"` // for messages: "failover", "restore of 2026-… into /srv/app"
}

// ClaimReply answers a ClaimRequest.
type ClaimReply struct {
	ID      string `json:"id"`
	Granted bool   `json:"granted"`
	Error   string `json:"error,omitempty"`
}

// ClaimRelease gives back what holder claimed: every resource, or those listed.
type ClaimRelease struct {
	Holder    string   `json:"holder"`
	Resources []string `json:"resources,omitempty"`
	Request   string   `json:"request,omitempty"` // a request still waiting, withdrawn
}

// ClaimRevoke tells a holder that another operation took its resources.
type ClaimRevoke struct {
	By       string   `json:"by"`   // the workflow id that took them
	What     string   `json:"what"` // and what it is
	Resource []string `json:"resources"`
}

// HeldClaim is a granted claim.
type HeldClaim struct {
	Resource string    `json:"resource"`
	Holder   string    `json:"holder"`
	Owner    string    `json:"owner"`
	What     string    `json:"what"`
	Since    time.Time `json:"since"`
	Revoked  bool      `json:"revoked,omitempty"`
}

// LockState is what the plan lock holds; it is carried across continue-as-new.
type LockState struct {
	Held    []HeldClaim    `json:"held"`
	Waiting []ClaimRequest `json:"waiting"`
}

// PlanLockInput starts (or continues) a plan's lock.
type PlanLockInput struct {
	Plan  string    `json:"plan"`
	State LockState `json:"state"`
}

const (
	lockIdle        = 10 * time.Minute // an idle lock ends; the next request starts it again
	lockLivenessMin = 10 * time.Second // a waiter's blocking holders are checked this often at first
	lockLivenessMax = 5 * time.Minute  // and at least this often
	lockMaxEvents   = 4000             // then continue as new
)

// PlanLock is the plan's lock workflow.
func PlanLock(ctx workflow.Context, in PlanLockInput) error {
	l := &planLock{ctx: ctx, plan: in.Plan, st: in.State}
	if l.st.Held == nil {
		l.st.Held = []HeldClaim{}
	}
	if err := workflow.SetQueryHandler(ctx, QueryClaims, func() (LockState, error) { return l.st, nil }); err != nil {
		return err
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, PlanAttr.ValueSet(in.Plan), OperationAttr.ValueSet("lock")); err != nil {
		return err
	}
	// A status update wakes the loop when it is done, so that the history
	// length is checked after it; woken is no claim traffic.
	wake := workflow.NewBufferedChannel(ctx, 1)
	if err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateStatus, func(ctx workflow.Context, in StatusInput) (StatusResult, error) {
		defer wake.SendAsync(true)
		return readStatus(ctx, in)
	}, workflow.UpdateHandlerOptions{Validator: func(in StatusInput) error {
		if in.Plan != l.plan {
			return fmt.Errorf("status of plan %q asked of the lock of plan %s", in.Plan, l.plan)
		}
		return nil
	}}); err != nil {
		return err
	}
	claims := workflow.GetSignalChannel(ctx, SignalClaim)
	releases := workflow.GetSignalChannel(ctx, SignalRelease)
	liveness := lockLivenessMin
	for {
		tctx, cancel := workflow.WithCancel(ctx)
		wait := lockIdle
		if len(l.st.Waiting) > 0 {
			wait = liveness
		}
		timedOut := false
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(claims, func(c workflow.ReceiveChannel, _ bool) {
			var req ClaimRequest
			c.Receive(ctx, &req)
			l.request(req)
		})
		sel.AddReceive(releases, func(c workflow.ReceiveChannel, _ bool) {
			var rel ClaimRelease
			c.Receive(ctx, &rel)
			l.release(rel)
		})
		sel.AddFuture(workflow.NewTimer(tctx, wait), func(workflow.Future) { timedOut = true })
		woken := false
		sel.AddReceive(wake, func(c workflow.ReceiveChannel, _ bool) { c.ReceiveAsync(nil); woken = true })
		sel.Select(ctx)
		cancel()
		switch {
		case woken:
		case !timedOut:
			liveness = lockLivenessMin
		case len(l.st.Waiting) > 0:
			l.dropGone(l.blockers())
			l.grantWaiting()
			liveness = min(2*liveness, lockLivenessMax)
		default:
			// Quiet for lockIdle: forget the claims of holders that are gone.
			l.dropGone(l.st.Held)
		}
		// Take what arrived meanwhile before ending or continuing.
		if timedOut && len(l.st.Held) == 0 && len(l.st.Waiting) == 0 {
			for l.drain(claims, releases) {
			}
			// A status update still reading keeps the lock: it would
			// be lost with the run.
			if len(l.st.Held) == 0 && len(l.st.Waiting) == 0 && workflow.AllHandlersFinished(ctx) {
				return nil
			}
		}
		if workflow.GetInfo(ctx).GetCurrentHistoryLength() > lockMaxEvents || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			// Status updates finish in this run first (bounded by
			// statusSiteLimit); claims that arrive meanwhile wait in
			// their channels and are drained below.
			if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
				return err
			}
			for l.drain(claims, releases) {
			}
			return workflow.NewContinueAsNewError(ctx, PlanLock, PlanLockInput{Plan: l.plan, State: l.st})
		}
	}
}

type planLock struct {
	ctx  workflow.Context
	plan string
	st   LockState
}

// drain handles one pending signal, if any.
func (l *planLock) drain(claims, releases workflow.ReceiveChannel) bool {
	var req ClaimRequest
	if claims.ReceiveAsync(&req) {
		l.request(req)
		return true
	}
	var rel ClaimRelease
	if releases.ReceiveAsync(&rel) {
		l.release(rel)
		return true
	}
	return false
}

func (l *planLock) request(req ClaimRequest) {
	if slices.ContainsFunc(l.st.Waiting, func(w ClaimRequest) bool { return w.ID == req.ID }) {
		return // a retried request: answered when granted
	}
	blocking := l.conflicts(req)
	if len(blocking) > 0 && req.Mode != ClaimPreempt {
		// A holder that is gone must not refuse anyone.
		l.dropGone(blocking)
		blocking = l.conflicts(req)
	}
	switch {
	case len(blocking) == 0:
		l.grant(req)
	case req.Mode == ClaimPreempt:
		l.st.Waiting = append([]ClaimRequest{req}, l.st.Waiting...)
		l.revoke(req)
		l.grantWaiting()
	default:
		l.reply(req.Holder, ClaimReply{ID: req.ID, Error: l.refusal(req, blocking)})
	}
}

// conflicts lists the claims held by other operations on req's resources.
func (l *planLock) conflicts(req ClaimRequest) []HeldClaim {
	var out []HeldClaim
	for _, h := range l.st.Held {
		if h.Owner != req.Owner && slices.Contains(req.Resources, h.Resource) {
			out = append(out, h)
		}
	}
	return out
}

func (l *planLock) grant(req ClaimRequest) {
	if req.Mode != ClaimCheck {
		now := workflow.Now(l.ctx)
		for _, r := range req.Resources {
			if !slices.ContainsFunc(l.st.Held, func(h HeldClaim) bool { return h.Resource == r && h.Holder == req.Holder }) {
				l.st.Held = append(l.st.Held, HeldClaim{Resource: r, Holder: req.Holder, Owner: req.Owner, What: req.What, Since: now})
			}
		}
	}
	l.reply(req.Holder, ClaimReply{ID: req.ID, Granted: true})
}

// grantWaiting grants, in order, the waiting requests nothing blocks; a
// request never overtakes an earlier one that wants the same resource. A
// request leaves the queue before it is granted: a grant that cannot be
// delivered releases, which calls grantWaiting again, and must not find it
// there.
func (l *planLock) grantWaiting() {
	for {
		i := l.nextGrantable()
		if i < 0 {
			return
		}
		w := l.st.Waiting[i]
		l.st.Waiting = slices.Delete(l.st.Waiting, i, i+1)
		l.grant(w)
	}
}

// nextGrantable is the index of the first waiting request that nothing
// blocks, -1 if none.
func (l *planLock) nextGrantable() int {
	wanted := map[string]bool{}
	for i, w := range l.st.Waiting {
		free := len(l.conflicts(w)) == 0
		for _, r := range w.Resources {
			free = free && !wanted[r]
		}
		if free {
			return i
		}
		for _, r := range w.Resources {
			wanted[r] = true
		}
	}
	return -1
}

func (l *planLock) release(rel ClaimRelease) {
	if rel.Request != "" {
		l.st.Waiting = slices.DeleteFunc(l.st.Waiting, func(w ClaimRequest) bool { return w.ID == rel.Request })
	}
	l.st.Held = slices.DeleteFunc(l.st.Held, func(h HeldClaim) bool {
		return h.Holder == rel.Holder && (len(rel.Resources) == 0 || slices.Contains(rel.Resources, h.Resource))
	})
	l.grantWaiting()
}

// revoke tells the holders of what blocks req that req takes it over.
func (l *planLock) revoke(req ClaimRequest) {
	var holders []string // in the order their claims were granted
	byHolder := map[string][]string{}
	for i := range l.st.Held {
		h := &l.st.Held[i]
		if h.Owner != req.Owner && slices.Contains(req.Resources, h.Resource) && !h.Revoked {
			h.Revoked = true
			if !slices.Contains(holders, h.Holder) {
				holders = append(holders, h.Holder)
			}
			byHolder[h.Holder] = append(byHolder[h.Holder], h.Resource)
		}
	}
	for _, h := range holders {
		err := workflow.SignalExternalWorkflow(l.ctx, h, "", SignalRevoke, ClaimRevoke{By: req.Holder, What: req.What, Resource: byHolder[h]}).Get(l.ctx, nil)
		if err != nil {
			// The holder is gone: what it held is free.
			l.release(ClaimRelease{Holder: h})
		}
	}
}

// blockers lists the claims that keep waiting requests waiting.
func (l *planLock) blockers() []HeldClaim {
	var out []HeldClaim
	for _, w := range l.st.Waiting {
		out = append(out, l.conflicts(w)...)
	}
	return out
}

// dropGone releases the claims of holders among claims whose workflow has
// ended without releasing them (terminated, timed out). The holders are
// asked at once, each briefly: the lock answers no one meanwhile.
func (l *planLock) dropGone(claims []HeldClaim) {
	ctx := workflow.WithActivityOptions(l.ctx, workflow.ActivityOptions{
		TaskQueue: workflow.GetInfo(l.ctx).TaskQueueName, ScheduleToCloseTimeout: 10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var holders []string
	var asked []workflow.Future
	for _, h := range claims {
		if slices.Contains(holders, h.Holder) {
			continue
		}
		holders = append(holders, h.Holder)
		asked = append(asked, workflow.ExecuteActivity(ctx, act.WorkflowRunning, activities.WorkflowRunningInput{WorkflowID: h.Holder}))
	}
	for i, h := range holders {
		var running bool
		if err := asked[i].Get(l.ctx, &running); err != nil {
			continue // not known: keep the claim
		}
		if !running {
			workflow.GetLogger(l.ctx).Warn("claim dropped: its holder has ended", "holder", h)
			l.release(ClaimRelease{Holder: h})
		}
	}
}

func (l *planLock) refusal(req ClaimRequest, blocking []HeldClaim) string {
	h := blocking[0]
	held := fmt.Sprintf("%s is held by %s", strings.TrimPrefix(h.Resource, "target/"), h.What)
	if h.Resource == ResSwitch {
		held = "a " + h.What + " of the plan is running"
	}
	return fmt.Sprintf("plan %s: %s refused: %s (workflow %s, since %s); wait for it to end or cancel it",
		l.plan, req.What, held, h.Holder, h.Since.UTC().Format(time.RFC3339))
}

func (l *planLock) reply(holder string, r ClaimReply) {
	if err := workflow.SignalExternalWorkflow(l.ctx, holder, "", SignalClaimReply, r).Get(l.ctx, nil); err != nil {
		workflow.GetLogger(l.ctx).Warn("claim reply not delivered", "holder", holder, "error", err)
		if r.Granted {
			l.release(ClaimRelease{Holder: holder})
		}
	}
}
