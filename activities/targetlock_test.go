package activities

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
)

// A restore activity that outlives its workflow (its worker was paused
// while a failover ran) must not swap an older tree over the plan's data
// once a switch has raised the site's epoch: the swap re-reads the epoch
// under the target's lock, refuses as superseded and leaves what the
// application wrote in place.
func TestSwapAfterAnEpochRaiseIsSuperseded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := newRaceEnv(t)
	a := env.a
	site := "secondary"
	if _, err := a.prepareSite(ctx, PrepareSiteInput{Plan: racePlan, Site: site}); err != nil {
		t.Fatal(err)
	}
	r, err := a.repo(racePlan, site)
	if err != nil {
		t.Fatal(err)
	}
	started, err := r.GetEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The restore stages a tree into the site's own target...
	path, err := a.targetPath(racePlan, site, "")
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := a.target(racePlan, site, "")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := tgt.Begin(ctx, "restore-zombie")
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Dir(source.Entry{Path: ".", Type: source.TypeDir, Mode: 0o755 | os.ModeDir, ModTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// ...meanwhile a failover makes the site active and the application writes there.
	if _, err := a.SetEpoch(ctx, SetEpochInput{Plan: racePlan, Site: site, Active: site, Op: "failover-1", Reason: "unplanned failover from primary to secondary"}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	order := filepath.Join(path, "order-1")
	if err := os.WriteFile(order, []byte("written after the failover"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = a.swap(ctx, RestoreDataInput{Plan: racePlan, Site: site, Point: "p", SiteEpoch: started.Epoch}, r, rs)
	if err == nil || !strings.Contains(err.Error(), "superseded by failover to epoch") {
		t.Fatalf("swap after the epoch moved: %v; want superseded", err)
	}
	if b, err := os.ReadFile(order); err != nil || string(b) != "written after the failover" {
		t.Fatalf("the application's write is gone: %q, %v", b, err)
	}
	// A swap under the epoch it started with goes through.
	rs2, err := tgt.Begin(ctx, "restore-current")
	if err != nil {
		t.Fatal(err)
	}
	if err := rs2.Dir(source.Entry{Path: ".", Type: source.TypeDir, Mode: 0o755 | os.ModeDir, ModTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	now, err := r.GetEpoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.swap(ctx, RestoreDataInput{Plan: racePlan, Site: site, Point: "p", SiteEpoch: now.Epoch}, r, rs2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(order); !os.IsNotExist(err) {
		t.Fatalf("the restore under the current epoch did not replace the target: %v", err)
	}
}
