package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/drorch/drorch/workflows"
)

// statusLimit bounds one plan's status: the lock's update reads each site
// within 20 s, so this is only reached when no worker runs workflows.
const statusLimit = 90 * time.Second

func (c *cli) statusCmd() *cobra.Command {
	var plan string
	cmd := &cobra.Command{
		Use:   "status [--plan P] [--json]",
		Short: "Show each plan's active site, epoch, restore point ages against the RPO objective, schedule, last drill and running operations",
		Long: `Show the state of every plan in the config, or of one.

Reading status starts no workflow run: it is an update on the plan's lock
workflow (drorch/<plan>/lock), which is started again if it has ended.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, cc, err := c.connect()
			if err != nil {
				return err
			}
			defer cc.Close()
			plans := []string{plan}
			if plan == "" {
				plans = plans[:0]
				for name := range cfg.Plans {
					plans = append(plans, name)
				}
				sort.Strings(plans)
			} else if err := checkPlan(cfg, plan); err != nil {
				return err
			}
			var all []workflows.StatusResult
			var failed []string
			for i, p := range plans {
				res, err := c.planStatus(cc, workflows.StatusInput{Plan: p})
				if err != nil {
					fmt.Fprintf(os.Stderr, "plan %s: %v\n", p, err)
					failed = append(failed, p)
					continue
				}
				all = append(all, res)
				if !c.json {
					if i > 0 {
						fmt.Println()
					}
					printStatus(os.Stdout, res)
				}
			}
			if c.json {
				var v any = all
				if plan != "" && len(all) == 1 {
					v = all[0]
				}
				b, _ := json.MarshalIndent(v, "", "  ")
				fmt.Println(string(b))
			}
			if len(failed) > 0 {
				return fmt.Errorf("no status for plan(s) %s", strings.Join(failed, ", "))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&plan, "plan", "", "protection plan (default: every plan in the config)")
	cmd.Flags().BoolVar(&c.json, "json", false, "print the status as JSON: one object with --plan, else a list")
	return cmd
}

// status reads one plan's status and prints it with human, or as JSON
// (for `drorch report`).
func (c *cli) status(in workflows.StatusInput, human func(io.Writer, workflows.StatusResult)) error {
	cc, err := c.open(in.Plan)
	if err != nil {
		return err
	}
	defer cc.Close()
	res, err := c.planStatus(cc, in)
	if err != nil {
		return err
	}
	if c.json {
		b, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(string(b))
		return nil
	}
	human(os.Stdout, res)
	return nil
}

// planStatus asks the plan's lock for its status and adds what the
// client reads itself: the schedule, the open workflows, the running switch.
func (c *cli) planStatus(cc *clientConn, in workflows.StatusInput) (workflows.StatusResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), statusLimit)
	defer cancel()
	res, err := c.lockStatus(ctx, cc, in)
	if errors.Is(err, errNoUpdate) {
		// The workers predate the status update: run the Status workflow.
		asJSON := c.json
		c.wait, c.json = true, false
		err = c.start(cc, workflows.OpStatus, in.Plan, "", workflows.Status, in, &res, func(io.Writer) {})
		c.json = asJSON
	}
	if err != nil {
		return res, fmt.Errorf("read status of plan %s: %s", in.Plan, errorText(err))
	}
	res.InProgress = switchInProgress(cc, in.Plan)
	res.Schedule = scheduleStatus(ctx, cc, in.Plan)
	res.WAL = walStatus(ctx, cc, in.Plan)
	res.Running, err = runningOperations(ctx, cc, in.Plan, c.taskQueue)
	if err != nil {
		return res, fmt.Errorf("list the running operations of plan %s: %w", in.Plan, err)
	}
	return res, nil
}

// lockStatus sends the status update to the plan's lock, starting the lock
// if it is not running. A lock that ends as the update arrives is started
// again.
func (c *cli) lockStatus(ctx context.Context, cc *clientConn, in workflows.StatusInput) (workflows.StatusResult, error) {
	id := workflows.LockWorkflowID(in.Plan, c.taskQueue)
	var res workflows.StatusResult
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		start := cc.NewWithStartWorkflowOperation(client.StartWorkflowOptions{
			ID: id, TaskQueue: c.taskQueue, WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		}, workflows.PlanLock, workflows.PlanLockInput{Plan: in.Plan})
		var h client.WorkflowUpdateHandle
		h, err = cc.UpdateWithStartWorkflow(ctx, client.UpdateWithStartWorkflowOptions{
			StartWorkflowOperation: start,
			UpdateOptions: client.UpdateWorkflowOptions{
				WorkflowID: id, UpdateName: workflows.UpdateStatus, Args: []any{in}, WaitForStage: client.WorkflowUpdateStageCompleted,
			},
		})
		if err == nil {
			err = h.Get(ctx, &res)
		}
		if err != nil && strings.Contains(err.Error(), "unknown update") {
			return res, errNoUpdate
		}
		var done *serviceerror.NotFound
		if err == nil || !(errors.As(err, &done) || strings.Contains(err.Error(), "completed")) || ctx.Err() != nil {
			break
		}
	}
	return res, err
}

// scheduleStatus describes the plan's protect schedule.
func scheduleStatus(ctx context.Context, cc *clientConn, plan string) *workflows.ScheduleStatus {
	st := &workflows.ScheduleStatus{ID: workflows.ScheduleID(plan)}
	desc, err := cc.ScheduleClient().GetHandle(ctx, st.ID).Describe(ctx)
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return st
	case err != nil:
		st.Error = err.Error()
		return st
	}
	st.Exists = true
	if s := desc.Schedule.State; s != nil {
		st.Paused, st.Note = s.Paused, s.Note
	}
	if len(desc.Info.NextActionTimes) > 0 {
		st.NextRun = desc.Info.NextActionTimes[0]
	}
	if n := len(desc.Info.RecentActions); n > 0 {
		last := desc.Info.RecentActions[n-1]
		st.LastRun = last.ActualTime
		st.LastResult = "started"
		if r := last.StartWorkflowResult; r != nil {
			if d, err := cc.DescribeWorkflowExecution(ctx, r.WorkflowID, r.FirstExecutionRunID); err == nil {
				st.LastResult = strings.ToLower(strings.TrimPrefix(d.GetWorkflowExecutionInfo().GetStatus().String(), "WORKFLOW_EXECUTION_STATUS_"))
				st.LastResult = strings.TrimPrefix(st.LastResult, "workflow_execution_status_")
			}
			if v, err := cc.QueryWorkflow(ctx, r.WorkflowID, "", workflows.QueryProtect); err == nil {
				var cycle workflows.ProtectResult
				if v.Get(&cycle) == nil {
					st.LastCycle = &cycle
				}
			}
		}
	}
	return st
}

// runningOperations lists the plan's open workflows on queue (this
// installation's) but its lock, oldest first, from the visibility store.
func runningOperations(ctx context.Context, cc *clientConn, plan, queue string) ([]workflows.RunningOperation, error) {
	q := fmt.Sprintf("%s = %q AND TaskQueue = %q AND ExecutionStatus = 'Running'", workflows.PlanAttr.GetName(), plan, queue)
	lockID := workflows.LockWorkflowID(plan, queue)
	out := []workflows.RunningOperation{}
	var token []byte
	for {
		resp, err := cc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: cc.namespace, Query: q, NextPageToken: token})
		if err != nil {
			return nil, err
		}
		for _, e := range resp.GetExecutions() {
			id := e.GetExecution().GetWorkflowId()
			if id == lockID {
				continue
			}
			op := workflows.RunningOperation{WorkflowID: id, Type: e.GetType().GetName(), Started: e.GetStartTime().AsTime()}
			fields := e.GetSearchAttributes().GetIndexedFields()
			_ = converter.GetDefaultDataConverter().FromPayload(fields[workflows.OperationAttr.GetName()], &op.Operation)
			_ = converter.GetDefaultDataConverter().FromPayload(fields[workflows.SiteAttr.GetName()], &op.Site)
			out = append(out, op)
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, nil
}

// printStatus prints one plan's status as a compact table.
func printStatus(w io.Writer, res workflows.StatusResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "plan\t%s\n", res.Plan)
	fmt.Fprintf(tw, "active\t%s (epoch %d)\n", res.Active, res.Epoch)
	fmt.Fprintf(tw, "roles\tprimary %s, secondary %s\n", res.Primary, res.Secondary)
	obj := "none set"
	if o := res.Objectives; o.RPO > 0 || o.RTO > 0 {
		obj = fmt.Sprintf("RPO %s, RTO %s", orNone(o.RPO), orNone(o.RTO))
	}
	fmt.Fprintf(tw, "objectives\t%s\n", obj)
	rpo := res.RPO.String()
	if res.Breached {
		rpo += " BREACHED"
	}
	if lag, ok := walRPO(res.WAL); ok {
		// A failover recovers past the newest point, to the shipped WAL.
		rpo += fmt.Sprintf(" to the newest point; %s with the shipped WAL", lag)
	}
	fmt.Fprintf(tw, "RPO now\t%s\n", rpo)
	for _, s := range res.Sites {
		role := "standby"
		if s.Site == res.Active {
			role = "active"
		}
		if !s.Reachable {
			fmt.Fprintf(tw, "%s\t%s, UNREACHABLE: %s\n", s.Site, role, s.Error)
			continue
		}
		point := "no restore point"
		if s.State.Latest != "" {
			point = fmt.Sprintf("newest point %s, age %s", s.State.Latest, s.Age)
			if s.Breached {
				point += " (over the RPO objective)"
			}
		} else if s.Breached {
			point += " (RPO objective breached)"
		}
		fmt.Fprintf(tw, "%s\t%s, epoch %d, %s\n", s.Site, role, s.State.Epoch.Epoch, point)
		if s.State.Standby != "" {
			fmt.Fprintf(tw, "  standby target\tholds %s\n", s.State.Standby)
		}
		for _, a := range s.Access {
			fmt.Fprintf(tw, "  %s\t%s\n", a.Resource, a.Mode)
		}
		if s.Error != "" {
			fmt.Fprintf(tw, "  error\t%s\n", s.Error)
		}
	}
	printWAL(tw, res.WAL)
	fmt.Fprintf(tw, "schedule\t%s\n", scheduleText(res.Schedule))
	if res.Schedule != nil && res.Schedule.LastCycle != nil {
		fmt.Fprintf(tw, "last cycle\t%s\n", cycleText(res.Schedule.LastCycle))
	}
	if d := res.LastDrill; d != nil {
		verdict := "PASSED"
		if !d.Passed {
			verdict = fmt.Sprintf("FAILED (%d problems)", len(d.Problems))
		}
		fmt.Fprintf(tw, "last drill\t%s at %s, %s, point %s, implied RTO %s\n", verdict, d.Site, d.Finished.Local().Format(time.DateTime), d.Point, d.RTO)
	} else {
		fmt.Fprintf(tw, "last drill\tnone\n")
	}
	if p := res.InProgress; p != nil {
		line := p.Operation + ": " + p.Step
		if p.Waiting != "" {
			line += ", waiting for " + p.Waiting
		}
		if p.Retrying != "" {
			line += ", retrying: " + p.Retrying
		}
		fmt.Fprintf(tw, "in progress\t%s\n", line)
	}
	if len(res.Running) == 0 {
		fmt.Fprintf(tw, "running\tnothing\n")
	}
	for _, r := range res.Running {
		fmt.Fprintf(tw, "running\t%s %s (since %s)\n", r.Type, r.WorkflowID, r.Started.Local().Format(time.DateTime))
	}
	if n := len(res.Reports); n > 0 {
		r := res.Reports[n-1]
		fmt.Fprintf(tw, "last switch\t%s %s → %s %s at %s\n", r.Operation, r.From, r.To, r.Outcome, r.Finished.Local().Format(time.DateTime))
	}
	tw.Flush()
}

func orNone(d workflows.Duration) string {
	if d == 0 {
		return "none"
	}
	return d.String()
}

func scheduleText(s *workflows.ScheduleStatus) string {
	switch {
	case s == nil:
		return "not read"
	case s.Error != "":
		return "not read: " + s.Error
	case !s.Exists:
		return "no schedule (drorch schedule apply)"
	}
	state := "active"
	if s.Paused {
		state = "PAUSED"
		if s.Note != "" {
			state += " (" + s.Note + ")"
		}
	}
	if !s.NextRun.IsZero() {
		state += ", next run " + s.NextRun.Local().Format(time.DateTime)
	}
	if s.LastResult != "" {
		state += ", last run " + s.LastResult + " at " + s.LastRun.Local().Format(time.DateTime)
	}
	return state
}

// cycleText sums up a protection cycle: what it made and the RPO it left.
func cycleText(c *workflows.ProtectResult) string {
	if c.Skipped != "" {
		return "skipped: " + c.Skipped
	}
	text := fmt.Sprintf("point %s at %s, %d bytes new, %d sent, took %s", orDash(c.Point), orDash(c.Active), c.BytesNew, c.BytesCopied, c.Duration)
	for _, s := range c.Sites {
		if s.Role == "standby" && s.Newest != "" {
			text += fmt.Sprintf("; RPO at %s %s", s.Site, s.RPO)
		}
	}
	if c.RPOBreached {
		text += " (RPO objective breached)"
	}
	if len(c.Failures) > 0 {
		text += "; failed: " + strings.Join(c.Failures, "; ")
	}
	return text
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
