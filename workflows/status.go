package workflows

import (
	"sort"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// StatusInput asks for the state of a plan.
type StatusInput struct {
	Plan    string `json:"plan"`
	Reports int    `json:"reports,omitempty"` // how many recent switching reports to include; 0: 10
}

// SiteStatus is one site's view of the plan.
type SiteStatus struct {
	Site      string                     `json:"site"`
	Reachable bool                       `json:"reachable"`
	Error     string                     `json:"error,omitempty"`
	State     activities.SiteState       `json:"state"`
	Access    []activities.ResourceState `json:"access,omitempty"`
	// Age is how old the site's newest valid restore point is (AsOf −
	// State.LatestTime): the data a failover to this site would lose now,
	// its current RPO. Zero when the site holds no point or did not answer.
	Age Duration `json:"age,omitempty"`
	// Breached: a standby site whose newest point is older than the plan's
	// RPO objective, or that holds none (set by the status update only).
	Breached bool `json:"breached,omitempty"`
}

// StatusResult is the state of a plan: which site is active (the one named
// by the highest epoch any reachable repository holds), each site's epoch,
// latest restore point and access modes, the RPO the standby has now, and
// the latest switching reports.
type StatusResult struct {
	Plan      string         `json:"plan"`
	Active    string         `json:"active"`
	Primary   string         `json:"primary"`   // as recorded by a permanent failover, else as configured
	Secondary string         `json:"secondary"` // likewise
	Epoch     uint64         `json:"epoch"`
	Sites     []SiteStatus   `json:"sites"`
	RPO       Duration       `json:"rpo"` // now − the standby's latest restore point
	Reports   []SwitchReport `json:"reports"`
	AsOf      time.Time      `json:"asOf"`
	// InProgress is the plan's running switching operation. The workflow
	// leaves it empty: it is the CLI's reading of drorch/<plan>/switch.
	InProgress *Progress `json:"inProgress,omitempty"`

	// The fields below are filled by the plan lock's status update
	// (UpdateStatus), not by the old Status workflow.

	// Standbys are the sites other than the active one.
	Standbys   []string         `json:"standbys,omitempty"`
	Objectives StatusObjectives `json:"objectives"`
	// Breached: some standby site's newest point is older than the RPO
	// objective (see SiteStatus.Breached). Always false without an objective.
	Breached bool `json:"breached"`
	// LastDrill is the newest drill report any site holds.
	LastDrill *DrillSummary `json:"lastDrill,omitempty"`
	// Schedule and Running are the CLI's reading of the plan's Temporal
	// Schedule and of its open workflows.
	Schedule *ScheduleStatus    `json:"schedule,omitempty"`
	Running  []RunningOperation `json:"running,omitempty"`
	// WAL is the CLI's reading of the plan's WAL shipping (its wal query):
	// the lag of each standby; absent when none runs.
	WAL *WALStatus `json:"wal,omitempty"`
}

// StatusObjectives are the plan's recovery objectives; zero: not set.
type StatusObjectives struct {
	RPO Duration `json:"rpo,omitempty"`
	RTO Duration `json:"rto,omitempty"`
}

// DrillSummary is the verdict of a drill, from its stored report.
type DrillSummary struct {
	Site     string    `json:"site"`
	Point    string    `json:"point"`
	Passed   bool      `json:"passed"`
	Problems []string  `json:"problems,omitempty"`
	RTO      Duration  `json:"rto"`
	Finished time.Time `json:"finished"`
}

// ScheduleStatus is the state of the plan's protect schedule.
type ScheduleStatus struct {
	ID         string    `json:"id"`
	Exists     bool      `json:"exists"`
	Paused     bool      `json:"paused,omitempty"`
	Note       string    `json:"note,omitempty"`
	NextRun    time.Time `json:"nextRun,omitzero"`
	LastRun    time.Time `json:"lastRun,omitzero"`
	LastResult string    `json:"lastResult,omitempty"` // the last run's status: completed, failed, running…
	// LastCycle is what the schedule's last Protect run did (its "protect"
	// query: whole once it ended, partial while it runs).
	LastCycle *ProtectResult `json:"lastCycle,omitempty"`
	Error     string         `json:"error,omitempty"` // why the schedule could not be read
}

// RunningOperation is an open workflow of the plan.
type RunningOperation struct {
	WorkflowID string    `json:"workflowId"`
	Type       string    `json:"type"`
	Operation  string    `json:"operation,omitempty"`
	Site       string    `json:"site,omitempty"`
	Started    time.Time `json:"started"`
}

// Status reads the plan's state at both sites. A site that does not answer
// within a minute is reported unreachable, not waited for.
func Status(ctx workflow.Context, in StatusInput) (res StatusResult, err error) {
	t, info, err := begin(ctx, OpStatus, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return res, err
	}
	res = StatusResult{Plan: in.Plan, Active: info.Active, Primary: info.Primary, Secondary: info.Secondary, Reports: []SwitchReport{}}
	var best activities.SiteState
	sites := []string{info.Primary, info.Secondary}
	for _, site := range sites {
		c := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue: siteQueue(ctx, site), ScheduleToStartTimeout: time.Minute, StartToCloseTimeout: time.Minute,
			RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 2},
		})
		ss := SiteStatus{Site: site}
		err := workflow.ExecuteActivity(c, act.GetSiteState, activities.SiteStateInput{Plan: in.Plan, Site: site}).Get(ctx, &ss.State)
		if err == nil {
			ss.Reachable = true
			if err := workflow.ExecuteActivity(c, act.AccessStatus, activities.AccessStatusInput{Plan: in.Plan, Site: site}).Get(ctx, &ss.Access); err != nil {
				ss.Error = errorMessage(err)
			}
			var reps []SwitchReport
			if err := workflow.ExecuteActivity(c, act.ListReports, activities.ListReportsInput{Plan: in.Plan, Site: site, Limit: in.Reports}).Get(ctx, &reps); err == nil {
				res.Reports = append(res.Reports, reps...)
			}
		} else {
			ss.Error = errorMessage(err)
		}
		if ss.Reachable && ss.State.Epoch.Epoch > best.Epoch.Epoch {
			best = ss.State
		}
		res.Sites = append(res.Sites, ss)
	}
	roles := withRoles(info, best.Epoch.Active, best.Epoch.Primary, best.Epoch.Secondary)
	res.Epoch, res.Active, res.Primary, res.Secondary = best.Epoch.Epoch, roles.Active, roles.Primary, roles.Secondary
	res.AsOf = workflow.Now(ctx)
	for _, ss := range res.Sites {
		if ss.Site != res.Active && ss.Reachable && !ss.State.LatestTime.IsZero() {
			res.RPO = Duration(res.AsOf.Sub(ss.State.LatestTime))
		}
	}
	sort.Slice(res.Reports, func(i, j int) bool { return res.Reports[i].Started.Before(res.Reports[j].Started) })
	// Each site keeps the reports of the operations that ended with it
	// active; the newest of both are the plan's.
	limit := in.Reports
	if limit <= 0 {
		limit = 10
	}
	res.Reports = res.Reports[max(0, len(res.Reports)-limit):]
	return res, nil
}

