package activities

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"

	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// ApplyRetentionInput applies a plan's retention policy at one site.
type ApplyRetentionInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	DryRun bool   `json:"dryRun,omitempty"`
	// InUse are points a running operation may read: kept whatever the
	// policy says. KeepAll keeps every point (a running operation whose
	// point is not known), and says why.
	InUse   []string `json:"inUse,omitempty"`
	KeepAll string   `json:"keepAll,omitempty"`
}

// ApplyRetentionResult is the decision for every valid point, newest
// first, and the points forgotten (or, in a dry run, to forget).
type ApplyRetentionResult struct {
	Repository string          `json:"repository"`
	Epoch      uint64          `json:"epoch"`
	Policy     string          `json:"policy"`
	Decisions  []repo.Decision `json:"decisions"`
	Forgotten  []string        `json:"forgotten"`
}

// ApplyRetention decides which valid points of a site the plan's retention
// keeps (repo.ApplyRetention, in the schedule's time zone) and, unless
// DryRun, deletes the manifests of the others. It is idempotent: a retry
// decides again from what is stored.
func (a *Activities) ApplyRetention(ctx context.Context, in ApplyRetentionInput) (ApplyRetentionResult, error) {
	res, err := a.applyRetention(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) applyRetention(ctx context.Context, in ApplyRetentionInput) (ApplyRetentionResult, error) {
	var res ApplyRetentionResult
	p, err := a.plan(in.Plan)
	if err != nil {
		return res, err
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return res, err
	}
	loc := time.UTC
	if p.Schedule != nil {
		if loc, err = p.Schedule.Location(); err != nil {
			return res, err
		}
	}
	pol := p.RetentionPolicy()
	res.Repository, res.Policy = r.Location(), policyText(pol, loc, p.Retention == nil)
	pts, err := r.Points(ctx)
	if err != nil {
		return res, err
	}
	pins, err := r.Pins(ctx)
	if err != nil {
		return res, err
	}
	ep, err := r.GetEpoch(ctx)
	if err != nil {
		return res, err
	}
	res.Epoch = ep.Epoch
	pinned := map[string]bool{}
	for id := range pins {
		pinned[id] = true
	}
	inUse := map[string]bool{}
	for _, id := range in.InUse {
		inUse[id] = true
	}
	var rps []repo.RetentionPoint
	for i := len(pts) - 1; i >= 0; i-- {
		rps = append(rps, repo.RetentionPoint{ID: pts[i].ID, Time: pts[i].Time})
		if in.KeepAll != "" {
			inUse[pts[i].ID] = true
		}
	}
	res.Decisions = repo.ApplyRetention(rps, pol, time.Now(), loc, pinned, inUse)
	res.Forgotten = []string{}
	for _, d := range res.Decisions {
		if !d.Keep {
			res.Forgotten = append(res.Forgotten, d.Point)
		}
	}
	if in.DryRun {
		return res, nil
	}
	rep := a.startReporter(ctx, "forget")
	defer rep.close()
	rep.Update(func(p *Progress) { p.FilesTotal = int64(len(res.Forgotten)) })
	for _, id := range res.Forgotten {
		if err := r.ForgetPoint(rep.work, id); err != nil {
			return res, err
		}
		rep.Update(func(p *Progress) { p.FilesDone++ })
	}
	a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Int("kept", len(res.Decisions)-len(res.Forgotten)).
		Int("forgotten", len(res.Forgotten)).Msg("retention applied")
	return res, nil
}

// CollectGarbageInput collects the garbage of a plan's repository at a site.
type CollectGarbageInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Forgotten are points a dry run counts as forgotten.
	Forgotten []string `json:"forgotten,omitempty"`
	// NoSweep, when set, says why this run must only mark.
	NoSweep string `json:"noSweep,omitempty"`
}

