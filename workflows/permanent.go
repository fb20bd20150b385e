package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers/access"
)

// PermanentFailoverInput makes a failover permanent.
//
//	temporal workflow start --type PermanentFailover --task-queue drorch --workflow-id drorch/files/switch \
//	  --input '{"plan":"files"}'
type PermanentFailoverInput struct {
	Plan string `json:"plan"`
}

// PermanentFailover makes the site a failover made active the plan's
// primary for good (DESIGN §1): the old primary becomes its secondary,
// fenced read-only when it answers. The roles are recorded with a new epoch
// in the repository at the new primary and, when it answers, at the old
// one; every later operation reads them from there (the highest epoch
// either site holds wins), so backups, transmissions, failovers and
// failbacks run in the new direction while the config file stays as it is.
// A backup running at the new primary when the epoch is raised is refused
// at its commit and must be run again.
func PermanentFailover(ctx workflow.Context, in PermanentFailoverInput) (rep SwitchReport, err error) {
	started := workflow.Now(ctx)
	t, configured, err := begin(ctx, OpPermanentFailover, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return rep, err
	}
	release, err := claimSwitch(ctx, in.Plan, "permanent failover")
	defer release()
	if err != nil {
		return rep, err
	}
	info := current(ctx, configured)
	if info.Active == info.Primary {
		return rep, invalidInput(fmt.Sprintf("plan %s is active at its primary %s: fail over first (drorch failover --plan %s), then make the failover permanent", in.Plan, info.Primary, in.Plan))
	}
	oldPrimary, newPrimary := info.Primary, info.Active
	if err := upsert(ctx, t, newPrimary); err != nil {
		return rep, err
	}
	s := newSwitchRun(ctx, t, info, OpPermanentFailover, "", oldPrimary, newPrimary, started)
	err = s.runPermanent(configured)
	rep = s.finish(err)
	workflow.GetLogger(ctx).Info("permanent failover "+rep.Outcome, "plan", in.Plan, "primary", newPrimary, "secondary", oldPrimary)
	return rep, err
}

func (s *switchRun) runPermanent(configured activities.PlanInfo) error {
	ctx, rep := s.ctx, s.rep
	if err := s.t.step(ctx, "preflight", func() error {
		_, err := s.preflight("the new primary", s.to)
		return err
	}); err != nil {
		return err
	}
	err := s.t.step(ctx, "fence "+s.from, func() error { return s.setAccess(s.reachable(s.from), s.from, access.ReadOnly) })
	if err == nil {
		rep.Fenced = true
	} else {
		rep.FenceNote = "unreachable, not fenced: " + errorMessage(err)
	}
	s.info.Primary, s.info.Secondary = s.to, s.from
	s.info.Swapped = s.to != configured.Primary
	if len(configured.Secondaries) > 1 {
		// Three sites: the old primary becomes the first secondary, the
		// others follow in configured order (withRoles reads them so);
		// back at the configured primary, the configured roles hold.
		s.info.Secondaries = standbysAfter(configured.SiteNames(), s.to, s.from)
		if !s.info.Swapped {
			s.info.Secondary, s.info.Secondaries = configured.Secondary, configured.Secondaries
		}
	}
	if err := s.epoch(fmt.Sprintf("permanent failover: %s is the primary, %s the secondary", s.to, s.from), !rep.Fenced); err != nil {
		return err
	}
	s.undo = nil // the last step: nothing after it can fail and need it undone
	return nil
}
