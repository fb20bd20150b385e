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
