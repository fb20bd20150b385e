package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/repo"
)

// act names the activities, as method values of a nil pointer.
var act *activities.Activities

// switchRun is what a switching workflow (failover, failback, permanent
// failover) carries between its steps: the plan as its repositories record
// it, the two sites, the report being written and the saga of compensations.
type switchRun struct {
	ctx      workflow.Context
	t        *tracker
	info     activities.PlanInfo // roles and active site as recorded (see current)
	from, to string              // the active site before, the one after
	op       string              // this operation's id: failover-1a2b3c4d
	rep      *SwitchReport
	undo     []undoStep // compensations, in the order the steps were done
	// silent holds the sites whose state could not be read when the run
	// began, and why (see readView); access the resource states preflight read.
	silent map[string]error
	access map[string][]activities.ResourceState
	force  bool // the operator's --force: go on past a site that refuses
}

type undoStep struct {
	what string
	do   func(ctx workflow.Context) error
	// closes makes a site read-only again; opens makes one read-write.
	closes, opens bool
}

// newSwitchRun starts the report of an operation that began at started.
func newSwitchRun(ctx workflow.Context, t *tracker, info activities.PlanInfo, op, mode, from, to string, started time.Time) *switchRun {
	id, _ := opID(ctx, op)
	return newSwitchRunID(ctx, t, info, op, id, mode, from, to, started)
}

func newSwitchRunID(ctx workflow.Context, t *tracker, info activities.PlanInfo, op, id, mode, from, to string, started time.Time) *switchRun {
	rep := &SwitchReport{
		ID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/" + id, Plan: info.Plan, Operation: op, Mode: mode,
		From: from, To: to, Started: started, Steps: []StepProgress{},
	}
	return &switchRun{ctx: ctx, t: t, info: info, from: from, to: to, op: id, rep: rep}
}

// site is for a quick step at site, retried until it succeeds.
func (s *switchRun) site(site string) workflow.Context {
	return shortCtx(s.ctx, siteQueue(s.ctx, site))
}

// check is for preflight: a site that does not answer within two minutes
// stops the operation before it changes anything.
func (s *switchRun) check(site string) workflow.Context {
	return workflow.WithActivityOptions(s.ctx, workflow.ActivityOptions{
		TaskQueue: siteQueue(s.ctx, site), StartToCloseTimeout: time.Minute, ScheduleToCloseTimeout: 2 * time.Minute,
		RetryPolicy: retryPolicy,
	})
}

// reachable is for a site that may be dark: a minute for its worker to pick
// the task up and three tries, then the operation goes on without it.
func (s *switchRun) reachable(site string) workflow.Context {
	return s.reachableIn(s.ctx, site)
}

// reachableIn is reachable with ctx as the base: a disconnected context
// for what must run after a cancellation. Since changeDarkAfter the bound is
// the plan's failover.darkAfter (darkOptions).
func (s *switchRun) reachableIn(ctx workflow.Context, site string) workflow.Context {
	if workflow.GetVersion(ctx, changeDarkAfter, workflow.DefaultVersion, 1) >= 1 {
		return workflow.WithActivityOptions(ctx, darkOptions(ctx, site, darkAfter(s.info)))
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: siteQueue(ctx, site), ScheduleToStartTimeout: time.Minute, StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumAttempts: 3},
	})
}

// preflight checks that each site's repository and access resources answer.
func (s *switchRun) preflight(why string, sites ...string) (map[string]activities.SiteState, error) {
	states := map[string]activities.SiteState{}
	for _, site := range sites {
		var st activities.SiteState
		if err := workflow.ExecuteActivity(s.check(site), act.GetSiteState, activities.SiteStateInput{Plan: s.info.Plan, Site: site}).Get(s.ctx, &st); err != nil {
			return states, wrap(err, "%s site %s", why, site)
		}
		var rs []activities.ResourceState
		if err := workflow.ExecuteActivity(s.check(site), act.AccessStatus, activities.AccessStatusInput{Plan: s.info.Plan, Site: site}).Get(s.ctx, &rs); err != nil {
			return states, wrap(err, "%s site %s", why, site)
		}
		if s.access == nil {
			s.access = map[string][]activities.ResourceState{}
		}
		s.access[site] = rs
		states[site] = st
	}
	return states, nil
}

