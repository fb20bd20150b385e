// Package workflows holds drorch's procedures as deterministic Temporal
// workflows. They decide the order of the steps; activities (package
// activities) do the work on the task queue of the site each step touches.
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

// tracker keeps a workflow's Progress for the progress query and receives
// the live numbers activities signal.
type tracker struct {
	p    Progress
	gate gate // the approval waited for, if any
	// approveByUpdate: approvals are the approve update, not a signal
	// (versionApproveUpdate).
	approveByUpdate bool
}

// begin starts a run of op on plan: it answers the progress query from
// here on and records the plan as the workers see it. The tracker is never
// nil, so the caller can defer its finish before checking the error.
func begin(ctx workflow.Context, op, plan string) (*tracker, activities.PlanInfo, error) {
	t, err := newTracker(ctx, op, plan)
	if err != nil {
		return t, activities.PlanInfo{}, err
	}
	info, err := describe(ctx, t, plan)
	return t, info, err
}

func newTracker(ctx workflow.Context, op, plan string) (*tracker, error) {
	t := &tracker{p: Progress{Operation: op, Plan: plan, Steps: []StepProgress{}}}
	if err := workflow.SetQueryHandler(ctx, QueryProgress, func() (Progress, error) { return t.p, nil }); err != nil {
		return t, err
	}
	if workflow.GetVersion(ctx, versionApproveUpdate, workflow.DefaultVersion, 1) >= 1 {
		t.approveByUpdate = true
		if err := t.approvals(ctx); err != nil {
			return t, err
		}
	}
	ch := workflow.GetSignalChannel(ctx, SignalProgress)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var lp activities.Progress
			if !ch.Receive(ctx, &lp) {
				return
			}
			t.p.Live = &lp
		}
	})
	return t, nil
}

// step runs fn as the named step and records its start, end and error.
func (t *tracker) step(ctx workflow.Context, name string, fn func() error) error {
	t.p.Step = name
	t.p.Live, t.p.Done = nil, nil
	t.p.Steps = append(t.p.Steps, StepProgress{Name: name, Started: workflow.Now(ctx)})
	err := fn()
	s := &t.p.Steps[len(t.p.Steps)-1]
	s.Finished = workflow.Now(ctx)
	s.Duration = Duration(s.Finished.Sub(s.Started))
	if err != nil {
		s.Error = err.Error()
	}
	return err
}

// finish records the outcome.
func (t *tracker) finish(err error) {
	t.p.Live = nil
	if err != nil {
		t.p.Step, t.p.Error = "failed", err.Error()
		return
	}
	t.p.Step = "done"
}

var retryPolicy = &temporal.RetryPolicy{
	InitialInterval:    time.Second,
	BackoffCoefficient: 2,
	MaximumInterval:    time.Minute,
}

// HeartbeatTimeout is how long a long activity may go without a heartbeat
// before Temporal declares its worker lost and retries it elsewhere.
const HeartbeatTimeout = 20 * time.Second

// Retries end (docs/operations.md, "Retries that end"). Errors that no retry
// fixes are non-retryable where the activities raise them, and an activity
// that keeps failing without progress gives up once its plan's retry budget
// (default 1 h) is spent: the activities' retry interceptor enforces both.
// What the interceptor cannot see is bounded here:
//   - no worker takes the task: the site's worker is down or partitioned;
//     after WorkerWaitLimit the step fails (ScheduleToStart is not retried);
//   - a quick step that runs no attempt to its end (each attempt times out)
//     stops after QuickStepLimit in all.
//
// A step that moves data may take days when it makes progress; its overall
// limit stays a week.
const (
	WorkerWaitLimit = time.Hour
	QuickStepLimit  = 2 * time.Hour
	// MetaStepLimit bounds a metadata step (metaCtx), all its attempts
	// together: far more than reading a hundred million entries takes, and
	// a day at most of one that keeps timing out.
	MetaStepLimit = 24 * time.Hour
)

// shortCtx is for quick steps (prepare a site, check a destination, list
// points, mark a standby) on queue: their work does not grow with the data.
// A step that reads or writes a whole point or lists its chunks does, and
// runs with metaCtx.
func shortCtx(ctx workflow.Context, queue string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToStartTimeout: WorkerWaitLimit,
		StartToCloseTimeout:    10 * time.Minute,
		ScheduleToCloseTimeout: QuickStepLimit,
		RetryPolicy:            retryPolicy,
	})
}

// metaCtx is for steps that move no data but whose work grows with it:
// they read or write a whole point's entries or list the repository's
// chunks (a backup's commit, a transmit's preparation and commit, a
// restore's preparation). A hundred million entries or ten million chunks
// make them outlast any fixed attempt timeout, so they heartbeat while
// their work moves (Progress.Scanned) and are stopped by the stall guard
// when it does not; all their attempts together stay within MetaStepLimit.
// Changing a step's options needs no change id (docs/versioning.md).
func metaCtx(ctx workflow.Context, queue string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToStartTimeout: WorkerWaitLimit,
		StartToCloseTimeout:    MetaStepLimit,
		ScheduleToCloseTimeout: MetaStepLimit,
		HeartbeatTimeout:       HeartbeatTimeout,
		RetryPolicy:            retryPolicy,
	})
}

