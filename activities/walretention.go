package activities

import (
	"context"

	"github.com/drorch/drorch/internal/repo"
)

// CollectWALInput applies WAL retention to a plan's repository at a site.
type CollectWALInput struct {
	Plan   string `json:"plan"`
	Site   string `json:"site"`
	DryRun bool   `json:"dryRun,omitempty"`
	// Forgotten are points a dry run counts as forgotten.
	Forgotten []string `json:"forgotten,omitempty"`
	// NoSweep, when set, says why this run must delete nothing.
	NoSweep string `json:"noSweep,omitempty"`
}

// CollectWAL deletes the WAL files no stored base backup needs
// (repo.CollectWAL): run by Forget after the points it forgets are gone.
// A repository without WAL costs one listing. A retried attempt starts
// over, which is safe: deleting is idempotent.
func (a *Activities) CollectWAL(ctx context.Context, in CollectWALInput) (repo.WALResult, error) {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return repo.WALResult{}, temporalError(err)
	}
	rep := a.startReporter(ctx, "collect WAL")
	defer rep.close()
	forgotten := map[string]bool{}
	for _, p := range in.Forgotten {
		forgotten[p] = true
	}
	res, err := r.CollectWAL(rep.work, repo.WALOptions{DryRun: in.DryRun, NoSweep: in.NoSweep, Forgotten: forgotten, SweepID: sweepID(ctx)})
	if err != nil {
		return res, temporalError(err)
	}
	if res.Files > 0 {
		a.log.Info().Str("plan", in.Plan).Str("site", in.Site).Bool("dryRun", in.DryRun).Int("walFiles", res.Files).
			Str("keptFrom", res.KeptFrom).Int("deleted", res.Deleted).Int64("freed", res.Freed).Int("young", res.Young).
			Str("noSweep", res.NoSweep).Msg("WAL retention applied")
	}
	return res, nil
}