// setAccess switches site's access resources to mode in ctx.
func (s *switchRun) setAccess(ctx workflow.Context, site string, mode access.Mode) error {
	return workflow.ExecuteActivity(ctx, act.SetAccess, activities.SetAccessInput{Plan: s.info.Plan, Site: site, Mode: mode}).Get(ctx, nil)
}

// readOnly makes site read-only as a step that is undone by making it
// read-write again.
func (s *switchRun) readOnly(ctx workflow.Context, site string) error {
	if err := s.t.step(s.ctx, "read-only "+site, func() error { return s.setAccess(ctx, site, access.ReadOnly) }); err != nil {
		return wrap(err, "make %s read-only", site)
	}
	s.onUndoAccess(site, access.ReadWrite)
	return nil
}

// readWrite opens site for writes as a step that is undone by making it
// read-only again; the site's target now takes writes, so it no longer
// holds a restore point as a warm standby.
func (s *switchRun) readWrite(site string) error {
	if err := s.t.step(s.ctx, "read-write "+site, func() error { return s.setAccess(s.site(site), site, access.ReadWrite) }); err != nil {
		return err
	}
	s.onUndoAccess(site, access.ReadOnly)
	_ = workflow.ExecuteActivity(s.site(site), act.MarkStandby, activities.MarkStandbyInput{Plan: s.info.Plan, Site: site}).Get(s.ctx, nil)
	return nil
}

// epoch raises the epoch at the site becoming active above the highest
// either site holds and names it active; the old site learns the same epoch
// unless it is dark (then it learns it at failback, and meanwhile every
// reader takes the highest epoch either site holds). Undone by giving the
// active role back.
//
// Since changeEpochOldSite, dark (the fence did not reach the old site) no
// longer skips it: its store is asked all the same, within the darkness
// bound, unless it did not answer when the run began, and only a store that
// does not take the epoch is left out (with a note).
//
// Since changeThreeSites the plan's further sites learn it too when their
// store answers (epochAtOthers), and are given the role back on undo.
func (s *switchRun) epoch(reason string, dark bool) error {
	tryOld := workflow.GetVersion(s.ctx, changeEpochOldSite, workflow.DefaultVersion, 1) >= 1
	var others []string // the further sites (three sites) that recorded the epoch
	undo := func(ctx workflow.Context) error {
		sites := append(append([]string{s.from}, others...), s.to)
		for _, site := range sites {
			if site == s.from && dark {
				continue
			}
			if err := workflow.ExecuteActivity(shortCtx(ctx, siteQueue(s.ctx, site)), act.SetEpoch, s.epochInput(site, s.from, s.op+"-undo", s.rep.Operation+" undone", s.rep.Epoch, 0)).Get(ctx, nil); err != nil {
				return err
			}
		}
		return nil
	}
	err := s.t.step(s.ctx, "epoch", func() error {
		var set repo.Epoch
		if err := workflow.ExecuteActivity(s.site(s.to), act.SetEpoch, s.epochInput(s.to, s.to, s.op, reason, s.info.Epoch, 0)).Get(s.ctx, &set); err != nil {
			return err
		}
		s.rep.Epoch = set.Epoch
		if tryOld {
			// The new site names itself active from here on: a failure
			// recording it at the old one must still give the role back.
			s.onUndo("give the active role back to "+s.from, undo)
		}
		switch {
		case dark && tryOld:
			var err error
			if dark, err = s.epochAtOld(reason); err != nil {
				return err
			}
		case dark:
			s.note(fmt.Sprintf("epoch %d not recorded at %s, which did not answer: it learns it when it is back", s.rep.Epoch, s.from))
		default:
			if err := workflow.ExecuteActivity(s.site(s.from), act.SetEpoch, s.epochInput(s.from, s.to, s.op, reason, 0, s.rep.Epoch)).Get(s.ctx, nil); err != nil {
				return err
			}
		}
		return s.epochAtOthers(reason, dark, &others)
	})
	if err != nil {
		return err
	}
	if !tryOld {
		s.onUndo("give the active role back to "+s.from, undo)
	}
	return nil
}

