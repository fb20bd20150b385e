package workflows

import (
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
	// Refreshed: the warm standby target now holds Point (RefreshTook).
	Refreshed   bool     `json:"refreshed,omitempty"`
	RefreshTook Duration `json:"refreshTook,omitempty"`
	// RefreshSkipped says why the warm standby here was not refreshed
	// (its target holds writes of its own that a failback recovers).
	RefreshSkipped string `json:"refreshSkipped,omitempty"`
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
	p := &protect{ctx: ctx, t: t, in: in, info: info, res: &res, active: view.info.Active, roles: view.info}
	res.Active, res.Epoch = p.active, view.info.Epoch
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

// child starts a procedure as a child workflow named <this run's id>/name.
func (p *protect) child(name string, wf, in any) workflow.ChildWorkflowFuture {
	ctx := workflow.WithChildOptions(p.ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            workflow.GetInfo(p.ctx).WorkflowExecution.ID + "/" + name,
		TaskQueue:             workflow.GetInfo(p.ctx).TaskQueueName,
		ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_TERMINATE,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	})
	return workflow.ExecuteChildWorkflow(ctx, wf, in)
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
		return p.child(OpBackup, Backup, BackupInput{Plan: p.info.Plan, Site: p.active}).Get(ctx, &b)
	}); err != nil {
		return wrap(err, "protection cycle of plan %s: backup at %s", p.info.Plan, p.active)
	}
	res.Point, res.Snapshot, res.BytesRead, res.BytesNew = b.Point, b.Snapshot, b.BytesRead, b.BytesNew
	p.site(p.active).Point = b.Point

	// Every standby on its own: one that fails does not hold the others.
	have := []string{}
	_ = p.t.step(ctx, "transmit", func() error {
		futures := map[string]workflow.ChildWorkflowFuture{}
		for _, s := range p.standbys {
			futures[s] = p.child(OpTransmit+"-"+s, Transmit, TransmitInput{Plan: p.info.Plan, From: p.active, To: s, Point: b.Point})
		}
		for _, s := range p.standbys {
			var tr TransmitResult
			if err := futures[s].Get(ctx, &tr); err != nil {
				p.fail(s, "transmit", err)
				continue
			}
			site := p.site(s)
			site.Point, site.BytesCopied = tr.Point, tr.BytesCopied
			res.BytesCopied += tr.BytesCopied
			have = append(have, s)
		}
		return nil
	})

	if p.in.SkipRetention {
		for i := range res.Sites {
			res.Sites[i].Retention = "skipped"
		}
	} else {
		_ = p.t.step(ctx, "retention", func() error {
			futures := map[string]workflow.ChildWorkflowFuture{}
			for _, s := range res.Sites {
				futures[s.Site] = p.child(OpForget+"-"+s.Site, Forget, ForgetInput{Plan: p.info.Plan, Site: s.Site})
			}
			for i := range res.Sites {
				s := &res.Sites[i]
				var fr ForgetResult
				if err := futures[s.Site].Get(ctx, &fr); err != nil {
					s.Retention = "failed"
					p.fail(s.Site, "retention", err)
					continue
				}
				s.Retention, s.Kept, s.Forgotten = "done", len(fr.Kept), len(fr.Forgotten)
			}
			return nil
		})
	}

	if p.info.Standby == config.StandbyWarm && len(have) > 0 {
		_ = p.t.step(ctx, "refresh standby", func() error {
			p.refresh(have, b.Point)
			return nil
		})
	}
	return nil
}

// refresh restores point into the plan's own target at each warm standby
// site, writing only what changed, under the target's claim (the Restore
// child takes it, checks the site again under it (refreshOK) and records
// how long it took: the time a failover to the site saves). A site whose
// target holds data of its own (it was active since its last restore, or
// it is the primary never restored into) is left as it is: a failback
// recovers it; the result says so and the cycle does not fail for it.
func (p *protect) refresh(sites []string, point string) {
	ctx := p.ctx
	futures := map[string]workflow.ChildWorkflowFuture{}
	for _, s := range sites {
		if why := refreshRefusal(p.roles, s, siteStateOf(ctx, p.info, s)); why != "" {
			p.site(s).RefreshSkipped = why
			workflow.GetLogger(ctx).Info("warm standby refresh skipped", "plan", p.info.Plan, "site", s, "why", why)
			continue
		}
		futures[s] = p.child("refresh-"+s, Restore, RestoreInput{Plan: p.info.Plan, Site: s, Point: point, Refresh: true})
	}
	for _, s := range sites {
		f, ok := futures[s]
		if !ok {
			continue
		}
		var r RestoreResult
		if err := f.Get(ctx, &r); err != nil {
			p.fail(s, "warm standby refresh", err)
			continue
		}
		site := p.site(s)
		site.Refreshed, site.RefreshTook = true, r.Duration
	}
}

// measure reads the newest valid point at each standby site, sets its RPO
// (its age now) and whether the plan's objective is breached, records that
// in the run's DrorchRPOBreached search attribute and logs a breach.
func (p *protect) measure() error {
	ctx, res := p.ctx, p.res
	_ = p.t.step(ctx, "measure RPO", func() error {
		futures := map[string]workflow.Future{}
		for _, s := range p.standbys {
			actx := workflow.WithActivityOptions(ctx, darkOptions(ctx, s, darkAfter(p.info)))
			futures[s] = workflow.ExecuteActivity(actx, act.GetSiteState, activities.SiteStateInput{Plan: p.info.Plan, Site: s})
		}
		now := workflow.Now(ctx)
		obj := p.info.Objectives.RPO
		for _, s := range p.standbys {
			site := p.site(s)
			var st activities.SiteState
			err := futures[s].Get(ctx, &st)
			breached := obj > 0 // unless measured within it
			switch {
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
