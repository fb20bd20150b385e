package activities

import (
	"context"

	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
)

// The staging records of a backup (pieces, uploaded pieces) are
// datapath's; the snapshot record and the checks of what a resumed step
// relies on are here.

const snapshotName = "snapshot"

// firstMissing returns the first i in [0, n) for which none of the staging
// objects names[k](i) is in the repository's staging area of op, or n when
// all are there: one listing, so a resumed step checks what earlier
// attempts reported done before it relies on it.
func firstMissing(ctx context.Context, r *repo.Repo, op string, n int, names ...func(int) string) (int, error) {
	return firstMissingFrom(ctx, r, op, 0, n, names...)
}

// uploadedNames are the names a record of an uploaded piece may have.
var uploadedNames = []func(int) string{datapath.UploadedName, datapath.LegacyUploadedName}
