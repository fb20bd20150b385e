package activities

import (
	"context"
	"sort"
	"time"
)

// DescribeInput names a plan.
type DescribeInput struct {
	Plan string `json:"plan"`
}

// PlanInfo is the non-secret description of a plan as this worker's config
// has it. Workflows record it first, so a history shows what was run.
type PlanInfo struct {
	Plan      string `json:"plan"`
	Primary   string `json:"primary"`
	Secondary string `json:"secondary"`
	// Secondaries are every standby site in order of preference
	// (Secondaries[0] == Secondary); empty in histories recorded before
	// three-site plans: read it through Standbys().
	Secondaries []string            `json:"secondaries,omitempty"`
	Active      string              `json:"active"`
	Encrypted   bool                `json:"encrypted"`
	Sites       map[string]SiteInfo `json:"sites"`
	Config      string              `json:"config"` // the file the worker loaded
	Steps       []StepInfo          `json:"steps,omitempty"`
	// Sandboxes are where a drill at each site restores.
	Sandboxes map[string]string `json:"sandboxes,omitempty"`
	Failback  FailbackInfo      `json:"failback"`
	Failover  FailoverInfo      `json:"failover"`
	// Swapped is set by workflows, not by Describe: a permanent failover
	// has made Primary and Secondary the reverse of the configured roles.
	Swapped bool `json:"swapped,omitempty"`
	// Parallel is how many Upload or CopyChunks activities of one run may
	// be in flight at once (config plans.NAME.parallel); 0 in histories
	// recorded before it.
	Parallel int `json:"parallel,omitempty"`
	// Epoch is set by workflows: the highest epoch either site holds.
	Epoch uint64 `json:"epoch,omitempty"`
	// The protection cycle (Protect): cold or warm standby, the recovery
	// objectives, and the schedule's start window ("HH:MM-HH:MM" in
	// TimeZone, "" any time). Empty in histories recorded before them.
	Standby    string         `json:"standby,omitempty"`
	Objectives ObjectivesInfo `json:"objectives,omitzero"`
	Window     string         `json:"window,omitempty"`
	TimeZone   string         `json:"timeZone,omitempty"`
	// Interval is the schedule's time between cycles (config
	// Schedule.Interval); 0 without a schedule. It bounds a cycle.
	Interval time.Duration `json:"interval,omitempty"`
	// WAL is how the plan's WAL is shipped (config wal:, walship.go).
	WAL WALInfo `json:"wal,omitzero"`
}

// ObjectivesInfo are the plan's recovery objectives (config objectives:);
// zero is not set.
type ObjectivesInfo struct {
	RPO time.Duration `json:"rpo,omitempty"`
	RTO time.Duration `json:"rto,omitempty"`
}

// Standbys returns the plan's secondaries, in order of preference.
func (p PlanInfo) Standbys() []string {
	if len(p.Secondaries) == 0 {
		return []string{p.Secondary}
	}
	return p.Secondaries
}

// SiteNames returns the plan's sites: its primary, then its secondaries.
func (p PlanInfo) SiteNames() []string { return append([]string{p.Primary}, p.Standbys()...) }

// FailbackInfo says when data recovery has caught up (config failback:).
type FailbackInfo struct {
	LagThreshold time.Duration `json:"lagThreshold"`
	Interval     time.Duration `json:"interval"`
	AutoComplete bool          `json:"autoComplete,omitempty"`
}

// FailoverInfo says how a failover decides a site is dark (config
// failover:). Histories recorded before it existed hold zero.
type FailoverInfo struct {
	DarkAfter time.Duration `json:"darkAfter,omitempty"`
}

// StepInfo describes one step of the recovery plan.
type StepInfo struct {
	Name     string        `json:"name"`
	On       []string      `json:"on,omitempty"` // empty: every procedure
	Before   int           `json:"before,omitempty"`
	Wait     time.Duration `json:"wait,omitempty"`
	Approval time.Duration `json:"approval,omitempty"` // 0: none
	After    int           `json:"after,omitempty"`
}

// SiteInfo describes a plan's resources at one site.
type SiteInfo struct {
	Store  string `json:"store"`
	Source string `json:"source,omitempty"`
}

// Describe returns the plan's description; an unknown plan is a permanent
// error that lists the known ones.
func (a *Activities) Describe(ctx context.Context, in DescribeInput) (PlanInfo, error) {
	p, err := a.plan(in.Plan)
	if err != nil {
		return PlanInfo{}, temporalError(err)
	}
	info := PlanInfo{
		Plan: p.Name, Primary: p.Primary, Secondary: p.Secondary, Secondaries: p.Secondaries, Active: p.Primary,
		Encrypted: p.Encryption != nil, Sites: map[string]SiteInfo{}, Config: a.cfg.File,
		Failback: FailbackInfo{LagThreshold: p.Failback.LagThreshold, Interval: p.Failback.Interval, AutoComplete: p.Failback.AutoComplete},
		Failover: FailoverInfo{DarkAfter: p.Failover.DarkAfter},
		Standby:  p.Standby, Objectives: ObjectivesInfo{RPO: p.Objectives.RPO, RTO: p.Objectives.RTO},
		Parallel: p.Parallelism(),
	}
	info.WAL = walInfo(p)
	if p.Schedule != nil {
		info.Window, info.TimeZone = p.Schedule.Window, p.Schedule.TimeZone
		info.Interval, _ = p.Schedule.Interval()
	}
	for _, s := range p.Steps {
		si := StepInfo{Name: s.Name, On: s.On, Before: len(s.Before), Wait: s.Wait, After: len(s.After)}
		if s.Approval != nil {
			si.Approval = s.Approval.Timeout
		}
		info.Steps = append(info.Steps, si)
	}
	sites := p.Sites()
	sort.Strings(sites)
	for _, name := range sites {
		var si SiteInfo
		if st, err := a.store(name); err == nil {
			si.Store = st.Location()
		} else {
			return PlanInfo{}, temporalError(err)
		}
		if sc, err := p.SourceAt(name); err == nil {
			si.Source = sc.Driver + " " + sc.Path
			if info.Sandboxes == nil {
				info.Sandboxes = map[string]string{}
			}
			if sc.Path != "" { // an exec source has none: its drill needs drill.sandbox
				info.Sandboxes[name] = sc.Path + ".drill"
			}
			if p.Drill.Sandbox != "" {
				info.Sandboxes[name] = p.Drill.Sandbox
			}
		}
		info.Sites[name] = si
	}
	return info, nil
}
