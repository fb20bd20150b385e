package workflows

import (
	"fmt"
	"slices"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// runSteps runs the recovery plan's steps that apply to procedure, in order,
// with their hooks on site's workers: hooks before, a fixed wait, an
// operator's approval (the approve signal) within its timeout, hooks after.
func runSteps(ctx workflow.Context, t *tracker, info activities.PlanInfo, procedure, site string) error {
	hooks := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: siteQueue(ctx, site), StartToCloseTimeout: 15 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 5 * time.Second, BackoffCoefficient: 2, MaximumAttempts: 3},
	})
	approvals := workflow.GetSignalChannel(ctx, SignalApprove)
	byUpdate := t.approveByUpdate
	for _, s := range info.Steps {
		if len(s.On) > 0 && !slices.Contains(s.On, procedure) {
			continue
		}
		err := t.step(ctx, "step "+s.Name, func() error {
			if s.Before > 0 {
				if err := workflow.ExecuteActivity(hooks, act.RunHooks, activities.RunHooksInput{Plan: info.Plan, Step: s.Name, Phase: "before"}).Get(ctx, nil); err != nil {
					return wrap(err, "step %s, hooks before", s.Name)
				}
			}
			if s.Wait > 0 {
				t.p.Waiting = fmt.Sprintf("step %s: waiting %s", s.Name, s.Wait)
				if err := workflow.Sleep(ctx, s.Wait); err != nil {
					return err
				}
			}
			if s.Approval > 0 && byUpdate {
				t.p.Waiting = fmt.Sprintf("approval of step %s (drorch approve --plan %s), at most %s", s.Name, info.Plan, s.Approval)
				err := t.awaitApproval(ctx, s.Name, s.Approval)
				t.p.Waiting = ""
				if err != nil {
					return err
				}
			} else if s.Approval > 0 {
				t.p.Waiting = fmt.Sprintf("approval of step %s (drorch approve --plan %s), at most %s", s.Name, info.Plan, s.Approval)
				timer, cancel := workflow.WithCancel(ctx)
				approved := false
				sel := workflow.NewSelector(ctx)
				sel.AddReceive(approvals, func(c workflow.ReceiveChannel, _ bool) {
					var by ApproveSignal
					c.Receive(ctx, &by)
					approved = true
				})
				sel.AddFuture(workflow.NewTimer(timer, s.Approval), func(workflow.Future) {})
				sel.Select(ctx)
				cancel()
				if err := ctx.Err(); err != nil {
					t.p.Waiting = ""
					return temporal.NewCanceledError(fmt.Sprintf("step %s: cancelled while waiting for approval", s.Name))
				}
				if !approved {
					t.p.Waiting = ""
					return temporal.NewNonRetryableApplicationError(fmt.Sprintf("step %s: no approval within %s", s.Name, s.Approval), "ApprovalTimeout", nil)
				}
			}
			t.p.Waiting = ""
			if s.After > 0 {
				if err := workflow.ExecuteActivity(hooks, act.RunHooks, activities.RunHooksInput{Plan: info.Plan, Step: s.Name, Phase: "after"}).Get(ctx, nil); err != nil {
					return wrap(err, "step %s, hooks after", s.Name)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ApproveSignal is the approve signal's optional payload.
type ApproveSignal struct {
	By string `json:"by,omitempty"`
}

// versionApproveUpdate: approval is an update bound to the step that
// waits, not a buffered signal (docs/versioning.md).
const versionApproveUpdate = "approve-update"

// ApproveUpdate is the approve update's input.
type ApproveUpdate struct {
	// Step is the step the operator approves; empty: the one waiting now.
	Step string `json:"step,omitempty"`
	By   string `json:"by,omitempty"`
}

// ApproveResult is the approve update's answer.
type ApproveResult struct {
	Step string `json:"step"` // the step released
}

// gate is the approval a workflow waits for now, if any.
type gate struct {
	step     string // the step waiting; "" when none is
	approved *ApproveUpdate
}

// approvals answers the approve update: it is accepted only while a step
// waits for approval, and only for that step, so an early or repeated
// approve is refused with the reason instead of releasing a later gate.
func (t *tracker) approvals(ctx workflow.Context) error {
	return workflow.SetUpdateHandlerWithOptions(ctx, UpdateApprove,
		func(ctx workflow.Context, in ApproveUpdate) (ApproveResult, error) {
			t.gate.approved = &in
			return ApproveResult{Step: t.gate.step}, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, in ApproveUpdate) error {
			switch {
			case t.gate.step == "":
				return fmt.Errorf("nothing of %s waits for approval now (step %q)", t.p.Plan, t.p.Step)
			case t.gate.approved != nil:
				return fmt.Errorf("step %s is already approved", t.gate.step)
			case in.Step != "" && in.Step != t.gate.step:
				return fmt.Errorf("step %s does not wait for approval; step %s does", in.Step, t.gate.step)
			}
			return nil
		}})
}

// awaitApproval opens the gate of step and waits at most timeout for the
// approve update.
func (t *tracker) awaitApproval(ctx workflow.Context, step string, timeout time.Duration) error {
	t.gate = gate{step: step}
	defer func() { t.gate = gate{} }()
	ok, err := workflow.AwaitWithTimeout(ctx, timeout, func() bool { return t.gate.approved != nil })
	if err != nil || ctx.Err() != nil {
		return temporal.NewCanceledError(fmt.Sprintf("step %s: cancelled while waiting for approval", step))
	}
	if !ok {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("step %s: no approval within %s", step, timeout), "ApprovalTimeout", nil)
	}
	if by := t.gate.approved.By; by != "" {
		workflow.GetLogger(ctx).Info("step approved", "step", step, "by", by)
	}
	return nil
}
