package e2e

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/workflows"
)

// A restore point of 30,000 entries (format v3: its entries in several
// parts) transmits with every part, checks and restores byte for byte at
// the destination. A part deleted at the destination is named by check as
// a missing chunk; restore there fails at once, non-retryably, naming it.
// A part deleted at the source fails the next transmit the same way.
func TestLargePointTransmitsChecksAndRestoresByParts(t *testing.T) {
	s := newStack(t, stackOptions{encrypt: true})
	s.startWorker()
	manyFiles(t, s.source("primary"), 30000)
	b := s.backup()
	tr := s.transmit()
	if tr.Point != b.Point {
		t.Fatalf("transmitted %s, backed up %s", tr.Point, b.Point)
	}

	ctx := context.Background()
	src, dst := siteRepo(t, s, "primary"), siteRepo(t, s, "secondary")
	ps, err := src.OpenPoint(ctx, b.Point)
	if err != nil {
		t.Fatal(err)
	}
	pd, err := dst.OpenPoint(ctx, b.Point)
	if err != nil {
		t.Fatalf("the transmitted point at the destination: %v", err)
	}
	if len(ps.Parts) < 3 || !reflect.DeepEqual(ps.Parts, pd.Parts) {
		t.Fatalf("parts: %d at the source, %d at the destination; want the same, at least 3", len(ps.Parts), len(pd.Parts))
	}
	if pd.Meta.Totals != ps.Meta.Totals || pd.Meta.Totals.Entries < 30000 {
		t.Fatalf("totals: %+v at the source, %+v at the destination", ps.Meta.Totals, pd.Meta.Totals)
	}
	ms, err := src.GetManifest(ctx, b.Point)
	if err != nil {
		t.Fatal(err)
	}
	md, err := dst.GetManifest(ctx, b.Point)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ms.Entries, md.Entries) {
		t.Fatal("the entries differ between the sites")
	}

	s.requireCheckOK("at the destination", "secondary")
	to := filepath.Join(s.dir, "restored")
	s.restore("secondary", to)
	requireSameTree(t, s.source("primary"), to)

	// A part lost at the destination.
	lost := pd.Parts[len(pd.Parts)/2].ID
	key := plan + "/" + repo.ChunkKey(lost)
	if err := s.minio["secondary"].Client(t).RemoveObject(ctx, "drorch", key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := s.drorch("check", "--plan", plan, "--site", "secondary", "--wait")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(out, key) {
		t.Fatalf("check with part %s lost: %v, want a non-zero exit naming %s\n%s\n%s", lost, err, key, out, errOut)
	}
	err = s.run(workflows.OpRestore, workflows.Restore, workflows.RestoreInput{Plan: plan, Site: "secondary", To: filepath.Join(s.dir, "restored2")}, nil)
	requireMissing(t, "restore with a part lost", err, lost)

	// A part lost at the source: the next point (the same tree, so the
	// same parts) cannot be sent.
	b2 := s.backup()
	if err := s.minio["primary"].Client(t).RemoveObject(ctx, "drorch", key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	err = s.run(workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan}, nil)
	requireMissing(t, "transmit with a part lost at the source", err, lost)
	if has, err := dst.HasManifest(ctx, b2.Point); err != nil || has {
		t.Errorf("the destination holds %s after the failed transmit (%v)", b2.Point, err)
	}

	// Two parts damaged at the destination, besides the lost one: one
	// check, without --read-data, names them all (reading the entries
	// stops at the first, and the check fetches the others itself).
	var damaged []string
	for _, part := range []repo.EntryPart{pd.Parts[0], pd.Parts[len(pd.Parts)-1]} {
		k := plan + "/" + repo.ChunkKey(part.ID)
		corruptObject(t, s, "secondary", k)
		damaged = append(damaged, k)
	}
	out, errOut, err = s.drorch("check", "--plan", plan, "--site", "secondary", "--wait")
	for _, k := range append(damaged, key) {
		if !strings.Contains(out, k) {
			t.Errorf("check with two damaged parts and one lost does not name %s: %v\n%s\n%s", k, err, out, errOut)
		}
	}
}

// requireMissing fails t unless err is a non-retryable MissingChunk error
// that names chunk id.
func requireMissing(t *testing.T, what string, err error, id repo.ID) {
	t.Helper()
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || !app.NonRetryable() || app.Type() != repo.ReasonMissingChunk || !strings.Contains(app.Error(), id.String()) {
		t.Fatalf("%s: %v; want a non-retryable %s error naming %s", what, err, repo.ReasonMissingChunk, id)
	}
}

// newParts counts the entry parts of point that the earlier point at the
// primary does not have.
func newParts(t *testing.T, s *stack, earlier, point string) int64 {
	t.Helper()
	r := siteRepo(t, s, "primary")
	had := map[repo.ID]bool{}
	pe, err := r.OpenPoint(context.Background(), earlier)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pe.Parts {
		had[p.ID] = true
	}
	pp, err := r.OpenPoint(context.Background(), point)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range pp.Parts {
		if !had[p.ID] {
			n++
			had[p.ID] = true
		}
	}
	return n
}