// epochAtOthers records the new epoch at the plan's sites other than the
// old and the new active one (since changeThreeSites, a plan with more than
// one secondary): each that answers within the darkness bound learns it and
// appends itself to recorded. The switch needs the epoch at a majority of
// the plan's sites (oldMissing: not at the old one), so that any majority
// of them tells the active site (readView); short of it, it stops unless
// forced.
func (s *switchRun) epochAtOthers(reason string, oldMissing bool, recorded *[]string) error {
	sites := s.info.SiteNames()
	if len(sites) < 3 || !threeSites(s.ctx) {
		return nil
	}
	n := 1 // the new active site
	if !oldMissing {
		n++
	}
	for _, site := range sites {
		if site == s.from || site == s.to {
			continue
		}
		if why := s.silent[site]; why != nil {
			s.note(fmt.Sprintf("epoch %d not recorded at %s, which did not answer within %s: it learns it when it is back", s.rep.Epoch, site, darkAfter(s.info)))
			continue
		}
		err := workflow.ExecuteActivity(s.reachable(site), act.SetEpoch, s.epochInput(site, s.to, s.op, reason, 0, s.rep.Epoch)).Get(s.ctx, nil)
		switch {
		case err == nil:
			*recorded = append(*recorded, site)
			n++
		case temporal.IsCanceledError(err) || errorType(err) == drivers.ReasonFenced:
			return err
		case !unanswered(err) && !s.force:
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"record epoch %d at %s: its store answered but refused: %s; fix what it needs and run it again, or run it with --force to go on without it",
				s.rep.Epoch, site, errorMessage(err)), "EpochRefused", nil)
		case !unanswered(err):
			s.note(fmt.Sprintf("forced: epoch %d not recorded at %s, whose store refused it: %s", s.rep.Epoch, site, errorMessage(err)))
		default:
			s.note(fmt.Sprintf("epoch %d not recorded at %s: %s: it learns it when it is back", s.rep.Epoch, site, errorMessage(err)))
		}
	}
	if need := majority(len(sites)); n < need {
		msg := fmt.Sprintf("epoch %d is recorded at %d of plan %s's %d sites, and a switch needs it at a majority (%d) so that any majority of them tells the active site",
			s.rep.Epoch, n, s.info.Plan, len(sites), need)
		if !s.force {
			return temporal.NewNonRetryableApplicationError(msg+": run it again once another site answers, or with --force to go on all the same", "NoMajority", nil)
		}
		s.note("forced: " + msg)
	}
	return nil
}

// epochAtOld records the new epoch at the old active site, which the fence
// did not reach, if its store answers within the darkness bound; it reports
// whether the epoch is still missing there. A store that holds a newer epoch
// (Fenced: another switch happened meanwhile) stops the operation.
func (s *switchRun) epochAtOld(reason string) (missing bool, err error) {
	if why := s.silent[s.from]; why != nil {
		s.note(fmt.Sprintf("epoch %d not recorded at %s, which did not answer within %s: it learns it when it is back", s.rep.Epoch, s.from, darkAfter(s.info)))
		return true, nil
	}
	err = workflow.ExecuteActivity(s.reachable(s.from), act.SetEpoch, s.epochInput(s.from, s.to, s.op, reason, 0, s.rep.Epoch)).Get(s.ctx, nil)
	switch {
	case err == nil:
		return false, nil
	case temporal.IsCanceledError(err) || errorType(err) == drivers.ReasonFenced:
		return true, err
	case !unanswered(err) && !s.force:
		// The store answered and refused: the old site is up, and would
		// not know it has lost the active role.
		return true, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"record epoch %d at %s: its store answered but refused: %s; fix what it needs and run the failover again, or run drorch failover --force to go on without it",
			s.rep.Epoch, s.from, errorMessage(err)), "EpochRefused", nil)
	case !unanswered(err):
		s.note(fmt.Sprintf("forced: epoch %d not recorded at %s, whose store refused it: %s", s.rep.Epoch, s.from, errorMessage(err)))
		return true, nil
	}
	s.note(fmt.Sprintf("epoch %d not recorded at %s: %s: it learns it when it is back", s.rep.Epoch, s.from, errorMessage(err)))
	return true, nil
}

