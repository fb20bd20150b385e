package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	dnsdriver "github.com/drorch/drorch/drivers/dns"
	"github.com/drorch/drorch/drivers/dns/rfc2136"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/secret"
	"github.com/drorch/drorch/workflows"
)

// An approval that does not come in time fails the failover with a
// non-retryable ApprovalTimeout, and what was done is undone: the primary is
// writable again, the secondary is not, the name still points at the primary
// and the stored report says the failover was compensated.
func TestFailoverApprovalTimeoutCompensates(t *testing.T) {
	ss := newSwitchStack(t, "    steps:\n      - {name: hold, approval: {timeout: 5s}}\n")
	ss.pointDNS("primary")
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 14, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()

	// A failed workflow returns no result: its report is read where it is
	// stored, as drorch report does.
	done := make(chan error, 1)
	go func() {
		_, err := ss.failover(workflows.FailoverInput{Plan: plan})
		done <- err
	}()
	var waiting workflows.Progress
	waitFor(t, "the failover to wait for approval", 2*time.Minute, func() bool {
		waiting = ss.switchProgress()
		return waiting.Waiting != ""
	})
	if waiting.Step != "step hold" || !strings.Contains(waiting.Waiting, "approval of step hold") ||
		!strings.Contains(waiting.Waiting, "drorch approve --plan "+plan) || !strings.Contains(waiting.Waiting, "5s") {
		t.Errorf("progress while waiting: step %q, waiting %q; want the step, the approve command and the timeout", waiting.Step, waiting.Waiting)
	}

	err := <-done
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || app.Type() != "ApprovalTimeout" || !app.NonRetryable() {
		t.Fatalf("failover without approval: %v; want a non-retryable ApprovalTimeout", err)
	}
	if !strings.Contains(app.Error(), "no approval within 5s") {
		t.Errorf("approval timeout message %q does not say what was not approved in time", app.Error())
	}
	if p := ss.switchProgress(); p.Step != "failed" || p.Waiting != "" {
		t.Errorf("progress after the timeout: step %q, waiting %q; want failed, waiting for nothing", p.Step, p.Waiting)
	}

	ss.requireOnlyPrimaryActive()
	rep := ss.lastReport()
	if rep.Outcome != "compensated" || !rep.Fenced || !strings.Contains(rep.Error, "no approval within 5s") ||
		!slices.Contains(rep.Compensation, "make primary read-write again") {
		t.Fatalf("stored report: %+v; want compensated after the approval timeout, the primary made read-write again", rep)
	}
	requireNoSecrets(t, ss.stack)
}

// A TSIG secret the DNS server does not accept fails the failover at the DNS
// step at once, with an error naming the record and the server and saying
// the key was refused; the failover is undone and the secret appears nowhere.
func TestFailoverBadTSIGSecretCompensates(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.pointDNS("primary")
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	bad := base64.StdEncoding.EncodeToString(key)
	ss.replaceSecret("E2E_TSIG", bad)
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 15, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()

	_, err := ss.failover(workflows.FailoverInput{Plan: plan})
	run := ss.runs[len(ss.runs)-1]
	var app *temporal.ApplicationError
	if !errors.As(err, &app) || !app.NonRetryable() {
		t.Fatalf("failover with a wrong TSIG secret: %v; want a non-retryable error", err)
	}
	record := "app." + ss.bind.Zone
	if msg := app.Error(); !strings.Contains(msg, record) || !strings.Contains(msg, ss.bind.Addr) || !strings.Contains(msg, "TSIG") ||
		!strings.Contains(msg, "refused") {
		t.Errorf("error %q: want it to name the record %s and the server %s and say the TSIG key was refused", msg, record, ss.bind.Addr)
	}
	if app.Type() != "AuthFailed" {
		t.Errorf("error type %q, want AuthFailed", app.Type())
	}
	t.Logf("refused: %s", app.Error())
	if got := ss.activityAttempts(run, "SwitchDNS"); len(got) != 1 || got[0] != 1 {
		t.Errorf("SwitchDNS attempts %v: a refused key must be tried once, not retried", got)
	}
	if strings.Contains(err.Error(), bad) {
		t.Error("the failover's error shows the TSIG secret")
	}

	ss.requireOnlyPrimaryActive()
	rep := ss.lastReport()
	if rep.Outcome != "compensated" || !strings.Contains(rep.Error, "TSIG") || len(rep.Compensation) == 0 {
		t.Fatalf("stored report: %+v; want compensated, with the TSIG error", rep)
	}
	for _, u := range rep.Compensation {
		if strings.Contains(u, "FAILED") {
			t.Errorf("an undo step failed: %s", u)
		}
	}
	requireNoSecrets(t, ss.stack)
}

