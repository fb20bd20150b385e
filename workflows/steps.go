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
			if s.Approval > 0 {
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
