package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// CheckInput names the repository to verify: a plan's at a site.
type CheckInput struct {
	Plan string `json:"plan"`
	Site string `json:"site,omitempty"` // default: the active site
	// ReadData reads every chunk; ReadDataPercent (1 to 100) a
	// deterministic-random share of them, a different share each run.
	// Neither: presence and size only.
	ReadData        bool    `json:"readData,omitempty"`
	ReadDataPercent float64 `json:"readDataPercent,omitempty"`
}

// CheckResult is what the check found; OK is false when anything is
// damaged, and Damage names the damaged objects (at most
// activities.MaxDamageListed; DamageTotal counts them all).
type CheckResult struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
	activities.CheckRepositoryResult
	Duration Duration `json:"duration"`
}

// Check verifies the repository of a plan at a site (DESIGN §3): every
// manifest decodes, every chunk a manifest names is present with a size
// such a chunk can have, and optionally every chunk (or a share) reads back
// to its id. It records each damaged chunk in the repository, so that the
// next backup or transmit that has its data writes it again. Damage is a
// result, not a failure: the workflow fails only when it could not check.
func Check(ctx workflow.Context, in CheckInput) (res CheckResult, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpCheck, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	if in.ReadDataPercent < 0 || in.ReadDataPercent > 100 {
		return res, invalidInput("readDataPercent must be 0 to 100")
	}
	site, err := atSite(ctx, t, info, in.Site)
	if err != nil {
		return res, err
	}
	pct := in.ReadDataPercent
	if in.ReadData {
		pct = 100
	}
	var a *activities.Activities
	res = CheckResult{Plan: in.Plan, Site: site}
	wi := workflow.GetInfo(ctx)
	err = t.step(ctx, "check", func() error {
		return workflow.ExecuteActivity(longCtx(ctx, siteQueue(ctx, site)), a.CheckRepository, activities.CheckRepositoryInput{
			Plan: in.Plan, Site: site, ReadPercent: pct, Seed: wi.WorkflowExecution.RunID, By: wi.WorkflowExecution.ID,
		}).Get(ctx, &res.CheckRepositoryResult)
	})
	if err != nil {
		return res, err
	}
	res.Duration = Duration(workflow.Now(ctx).Sub(started))
	workflow.GetLogger(ctx).Info("check done", "plan", in.Plan, "site", site, "ok", res.OK, "damaged", res.DamageTotal)
	return res, nil
}
