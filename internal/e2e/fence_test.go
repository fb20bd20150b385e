package e2e

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.temporal.io/sdk/worker"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/testenv"
	"github.com/drorch/drorch/workflows"
)

// A wrong PostgreSQL password at an old primary that answers is a refusal,
// not darkness: the unplanned failover stops before the target is opened
// (the target stays read-only, DNS unchanged) and says which resource
// refused and how to go on. With --force it completes, and the report says
// the fence was refused and forced; the old primary's store answered, so it
// learnt the new epoch.
func TestUnplannedFailoverStopsAtARefusedFence(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.pointDNS("primary")
	bad := "wrong-" + randomHex(8)
	ss.replaceSecret("E2E_PG_primary", bad)
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 31, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()

	_, err := ss.failover(workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	app := innermostAppError(err)
	if app == nil || app.Type() != "AuthFailed" || !app.NonRetryable() {
		t.Fatalf("unplanned failover with a wrong password at the old primary: %v; want a non-retryable AuthFailed", err)
	}
	p := ss.pg["primary"]
	resource := "postgres " + net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	for _, want := range []string{"fence primary", resource, "password authentication failed", "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	t.Logf("stopped: %s", app.Error())
	ss.requireOnlyPrimaryActive()
	rep := ss.lastReport()
	if rep.Outcome == "completed" || rep.Fenced || !strings.Contains(rep.Error, "password authentication failed") {
		t.Fatalf("stored report: %+v; want the failover stopped at the refused fence", rep)
	}
	for _, s := range rep.Steps {
		if s.Name == "epoch" || strings.HasPrefix(s.Name, "restore") || strings.HasPrefix(s.Name, "read-write") || strings.HasPrefix(s.Name, "dns") {
			t.Errorf("step %s ran after the refused fence", s.Name)
		}
	}

	out, errOut, err := ss.drorch("failover", "--plan", plan, "--unplanned", "--force", "--wait")
	if err != nil {
		t.Fatalf("drorch failover --unplanned --force: %v\n%s\n%s", err, out, errOut)
	}
	rep = ss.lastReport()
	if rep.Outcome != "completed" || rep.Fenced || !strings.Contains(rep.FenceNote, "refused, not fenced (forced)") ||
		!slices.ContainsFunc(rep.Notes, func(n string) bool { return strings.Contains(n, "forced") }) {
		t.Fatalf("report of the forced failover: outcome %s, fenced %v, fence %q, notes %q", rep.Outcome, rep.Fenced, rep.FenceNote, rep.Notes)
	}
	if !strings.Contains(out, "refused, not fenced (forced)") {
		t.Errorf("drorch failover --wait does not show the forced fence:\n%s", out)
	}
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["secondary"] {
		t.Fatalf("BIND answers app = %v, want the secondary's %s", got, siteAddr["secondary"])
	}
	if !ss.writable("secondary") {
		t.Fatal("the secondary refuses writes after the forced failover")
	}
	st := ss.status()
	for _, s := range st.Sites {
		if s.State.Epoch.Epoch != rep.Epoch || s.State.Epoch.Active != "secondary" {
			t.Errorf("site %s holds epoch %d naming %q active; want %d naming the secondary (its store answered)", s.Site, s.State.Epoch.Epoch, s.State.Epoch.Active, rep.Epoch)
		}
	}
	requireNoSecrets(t, ss.stack)
}

// A planned failover whose second access resource at the old primary
// refuses for good is undone: the fence's undo was registered before the
// fence, so the first resource, already read-only, is read-write again and
// the report says compensated.
func TestPlannedFailoverFenceFailingPartWayIsUndone(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.pointDNS("primary")
	lb := filepath.Join(ss.dir, "lb-mode")
	writeFile(t, lb, "read-write\n")
	ss.addAccess("primary", `{driver: exec, setMode: [sh, -c, 'if [ "$1" = read-only ]; then echo "the load balancer refuses: change freeze" >&2; exit 77; fi; echo "$1" > `+lb+`', sh], status: [cat, `+lb+`]}`)
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 32, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()

	_, err := ss.failover(workflows.FailoverInput{Plan: plan})
	if app := innermostAppError(err); app == nil || app.Type() != "AccessDenied" || !strings.Contains(app.Error(), "change freeze") {
		t.Fatalf("planned failover with a load balancer that refuses: %v; want its AccessDenied", err)
	}
	ss.requireOnlyPrimaryActive()
	rep := ss.lastReport()
	if rep.Outcome != "compensated" || !slices.Contains(rep.Compensation, "make primary read-write again") {
		t.Fatalf("stored report: outcome %s, compensation %q; want compensated, the primary made read-write again", rep.Outcome, rep.Compensation)
	}
	t.Logf("report: error %q, compensation %q", rep.Error, rep.Compensation)
}

// The primary's worker is dead: an unplanned failover decides it is dark
// within failover.darkAfter (10 s) and completes, fast.
func TestUnplannedFailoverWithThePrimaryWorkerDead(t *testing.T) {
	t.Run("its servers up", func(t *testing.T) {
		unplannedWithoutPrimaryWorker(t, nil)
	})
	t.Run("its servers dark too", func(t *testing.T) {
		unplannedWithoutPrimaryWorker(t, testenv.StartNetNS(t))
	})
}

func unplannedWithoutPrimaryWorker(t *testing.T, ns *testenv.NetNS) {
	ss := newSwitchStackIn(t, ns, "")
	ss.pointDNS("primary")
	stop := ss.startWorkers("")
	genTree(t, ss.source("primary"), treeSpec{seed: 33, dataBytes: 1 << 20, files: 5})
	ss.backup()
	ss.transmit()
	stop()
	ss.startWorkers("primary")
	if ns != nil {
		ns.Cut(t)
	}

	start := time.Now()
	rep, err := ss.failover(workflows.FailoverInput{Plan: plan, Mode: workflows.ModeUnplanned})
	took := time.Since(start)
	if err != nil {
		t.Fatalf("unplanned failover without the primary's worker: %v\n%s", err, ss.logs.Tail(4000))
	}
	t.Logf("RTO %s (start → DNS verified; the workflow took %s), RPO %s, fence: %s, notes %q",
		rep.RTO.D().Round(time.Millisecond), took.Round(time.Millisecond), rep.RPO.D().Round(time.Second), rep.FenceNote, rep.Notes)
	if rep.Outcome != "completed" || rep.Fenced || !strings.Contains(rep.FenceNote, "no worker at site primary") {
		t.Fatalf("report: outcome %s, fenced %v, fence %q", rep.Outcome, rep.Fenced, rep.FenceNote)
	}
	// A sanity bound, not a benchmark: the darkness bound is 10 s, and
	// before it a dark site cost a minute of schedule-to-start.
	if rep.RTO.D() > 45*time.Second {
		t.Errorf("RTO %s with the primary's worker dead: the darkness bound is 10s", rep.RTO)
	}
	if got := ss.bind.Query(t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["secondary"] {
		t.Fatalf("BIND answers app = %v, want the secondary's %s", got, siteAddr["secondary"])
	}
	if !ss.writable("secondary") {
		t.Fatal("the secondary refuses writes after the failover")
	}
}

// addAccess adds an access resource (a YAML flow mapping) after the ones of
// site; it must be called before the worker starts.
func (ss *switchStack) addAccess(site, item string) {
	ss.t.Helper()
	b, err := os.ReadFile(ss.cfgPath)
	if err != nil {
		ss.t.Fatal(err)
	}
	lines := strings.SplitAfter(string(b), "\n")
	i := slices.Index(lines, "      "+site+":\n")
	if i < 0 || !strings.HasPrefix(lines[i+1], "        - {driver: postgres") {
		ss.t.Fatalf("no access list of %s in the config:\n%s", site, b)
	}
	lines = slices.Insert(lines, i+2, "        - "+item+"\n")
	if err := os.WriteFile(ss.cfgPath, []byte(strings.Join(lines, "")), 0o600); err != nil {
		ss.t.Fatal(err)
	}
	if ss.cfg, err = config.Load(ss.cfgPath); err != nil {
		ss.t.Fatal(err)
	}
}

// startWorkers runs workers in the test process for the workflows and
// every site but dead (none when empty): no worker takes dead's tasks, as
// when its host is down. It returns what stops them.
func (ss *switchStack) startWorkers(dead string) (stop func()) {
	ss.t.Helper()
	zl := zerolog.New(ss.logs).Level(zerolog.DebugLevel)
	acts := activities.New(ss.cfg, ss.cl, zl)
	w := worker.New(ss.cl, ss.queue, activities.WorkerOptions())
	for _, wf := range workflows.All {
		w.RegisterWorkflow(wf)
	}
	w.RegisterActivity(acts)
	ws := []worker.Worker{w}
	for _, site := range []string{"primary", "secondary"} {
		if site == dead {
			continue
		}
		for _, q := range []string{workflows.SiteTaskQueue(ss.queue, site), workflows.SiteDataTaskQueue(ss.queue, site)} {
			sw := worker.New(ss.cl, q, activities.WorkerOptions())
			sw.RegisterActivity(acts)
			ws = append(ws, sw)
		}
	}
	for _, w := range ws {
		if err := w.Start(); err != nil {
			ss.t.Fatal(err)
		}
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			for _, w := range ws {
				w.Stop()
			}
		})
	}
	ss.t.Cleanup(stop)
	return stop
}