// UpdateStatus is the plan lock's update that reads the plan's status
// (StatusInput → StatusResult). The CLI sends it with update-with-start, so
// reading status adds no run to the namespace's workflow list: the lock is
// the plan's one long-lived workflow and is started again if it has ended.
const UpdateStatus = "status"

// statusSiteLimit bounds each read at a site: a site whose worker or store
// does not answer within it is reported unreachable, not waited for.
const statusSiteLimit = 20 * time.Second

// readStatus is the body of UpdateStatus: every site of the plan is read in
// parallel, each read tried once and bounded by statusSiteLimit.
func readStatus(ctx workflow.Context, in StatusInput) (StatusResult, error) {
	res := StatusResult{Plan: in.Plan, Reports: []SwitchReport{}}
	var info activities.PlanInfo
	dctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: workflow.GetInfo(ctx).TaskQueueName, ScheduleToCloseTimeout: statusSiteLimit,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	if err := workflow.ExecuteActivity(dctx, act.Describe, activities.DescribeInput{Plan: in.Plan}).Get(ctx, &info); err != nil {
		return res, err
	}
	res.Primary, res.Secondary, res.Active = info.Primary, info.Secondary, info.Active
	res.Objectives = StatusObjectives{RPO: Duration(info.Objectives.RPO), RTO: Duration(info.Objectives.RTO)}
	type reads struct{ state, access, reports, drills workflow.Future }
	sites := info.SiteNames()
	pending := make([]reads, len(sites))
	for i, site := range sites {
		c := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue: siteQueue(ctx, site), ScheduleToCloseTimeout: statusSiteLimit,
			RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
		})
		pending[i] = reads{
			state:   workflow.ExecuteActivity(c, act.GetSiteState, activities.SiteStateInput{Plan: in.Plan, Site: site}),
			access:  workflow.ExecuteActivity(c, act.AccessStatus, activities.AccessStatusInput{Plan: in.Plan, Site: site}),
			reports: workflow.ExecuteActivity(c, act.ListReports, activities.ListReportsInput{Plan: in.Plan, Site: site, Limit: in.Reports}),
			drills:  workflow.ExecuteActivity(c, act.ListReports, activities.ListReportsInput{Plan: in.Plan, Site: site, Limit: 1, Kind: activities.ReportDrill}),
		}
	}
	var best activities.SiteState
	for i, site := range sites {
		ss := SiteStatus{Site: site}
		if err := pending[i].state.Get(ctx, &ss.State); err != nil {
			ss.Error = errorMessage(err)
		} else {
			ss.Reachable = true
			if ss.State.Epoch.Epoch > best.Epoch.Epoch {
				best = ss.State
			}
		}
		if err := pending[i].access.Get(ctx, &ss.Access); err != nil && ss.Reachable {
			ss.Error = "access: " + errorMessage(err)
		}
		var reps []SwitchReport
		if err := pending[i].reports.Get(ctx, &reps); err == nil {
			res.Reports = append(res.Reports, reps...)
		}
		var drills []DrillReport
		if err := pending[i].drills.Get(ctx, &drills); err == nil {
			for _, d := range drills {
				if res.LastDrill == nil || d.Finished.After(res.LastDrill.Finished) {
					res.LastDrill = &DrillSummary{Site: d.Site, Point: d.Point, Passed: d.Passed, Problems: d.Problems, RTO: d.RTO, Finished: d.Finished}
				}
			}
		}
		res.Sites = append(res.Sites, ss)
	}
	roles := withRoles(info, best.Epoch.Active, best.Epoch.Primary, best.Epoch.Secondary)
	res.Epoch, res.Active, res.Primary, res.Secondary = best.Epoch.Epoch, roles.Active, roles.Primary, roles.Secondary
	res.AsOf = workflow.Now(ctx)
	for i := range res.Sites {
		ss := &res.Sites[i]
		if ss.Reachable && !ss.State.LatestTime.IsZero() {
			ss.Age = Duration(max(res.AsOf.Sub(ss.State.LatestTime), 0))
		}
		if ss.Site == res.Active {
			continue
		}
		res.Standbys = append(res.Standbys, ss.Site)
		// The plan's RPO now is that of its worst standby that answered.
		if ss.Reachable && ss.Age > res.RPO {
			res.RPO = ss.Age
		}
		if obj := res.Objectives.RPO; obj > 0 && ss.Reachable && (ss.State.LatestTime.IsZero() || ss.Age > obj) {
			ss.Breached = true
			res.Breached = true
		}
	}
	sort.Slice(res.Reports, func(i, j int) bool { return res.Reports[i].Started.Before(res.Reports[j].Started) })
	limit := in.Reports
	if limit <= 0 {
		limit = 10
	}
	res.Reports = res.Reports[max(0, len(res.Reports)-limit):]
	return res, nil
}