// epochInput sets site's epoch naming active, keeping the plan's roles.
func (s *switchRun) epochInput(site, active, op, reason string, min, adopt uint64) activities.SetEpochInput {
	in := activities.SetEpochInput{Plan: s.info.Plan, Site: site, Active: active, Op: op, Min: min, Adopt: adopt, Reason: reason}
	if s.info.Swapped {
		in.Primary, in.Secondary = s.info.Primary, s.info.Secondary
	}
	return in
}

// dns points the plan's records at site and verifies them.
func (s *switchRun) dns(site string) error {
	return s.t.step(s.ctx, "dns "+site, func() error {
		return workflow.ExecuteActivity(s.site(site), act.SwitchDNS, activities.SwitchDNSInput{Plan: s.info.Plan, To: site}).Get(s.ctx, &s.rep.DNS)
	})
}

// undoAccess is a compensation that switches site's access back to mode.
func (s *switchRun) undoAccess(site string, mode access.Mode) func(ctx workflow.Context) error {
	return func(ctx workflow.Context) error {
		c := shortCtx(ctx, siteQueue(s.ctx, site))
		return workflow.ExecuteActivity(c, act.SetAccess, activities.SetAccessInput{Plan: s.info.Plan, Site: site, Mode: mode}).Get(c, nil)
	}
}

// onUndoAccess adds the compensation that switches site's access back to
// mode.
func (s *switchRun) onUndoAccess(site string, mode access.Mode) {
	s.undo = append(s.undo, undoStep{what: "make " + site + " " + string(mode) + " again", do: s.undoAccess(site, mode),
		opens: mode == access.ReadWrite, closes: mode == access.ReadOnly})
}

// onUndo adds a compensation; do runs in a context that outlives the
// workflow's cancellation and must derive its activity options from it.
func (s *switchRun) onUndo(what string, do func(ctx workflow.Context) error) {
	s.undo = append(s.undo, undoStep{what: what, do: do})
}

func (s *switchRun) note(n string) {
	s.rep.Notes = append(s.rep.Notes, n)
}

// finish completes the report after the run returned err: undoing what was
// done when it failed, then stores it at the site that is active now.
func (s *switchRun) finish(err error) SwitchReport {
	rep := s.rep
	rep.Steps = s.t.p.Steps
	rep.Finished = workflow.Now(s.ctx)
	switch {
	case err == nil:
		rep.Outcome = "completed"
	case len(s.undo) > 0:
		rep.Error = err.Error()
		rep.Compensation = s.compensate()
		rep.Outcome = "compensated"
	case temporal.IsCanceledError(err):
		rep.Error = errorMessage(err)
		rep.Outcome = "cancelled"
	default:
		rep.Error = err.Error()
		rep.Outcome = "failed"
	}
	s.save(*rep)
	return *rep
}

