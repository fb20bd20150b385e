package activities

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
)

// A commit that wrote the point and then lost its answer is retried: the
// streamed point object is the same byte for byte (the second time every
// part is found stored), so the retry succeeds and reports the same totals.
func TestCommitStreamedIsIdempotent(t *testing.T) {
	env := newRaceEnv(t)
	ctx := context.Background()
	in := env.backupUntilCommit(ctx, t, 1)
	r, err := env.a.repo(in.Plan, in.Site)
	if err != nil {
		t.Fatal(err)
	}
	first, err := commitStaged(ctx, r, in)
	if err != nil {
		t.Fatal(err)
	}
	if first.Files != 300 || first.Dirs != 11 {
		t.Fatalf("the committed point counts %+v: want the 300 files and 11 directories of the source", first)
	}
	again, err := commitStaged(ctx, r, in)
	if err != nil || again != first {
		t.Fatalf("committing the same records again: %+v, %v; want the point found committed, totals %+v", again, err, first)
	}
	res, err := env.a.commit(ctx, in)
	if err != nil || res.Totals != first || res.Point != in.Point {
		t.Fatalf("the Commit activity over a committed point: %+v, %v", res, err)
	}
	p, err := r.OpenPoint(ctx, in.Point)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Chunked() {
		t.Fatalf("the point is version %d, want %d", p.Meta.Version, repo.ManifestVersionChunked)
	}
}

// stageRecords stages one uploaded piece holding entries at paths (a path
// ending in "/" is a directory, others empty files), in that order.
func stageRecords(ctx context.Context, t *testing.T, r *repo.Repo, op string, paths ...string) {
	t.Helper()
	var up datapath.Uploaded
	for i, p := range paths {
		e := source.Entry{Path: strings.TrimSuffix(p, "/"), Type: source.TypeFile, Mode: 0o644, ModTime: time.Unix(1700000000, 0).UTC()}
		if strings.HasSuffix(p, "/") || p == "." {
			e.Type, e.Mode = source.TypeDir, 0o755
		}
		up.Items = append(up.Items, datapath.UploadedItem{Index: int64(i), Entry: datapath.Stage(e)})
	}
	if err := r.PutStaging(ctx, op, datapath.UploadedName(0), up); err != nil {
		t.Fatal(err)
	}
}

// Records out of tree order (a tar stream's: here a file before its
// directory, which alone looks like a file without a parent) are committed
// sorted; records in order but invalid, or a record gone, are refused,
// naming the entry or the piece, and leave no point.
func TestCommitSortsRecordsOutOfTreeOrder(t *testing.T) {
	env := newRaceEnv(t)
	ctx := context.Background()
	prep, err := env.a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: "primary"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := env.a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	snap := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	in := CommitInput{Plan: racePlan, Site: "primary", Op: "backup-unsorted", Point: repo.NewPointID(snap, "u"), Snapshot: snap, Pieces: 1, Epoch: prep.Epoch}
	stageRecords(ctx, t, r, in.Op, ".", "a/x", "a/", "b")
	res, err := env.a.commit(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if res.Totals.Entries != 4 || res.Totals.Dirs != 2 {
		t.Fatalf("committed %+v, want 4 entries of which 2 directories", res.Totals)
	}
	p, err := r.OpenPoint(ctx, in.Point)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := p.Entries(ctx, 0, func(_ int64, e *repo.Entry) error { got = append(got, e.Path); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, " ") != ". a a/x b" {
		t.Fatalf("the point's entries are %q, want them in tree order", got)
	}

	bad := CommitInput{Plan: racePlan, Site: "primary", Op: "backup-orphan", Point: repo.NewPointID(snap.Add(time.Second), "o"), Snapshot: snap.Add(time.Second), Pieces: 1, Epoch: prep.Epoch}
	stageRecords(ctx, t, r, bad.Op, ".", "c/x", "d")
	_, err = env.a.commit(ctx, bad)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonInvalidInput || !strings.Contains(err.Error(), `"c/x"`) {
		t.Fatalf("committing a file without its directory: %v (reason %q), want a permanent InvalidInput error naming it", err, reason)
	}
	if _, err := r.OpenPoint(ctx, bad.Point); !drivers.IsNotFound(err) {
		t.Fatalf("after a refused commit, opening its point: %v, want not found", err)
	}

	// The record of a piece is gone (staging cleaned up): no retry brings
	// it back.
	lost := CommitInput{Plan: racePlan, Site: "primary", Op: "backup-lost", Point: repo.NewPointID(snap.Add(2*time.Second), "l"), Snapshot: snap.Add(2 * time.Second), Pieces: 2, Epoch: prep.Epoch}
	stageRecords(ctx, t, r, lost.Op, ".", "e")
	_, err = env.a.commit(ctx, lost)
	if reason, ok := drivers.IsPermanent(err); !ok || reason != drivers.ReasonNotFound || !strings.Contains(err.Error(), "piece 1 is gone") {
		t.Fatalf("committing with the record of piece 1 gone: %v (reason %q), want a permanent NotFound error naming it", err, reason)
	}
	if _, err := r.OpenPoint(ctx, lost.Point); !drivers.IsNotFound(err) {
		t.Fatalf("after a commit without its records, opening its point: %v, want not found", err)
	}
}
