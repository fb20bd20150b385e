package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/workflows"
)

// TestForgetCLI: with keepLast 2 and the oldest of four points pinned,
// drorch forget --dry-run names the one point it would forget and changes
// nothing; forget then forgets it; a second forget (the GC margin is zero
// here) deletes its chunks and says how much it freed; every kept point
// still restores to the tree it was taken of.
//
// Not parallel: it sets repo.GCMargin, which the in-process worker reads,
// while the parallel tests wait.
func TestForgetCLI(t *testing.T) {
	old := repo.GCMargin
	repo.GCMargin = 0 // only this test's worker collects garbage
	t.Cleanup(func() { repo.GCMargin = old })
	s := newStack(t, stackOptions{encrypt: true, planExtra: func(*stack) string { return "    retention: {keepLast: 2}\n" }})
	s.startWorker()

	var points []string
	trees := map[string]string{}
	for i := range 4 {
		src := s.source("primary")
		if err := os.RemoveAll(src); err != nil {
			t.Fatal(err)
		}
		genTree(t, src, treeSpec{seed: uint64(10 + i), dataBytes: 256 << 10, files: 4})
		b := s.backup()
		points = append(points, b.Point)
		keep := filepath.Join(s.dir, "tree-"+b.Point)
		if out, err := exec.Command("cp", "-a", src, keep).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
		trees[b.Point] = keep
	}
	drorch := func(args ...string) string {
		t.Helper()
		out, errOut, err := s.drorch(args...)
		if err != nil {
			t.Fatalf("drorch %v: %v\n%s\n%s", args, err, out, errOut)
		}
		return out
	}
	site := []string{"--plan", plan, "--site", "primary"}
	drorch(append([]string{"points", "pin"}, append(site, points[0])...)...)
	if out := drorch(append([]string{"points"}, site...)...); !strings.Contains(out, points[0]) || !strings.Contains(out, "pinned") {
		t.Fatalf("drorch points does not show the pin:\n%s", out)
	}

	out := drorch(append([]string{"forget", "--dry-run"}, site...)...)
	t.Logf("drorch forget --dry-run:\n%s", out)
	for _, want := range []string{points[1] + " ", "would forget", "keep: pinned", "keep: newest, last 1/2", "keep: last 2/2", "would free"} {
		if !strings.Contains(out, want) {
			t.Fatalf("forget --dry-run does not say %q:\n%s", want, out)
		}
	}
	if got := strings.Count(out, "would forget\n"); got != 1 {
		t.Fatalf("forget --dry-run forgets %d points, want 1:\n%s", got, out)
	}
	if out := drorch(append([]string{"points"}, site...)...); !strings.Contains(out, points[1]) {
		t.Fatalf("a dry run forgot %s:\n%s", points[1], out)
	}

	forget := func() workflows.ForgetResult {
		var res workflows.ForgetResult
		out := drorch(append([]string{"forget", "--json"}, site...)...)
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("forget --json: %v\n%s", err, out)
		}
		return res
	}
	res := forget()
	if !slices.Equal(res.Forgotten, []string{points[1]}) || len(res.Kept) != 3 {
		t.Fatalf("forget: kept %v, forgot %v; want %s forgotten", res.Kept, res.Forgotten, points[1])
	}
	if res.GC.NewlyMarked == 0 || res.GC.Deleted != 0 {
		t.Fatalf("the first run must mark the forgotten point's chunks and delete nothing: %+v", res.GC)
	}
	res = forget()
	if len(res.Forgotten) != 0 || res.GC.Deleted == 0 || res.Frees == 0 {
		t.Fatalf("the second run must delete what the first marked: %+v", res)
	}
	out = drorch(append([]string{"points"}, site...)...)
	if strings.Contains(out, points[1]) {
		t.Fatalf("forgotten point %s is still listed:\n%s", points[1], out)
	}
	for _, p := range []string{points[0], points[2], points[3]} {
		to := filepath.Join(s.dir, "restored-"+p)
		drorch("restore", "--plan", plan, "--site", "primary", "--point", p, "--to", to, "--wait")
		requireSameTree(t, trees[p], to)
	}
}
