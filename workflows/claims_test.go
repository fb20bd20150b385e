package workflows

import (
	"context"
	"encoding/json"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/testsuite"

	"github.com/drorch/drorch/activities"
)

// grantClaims makes the plan lock of a unit test grant every claim at once:
// RequestClaim answers the requester with a granted reply, and releases
// (signals to the lock) are accepted.
func grantClaims(env *testsuite.TestWorkflowEnvironment) {
	var a *activities.Activities
	env.OnActivity(a.RequestClaim, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.RequestClaimInput) error {
		var req ClaimRequest
		b, _ := json.Marshal(in.Request)
		_ = json.Unmarshal(b, &req)
		env.RegisterDelayedCallback(func() {
			_ = env.SignalWorkflowByID(req.Holder, SignalClaimReply, ClaimReply{ID: req.ID, Granted: true})
		}, 0)
		return nil
	}).Maybe()
	env.OnSignalExternalWorkflow(mock.Anything, mock.Anything, mock.Anything, mock.Anything, mock.Anything).Return(nil).Maybe()
}
