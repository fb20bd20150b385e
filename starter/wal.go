package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/workflows"
)

// applyWALShipping makes sure the WAL shipping workflow (ShipWAL,
// drorch/<plan>/wal) runs for every plan that ships WAL (config wal.ship),
// or for only; a running one is left alone. It stops the runs that should
// not be running (stopWALShipping). It returns the plans it failed for.
func (c *cli) applyWALShipping(ctx context.Context, cc *clientConn, cfg *config.Config, only string, prune bool) []string {
	failed := c.stopWALShipping(ctx, cc, cfg, only, prune)
	for _, name := range planNames(cfg) {
		p, _ := cfg.Plan(name)
		if !p.ShipsWAL() || only != "" && name != only {
			continue
		}
		id := workflows.WALShipID(name)
		run, err := cc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
			ID: id, TaskQueue: c.taskQueue, TypedSearchAttributes: workflows.Attributes(name, "", workflows.OpWAL),
			WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
			WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		}, workflows.ShipWAL, workflows.ShipWALInput{Plan: name})
		if err != nil {
			failed = append(failed, name)
			fmt.Fprintf(os.Stderr, "plan %s: start WAL shipping %s: %v\n", name, id, err)
			continue
		}
		fmt.Printf("plan %s: WAL shipping runs (workflow %s, run %s)\n", name, id, run.GetRunID())
	}
	return failed
}

// stopWALShipping cancels the running WAL shipping workflows of this
// installation's queue that the config no longer asks for: those of plans
// whose wal.ship is off (or, with only, of that plan), and, with prune,
// those of plans no longer in the config; without prune those are kept
// and said so, as their schedules are. It returns the plans it failed for.
func (c *cli) stopWALShipping(ctx context.Context, cc *clientConn, cfg *config.Config, only string, prune bool) []string {
	q := fmt.Sprintf("WorkflowType = 'ShipWAL' AND TaskQueue = %q AND ExecutionStatus = 'Running'", c.taskQueue)
	var failed, ids []string
	var token []byte
	for {
		resp, err := cc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: cc.namespace, Query: q, NextPageToken: token})
		if err != nil {
			fmt.Fprintf(os.Stderr, "list the running WAL shipping workflows: %v\n", err)
			return []string{"(WAL shipping)"}
		}
		for _, e := range resp.GetExecutions() {
			ids = append(ids, e.GetExecution().GetWorkflowId())
		}
		if token = resp.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	for _, id := range ids {
		rest, isOurs := strings.CutPrefix(id, "drorch/")
		name, isWAL := strings.CutSuffix(rest, "/wal")
		if !isOurs || !isWAL || only != "" && name != only {
			continue
		}
		why := "wal.ship is off"
		if p, err := cfg.Plan(name); err == nil && p.ShipsWAL() {
			continue
		} else if err != nil {
			if !prune {
				fmt.Printf("plan %s: WAL shipping kept, the plan is not in the config (workflow %s; apply --prune stops it)\n", name, id)
				continue
			}
			why = "the plan is not in the config"
		}
		if err := cc.CancelWorkflow(ctx, id, ""); err != nil {
			var nf *serviceerror.NotFound
			if !errors.As(err, &nf) { // it ended meanwhile
				failed = append(failed, name)
				fmt.Fprintf(os.Stderr, "plan %s: stop WAL shipping %s: %v\n", name, id, err)
			}
			continue
		}
		fmt.Printf("plan %s: WAL shipping stopped, %s (workflow %s)\n", name, why, id)
	}
	return failed
}

// walStatus asks the plan's WAL shipping workflow how far each standby is
// behind; nil when the plan has none running.
func walStatus(ctx context.Context, cc *clientConn, plan string) *workflows.WALStatus {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := cc.QueryWorkflow(ctx, workflows.WALShipID(plan), "", workflows.QueryWAL)
	var nf *serviceerror.NotFound
	switch {
	case errors.As(err, &nf):
		return nil
	case err != nil:
		return &workflows.WALStatus{Plan: plan, Skipped: "cannot ask " + workflows.WALShipID(plan) + ": " + err.Error()}
	}
	var st workflows.WALStatus
	if err := v.Get(&st); err != nil {
		return &workflows.WALStatus{Plan: plan, Skipped: err.Error()}
	}
	return &st
}

// printWAL adds the WAL shipping lines to a plan's status.
func printWAL(w io.Writer, st *workflows.WALStatus) {
	if st == nil {
		return
	}
	if st.Skipped != "" {
		fmt.Fprintf(w, "WAL shipping\t%s\n", st.Skipped)
	} else {
		fmt.Fprintf(w, "WAL shipping\tfrom %s every %s\n", st.Active, st.Every)
	}
	for _, sb := range st.Standbys {
		line := "caught up"
		if sb.Pending > 0 {
			line = fmt.Sprintf("%d files behind", sb.Pending)
		}
		line = fmt.Sprintf("WAL lag %s (%s)", sb.Lag, line)
		if sb.Last != "" {
			line += ", last " + sb.Last
		}
		if !sb.LastShipped.IsZero() {
			line += ", shipped " + sb.LastShipped.Local().Format(time.DateTime)
		}
		if sb.Error != "" {
			line += ", error: " + sb.Error
		}
		fmt.Fprintf(w, "  WAL to %s\t%s\n", sb.Site, line)
	}
}

// walRPO is the worst WAL lag among the standbys, as last measured: what a
// failover that recovers from the shipped WAL would lose, give or take the
// server's archive_timeout. ok is false unless every standby was measured
// without an error.
func walRPO(st *workflows.WALStatus) (lag workflows.Duration, ok bool) {
	if st == nil || st.Skipped != "" || len(st.Standbys) == 0 {
		return 0, false
	}
	for _, sb := range st.Standbys {
		if sb.Checked.IsZero() || sb.Error != "" {
			return 0, false
		}
		lag = max(lag, sb.Lag)
	}
	return lag, true
}
