package activities

import (
	"context"
	"testing"

	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
)

func TestRangesReadTheirBoundsAndZeroMeansAll(t *testing.T) {
	for _, c := range []struct {
		in       UploadInput
		from, to int
		desc     string
	}{
		{UploadInput{Pieces: 5}, 0, 5, "an input recorded before ranges: every piece"},
		{UploadInput{Pieces: 5, From: 2, To: 4}, 2, 4, "a range"},
		{UploadInput{Pieces: 5, From: 3}, 3, 5, "to 0: to the end"},
		{UploadInput{Pieces: 5, From: 4, To: 9}, 4, 5, "to past the end: clamped"},
		{UploadInput{Pieces: 5, From: 7, To: 9}, 5, 5, "from past the end: empty"},
	} {
		if from, to := c.in.pieceRange(); from != c.from || to != c.to {
			t.Errorf("%s: pieceRange() = %d, %d; want %d, %d", c.desc, from, to, c.from, c.to)
		}
	}
	ids := make([]repo.ID, 6)
	for i := range ids {
		ids[i][0] = byte(i)
	}
	for _, c := range []struct {
		in   CopyChunksInput
		want []byte
	}{
		{CopyChunksInput{}, []byte{0, 1, 2, 3, 4, 5}},
		{CopyChunksInput{ChunkFrom: 1, ChunkTo: 3}, []byte{1, 2}},
		{CopyChunksInput{ChunkFrom: 4}, []byte{4, 5}},
		{CopyChunksInput{ChunkFrom: 5, ChunkTo: 60}, []byte{5}},
	} {
		var got []byte
		for _, id := range c.in.chunkRange(ids) {
			got = append(got, id[0])
		}
		if string(got) != string(c.want) {
			t.Errorf("chunkRange(%d, %d) = %v, want %v", c.in.ChunkFrom, c.in.ChunkTo, got, c.want)
		}
	}
}

// A range resumed from its heartbeat checks only its own pieces' records:
// pieces before it belong to other ranges, which may not have finished.
func TestFirstMissingFromLooksInsideTheRange(t *testing.T) {
	env := newRaceEnv(t)
	r, err := env.a.repo(racePlan, "primary")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Store().Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	// Piece 3's record has the name a worker older than format v2 gave
	// it: a backup it began counts it as uploaded.
	for i, name := range map[int]func(int) string{2: datapath.UploadedName, 3: datapath.LegacyUploadedName, 5: datapath.UploadedName} {
		if err := r.PutStaging(ctx, "backup-range", name(i), datapath.Uploaded{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ from, n, want int }{{2, 4, 4}, {2, 6, 4}, {5, 6, 6}, {0, 3, 0}, {4, 4, 4}} {
		got, err := firstMissingFrom(ctx, r, "backup-range", c.from, c.n, uploadedNames...)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("firstMissingFrom(from %d, n %d) = %d, want %d", c.from, c.n, got, c.want)
		}
	}
	// A worker older than v2 looks for the legacy names only: the records
	// a newer one wrote (whose refs may be slices it cannot read) are not
	// there for it, so it never commits them.
	if got, err := firstMissingFrom(ctx, r, "backup-range", 2, 6, datapath.LegacyUploadedName); err != nil || got != 2 {
		t.Errorf("legacy names only: first missing = %d, %v; want 2", got, err)
	}
}
