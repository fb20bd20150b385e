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
	"github.com/drorch/drorch/internal/config"
)

// changeTimeSaved (workflow.GetVersion) gates a failover's report of the
// time saved by a warm standby (SwitchReport.TimeSaved).
const changeTimeSaved = "time-saved"

// QueryProtect returns a Protect run's ProtectResult as it stands: partial
// while the cycle runs, whole once it ended (failed runs too).
const QueryProtect = "protect"

// ProtectInput starts one protection cycle of a plan. Only Plan is required:
//
//	temporal workflow start --type Protect --task-queue drorch --input '{"plan":"files"}'
type ProtectInput struct {
	Plan string `json:"plan"`
	// SkipRetention leaves every site's restore points as they are (no
	// Forget children).
	SkipRetention bool `json:"skipRetention,omitempty"`
	// IgnoreWindow runs the cycle even outside the schedule's window.
	IgnoreWindow bool `json:"ignoreWindow,omitempty"`
}

// ProtectResult is what one protection cycle did.
type ProtectResult struct {
	Plan string `json:"plan"`
	// Skipped says why the cycle did nothing (outside the schedule's window,
	// a switch of the plan running); "" when it ran.
	Skipped  string    `json:"skipped,omitempty"`
	Active   string    `json:"active,omitempty"`
	Epoch    uint64    `json:"epoch,omitempty"`
	Point    string    `json:"point,omitempty"` // the restore point this cycle made
	Snapshot time.Time `json:"snapshot,omitzero"`
	// BytesRead and BytesNew are the backup's; BytesCopied what every
	// transmit sent.
	BytesRead   int64         `json:"bytesRead"`
	BytesNew    int64         `json:"bytesNew"`
	BytesCopied int64         `json:"bytesCopied"`
	Sites       []ProtectSite `json:"sites"` // the active site first, then the standbys in order
	// RPOObjective is the plan's objective (0: none); RPOBreached is set
	// when a standby site's RPO exceeds it or could not be measured.
	RPOObjective Duration `json:"rpoObjective,omitempty"`
	RPOBreached  bool     `json:"rpoBreached"`
	Failures     []string `json:"failures,omitempty"` // the steps that failed, the rest of the cycle stands
	Duration     Duration `json:"duration"`
}

// ProtectSite is what the cycle did at one site.
type ProtectSite struct {
	Site string `json:"site"`
	Role string `json:"role"` // active or standby
	// Point is the restore point this cycle made valid here.
	Point       string `json:"point,omitempty"`
	BytesCopied int64  `json:"bytesCopied,omitempty"`
	// Kept and Forgotten count the points retention kept and forgot.
	Retention string `json:"retention,omitempty"` // done, skipped, failed
	Kept      int    `json:"kept,omitempty"`
	Forgotten int    `json:"forgotten,omitempty"`
	// WALDeleted counts the WAL files retention deleted, WALKeptFrom the
	// first it keeps (the start of the oldest kept base backup).
	WALDeleted  int    `json:"walDeleted,omitempty"`
	WALKeptFrom string `json:"walKeptFrom,omitempty"`
	// Refreshed: the warm standby target now holds Point (RefreshTook).
	Refreshed   bool     `json:"refreshed,omitempty"`
	RefreshTook Duration `json:"refreshTook,omitempty"`
	// RefreshSkipped says why the warm standby here was not refreshed
	// (its target holds writes of its own that a failback recovers).
	RefreshSkipped string `json:"refreshSkipped,omitempty"`
	// Deferred lists the steps left to the next cycle because another
	// operation of the plan held what they needed (a switch begun meanwhile).
	Deferred string `json:"deferred,omitempty"`
	// RefreshRunning is the id of a refresh that outlived the cycle.
	RefreshRunning string `json:"refreshRunning,omitempty"`
	// Newest is the newest valid point here at the end of the cycle, and
	// RPO its age then (standby sites only).
	Newest string   `json:"newest,omitempty"`
	RPO    Duration `json:"rpo,omitempty"`
	Error  string   `json:"error,omitempty"`
}

