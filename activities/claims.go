package activities

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
)

// RequestClaimInput carries a claim request to a plan's lock workflow.
type RequestClaimInput struct {
	LockID   string `json:"lockId"`   // the lock workflow's id
	LockType string `json:"lockType"` // its workflow type, started when it is not running
	Queue    string `json:"queue"`    // the workflow task queue it runs on
	Signal   string `json:"signal"`
	Request  any    `json:"request"` // a workflows.ClaimRequest
	Start    any    `json:"start"`   // the lock's input when it must be started
	Plan     string `json:"plan"`    // for messages
}

// RequestClaim delivers a claim request to the plan's lock workflow,
// starting it when it is not running (signal-with-start). The answer comes
// back to the requesting workflow as a signal.
func (a *Activities) RequestClaim(ctx context.Context, in RequestClaimInput) error {
	if a.client == nil {
		return fmt.Errorf("request claim: no Temporal client")
	}
	_, err := a.client.SignalWithStartWorkflow(ctx, in.LockID, in.Signal, in.Request, client.StartWorkflowOptions{
		ID: in.LockID, TaskQueue: in.Queue, WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
	}, in.LockType, in.Start)
	if err != nil {
		return fmt.Errorf("plan %s: request a claim of lock %s: %w", in.Plan, in.LockID, err)
	}
	return nil
}

// WorkflowRunningInput names a workflow whose latest run is asked about.
type WorkflowRunningInput struct {
	WorkflowID string `json:"workflowId"`
}

// WorkflowRunning reports whether the latest run of a workflow id is still
// running: the plan lock asks it before letting a claim block anyone.
func (a *Activities) WorkflowRunning(ctx context.Context, in WorkflowRunningInput) (bool, error) {
	if a.client == nil {
		return false, fmt.Errorf("describe %s: no Temporal client", in.WorkflowID)
	}
	d, err := a.client.DescribeWorkflowExecution(ctx, in.WorkflowID, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("describe %s: %w", in.WorkflowID, err)
	}
	return d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
}
