package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/internal/repo"
	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// threeSiteAddr is the A record's value at each site of a three-site plan.
var threeSiteAddr = map[string]string{"primary": "192.0.2.1", "secondary": "192.0.2.2", "remote": "192.0.2.3"}

// threeSiteStack is a stack of three sites (a same-city standby and a
// remote one), each with its own MinIO, an access resource per site (an
// exec driver whose mode is a file) and an A record in BIND.
type threeSiteStack struct {
	*stack
	bind *testenv.BIND
}

func newThreeSiteStack(t *testing.T) *threeSiteStack {
	ts := &threeSiteStack{bind: testenv.StartBIND(t)}
	ts.stack = newStack(t, stackOptions{third: true, planExtra: func(s *stack) string {
		var b strings.Builder
		b.WriteString("    access:\n")
		for _, site := range s.sites {
			mode := ts.modeFile(s, site)
			initial := "read-only"
			if site == "primary" {
				initial = "read-write"
			}
			writeFile(t, mode, initial+"\n")
			fmt.Fprintf(&b, "      %s:\n        - {driver: exec, setMode: [sh, -c, 'echo \"$1\" > %s', sh], status: [cat, %s]}\n", site, mode, mode)
		}
		s.setenv("E2E_TSIG", ts.bind.KeySecret)
		fmt.Fprintf(&b, "    dns:\n      - {server: %s, zone: %s, name: app, type: A, ttl: 30, values: {primary: %s, secondary: %s, remote: %s}, tsig: {name: %s, secret: env:E2E_TSIG}}\n",
			ts.bind.Addr, ts.bind.Zone, threeSiteAddr["primary"], threeSiteAddr["secondary"], threeSiteAddr["remote"], ts.bind.KeyName)
		return b.String()
	}})
	return ts
}

func (ts *threeSiteStack) modeFile(s *stack, site string) string {
	return filepath.Join(s.dir, "mode-"+site)
}

