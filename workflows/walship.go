package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// OpWAL is the operation of the WAL shipping workflow, QueryWAL its query.
const (
	OpWAL    = "wal"
	QueryWAL = "wal"
)

// WALShipID is the one id of a plan's WAL shipping workflow (ShipWAL), so
// that a plan never has two.
func WALShipID(plan string) string { return "drorch/" + plan + "/wal" }

// DefaultShipRounds is how many rounds a ShipWAL run makes before it
// continues as new, which bounds its history (about 20 events a round).
const DefaultShipRounds = 200

// ShipWALInput starts the shipping of a plan's WAL; only Plan is needed:
//
//	temporal workflow start --type ShipWAL --task-queue drorch --workflow-id drorch/files/wal --input '{"plan":"files"}'
type ShipWALInput struct {
	Plan string `json:"plan"`
	// Rounds before the run continues as new; 0: DefaultShipRounds.
	Rounds int `json:"rounds,omitempty"`
	// Standbys is the state a previous run hands on.
	Standbys []WALStandby `json:"standbys,omitempty"`
}

// WALStatus is what the wal query answers: where the plan's WAL is shipped
// from and how far each standby is behind.
type WALStatus struct {
	Plan   string   `json:"plan"`
	Active string   `json:"active,omitempty"`
	Epoch  uint64   `json:"epoch,omitempty"`
	Every  Duration `json:"every"`
	// Skipped says why the last round shipped nothing (a switch of the
	// plan runs, the active site cannot be told); "" when it shipped.
	Skipped  string       `json:"skipped,omitempty"`
	Round    int          `json:"round"`
	Standbys []WALStandby `json:"standbys"`
}

// WALStandby is the shipping state of one standby site.
type WALStandby struct {
	Site string `json:"site"`
	// Last is the newest WAL file of the active site this standby holds,
	// LastTime when the active site archived it, LastShipped when this
	// workflow last copied a file here.
	Last        string    `json:"last,omitempty"`
	LastTime    time.Time `json:"lastTime,omitzero"`
	LastShipped time.Time `json:"lastShipped,omitzero"`
	Shipped     int64     `json:"shipped"` // files copied here since the workflow started
	// Pending counts the files it still lacks; Behind is when the active
	// site archived the oldest of them (zero: caught up). Lag is Checked −
	// Behind: WAL archived longer ago than Lag is here.
	Pending int       `json:"pending"`
	Behind  time.Time `json:"behind,omitzero"`
	Lag     Duration  `json:"lag"`
	Checked time.Time `json:"checked,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// ShipWAL copies the plan's new WAL files from the active site's
// repository to every standby's, every wal.shipEvery, for as long as it
// runs (drorch schedule apply starts it for plans that ship WAL). It
// follows the roles the sites record, reading them again when an epoch
// moves; it ships nothing while a switch of the plan runs. It continues as
// new every Rounds rounds, handing its state on.
func ShipWAL(ctx workflow.Context, in ShipWALInput) (err error) {
	st := WALStatus{Plan: in.Plan, Standbys: in.Standbys}
	if st.Standbys == nil {
		st.Standbys = []WALStandby{}
	}
	if err := workflow.SetQueryHandler(ctx, QueryWAL, func() (WALStatus, error) { return st, nil }); err != nil {
		return err
	}
	t, info, err := begin(ctx, OpWAL, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return err
	}
	if err := upsert(ctx, t, ""); err != nil {
		return err
	}
	every := info.WAL.ShipEvery
	if every <= 0 {
		every = 5 * time.Second
	}
	st.Every = Duration(every)
	rounds := in.Rounds
	if rounds <= 0 {
		rounds = DefaultShipRounds
	}
	s := &shipper{ctx: ctx, info: info, st: &st, rescan: map[string]bool{}}
	for round := range rounds {
		st.Round = round
		t.p.Step = "ship"
		s.round()
		t.p.Step = "wait"
		if err := workflow.Sleep(ctx, every); err != nil {
			return err
		}
	}
	return workflow.NewContinueAsNewError(ctx, ShipWAL, ShipWALInput{Plan: in.Plan, Rounds: in.Rounds, Standbys: st.Standbys})
}

// shipper is one ShipWAL run's state between rounds.
type shipper struct {
	ctx  workflow.Context
	info activities.PlanInfo
	st   *WALStatus
	view *planView // the roles, read again when nil
	// rescan: the standbys listed in full once in this run.
	rescan map[string]bool
}

func (s *shipper) standby(site string) *WALStandby {
	for i := range s.st.Standbys {
		if s.st.Standbys[i].Site == site {
			return &s.st.Standbys[i]
		}
	}
	s.st.Standbys = append(s.st.Standbys, WALStandby{Site: site})
	return &s.st.Standbys[len(s.st.Standbys)-1]
}

// round ships once to every standby, at once.
func (s *shipper) round() {
	ctx := s.ctx
	if err := noSwitch(ctx, s.info.Plan, "WAL shipping"); err != nil {
		s.st.Skipped = "a switch of the plan runs: " + errorMessage(err)
		s.view = nil
		return
	}
	if s.view == nil {
		v := readView(ctx, s.info)
		if v.unknown != "" {
			s.st.Skipped = "cannot tell the active site: " + v.unknown
			return
		}
		s.view = &v
	}
	s.st.Skipped = ""
	active := s.view.info.Active
	s.st.Active, s.st.Epoch = active, s.view.info.Epoch
	futures := map[string]workflow.Future{}
	var sites []string
	for _, site := range s.view.info.SiteNames() {
		if site == active {
			continue
		}
		sites = append(sites, site)
		sb := s.standby(site)
		after := sb.Last
		if !s.rescan[site] {
			after = ""
		}
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue: siteQueue(ctx, site), ScheduleToStartTimeout: time.Minute, StartToCloseTimeout: 5 * time.Minute,
			HeartbeatTimeout: HeartbeatTimeout, RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 2},
		})
		futures[site] = workflow.ExecuteActivity(actx, act.CopyWAL, activities.CopyWALInput{
			Plan: s.info.Plan, From: active, To: site, Epoch: s.view.info.Epoch, After: after, Max: max(s.info.WAL.MaxFiles, 1),
		})
	}
	for _, site := range sites {
		sb := s.standby(site)
		var r activities.CopyWALResult
		if err := futures[site].Get(ctx, &r); err != nil {
			sb.Error = errorMessage(err)
			if !sb.Behind.IsZero() {
				sb.Lag = Duration(max(workflow.Now(ctx).Sub(sb.Behind), 0))
			}
			continue
		}
		if r.RolesChanged != "" {
			s.st.Skipped = "the roles changed (" + r.RolesChanged + "): reading them again"
			s.view = nil
			continue
		}
		s.rescan[site] = true
		sb.Error = ""
		if r.Last != "" {
			sb.Last, sb.LastTime = r.Last, r.LastTime
		}
		if r.Shipped > 0 {
			sb.Shipped += int64(r.Shipped)
			sb.LastShipped = r.Checked
		}
		sb.Pending, sb.Behind, sb.Checked = r.Pending, r.Behind, r.Checked
		sb.Lag = 0
		if !r.Behind.IsZero() {
			sb.Lag = Duration(max(r.Checked.Sub(r.Behind), 0))
		}
	}
}