// compensate undoes the steps done, last first, in a context that outlives
// a cancelled workflow, and says what it did.
func (s *switchRun) compensate() []string {
	ctx, _ := workflow.NewDisconnectedContext(s.ctx)
	var done []string
	unclosed := ""
	for i := len(s.undo) - 1; i >= 0; i-- {
		u := s.undo[i]
		if u.opens && unclosed != "" && workflow.GetVersion(s.ctx, changeOneWriter, workflow.DefaultVersion, 1) >= 1 {
			// Opening the old site now would leave two writable sites.
			done = append(done, u.what+": SKIPPED: "+unclosed+" could not be made read-only again; open it by hand once that one is read-only")
			continue
		}
		if err := u.do(ctx); err != nil {
			done = append(done, u.what+": FAILED: "+errorMessage(err))
			if u.closes {
				unclosed = u.what
			}
			continue
		}
		done = append(done, u.what)
	}
	return done
}

// save stores the report at the site that is active now (the target unless
// the operation did not complete).
func (s *switchRun) save(rep SwitchReport) {
	ctx, _ := workflow.NewDisconnectedContext(s.ctx)
	site := s.to
	if rep.Outcome != "completed" {
		site = s.from
	}
	if err := workflow.ExecuteActivity(s.reachableIn(ctx, site), act.SaveReport, activities.SaveReportInput{
		Plan: s.info.Plan, Site: site, ID: rep.Started.UTC().Format("20060102T150405.000Z") + "-" + s.op, Report: rep,
	}).Get(ctx, nil); err != nil {
		workflow.GetLogger(s.ctx).Warn("report not stored", "site", site, "error", err)
	}
}

// child runs a procedure as a child workflow on this workflow's queue, named
// after this operation and name (unique within it).
func (s *switchRun) child(name string, wf, in, res any) error {
	ctx := workflow.WithChildOptions(s.ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            workflow.GetInfo(s.ctx).WorkflowExecution.ID + "/" + s.op + "/" + name,
		TaskQueue:             workflow.GetInfo(s.ctx).TaskQueueName,
		ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_TERMINATE,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	})
	return workflow.ExecuteChildWorkflow(ctx, wf, in).Get(ctx, res)
}

// sync brings site to's target to the latest state of site from's: a
// backup at from, its transmission and a restore at to, as child
// workflows named prefix/backup, prefix/transmit, prefix/restore.
func (s *switchRun) sync(prefix, from, to string) (BackupResult, error) {
	var b BackupResult
	if err := s.child(prefix+"/"+OpBackup, Backup, BackupInput{Plan: s.info.Plan, Site: from}, &b); err != nil {
		return b, err
	}
	if err := s.child(prefix+"/"+OpTransmit, Transmit, TransmitInput{Plan: s.info.Plan, From: from, To: to, Point: b.Point}, nil); err != nil {
		return b, err
	}
	return b, s.child(prefix+"/"+OpRestore, Restore, RestoreInput{Plan: s.info.Plan, Site: to, Point: b.Point}, nil)
}

// errorMessage is the innermost message of an activity or child error.
func errorMessage(err error) string {
	if app := Innermost(err); app != nil {
		return app.Message()
	}
	return err.Error()
}

// Innermost is the deepest application error in err's chain — what an
// activity or a workflow itself said went wrong, under the layers of
// activity, child and workflow errors around it — or nil.
func Innermost(err error) *temporal.ApplicationError {
	var app *temporal.ApplicationError
	if !errors.As(err, &app) {
		return nil
	}
	for {
		var inner *temporal.ApplicationError
		if !errors.As(app.Unwrap(), &inner) {
			return app
		}
		app = inner
	}
}

// wrap prefixes err's innermost message with what was being done, keeping
// its type and whether it may be retried, so that the workflow's failure
// says what went wrong once, with the type an operator can act on.
func wrap(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	prefix := fmt.Sprintf(format, args...)
	app := Innermost(err)
	if app == nil {
		return fmt.Errorf("%s: %w", prefix, err)
	}
	return temporal.NewApplicationErrorWithOptions(prefix+": "+app.Message(), app.Type(), temporal.ApplicationErrorOptions{NonRetryable: app.NonRetryable()})
}

// errorType is the type of the innermost application error, "" if none.
func errorType(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Type()
	}
	return ""
}

