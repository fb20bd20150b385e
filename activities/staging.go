package activities

import (
	"context"

	"github.com/drorch/drorch/internal/repo"
)

// The staging records of a backup (pieces, uploaded pieces) are
// datapath's; the snapshot record and the checks of what a resumed step
// relies on are here.

const snapshotName = "snapshot"

// firstMissing returns the first i in [0, n) whose staging object name(i) is
// not in the repository's staging area of op, or n when all are there: one
// listing, so a resumed step checks what earlier attempts reported done
// before it relies on it.
func firstMissing(ctx context.Context, r *repo.Repo, op string, name func(int) string, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	names, err := r.ListStaging(ctx, op)
	if err != nil {
		return 0, err
	}
	have := make(map[string]bool, len(names))
	for _, s := range names {
		have[s] = true
	}
	for i := range n {
		if !have[name(i)] {
			return i, nil
		}
	}
	return n, nil
}
