package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/workflows"
)

// switchOptions start a switching workflow under the plan's one switch id:
// refused while another runs, reusable once it ended.
func switchOptions(plan string) client.StartWorkflowOptions {
	return client.StartWorkflowOptions{
		ID:                       workflows.SwitchWorkflowID(plan),
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// Without it the client quietly hands back the running one.
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}
}

func (c *cli) failoverCmd() *cobra.Command {
	var in workflows.FailoverInput
	var planned, unplanned bool
	cmd := &cobra.Command{
		Use:   "failover --plan P [--to SITE] [--planned|--unplanned] [--point ID] [--force]",
		Short: "Make the plan's standby site active (planned: a switchover that loses nothing)",
		Long: `Make the plan's standby site active (planned: a switchover that loses nothing).

With two sites the standby is the other site. A plan with more than one
secondary (secondaries: [city-b, remote-c]) fails over to the site --to names,
or else to the first of its sites in order (primary, then secondaries) that is
not active and answers. With three or more sites a failover needs a majority of
them to answer; when only one does (a regional disaster), --force goes on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if planned && unplanned {
				return fmt.Errorf("give --planned or --unplanned, not both")
			}
			in.Mode = workflows.ModePlanned
			if unplanned {
				in.Mode = workflows.ModeUnplanned
			}
			return c.startSwitch(in.Plan, workflows.OpFailover, workflows.Failover, in, in.To)
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().BoolVar(&planned, "planned", false, "fence the active site and sync it first (default)")
	cmd.Flags().BoolVar(&unplanned, "unplanned", false, "the active site may be dark: go on without fencing it")
	cmd.Flags().StringVar(&in.To, "to", "", "site to make active: one of the plan's sites other than the active one "+
		"(default: the other site; of three or more, the first in order that answers)")
	cmd.Flags().StringVar(&in.Point, "point", "", "restore point to bring up (default: the latest at the target)")
	cmd.Flags().BoolVar(&in.Force, "force", false, "go on where the failover stops for safety: the active site answered but refused its fence (unplanned), "+
		"the standby is not read-only, or (three or more sites) fewer than a majority answer; recorded in the report")
	c.waitFlags(cmd)
	return cmd
}

// startSwitch starts a switching workflow under the plan's switch id and,
// with --wait, prints its report.
// sites are the sites the input names, checked against the plan first.
func (c *cli) startSwitch(plan, op string, wf, in any, sites ...string) error {
	cc, err := c.open(plan, sites...)
	if err != nil {
		return err
	}
	defer cc.Close()
	var rep workflows.SwitchReport
	return c.startWith(cc, switchOptions(plan), op, plan, "", wf, in, &rep, func(w io.Writer) { printReport(w, rep) })
}

func (c *cli) approveCmd() *cobra.Command {
	var plan, step string
	cmd := &cobra.Command{
		Use:   "approve --plan P",
		Short: "Release the recovery step the plan's running switch waits on",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.onSwitch(plan, func(_, sctx context.Context, cc *clientConn, id string) error {
				by := operator("drorch approve")
				var res workflows.ApproveResult
				err := update(sctx, cc, id, workflows.UpdateApprove, workflows.ApproveUpdate{Step: step, By: by}, &res)
				if errors.Is(err, errNoUpdate) {
					// A run started before approvals were updates.
					if err := cc.SignalWorkflow(sctx, id, "", workflows.SignalApprove, workflows.ApproveSignal{By: by}); err != nil {
						return fmt.Errorf("approve: no switching operation of plan %s is running (%v)", plan, err)
					}
					fmt.Fprintf(os.Stdout, "sent approve to %s (it predates checked approvals)\n", id)
					return nil
				}
				if err != nil {
					return fmt.Errorf("approve refused by %s: %s", id, errorText(err))
				}
				fmt.Fprintf(os.Stdout, "approved step %s of %s\n", res.Step, id)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&step, "step", "", "the step to approve; refused if another one waits (default: the one waiting)")
	return cmd
}

// errNoUpdate is update's error when the run has no handler for the
// update: it was started by a version that took a signal instead.
var errNoUpdate = errors.New("the run takes no such update")

// update sends a workflow update to the running workflow id and waits for
// its answer into res; a validator's refusal is the error.
func update(ctx context.Context, cc *clientConn, id, name string, arg, res any) error {
	h, err := cc.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID: id, UpdateName: name, Args: []any{arg}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(ctx, res)
	}
	if err != nil && strings.Contains(err.Error(), "unknown update") {
		return errNoUpdate
	}
	return err
}

// printReport prints a switching report as a table.
func printReport(w io.Writer, r workflows.SwitchReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	op := r.Operation
	if r.Mode != "" {
		op += " (" + r.Mode + ")"
	}
	fmt.Fprintf(tw, "%s\t%s → %s: %s\n", op, r.From, r.To, r.Outcome)
	if r.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", r.Error)
	}
	fenced := "yes"
	if !r.Fenced {
		fenced = "no: " + r.FenceNote
	}
	fmt.Fprintf(tw, "fenced\t%s\n", fenced)
	if r.Point != "" {
		fmt.Fprintf(tw, "restore point\t%s (restored: %v)\n", r.Point, r.Restored)
	}
	if r.Preserved != "" {
		fmt.Fprintf(tw, "preserved\t%s (the returning site's own data before it was overwritten)\n", r.Preserved)
	}
	if r.Rounds > 0 {
		fmt.Fprintf(tw, "sync rounds\t%d (lag after the last: %s)\n", r.Rounds, r.Lag.D().Round(time.Second))
	}
	fmt.Fprintf(tw, "epoch\t%d\n", r.Epoch)
	fmt.Fprintf(tw, "RTO\t%s\n", r.RTO.D().Round(time.Millisecond))
	fmt.Fprintf(tw, "RPO\t%s\n", r.RPO.D().Round(time.Second))
	if !r.RecoveredTo.IsZero() {
		fmt.Fprintf(tw, "recovered to\t%s (last transaction the restored database replayed; the RPO counts from it)\n", r.RecoveredTo.Format(time.RFC3339Nano))
	}
	for _, d := range r.DNS {
		fmt.Fprintf(tw, "dns\t%s → %v\n", d.Record, d.Values)
	}
	for _, s := range r.Steps {
		status := s.Duration.D().Round(time.Millisecond).String()
		if s.Error != "" {
			status += " FAILED: " + s.Error
		}
		fmt.Fprintf(tw, "  %s\t%s\n", s.Name, status)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	for _, u := range r.Compensation {
		fmt.Fprintf(tw, "undone\t%s\n", u)
	}
	tw.Flush()
}

func (c *cli) reportCmd() *cobra.Command {
	var in workflows.StatusInput
	cmd := &cobra.Command{
		Use:   "report --plan P [--last N]",
		Short: "Show the reports of the plan's last switching operations (RTO, RPO, fencing, steps)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.status(in, func(w io.Writer, res workflows.StatusResult) {
				if len(res.Reports) == 0 {
					fmt.Fprintln(w, "no switching operation yet")
					return
				}
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "STARTED\tOPERATION\tFROM → TO\tOUTCOME\tFENCED\tRTO\tRPO\tPOINT")
				for _, r := range res.Reports {
					fmt.Fprintf(tw, "%s\t%s %s\t%s → %s\t%s\t%v\t%s\t%s\t%s\n", r.Started.Local().Format(time.DateTime), r.Operation, r.Mode,
						r.From, r.To, r.Outcome, r.Fenced, r.RTO.D().Round(time.Millisecond), r.RPO.D().Round(time.Second), r.Point)
				}
				tw.Flush()
			})
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().IntVar(&in.Reports, "last", 10, "how many reports")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the reports as JSON")
	return cmd
}

func (c *cli) drillCmd() *cobra.Command {
	var in workflows.DrillInput
	cmd := &cobra.Command{
		Use:   "drill --plan P [--point ID] [--sandbox PATH]",
		Short: "Test recovery without touching production: restore at the standby into a sandbox, verify every byte, clean up",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cc, err := c.open(in.Plan)
			if err != nil {
				return err
			}
			defer cc.Close()
			var rep workflows.DrillReport
			err = c.start(cc, workflows.OpDrill, in.Plan, "", workflows.Drill, in, &rep, func(w io.Writer) {
				verdict := "PASSED"
				if !rep.Passed {
					verdict = "FAILED"
				}
				tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
				fmt.Fprintf(tw, "drill\t%s at %s (sandbox %s, removed)\n", verdict, rep.Site, rep.Sandbox)
				fmt.Fprintf(tw, "restore point\t%s\n", rep.Point)
				fmt.Fprintf(tw, "verified\t%d chunks, %d files, %s\n", rep.Verified, rep.Restored.Files, bytesText(rep.Restored.Bytes))
				fmt.Fprintf(tw, "implied RTO\t%s (DNS aside)\n", rep.RTO.D().Round(time.Millisecond))
				for _, p := range rep.Problems {
					fmt.Fprintf(tw, "problem\t%s\n", p)
				}
				tw.Flush()
			})
			if err == nil && c.wait && !rep.Passed {
				return fmt.Errorf("the drill failed: %d problem(s)", len(rep.Problems))
			}
			return err
		},
	}
	cmd.Flags().StringVar(&in.Plan, "plan", "", "protection plan (required)")
	cmd.Flags().StringVar(&in.Point, "point", "", "restore point (default: the latest at the standby)")
	cmd.Flags().StringVar(&in.Sandbox, "sandbox", "", "absolute path to restore into (default: the plan's drill sandbox)")
	c.waitFlags(cmd)
	return cmd
}

// switchInProgress is the progress of the plan's running switching
// operation, nil when none runs.
func switchInProgress(cc *clientConn, plan string) *workflows.Progress {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	desc, err := cc.DescribeWorkflowExecution(ctx, workflows.SwitchWorkflowID(plan), "")
	if err != nil || desc.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return nil
	}
	p := workflows.Progress{Operation: desc.GetWorkflowExecutionInfo().GetType().GetName(), Plan: plan, Step: "running"}
	if v, err := cc.QueryWorkflow(ctx, workflows.SwitchWorkflowID(plan), "", workflows.QueryProgress); err == nil {
		_ = v.Get(&p)
	}
	p.Retrying = retrying(desc.GetPendingActivities())
	return &p
}