// current is the plan as its repositories record it (see readView), the
// best view there is even when a site is silent: for operations that need
// both sites anyway, or that decide for themselves what a silent site means.
func current(ctx workflow.Context, info activities.PlanInfo) activities.PlanInfo {
	return readView(ctx, info).info
}

// planView is what readView learnt.
type planView struct {
	info    activities.PlanInfo // the roles and active site the highest epoch read names
	silent  map[string]error    // the sites that did not answer, and why
	unknown string              // why the active site cannot be told from what answered; "" if it can
	cause   error               // the refusal that made it unknown, if one did
}

// readView asks the plan's sites at once for their state: the active site and the
// roles are the ones named by the highest epoch read; with no epoch naming
// them, the configured primary is active and the configured roles hold.
//
// Since changeActiveFromAnswers a site is silent once it has not answered
// within the plan's darkness bound (before: 30 seconds; a store without the
// plan's bucket answers, with no epoch), and the active site
// is decided from what answered (docs/fencing.md): both sites answered, the
// highest epoch decides; one answered and names the other active, the other
// is (a switch back would have recorded its epoch at the answering site
// first, since a switch records the epoch at the site it makes active before
// anywhere else); one answered and names itself active, the silent one may
// hold a newer epoch (a failover to it while the answering site was dark is
// recorded only there), so the active site is unknown; none answered,
// unknown.
//
// Since changeThreeSites every site of the plan is asked (planSites); with
// three or more, the active site is known once a majority answered
// (fromMajority), since a switch records its epoch at a majority.
func readView(ctx workflow.Context, info activities.PlanInfo) planView {
	decide := workflow.GetVersion(ctx, changeActiveFromAnswers, workflow.DefaultVersion, 1) >= 1
	sites := planSites(ctx, info)
	futures := map[string]workflow.Future{}
	for _, site := range sites {
		opts := workflow.ActivityOptions{
			TaskQueue: siteQueue(ctx, site), ScheduleToStartTimeout: 30 * time.Second, StartToCloseTimeout: 30 * time.Second,
			RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 2},
		}
		if decide {
			opts = darkOptions(ctx, site, darkAfter(info))
		}
		futures[site] = workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), act.GetSiteState, activities.SiteStateInput{Plan: info.Plan, Site: site})
	}
	var best activities.SiteState
	var answered []string
	silent := map[string]error{}
	for _, site := range sites {
		var st activities.SiteState
		err := futures[site].Get(ctx, &st)
		if app := Innermost(err); decide && app != nil && app.Type() == drivers.ReasonNoSuchBucket {
			// The store answered: it holds no repository, so no epoch.
			err, st = nil, activities.SiteState{Site: site}
		}
		if err != nil {
			silent[site] = err
			continue
		}
		answered = append(answered, site)
		if st.Epoch.Epoch > best.Epoch.Epoch {
			best = st
		}
	}
	v := planView{info: withRoles(info, best.Epoch.Active, best.Epoch.Primary, best.Epoch.Secondary)}
	v.info.Epoch = best.Epoch.Epoch
	if !decide {
		return v
	}
	v.silent = silent
	if len(sites) > 2 {
		v.unknown, v.cause = fromMajority(info, sites, answered, silent)
		return v
	}
	switch len(answered) {
	case 0:
		v.unknown = fmt.Sprintf("no site told its epoch (%s: %s; %s: %s)",
			sites[0], silence(silent[sites[0]], info), sites[1], silence(silent[sites[1]], info))
		v.cause = refusal(silent[sites[0]], silent[sites[1]])
	case 1:
		here := answered[0]
		if there := other(info, here); v.info.Active == here {
			v.unknown = fmt.Sprintf("site %s did not tell its epoch (%s), and it may hold a newer one than %s's %d, which names %s active: "+
				"a failover to %s while %s was dark is recorded only at %s",
				there, silence(silent[there], info), here, v.info.Epoch, here, there, here, there)
			v.cause = refusal(silent[there])
		}
	}
	return v
}

