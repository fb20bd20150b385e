package workflows

import (
	"go.temporal.io/sdk/workflow"
)

// ForgetInput applies the plan's retention policy at one site.
type ForgetInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	DryRun bool   `json:"dryRun,omitempty"` // show what would be kept and forgotten, change nothing
}

// ForgetResult is what Forget kept, forgot and freed.
type ForgetResult struct {
	Plan      string   `json:"plan"`
	Site      string   `json:"site"`
	DryRun    bool     `json:"dryRun,omitempty"`
	Kept      []string `json:"kept"`      // point ids
	Forgotten []string `json:"forgotten"` // point ids
}

// Forget applies the plan's retention policy at one site and collects the
// garbage it leaves. TODO(issue 8): being written.
func Forget(ctx workflow.Context, in ForgetInput) (ForgetResult, error) {
	return ForgetResult{}, invalidInput("forget is not implemented yet")
}