// Protect runs one protection cycle of a plan (DESIGN §1), as its schedule
// does: a backup at the active site, its transmission to every other site,
// retention at every site, and, for a warm standby, the refresh of each
// standby target from the new point. It follows the roles the sites record,
// so after a failover it protects in the other direction. Each step runs as
// a child workflow named after this run. A standby that fails does not stop
// the others; the run then fails naming every failed step, with the rest of
// the cycle done. It does nothing (and succeeds, Skipped saying why) outside
// the schedule's window and while a switch of the plan runs.
func Protect(ctx workflow.Context, in ProtectInput) (res ProtectResult, err error) {
	started := workflow.Now(ctx)
	res = ProtectResult{Plan: in.Plan, Sites: []ProtectSite{}}
	if err := workflow.SetQueryHandler(ctx, QueryProtect, func() (ProtectResult, error) { return res, nil }); err != nil {
		return res, err
	}
	t, info, err := begin(ctx, OpProtect, in.Plan)
	defer func() {
		res.Duration = Duration(workflow.Now(ctx).Sub(started))
		t.finish(err)
	}()
	if err != nil {
		return res, err
	}
	res.RPOObjective = Duration(info.Objectives.RPO)
	if why := outsideWindow(ctx, info, in); why != "" {
		res.Skipped = why
		workflow.GetLogger(ctx).Info("protection cycle skipped", "plan", in.Plan, "why", why)
		return res, nil
	}
	if err := noSwitch(ctx, in.Plan, "protection cycle"); err != nil {
		if errorType(err) != "ClaimRefused" {
			return res, err
		}
		res.Skipped = "a failover/failback of the plan is running: " + errorMessage(err)
		workflow.GetLogger(ctx).Info("protection cycle skipped", "plan", in.Plan, "why", res.Skipped)
		return res, nil
	}
	view := readView(ctx, info)
	if view.unknown != "" {
		// Nothing can be measured either: with an objective, that is a breach.
		if res.RPOBreached = info.Objectives.RPO > 0; res.RPOBreached {
			workflow.GetLogger(ctx).Warn("RPO objective breached", "plan", in.Plan, "objective", info.Objectives.RPO.String(), "why", view.unknown)
		}
		if err := workflow.UpsertTypedSearchAttributes(ctx, RPOBreachedAttr.ValueSet(res.RPOBreached)); err != nil {
			return res, err
		}
		return res, activeUnknown(in.Plan, view, "the protection cycle wrote nothing; it runs again at the next schedule once the sites answer")
	}
	p := &protect{ctx: ctx, t: t, in: in, info: info, res: &res, active: view.info.Active, roles: view.info,
		silent: view.silent, deadline: started.Add(cycleBound(info))}
	res.Active, res.Epoch = p.active, view.info.Epoch
	if why := view.silent[p.active]; why != nil {
		// The others name it active, but it is dark: there is nothing to
		// back up from, and waiting for it would stall the schedule.
		if res.RPOBreached = info.Objectives.RPO > 0; res.RPOBreached {
			workflow.GetLogger(ctx).Warn("RPO objective breached", "plan", in.Plan, "objective", info.Objectives.RPO.String(), "why", "active site dark")
		}
		if err := workflow.UpsertTypedSearchAttributes(ctx, RPOBreachedAttr.ValueSet(res.RPOBreached)); err != nil {
			return res, err
		}
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("protection cycle of plan %s: its active site %s is dark (%s): the cycle wrote nothing; "+
			"it runs again at the next schedule, or fail over (drorch failover)", in.Plan, p.active, silence(why, info)), "ActiveDark", nil)
	}
	if err := upsert(ctx, t, p.active); err != nil {
		return res, err
	}
	err = p.run()
	if err := p.measure(); err != nil {
		return res, err
	}
	if err != nil {
		return res, err
	}
	if len(res.Failures) > 0 {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf("protection cycle of plan %s: point %s made at %s, but %s",
			in.Plan, res.Point, p.active, strings.Join(res.Failures, "; ")), "ProtectIncomplete", nil)
	}
	workflow.GetLogger(ctx).Info("protection cycle completed", "plan", in.Plan, "active", p.active, "point", res.Point, "rpoBreached", res.RPOBreached)
	return res, nil
}

// outsideWindow says why the cycle may not start now: the plan's schedule
// has a window and now, in the schedule's time zone, is not inside it.
func outsideWindow(ctx workflow.Context, info activities.PlanInfo, in ProtectInput) string {
	if info.Window == "" || in.IgnoreWindow {
		return ""
	}
	w, err := config.ParseWindow(info.Window)
	if err != nil {
		return ""
	}
	s := config.Schedule{TimeZone: info.TimeZone}
	loc, err := s.Location()
	if err != nil {
		loc = time.UTC
	}
	now := workflow.Now(ctx).In(loc)
	if w.Contains(now) {
		return ""
	}
	return fmt.Sprintf("outside the schedule's window %s (%s): it is %s there", info.Window, loc, now.Format("15:04"))
}