// fromMajority decides whether the answers of a plan with three or more
// sites tell its active site: a switch among them completes only once its
// epoch is recorded at a majority of the sites (see majority), and any two
// majorities share a site, so the highest epoch a majority holds is the
// newest there is. Fewer answers cannot tell: it returns why, and the
// refusal among the silences, if any.
func fromMajority(info activities.PlanInfo, sites, answered []string, silent map[string]error) (string, error) {
	if len(answered) >= majority(len(sites)) {
		return "", nil
	}
	var why []string
	var errs []error
	for _, site := range sites {
		if err := silent[site]; err != nil {
			why = append(why, site+": "+silence(err, info))
			errs = append(errs, err)
		}
	}
	return fmt.Sprintf("only %d of its %d sites told their epoch (%s), and a switch is recorded at a majority (%d) of them: a site that did not answer may hold a newer epoch",
		len(answered), len(sites), strings.Join(why, "; "), majority(len(sites))), refusal(errs...)
}

// majority is how many of n sites a switch records its epoch at before it
// completes, when n is three or more.
func majority(n int) int { return n/2 + 1 }

// planSites are the sites whose epoch decides the plan's active site: since
// changeThreeSites every site of the plan (its primary, then its
// secondaries in order), before only the primary and the secondary.
func planSites(ctx workflow.Context, info activities.PlanInfo) []string {
	if threeSites(ctx) {
		return info.SiteNames()
	}
	return []string{info.Primary, info.Secondary}
}

// threeSites reports whether this run acts on every site of a plan with
// more than one secondary (changeThreeSites); runs recorded before act on
// its primary and secondary only. Two-site plans act the same either way.
func threeSites(ctx workflow.Context) bool {
	return workflow.GetVersion(ctx, changeThreeSites, workflow.DefaultVersion, 1) >= 1
}

// refusal is the first of errs that is a refusal (a non-retryable error: a
// store that answered no, e.g. AccessDenied), or nil.
func refusal(errs ...error) error {
	for _, err := range errs {
		if app := Innermost(err); app != nil && app.NonRetryable() {
			return err
		}
	}
	return nil
}

// activeUnknown is the error of an operation that needs the active site to
// choose a default while readView cannot tell it.
// Its type is ActiveUnknown, or the type of the refusal that made it
// unknown (AccessDenied, say), which is what has to be fixed.
func activeUnknown(plan string, v planView, remedy string) error {
	typ := "ActiveUnknown"
	if app := Innermost(v.cause); app != nil {
		typ = app.Type()
	}
	return temporal.NewNonRetryableApplicationError(fmt.Sprintf("cannot tell which site of plan %s is active: %s; %s", plan, v.unknown, remedy), typ, nil)
}

// darkAfter is the plan's darkness bound (config failover.darkAfter); a
// history recorded before the plan description carried it has the default.
func darkAfter(info activities.PlanInfo) time.Duration {
	if info.Failover.DarkAfter > 0 {
		return info.Failover.DarkAfter
	}
	return defaultDarkAfter
}

const defaultDarkAfter = 10 * time.Second

// darkOptions are for a call to a site that may be dark: its worker must
// pick the task up within bound and the call must end within bound, retried
// for at most a second more. The second tells a site without a worker (a
// ScheduleToStart timeout, see noWorker) from one whose servers are silent.
func darkOptions(ctx workflow.Context, site string, bound time.Duration) workflow.ActivityOptions {
	return workflow.ActivityOptions{
		TaskQueue: siteQueue(ctx, site), ScheduleToStartTimeout: bound, StartToCloseTimeout: bound, ScheduleToCloseTimeout: bound + time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, BackoffCoefficient: 2},
	}
}

