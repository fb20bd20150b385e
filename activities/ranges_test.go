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
	for _, i := range []int{2, 3, 5} {
		if err := r.PutStaging(ctx, "backup-range", datapath.UploadedName(i), datapath.Uploaded{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ from, n, want int }{{2, 4, 4}, {2, 6, 4}, {5, 6, 6}, {0, 3, 0}, {4, 4, 4}} {
		got, err := firstMissingFrom(ctx, r, "backup-range", datapath.UploadedName, c.from, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("firstMissingFrom(from %d, n %d) = %d, want %d", c.from, c.n, got, c.want)
		}
	}
}