// CollectGarbage marks the chunks no manifest names and deletes those
// marked long enough (repo.CollectGarbage). A retried attempt starts over,
// which is safe: the marks it wrote are kept, and deleting is idempotent.
func (a *Activities) CollectGarbage(ctx context.Context, in CollectGarbageInput) (repo.GCResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return repo.GCResult{}, temporalError(err)
	}
	rep := a.startReporter(ctx, "collect garbage")
	defer rep.close()
	forgotten := map[string]bool{}
	for _, p := range in.Forgotten {
		forgotten[p] = true
	}
	res, err := r.CollectGarbage(rep.work, repo.GCOptions{
		DryRun: in.DryRun, NoSweep: in.NoSweep, Forgotten: forgotten, SweepID: sweepID(ctx),
		Progress: func(stage string, n int64) {
			rep.Update(func(p *Progress) {
				switch stage {
				case "manifests":
					p.FilesDone = n
				case "chunks":
					p.ChunksDone = n
				case "deleted":
					p.ChunksNew = n
				}
			})
		},
	})
	if err != nil {
		return res, temporalError(err)
	}
	if !in.DryRun && res.NoSweep == "" {
		metrics.GCSucceeded(in.Plan, in.Site, time.Now())
	}
	a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Bool("dryRun", in.DryRun).Int("marked", res.Marked).
		Int("deleted", res.Deleted).Int64("freed", res.Freed).Str("noSweep", res.NoSweep).Msg("garbage collected")
	return res, nil
}

// sweepID is the same for every attempt of one activity: a retry takes
// over the sweep lease of an attempt whose worker died. Outside an
// activity (tests) it is "", a random id.
func sweepID(ctx context.Context) (id string) {
	defer func() { _ = recover() }() // not an activity context
	info := activity.GetInfo(ctx)
	return info.WorkflowExecution.ID + "/" + info.WorkflowExecution.RunID + "/" + info.ActivityID
}

// LockClaim is one claim the plan lock holds, as QueryLockClaims reports
// it (the fields of workflows.HeldClaim that retention reads).
type LockClaim struct {
	Resource string `json:"resource"`
	Holder   string `json:"holder"`
	What     string `json:"what"`
	Point    string `json:"point,omitempty"`
}

// QueryLockClaimsInput names a plan's lock workflow and its query.
type QueryLockClaimsInput struct {
	LockID string `json:"lockId"`
	Query  string `json:"query"`
}

// QueryLockClaims returns the claims the plan's lock holds; none when the
// lock is not running.
func (a *Activities) QueryLockClaims(ctx context.Context, in QueryLockClaimsInput) ([]LockClaim, error) {
	if a.client == nil {
		return nil, fmt.Errorf("query %s: no Temporal client", in.LockID)
	}
	v, err := a.client.QueryWorkflow(ctx, in.LockID, "", in.Query)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return []LockClaim{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("query the claims of plan lock %s: %w", in.LockID, err)
	}
	var st struct {
		Held []LockClaim `json:"held"`
	}
	if err := v.Get(&st); err != nil {
		return nil, fmt.Errorf("query the claims of plan lock %s: %w", in.LockID, err)
	}
	if st.Held == nil {
		st.Held = []LockClaim{}
	}
	return st.Held, nil
}

// PinPointInput pins or unpins a restore point at a site.
type PinPointInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point"`
	Unpin bool   `json:"unpin,omitempty"`
	By    string `json:"by,omitempty"`
}

// PinPoint pins (or unpins) a restore point in the site's repository.
func (a *Activities) PinPoint(ctx context.Context, in PinPointInput) error {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return temporalError(err)
	}
	if in.Unpin {
		return temporalError(r.UnpinPoint(ctx, in.Point))
	}
	return temporalError(r.PinPoint(ctx, repo.Pin{Point: in.Point, By: in.By, At: time.Now().UTC()}))
}

// policyText spells a retention policy as the configuration does.
func policyText(p config.Retention, loc *time.Location, isDefault bool) string {
	var parts []string
	for _, k := range []struct {
		key string
		n   int
	}{{"keepLast", p.KeepLast}, {"keepHourly", p.KeepHourly}, {"keepDaily", p.KeepDaily}, {"keepWeekly", p.KeepWeekly}, {"keepMonthly", p.KeepMonthly}} {
		if k.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k.key, k.n))
		}
	}
	if p.KeepWithin > 0 {
		parts = append(parts, "keepWithin "+p.KeepWithin.String())
	}
	s := strings.Join(parts, ", ") + " (periods in " + loc.String() + ")"
	if isDefault {
		s += ", the default"
	}
	return s
}