// protect holds one cycle's state between its steps.
type protect struct {
	ctx    workflow.Context
	t      *tracker
	in     ProtectInput
	info   activities.PlanInfo
	res    *ProtectResult
	active string
	// roles are the plan's roles as the sites record them.
	roles activities.PlanInfo
	// standbys are the plan's sites other than the active one, in order.
	standbys []string
	// silent are the sites that did not answer when the cycle began.
	silent map[string]error
	// deadline is when the cycle's steps must end (cycleBound).
	deadline time.Time
}

func (p *protect) site(name string) *ProtectSite {
	for i := range p.res.Sites {
		if p.res.Sites[i].Site == name {
			return &p.res.Sites[i]
		}
	}
	return nil
}

func (p *protect) fail(site, step string, err error) {
	if errorType(err) == "ClaimRefused" {
		// Another operation of the plan holds what the step needs (a
		// switch that began after this cycle did, a forget run by hand):
		// the step waits for the next cycle; that is not a failure.
		if s := p.site(site); s != nil {
			s.Deferred = strings.TrimPrefix(s.Deferred+"; "+step+": "+errorMessage(err), "; ")
			if step == "retention" {
				s.Retention = "skipped"
			}
		}
		workflow.GetLogger(p.ctx).Info("protection cycle step deferred", "plan", p.info.Plan, "site", site, "step", step, "why", errorMessage(err))
		return
	}
	msg := fmt.Sprintf("%s at %s failed: %s", step, site, errorMessage(err))
	p.res.Failures = append(p.res.Failures, msg)
	if s := p.site(site); s != nil {
		if s.Error != "" {
			s.Error += "; "
		}
		s.Error += step + ": " + errorMessage(err)
	}
	workflow.GetLogger(p.ctx).Warn("protection cycle step failed", "plan", p.info.Plan, "site", site, "step", step, "error", err)
}

// DefaultCycleBound bounds a cycle of a plan without a schedule (a run
// started by hand); minCycleBound is the least a schedule's interval
// bounds one to, so a cycle a little slower than a short interval is not
// cut every time.
const (
	DefaultCycleBound = 6 * time.Hour
	minCycleBound     = 10 * time.Minute
	// minStepTime is what a step started late in the cycle is given still.
	minStepTime = time.Minute
)

// cycleBound is how long a cycle of the plan may take: its schedule's
// interval (at least minCycleBound), or DefaultCycleBound unscheduled.
func cycleBound(info activities.PlanInfo) time.Duration {
	if info.Interval <= 0 {
		return DefaultCycleBound
	}
	return max(info.Interval, minCycleBound)
}

// child starts a procedure as a child workflow named <this run's id>/name,
// which must end by the cycle's deadline (at least minStepTime from now).
// Transmit and retention are cut there: what they did stays done, and the
// next cycle does only what is still missing.
func (p *protect) child(ctx workflow.Context, name string, wf, in any) workflow.ChildWorkflowFuture {
	left := max(p.deadline.Sub(workflow.Now(ctx)), minStepTime)
	ctx = workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:               p.childID(name),
		TaskQueue:                workflow.GetInfo(p.ctx).TaskQueueName,
		ParentClosePolicy:        enums.PARENT_CLOSE_POLICY_TERMINATE,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionTimeout: left,
		WorkflowRunTimeout:       left,
	})
	return workflow.ExecuteChildWorkflow(ctx, wf, in)
}

// longChild starts a procedure that is not cut at the cycle's bound: the
// backup (a backup cut short commits nothing, and the next one would read
// everything again, so a first backup longer than the interval would never
// end; it is bounded by its own retry budget) and the warm refresh, which
// outlives the cycle if it must (abandon: the next cycle's refresh is
// refused by its target claim meanwhile) so that a first refresh of a large
// tree can end.
func (p *protect) longChild(ctx workflow.Context, name string, wf, in any, abandon bool) workflow.ChildWorkflowFuture {
	policy := enums.PARENT_CLOSE_POLICY_TERMINATE
	if abandon {
		policy = enums.PARENT_CLOSE_POLICY_ABANDON
	}
	ctx = workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            p.childID(name),
		TaskQueue:             workflow.GetInfo(p.ctx).TaskQueueName,
		ParentClosePolicy:     policy,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	})
	return workflow.ExecuteChildWorkflow(ctx, wf, in)
}

func (p *protect) childID(name string) string {
	return workflow.GetInfo(p.ctx).WorkflowExecution.ID + "/" + name
}

