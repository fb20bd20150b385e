package activities

import (
	"context"
	"slices"

	"github.com/drorch/drorch/internal/repo"
)

// A backup's upload and a transmit's copy may run as several activities,
// each over a range of the work, spread by Temporal over the workers that
// serve the site's data queue (docs/scaleout.md). The
// ranges are the workflow's to choose; these helpers only read them.

// pieceRange is the range of pieces in uploads: [From, To), To 0 (an input
// recorded before ranges) being every piece.
func (in UploadInput) pieceRange() (from, to int) {
	to = in.Pieces
	if in.To > 0 && in.To < to {
		to = in.To
	}
	return min(max(in.From, 0), to), to
}

// chunkRange is the slice of the staged chunk list in copies:
// [ChunkFrom, ChunkTo), ChunkTo 0 (an input recorded before ranges) being
// the whole list.
func (in CopyChunksInput) chunkRange(ids []repo.ID) []repo.ID {
	to := len(ids)
	if in.ChunkTo > 0 && in.ChunkTo < to {
		to = in.ChunkTo
	}
	return ids[min(max(in.ChunkFrom, 0), to):to]
}

// firstMissingFrom is firstMissing over the records from..n-1: the first
// index in that range without a record, n when all are there.
func firstMissingFrom(ctx context.Context, r *repo.Repo, op string, from, n int, names ...func(int) string) (int, error) {
	if n <= from || n <= 0 {
		return max(n, 0), nil
	}
	listed, err := r.ListStaging(ctx, op)
	if err != nil {
		return 0, err
	}
	have := make(map[string]bool, len(listed))
	for _, s := range listed {
		have[s] = true
	}
	for i := from; i < n; i++ {
		if !slices.ContainsFunc(names, func(name func(int) string) bool { return have[name(i)] }) {
			return i, nil
		}
	}
	return n, nil
}