// longCtx is for steps that move data: they heartbeat and resume.
func longCtx(ctx workflow.Context, queue string) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              queue,
		ScheduleToStartTimeout: WorkerWaitLimit,
		StartToCloseTimeout:    48 * time.Hour,
		ScheduleToCloseTimeout: 7 * 24 * time.Hour,
		HeartbeatTimeout:       HeartbeatTimeout,
		RetryPolicy:            retryPolicy,
	})
}

// describe runs the Describe activity: the plan as the workers see it.
func describe(ctx workflow.Context, t *tracker, plan string) (activities.PlanInfo, error) {
	var a *activities.Activities
	var info activities.PlanInfo
	if plan == "" {
		return info, invalidInput("the input must name a plan, e.g. {\"plan\":\"files\"}")
	}
	err := t.step(ctx, "describe", func() error {
		return workflow.ExecuteActivity(shortCtx(ctx, workflow.GetInfo(ctx).TaskQueueName), a.Describe, activities.DescribeInput{Plan: plan}).Get(ctx, &info)
	})
	return info, err
}

// siteOf checks that site belongs to the plan, defaulting to def.
func siteOf(info activities.PlanInfo, site, def, field string) (string, error) {
	if site == "" {
		return def, nil
	}
	if !slices.Contains(info.SiteNames(), site) {
		return "", invalidInput(fmt.Sprintf("%s: plan %s has no site %q; its sites are %s", field, info.Plan, site, siteList(info)))
	}
	return site, nil
}

// siteList names the plan's sites for a message: "a and b", "a, b and c".
func siteList(info activities.PlanInfo) string {
	names := info.SiteNames()
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// siteQueue is the queue of site's workers beside the queue this workflow
// runs on.
func siteQueue(ctx workflow.Context, site string) string {
	return SiteTaskQueue(workflow.GetInfo(ctx).TaskQueueName, site)
}

// other is the site a procedure pairs with site when none is named: of two
// sites, the other one; of three or more, the first of the plan's sites in
// role order (its primary, then its secondaries) that is not site.
func other(info activities.PlanInfo, site string) string {
	for _, s := range info.SiteNames() {
		if s != site {
			return s
		}
	}
	return info.Primary
}

func invalidInput(msg string) error {
	return temporal.NewNonRetryableApplicationError(msg, "InvalidInput", nil)
}

// opID names an operation's staging area: the operation and the last hex
// digits of the run id (the random part of a UUIDv7; its first digits are a
// timestamp), unique per run and the same on every replay.
func opID(ctx workflow.Context, op string) (id, suffix string) {
	run := workflow.GetInfo(ctx).WorkflowExecution.RunID
	var hex []byte
	for i := len(run) - 1; i >= 0 && len(hex) < 8; i-- {
		if c := run[i]; c >= '0' && c <= '9' || c >= 'a' && c <= 'f' {
			hex = append(hex, c)
		}
	}
	if len(hex) == 0 {
		hex = []byte("0")
	}
	slices.Reverse(hex)
	return op + "-" + string(hex), string(hex)
}

// upsert sets the search attributes of the run.
// atSite resolves the site a run acts at (the one named, else the active
// one: siteOrActive) and records it in the run's search attributes.
func atSite(ctx workflow.Context, t *tracker, info activities.PlanInfo, named string) (string, error) {
	site, err := siteOrActive(ctx, info, named, "site")
	if err != nil {
		return "", err
	}
	return site, upsert(ctx, t, site)
}

func upsert(ctx workflow.Context, t *tracker, site string) error {
	t.p.Site = site
	updates := []temporal.SearchAttributeUpdate{PlanAttr.ValueSet(t.p.Plan), OperationAttr.ValueSet(t.p.Operation)}
	if site != "" {
		updates = append(updates, SiteAttr.ValueSet(site))
	}
	return workflow.UpsertTypedSearchAttributes(ctx, updates...)
}

// cleanup removes an operation's staging after a failure, in a context that
// survives the workflow's cancellation. Failing to clean up is logged, not
// returned: the original error matters more.
func cleanup(ctx workflow.Context, plan, site, op string) {
	var a *activities.Activities
	dctx, _ := workflow.NewDisconnectedContext(ctx)
	dctx = workflow.WithActivityOptions(dctx, workflow.ActivityOptions{
		TaskQueue: siteQueue(ctx, site), StartToCloseTimeout: 5 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 5},
	})
	if err := workflow.ExecuteActivity(dctx, a.Cleanup, activities.CleanupInput{Plan: plan, Site: site, Op: op}).Get(dctx, nil); err != nil {
		workflow.GetLogger(ctx).Warn("staging not removed", "site", site, "op", op, "error", err)
	}
}