// outOfTime rewrites a child's timeout as the cycle's bound it hit.
func (p *protect) outOfTime(err error) error {
	var timeout *temporal.TimeoutError
	if errors.As(err, &timeout) {
		return fmt.Errorf("did not end within the cycle's bound (%s, the schedule's interval or %s unscheduled; it had until %s): "+
			"it is cut so that the next cycle is not skipped, and the next cycle sends only what is still missing",
			cycleBound(p.info), DefaultCycleBound, p.deadline.UTC().Format(time.RFC3339))
	}
	return err
}

func (p *protect) run() error {
	ctx, res := p.ctx, p.res
	res.Sites = append(res.Sites, ProtectSite{Site: p.active, Role: "active"})
	for _, s := range p.info.SiteNames() {
		if s != p.active {
			p.standbys = append(p.standbys, s)
			res.Sites = append(res.Sites, ProtectSite{Site: s, Role: "standby"})
		}
	}

	var b BackupResult
	if err := p.t.step(ctx, "backup "+p.active, func() error {
		return p.longChild(ctx, OpBackup, Backup, BackupInput{Plan: p.info.Plan, Site: p.active}, false).Get(ctx, &b)
	}); err != nil {
		return wrap(err, "protection cycle of plan %s: backup at %s", p.info.Plan, p.active)
	}
	res.Point, res.Snapshot, res.BytesRead, res.BytesNew = b.Point, b.Snapshot, b.BytesRead, b.BytesNew
	p.site(p.active).Point = b.Point

	// A standby that did not answer when the cycle read the sites is not
	// sent to: each step there would wait for it up to its own limits
	// (hours) while the schedule skips every following cycle.
	var live []string
	for _, s := range p.standbys {
		if why := p.silent[s]; why != nil {
			p.dark(s, why)
			continue
		}
		live = append(live, s)
	}

	// Every standby on its own (transmit, then retention, then the warm
	// refresh), all at once: a slow or failing one holds no other.
	_ = p.t.step(ctx, "standbys", func() error {
		wg := workflow.NewWaitGroup(ctx)
		if p.in.SkipRetention {
			p.site(p.active).Retention = "skipped"
		} else {
			wg.Add(1)
			workflow.Go(ctx, func(ctx workflow.Context) {
				defer wg.Done()
				p.retention(ctx, p.active)
			})
		}
		for _, s := range live {
			wg.Add(1)
			workflow.Go(ctx, func(ctx workflow.Context) {
				defer wg.Done()
				p.standby(ctx, s, b.Point)
			})
		}
		wg.Wait(ctx)
		return nil
	})
	return nil
}

// dark records that standby s did not answer, so nothing was sent to it.
func (p *protect) dark(s string, why error) {
	msg := fmt.Sprintf("dark: %s did not answer (%s); nothing was sent to it this cycle", s, silence(why, p.info))
	p.res.Failures = append(p.res.Failures, msg)
	site := p.site(s)
	site.Error, site.Retention = msg, "skipped"
	workflow.GetLogger(p.ctx).Warn("protection cycle skips a dark standby", "plan", p.info.Plan, "site", s, "why", msg)
}

// standby sends point to standby site s, applies retention there and, for
// a warm standby, refreshes its target from the point.
func (p *protect) standby(ctx workflow.Context, s, point string) {
	site := p.site(s)
	var tr TransmitResult
	err := p.child(ctx, OpTransmit+"-"+s, Transmit, TransmitInput{Plan: p.info.Plan, From: p.active, To: s, Point: point}).Get(ctx, &tr)
	if err != nil {
		p.fail(s, "transmit", p.outOfTime(err))
	} else {
		site.Point, site.BytesCopied = tr.Point, tr.BytesCopied
		p.res.BytesCopied += tr.BytesCopied
	}
	if p.in.SkipRetention {
		site.Retention = "skipped"
	} else {
		p.retention(ctx, s)
	}
	if err == nil && p.info.Standby == config.StandbyWarm {
		p.refresh(ctx, s, point)
	}
}

// retention runs the Forget workflow at site s.
func (p *protect) retention(ctx workflow.Context, s string) {
	site := p.site(s)
	var fr ForgetResult
	if err := p.child(ctx, OpForget+"-"+s, Forget, ForgetInput{Plan: p.info.Plan, Site: s}).Get(ctx, &fr); err != nil {
		site.Retention = "failed"
		p.fail(s, "retention", p.outOfTime(err))
		return
	}
	site.Retention, site.Kept, site.Forgotten = "done", len(fr.Kept), len(fr.Forgotten)
	if fr.WAL != nil {
		site.WALDeleted, site.WALKeptFrom = fr.WAL.Deleted, fr.WAL.KeptFrom
	}
}