// unanswered reports whether err says a site did not answer: a timeout
// (no worker took the task, or the call did not end in time) or a server
// that could not be reached (type Unreachable). Any other error is an
// answer: a refusal (a wrong password, access denied) or a failure at a site
// that is there.
func unanswered(err error) bool {
	app := Innermost(err)
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) {
		// Out of time after attempts that got an answer (a refusal, a
		// server error): the last answer counts, not the clock.
		return app == nil || app.Type() == "Unreachable"
	}
	return app != nil && app.Type() == "Unreachable"
}

// silence says in a few words why a site did not answer.
func silence(err error, info activities.PlanInfo) string {
	var timeout *temporal.TimeoutError
	switch {
	case noWorker(err):
		return fmt.Sprintf("no worker took the task within %s", darkAfter(info))
	case errors.As(err, &timeout):
		return fmt.Sprintf("no answer within %s", darkAfter(info))
	}
	return errorMessage(err)
}

// noWorker reports whether err says no worker of the site took the task
// within its ScheduleToStart timeout: the whole site is dark to drorch.
func noWorker(err error) bool {
	var timeout *temporal.TimeoutError
	return errors.As(err, &timeout) && timeout.TimeoutType() == enums.TIMEOUT_TYPE_SCHEDULE_TO_START
}

// withRoles applies recorded roles to the configured plan, ignoring names
// that are not the plan's sites. epoch.json records the primary and the
// first secondary; a plan's further secondaries follow in the configured
// order.
func withRoles(info activities.PlanInfo, active, primary, secondary string) activities.PlanInfo {
	names := info.SiteNames()
	sites := map[string]bool{}
	for _, s := range names {
		sites[s] = true
	}
	if sites[primary] && sites[secondary] && primary != secondary && primary != info.Primary {
		info.Primary, info.Secondary, info.Swapped = primary, secondary, true
		if len(info.Secondaries) > 0 {
			info.Secondaries = standbysAfter(names, primary, secondary)
		}
	}
	info.Active = info.Primary
	if sites[active] {
		info.Active = active
	}
	return info
}

// standbysAfter are the secondaries of a plan whose sites are names (in
// configured order) once primary is its primary and secondary its first
// secondary: secondary, then the others in configured order.
func standbysAfter(names []string, primary, secondary string) []string {
	out := []string{secondary}
	for _, s := range names {
		if s != primary && s != secondary {
			out = append(out, s)
		}
	}
	return out
}

// activeSite is the plan's active site (see readView), for an operation
// whose default depends on it: when it cannot be told, an ActiveUnknown
// error asks for the site to be named.
func activeSite(ctx workflow.Context, info activities.PlanInfo) (string, error) {
	v := readView(ctx, info)
	if v.unknown != "" {
		return "", activeUnknown(info.Plan, v, "name the site explicitly (--site, or --from for a transmission), or retry once both sites answer")
	}
	return v.info.Active, nil
}

// siteOrActive is the site the input names in field, or, when it names
// none, the plan's active site (see activeSite).
func siteOrActive(ctx workflow.Context, info activities.PlanInfo, site, field string) (string, error) {
	def := site
	if def == "" {
		var err error
		if def, err = activeSite(ctx, info); err != nil {
			return "", err
		}
	}
	return siteOf(info, site, def, field)
}

// Change ids of workflow.GetVersion: each guards one change of behaviour,
// so that histories recorded before it replay the old way (docs/fencing.md).
const (
	changeDarkAfter         = "dark-after"          // calls to a possibly dark site are bounded by failover.darkAfter
	changeActiveFromAnswers = "active-from-answers" // readView decides the active site from the sites that answer
	changeOneWriter         = "one-writer"          // compensation does not reopen a site while another could not be closed
	changeEpochOldSite      = "epoch-old-site"      // the old site's epoch is raised whenever its store answers
	changeFence             = "fence-refusal"       // a refused fence stops an unplanned failover; the undo is registered first
	changeStandbyWritable   = "standby-read-write"  // preflight refuses a target that is read-write
	changeThreeSites        = "three-sites"         // every site of a plan with more than one secondary takes part in switching
)
