package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// The primary site goes dark — its MinIO and PostgreSQL sit behind a link
// the test cuts — and the plan fails over without it. When the link is
// back, the old primary cannot write over the secondary's newer data, and
// data recovery brings the secondary's writes back to it.
func TestUnplannedFailoverWithThePrimaryDark(t *testing.T) {
	ns := testenv.StartNetNS(t)
	ss := newSwitchStackIn(t, ns, failbackSettings)
	ss.startWorker()
	primary, secondary := ss.source("primary"), ss.source("secondary")
	genTree(t, primary, treeSpec{seed: 21, dataBytes: 4 << 20, files: 25})
	ss.backup()
	ss.transmit()

	ns.Cut(t)
	rep, err := ss.failover(workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	if err != nil {
		t.Fatalf("unplanned failover with the primary dark: %v\n%s", err, ss.logs.Tail(4000))
	}
	t.Logf("unplanned failover: RTO %s, RPO %s, fence: %s, notes %q", rep.RTO, rep.RPO, rep.FenceNote, rep.Notes)
	if rep.Outcome != "completed" || rep.Fenced || !strings.Contains(rep.FenceNote, "not fenced") {
		t.Fatalf("report: outcome %s, fenced %v, note %q", rep.Outcome, rep.Fenced, rep.FenceNote)
	}
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["secondary"] {
		t.Fatalf("BIND answers app = %v, want the secondary's %s", got, siteAddr["secondary"])
	}
	requireSameTree(t, primary, secondary)
	if !ss.writable("secondary") {
		t.Fatal("the secondary's database refuses writes after the failover")
	}
	writeFile(t, filepath.Join(secondary, "written-at-the-secondary.txt"), "order 2001")
	if err := os.Remove(filepath.Join(secondary, "written-at-the-primary-too.txt")); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}

	// The link is back: the old primary still believes it is active (it was
	// never fenced, its database still takes writes) but cannot overwrite
	// the new active site.
	ns.Restore(t)
	if !ss.writable("primary") {
		t.Fatal("the old primary was dark, so nothing could make it read-only")
	}
	writeFile(t, filepath.Join(primary, "stale-write.txt"), "written at the old primary")
	if b := ss.backup(); b.Site != "secondary" {
		t.Fatalf("a backup with no site ran at %s, not at the active secondary", b.Site)
	}
	var stale workflows.BackupResult
	if err := ss.run(workflows.OpBackup, workflows.Backup, workflows.BackupInput{Plan: plan, Site: "primary"}, &stale); err != nil {
		t.Fatalf("a backup at the old primary into its own repository: %v", err)
	}
	before := ss.status()
	var tr workflows.TransmitResult
	err = ss.run(workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan, From: "primary", To: "secondary", Point: stale.Point}, &tr)
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != "Fenced" || !app.NonRetryable() {
		t.Fatalf("transmitting the old primary's point to the new active site: %v; want a non-retryable Fenced error", err)
	}
	t.Logf("refused: %s", app.Message())
	after := ss.status()
	for i := range after.Sites {
		if after.Sites[i].Site == "secondary" && after.Sites[i].State.Latest != before.Sites[i].State.Latest {
			t.Fatalf("the secondary's latest point moved from %s to %s", before.Sites[i].State.Latest, after.Sites[i].State.Latest)
		}
	}
	if _, err := os.Stat(filepath.Join(secondary, "stale-write.txt")); !os.IsNotExist(err) {
		t.Fatal("the old primary's write reached the secondary")
	}

	// Data recovery: the secondary's writes come back to the primary.
	fb := ss.failback()
	t.Logf("failback: %d rounds, downtime %s, preserved %s", fb.Rounds, fb.RTO, fb.Preserved)
	if fb.Outcome != "completed" || fb.To != "primary" {
		t.Fatalf("failback report: %+v", fb)
	}
	requireSameTree(t, secondary, primary)
	if b, err := os.ReadFile(filepath.Join(primary, "written-at-the-secondary.txt")); err != nil || string(b) != "order 2001" {
		t.Fatalf("the write made at the secondary is not at the primary: %q %v", b, err)
	}
	if !ss.writable("primary") || ss.writable("secondary") {
		t.Fatal("after the failback only the primary should be writable")
	}
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["primary"] {
		t.Fatalf("BIND answers app = %v after the failback, want %s", got, siteAddr["primary"])
	}
	requireNoSecrets(t, ss.stack)
	requireReplays(ss.stack)
}