// mode is the access mode the site's resource is in.
func (ts *threeSiteStack) mode(site string) string {
	ts.t.Helper()
	b, err := os.ReadFile(ts.modeFile(ts.stack, site))
	if err != nil {
		ts.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// manifestSite reads the header of point's manifest at site straight from
// its store (the plan is not encrypted) and returns the site it names.
func (ts *threeSiteStack) manifestSite(site, point string) string {
	ts.t.Helper()
	mc := ts.minio[site].Client(ts.t)
	ctx := context.Background()
	for o := range mc.ListObjects(ctx, "drorch", minio.ListObjectsOptions{Prefix: plan + "/points/", Recursive: true}) {
		if o.Err != nil {
			ts.t.Fatalf("list points at %s: %v", site, o.Err)
		}
		if !strings.Contains(o.Key, point) {
			continue
		}
		obj, err := mc.GetObject(ctx, "drorch", o.Key, minio.GetObjectOptions{})
		if err != nil {
			ts.t.Fatal(err)
		}
		defer obj.Close()
		var r io.Reader = obj
		if strings.HasSuffix(o.Key, ".zst") {
			zr, err := zstd.NewReader(obj)
			if err != nil {
				ts.t.Fatal(err)
			}
			defer zr.Close()
			r = zr
		}
		b, err := io.ReadAll(r)
		if err != nil {
			ts.t.Fatalf("read %s at %s: %v", o.Key, site, err)
		}
		// The header line (the point object of format v3 has no
		// entries to decode).
		var h struct {
			Point string `json:"point"`
			Site  string `json:"site"`
		}
		line, _, _ := bytes.Cut(b, []byte("\n"))
		if err := json.Unmarshal(line, &h); err != nil || h.Point != point {
			ts.t.Fatalf("decode the header of %s at %s: %v (point %q)", o.Key, site, err, h.Point)
		}
		return h.Site
	}
	ts.t.Fatalf("no manifest of point %s at %s", point, site)
	return ""
}

// A plan with a same-city standby and a remote DR site: a backup at the
// primary reaches both secondaries; a failover --to the remote site restores
// there, opens it, repoints DNS and raises the epoch at every site, leaving
// the same-city standby read-only; afterwards a point the old primary made
// under the old epoch is refused at both other sites, and a backup with no
// site given runs at the remote site. Data recovery then returns the plan to
// its primary.
func TestThreeSitesFailoverToTheRemoteSite(t *testing.T) {
	ts := newThreeSiteStack(t)
	ts.startWorker()
	src := ts.source("primary")
	genTree(t, src, treeSpec{seed: 81, dataBytes: 2 << 20, files: 12})

	// One protection cycle reaches both secondaries.
	var cycle workflows.ProtectResult
	if err := ts.run(workflows.OpProtect, workflows.Protect, workflows.ProtectInput{Plan: plan}, &cycle); err != nil {
		t.Fatalf("protect: %v\n%s", err, ts.logs.Tail(4000))
	}
	if cycle.Active != "primary" || cycle.Point == "" || len(cycle.Sites) != 3 {
		t.Fatalf("protect cycle: %+v", cycle)
	}
	for _, s := range cycle.Sites {
		if s.Point != cycle.Point {
			t.Errorf("protect cycle: site %s holds %q, want the new point %s", s.Site, s.Point, cycle.Point)
		}
	}
	for _, site := range []string{"secondary", "remote"} {
		if got := ts.manifestSite(site, cycle.Point); got != "primary" {
			t.Fatalf("the manifest of %s at %s names site %q, want primary", cycle.Point, site, got)
		}
	}
	// A point of the old primary that never left it.
	writeFile(t, filepath.Join(src, "late.txt"), "written after the last transmission\n")
	late := ts.backup()

	if _, errOut, err := ts.drorch("failover", "--plan", plan, "--to", "nowhere"); err == nil || !strings.Contains(errOut, `plan files has no site "nowhere": its sites are primary, secondary and remote`) {
		t.Fatalf("drorch failover --to nowhere: %v\n%s", err, errOut)
	}
	out, errOut, err := ts.drorch("failover", "--plan", plan, "--to", "remote", "--wait", "--json")
	if err != nil {
		t.Fatalf("drorch failover --to remote: %v\n%s\n%s\n%s", err, out, errOut, ts.logs.Tail(4000))
	}
	var rep workflows.SwitchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("drorch failover --json: %v\n%s", err, out)
	}
	if rep.Outcome != "completed" || rep.From != "primary" || rep.To != "remote" || !rep.Restored || !rep.Fenced {
		t.Fatalf("failover report: %+v", rep)
	}
	t.Logf("failover to remote: epoch %d, point %s, RTO %s, notes %q", rep.Epoch, rep.Point, rep.RTO, rep.Notes)
	requireSameTree(t, src, ts.source("remote"))
	for site, want := range map[string]string{"primary": "read-only", "secondary": "read-only", "remote": "read-write"} {
		if got := ts.mode(site); got != want {
			t.Errorf("site %s is %s after the failover to remote, want %s", site, got, want)
		}
	}
	if got := ts.bind.Query(t, "app."+ts.bind.Zone, "A"); len(got) != 1 || got[0] != threeSiteAddr["remote"] {
		t.Fatalf("BIND answers app = %v, want the remote site's %s", got, threeSiteAddr["remote"])
	}

	for _, to := range []string{"secondary", "remote"} {
		err := ts.run(workflows.OpTransmit, workflows.Transmit, workflows.TransmitInput{Plan: plan, From: "primary", To: to, Point: late.Point}, nil)
		app := innermostAppError(err)
		if app == nil || app.Type() != "Fenced" || !app.NonRetryable() || !strings.Contains(app.Message(), "epoch") {
			t.Fatalf("transmit of the old primary's point %s (epoch %d) to %s: %v; want a non-retryable Fenced refusal", late.Point, late.Epoch, to, err)
		}
		t.Logf("refused at %s: %s", to, app.Message())
	}

	writeFile(t, filepath.Join(ts.source("remote"), "after.txt"), "written at the remote site\n")
	next := ts.backup()
	if next.Site != "remote" || next.Epoch != rep.Epoch {
		t.Fatalf("backup with no site after the failover: site %s epoch %d, want remote at epoch %d", next.Site, next.Epoch, rep.Epoch)
	}
	if got := ts.manifestSite("remote", next.Point); got != "remote" {
		t.Fatalf("the manifest of %s names site %q, want remote", next.Point, got)
	}
	for _, site := range ts.sites {
		if ep := ts.epochAt(site); ep.Epoch != rep.Epoch || ep.Active != "remote" {
			t.Errorf("epoch.json at %s after the failover: epoch %d naming %s active, want %d naming remote", site, ep.Epoch, ep.Active, rep.Epoch)
		}
	}

	// Data recovery returns the plan to its primary; every site learns the
	// epoch that says so, and the same-city standby stays read-only.
	var back workflows.SwitchReport
	if err := ts.run(workflows.OpFailback, workflows.Failback, workflows.FailbackInput{Plan: plan, AutoComplete: true}, &back); err != nil {
		t.Fatalf("failback: %v\n%s", err, ts.logs.Tail(4000))
	}
	if back.Outcome != "completed" || back.From != "remote" || back.To != "primary" {
		t.Fatalf("failback report: %+v", back)
	}
	requireSameTree(t, ts.source("remote"), src)
	for site, want := range map[string]string{"primary": "read-write", "secondary": "read-only", "remote": "read-only"} {
		if got := ts.mode(site); got != want {
			t.Errorf("site %s is %s after the failback, want %s", site, got, want)
		}
	}
	for _, site := range ts.sites {
		if ep := ts.epochAt(site); ep.Epoch != back.Epoch || ep.Active != "primary" {
			t.Errorf("epoch.json at %s after the failback: epoch %d naming %s active, want %d naming primary", site, ep.Epoch, ep.Active, back.Epoch)
		}
	}
	if got := ts.bind.Query(t, "app."+ts.bind.Zone, "A"); len(got) != 1 || got[0] != threeSiteAddr["primary"] {
		t.Fatalf("BIND answers app = %v after the failback, want the primary's %s", got, threeSiteAddr["primary"])
	}
	if b := ts.backup(); b.Site != "primary" {
		t.Fatalf("backup with no site after the failback ran at %s, want the primary", b.Site)
	}
	requireReplays(ts.stack)
	requireNoSecrets(t, ts.stack)
}

// epochAt reads epoch.json at site straight from its store.
func (ts *threeSiteStack) epochAt(site string) repo.Epoch {
	ts.t.Helper()
	obj, err := ts.minio[site].Client(ts.t).GetObject(context.Background(), "drorch", plan+"/epoch.json", minio.GetObjectOptions{})
	if err != nil {
		ts.t.Fatal(err)
	}
	defer obj.Close()
	var ep repo.Epoch
	if err := json.NewDecoder(obj).Decode(&ep); err != nil {
		ts.t.Fatalf("epoch.json at %s: %v", site, err)
	}
	return ep
}