// refresh restores point into the plan's own target at warm standby site
// s, writing only what changed, under the target's claim (the Restore
// child takes it, checks the site again under it (refreshOK) and records
// how long it took: the time a failover to the site saves). A site whose
// target holds data of its own (it was active since its last restore, or
// it is the primary never restored into) is left as it is: a failback
// recovers it; the result says so and the cycle does not fail for it.
func (p *protect) refresh(ctx workflow.Context, s, point string) {
	site := p.site(s)
	// Asked as a site that may be dark: one gone silent since the transmit
	// must not hold the cycle for hours.
	var st *activities.SiteState
	actx := workflow.WithActivityOptions(ctx, darkOptions(ctx, s, darkAfter(p.info)))
	if err := workflow.ExecuteActivity(actx, act.GetSiteState, activities.SiteStateInput{Plan: p.info.Plan, Site: s}).Get(ctx, &st); err != nil {
		st = nil
	}
	if why := refreshRefusal(p.roles, s, st); why != "" {
		site.RefreshSkipped = why
		workflow.GetLogger(ctx).Info("warm standby refresh skipped", "plan", p.info.Plan, "site", s, "why", why)
		return
	}
	var r RestoreResult
	f := p.longChild(ctx, "refresh-"+s, Restore, RestoreInput{Plan: p.info.Plan, Site: s, Point: point, Refresh: true}, true)
	// Waited for until the cycle's deadline; a refresh still running then
	// goes on by itself (a failover to the site meanwhile restores, and
	// takes the target from it).
	tctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	done := false
	sel := workflow.NewSelector(ctx)
	sel.AddFuture(f, func(workflow.Future) { done = true })
	sel.AddFuture(workflow.NewTimer(tctx, max(p.deadline.Sub(workflow.Now(ctx)), minStepTime)), func(workflow.Future) {})
	sel.Select(ctx)
	if !done {
		site.RefreshRunning = p.childID("refresh-" + s)
		site.RefreshSkipped = "the refresh goes on after this cycle's bound, as " + site.RefreshRunning
		return
	}
	if err := f.Get(ctx, &r); err != nil {
		if errorType(err) == "ClaimRefused" {
			// An earlier cycle's refresh still runs there.
			site.RefreshSkipped = "another restore holds the target: " + errorMessage(err)
			return
		}
		p.fail(s, "warm standby refresh", err)
		return
	}
	site.Refreshed, site.RefreshTook = true, r.Duration
}

// measure reads the newest valid point at each standby site, sets its RPO
// (its age now) and whether the plan's objective is breached, records that
// in the run's DrorchRPOBreached search attribute and logs a breach.
func (p *protect) measure() error {
	ctx, res := p.ctx, p.res
	_ = p.t.step(ctx, "measure RPO", func() error {
		futures := map[string]workflow.Future{}
		for _, s := range p.standbys {
			if p.silent[s] != nil {
				continue // dark: not measured, a breach if there is an objective
			}
			actx := workflow.WithActivityOptions(ctx, darkOptions(ctx, s, darkAfter(p.info)))
			futures[s] = workflow.ExecuteActivity(actx, act.GetSiteState, activities.SiteStateInput{Plan: p.info.Plan, Site: s})
		}
		now := workflow.Now(ctx)
		obj := p.info.Objectives.RPO
		for _, s := range p.standbys {
			site := p.site(s)
			var st activities.SiteState
			var err error
			if f, ok := futures[s]; ok {
				err = f.Get(ctx, &st)
			}
			breached := obj > 0 // unless measured within it
			switch {
			case p.silent[s] != nil:
			case err != nil:
				p.fail(s, "measure RPO", err)
			case st.Latest == "":
				site.Error = strings.TrimPrefix(site.Error+"; no restore point here", "; ")
			default:
				site.Newest, site.RPO = st.Latest, Duration(max(now.Sub(st.LatestTime), 0))
				breached = obj > 0 && site.RPO.D() > obj
			}
			res.RPOBreached = res.RPOBreached || breached
			if breached {
				workflow.GetLogger(ctx).Warn("RPO objective breached", "plan", p.info.Plan, "site", s,
					"rpo", site.RPO.String(), "objective", obj.String(), "newest", site.Newest)
			}
		}
		return nil
	})
	return workflow.UpsertTypedSearchAttributes(ctx, RPOBreachedAttr.ValueSet(res.RPOBreached))
}