// A PostgreSQL password the target refuses stops the failover in preflight,
// before anything is changed, with an error naming the resource and saying
// authentication failed; the password appears nowhere.
func TestFailoverWrongTargetPasswordStopsInPreflight(t *testing.T) {
	ss := newSwitchStack(t, "")
	ss.pointDNS("primary")
	bad := "wrong-" + randomHex(8)
	ss.replaceSecret("E2E_PG_secondary", bad)
	ss.startWorker()
	genTree(t, ss.source("primary"), treeSpec{seed: 16, dataBytes: 1 << 20, files: 3})
	ss.backup()
	ss.transmit()

	_, err := ss.failover(workflows.FailoverInput{Plan: plan})
	run := ss.runs[len(ss.runs)-1]
	if app := innermostAppError(err); app == nil || !app.NonRetryable() || app.Type() != "AuthFailed" {
		t.Fatalf("failover with a wrong target password: %v; want a non-retryable AuthFailed error", err)
	}
	p := ss.pg["secondary"]
	resource := "postgres " + net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	if msg := err.Error(); !strings.Contains(msg, resource) || !strings.Contains(msg, "authentication failed") || !strings.Contains(msg, "secondary") {
		t.Errorf("error %q: want it to name the site, the resource %s and say authentication failed", msg, resource)
	}
	if got := ss.activityAttempts(run, "AccessStatus"); len(got) != 1 || got[0] != 1 {
		t.Errorf("AccessStatus attempts %v: a refused password must be tried once, not retried", got)
	}
	if got := ss.activityAttempts(run, "SetAccess"); len(got) != 0 {
		t.Errorf("SetAccess ran %d time(s): preflight must stop the failover before fencing", len(got))
	}
	if strings.Contains(err.Error(), bad) {
		t.Error("the failover's error shows the password")
	}
	t.Run("the workflow's own failure says it", func(t *testing.T) {
		var top *temporal.ApplicationError
		if !errors.As(err, &top) || top.Type() != "AuthFailed" || !top.NonRetryable() {
			t.Errorf("the failover's outermost failure: %v; want a non-retryable AuthFailed", err)
		}
		_, errOut, cliErr := ss.drorch("failover", "--plan", plan, "--wait")
		if cliErr == nil || strings.Count(errOut, "authentication failed") != 1 || strings.Contains(errOut, "wrapError") || strings.Contains(errOut, "retryable: true") {
			t.Errorf("drorch failover: %v, stderr %q; want the authentication failure said once, not as retryable", cliErr, errOut)
		}
	})

	ss.requireOnlyPrimaryActive()
	rep := ss.lastReport()
	if rep.Outcome != "failed" || rep.Fenced || len(rep.Compensation) != 0 || !strings.Contains(rep.Error, "authentication failed") {
		t.Fatalf("stored report: %+v; want failed in preflight, not fenced, nothing to undo", rep)
	}
	if last := rep.Steps[len(rep.Steps)-1]; last.Name != "preflight" || last.Error == "" {
		t.Errorf("last step %+v, want the failed preflight", last)
	}
	requireNoSecrets(t, ss.stack)
}

