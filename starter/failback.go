package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"

	"github.com/drorch/drorch/workflows"
)

func (c *cli) failbackCmd() *cobra.Command {
	var in workflows.FailbackInput
	cmd := &cobra.Command{
		Use:   "failback --plan P [--auto-complete]",
		Short: "Data recovery: bring the plan back to its primary (sync until caught up, then on `drorch complete`)",
		Long: `Starts data recovery of a plan that a failover moved to its secondary. The primary
becomes read-only, its own data is kept as a restore point, and sync rounds (backup,
transmit, restore) bring it up to date while the secondary stays active. Once the
primary's lag is under failback.lagThreshold, ` + "`drorch complete --plan P`" + ` (or
--auto-complete) switches back with a final sync that loses nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.startSwitch(in.Plan, workflows.OpFailback, workflows.Failback, in)
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().BoolVar(&in.AutoComplete, "auto-complete", false, "complete as soon as the primary has caught up, without `drorch complete`")
	c.waitFlags(cmd)
	return cmd
}

func (c *cli) completeCmd() *cobra.Command {
	var plan string
	var force bool
	cmd := &cobra.Command{
		Use:   "complete --plan P [--force]",
		Short: "Let the plan's data recovery (failback) switch back to the primary once it has caught up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.onSwitch(plan, func(ctx, sctx context.Context, cc *clientConn, id string) error {
				if runningSwitch(sctx, cc, plan) != "Failback" {
					return fmt.Errorf("complete: no data recovery (failback) of plan %s is running; start one with drorch failback --plan %s", plan, plan)
				}
				in := workflows.CompleteSignal{By: operator("drorch complete"), Force: force}
				var res workflows.CompleteResult
				err := update(sctx, cc, id, workflows.UpdateComplete, in, &res)
				if errors.Is(err, errNoUpdate) {
					// A run started before complete was an update.
					err = cc.SignalWorkflow(sctx, id, "", workflows.SignalComplete, in)
				}
				if err != nil {
					return fmt.Errorf("complete refused by %s: %s", id, errorText(err))
				}
				if !c.wait {
					if c.json {
						return printJSON(os.Stdout, map[string]any{"workflowId": id, "update": workflows.UpdateComplete, "lag": res.Lag.String(), "rounds": res.Rounds})
					}
					fmt.Printf("%s is completing (the primary's lag was %s after %d sync rounds)\n", id, res.Lag.D().Round(time.Second), res.Rounds)
					return nil
				}
				run := cc.GetWorkflow(ctx, id, "")
				done := make(chan error, 1)
				var rep workflows.SwitchReport
				go func() { done <- run.Get(ctx, &rep) }()
				if err := c.watch(ctx, cc, run, done); err != nil {
					return fmt.Errorf("failback failed: %s", errorText(err))
				}
				if c.json {
					return printJSON(os.Stdout, rep)
				}
				printReport(os.Stdout, rep)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (required)")
	cmd.Flags().BoolVar(&force, "force", false, "complete even though the primary has not caught up (the final sync then takes as long as a round, with no site writable)")
	c.waitFlags(cmd)
	return cmd
}

func (c *cli) permanentFailoverCmd() *cobra.Command {
	var in workflows.PermanentFailoverInput
	cmd := &cobra.Command{
		Use:   "permanent-failover --plan P",
		Short: "Make the site a failover made active the plan's primary for good (roles recorded in both repositories)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.startSwitch(in.Plan, workflows.OpPermanentFailover, workflows.PermanentFailover, in)
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	c.waitFlags(cmd)
	return cmd
}

func (c *cli) cancelCmd() *cobra.Command {
	var plan string
	cmd := &cobra.Command{
		Use:   "cancel --plan P",
		Short: "Cancel the plan's running switching operation; what it did is undone where that is safe",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.onSwitch(plan, func(ctx, sctx context.Context, cc *clientConn, id string) error {
				op := runningSwitch(sctx, cc, plan)
				if op == "" {
					return fmt.Errorf("cancel: no switching operation of plan %s is running", plan)
				}
				if err := cc.CancelWorkflow(sctx, id, ""); err != nil {
					return fmt.Errorf("cancel %s: %w", id, err)
				}
				if !c.wait {
					if c.json {
						return printJSON(os.Stdout, map[string]string{"workflowId": id, "cancelled": op})
					}
					fmt.Printf("asked %s (%s) to cancel; drorch report --plan %s shows what it undid\n", id, op, plan)
					return nil
				}
				_ = cc.GetWorkflow(ctx, id, "").Get(ctx, nil) // ends cancelled, after undoing
				res, err := c.planStatus(cc, workflows.StatusInput{Plan: plan, Reports: 1})
				if err != nil {
					return err
				}
				if c.json {
					return printJSON(os.Stdout, res)
				}
				if n := len(res.Reports); n > 0 {
					printReport(os.Stdout, res.Reports[n-1])
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (required)")
	c.waitFlags(cmd)
	return cmd
}

// onSwitch connects for plan and runs fn on the plan's switch id, with ctx
// ending on an interrupt and sctx also after 30 seconds, for the calls
// that must answer at once.
func (c *cli) onSwitch(plan string, fn func(ctx, sctx context.Context, cc *clientConn, id string) error) error {
	cc, err := c.open(plan)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return fn(ctx, sctx, cc, workflows.SwitchWorkflowID(plan))
}

// runningSwitch is the workflow type of the plan's running switching
// operation ("Failover", "Failback", …), "" when none runs.
func runningSwitch(ctx context.Context, cc *clientConn, plan string) string {
	desc, err := cc.DescribeWorkflowExecution(ctx, workflows.SwitchWorkflowID(plan), "")
	if err != nil || desc.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return ""
	}
	return desc.GetWorkflowExecutionInfo().GetType().GetName()
}

// operator names who sends a signal: the user running the CLI, or def.
func operator(def string) string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return def
}