// pointDNS points the plan's record at site with the server's own key, as a
// running production's name would be before a failover.
func (ss *switchStack) pointDNS(site string) {
	ss.t.Helper()
	d, err := rfc2136.New(rfc2136.Config{Server: ss.bind.Addr, Zone: ss.bind.Zone,
		TSIG: rfc2136.TSIG{Name: ss.bind.KeyName, Secret: secret.New("test", ss.bind.KeySecret)}})
	if err != nil {
		ss.t.Fatal(err)
	}
	rec := dnsdriver.Record{Name: "app." + ss.bind.Zone, Type: "A", TTL: 30, Values: []string{siteAddr[site]}}
	if err := d.Set(context.Background(), rec); err != nil {
		ss.t.Fatalf("point app at %s: %v", site, err)
	}
}

// replaceSecret gives the plan's secret in env another value, to inject a
// credential the server refuses; it must be called before the worker starts.
func (ss *switchStack) replaceSecret(env, value string) {
	ss.t.Helper()
	ss.setenv(env, value)
	cfg, err := config.Load(ss.cfgPath)
	if err != nil {
		ss.t.Fatal(err)
	}
	ss.cfg = cfg
}

// requireOnlyPrimaryActive checks what users see after a failover that did
// not happen: only the primary's database takes writes and the name still
// answers the primary's address.
func (ss *switchStack) requireOnlyPrimaryActive() {
	ss.t.Helper()
	if pw, sw := ss.writable("primary"), ss.writable("secondary"); !pw || sw {
		ss.t.Errorf("primary writable=%v, secondary writable=%v; want only the primary", pw, sw)
	}
	if got := ss.bind.Query(ss.t, "app."+ss.bind.Zone, "A"); len(got) != 1 || got[0] != siteAddr["primary"] {
		ss.t.Errorf("BIND answers app = %v, want the primary's %s", got, siteAddr["primary"])
	}
}

// switchProgress asks the stack's running (or last) failover for its progress.
func (ss *switchStack) switchProgress() workflows.Progress {
	var p workflows.Progress
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := ss.cl.QueryWorkflow(ctx, workflows.SwitchWorkflowID(plan)+"-"+ss.queue, "", workflows.QueryProgress)
	if err == nil {
		_ = v.Get(&p)
	}
	return p
}

// lastReport is the newest switching report as `drorch report --json` shows it.
func (ss *switchStack) lastReport() workflows.SwitchReport {
	ss.t.Helper()
	out, errOut, err := ss.drorch("report", "--plan", plan, "--json")
	if err != nil {
		ss.t.Fatalf("drorch report: %v\n%s", err, errOut)
	}
	for _, s := range ss.secrets {
		if strings.Contains(out, s) {
			ss.t.Errorf("drorch report shows a secret (%.4s…)", s)
		}
	}
	var res workflows.StatusResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Reports) == 0 {
		ss.t.Fatalf("drorch report --json: %v, %d reports\n%s", err, len(res.Reports), out)
	}
	return res.Reports[len(res.Reports)-1]
}

// activityAttempts lists, for each time run scheduled the activity type, the
// attempt it was last started as (the history records only the last one).
func (s *stack) activityAttempts(run client.WorkflowRun, activity string) []int32 {
	s.t.Helper()
	scheduled := map[int64]bool{}
	var attempts []int32
	it := s.cl.GetWorkflowHistory(context.Background(), run.GetID(), run.GetRunID(), false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			s.t.Fatal(err)
		}
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil && a.GetActivityType().GetName() == activity {
			scheduled[ev.GetEventId()] = true
		}
		if a := ev.GetActivityTaskStartedEventAttributes(); a != nil && scheduled[a.GetScheduledEventId()] {
			attempts = append(attempts, a.GetAttempt())
		}
	}
	return attempts
}

// innermostAppError is the application error deepest in err's chain: what
// went wrong, under the layers that say where.
func innermostAppError(err error) *temporal.ApplicationError {
	var last *temporal.ApplicationError
	for err != nil {
		var app *temporal.ApplicationError
		if !errors.As(err, &app) {
			break
		}
		last = app
		err = app.Unwrap()
	}
	return last
}
