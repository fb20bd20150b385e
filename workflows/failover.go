package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
	"github.com/drorch/drorch/drivers/access"
	"github.com/drorch/drorch/internal/repo"
)

// Failover makes the plan's standby site active (DESIGN §1): preflight, fence
// the old active site, (planned) a final backup and transmit, raise the
// epoch, restore the standby unless it is warm at the point, run the
// recovery plan, open the new site for writes and repoint DNS. A failure
// after fencing undoes, in reverse, the steps it is safe to undo, so the
// plan never ends with both sites read-write; the report says what was done.
func Failover(ctx workflow.Context, in FailoverInput) (rep SwitchReport, err error) {
	started := workflow.Now(ctx)
	t, info, err := begin(ctx, OpFailover, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return rep, err
	}
	if in.Mode == "" {
		in.Mode = ModePlanned
	}
	if in.Mode != ModePlanned && in.Mode != ModeUnplanned {
		return rep, invalidInput(fmt.Sprintf("mode %q: want %q or %q", in.Mode, ModePlanned, ModeUnplanned))
	}
	from := activeSite(ctx, info)
	to := other(info, from)
	if err := upsert(ctx, t, to); err != nil {
		return rep, err
	}
	op, _ := opID(ctx, OpFailover)
	rep = SwitchReport{ID: workflow.GetInfo(ctx).WorkflowExecution.ID + "/" + op, Plan: in.Plan, Operation: OpFailover, Mode: in.Mode, From: from, To: to, Started: started}
	f := &failover{ctx: ctx, t: t, in: in, info: info, from: from, to: to, op: op, rep: &rep}
	err = f.run()
	rep.Steps = t.p.Steps
	rep.Finished = workflow.Now(ctx)
	switch {
	case err == nil:
		rep.Outcome = "completed"
	case len(f.undo) > 0:
		rep.Error = err.Error()
		rep.Compensation = f.compensate()
		rep.Outcome = "compensated"
	default:
		rep.Error = err.Error()
		rep.Outcome = "failed"
	}
	f.save(rep)
	workflow.GetLogger(ctx).Info("failover "+rep.Outcome, "plan", in.Plan, "from", from, "to", to, "rto", rep.RTO, "rpo", rep.RPO, "fenced", rep.Fenced)
	return rep, err
}

// failover holds a failover's state between its steps.
type failover struct {
	ctx      workflow.Context
	t        *tracker
	in       FailoverInput
	info     activities.PlanInfo
	from, to string
	op       string
	rep      *SwitchReport
	undo     []undoStep // compensations, in the order the steps were done
}

type undoStep struct {
	what string
	do   func(ctx workflow.Context) error
}

// act names the activities, as method values of a nil pointer.
var act *activities.Activities

func (f *failover) site(site string) workflow.Context {
	return shortCtx(f.ctx, siteQueue(f.ctx, site))
}

// check is for preflight: a site that does not answer within two minutes
// stops the failover before it changes anything.
func (f *failover) check(site string) workflow.Context {
	return workflow.WithActivityOptions(f.ctx, workflow.ActivityOptions{
		TaskQueue: siteQueue(f.ctx, site), StartToCloseTimeout: time.Minute, ScheduleToCloseTimeout: 2 * time.Minute,
		RetryPolicy: retryPolicy,
	})
}

func (f *failover) run() error {
	ctx, rep := f.ctx, f.rep
	// Preflight: the target's repository and resources answer; planned, the
	// old active site's too (both sides agree on who is active).
	var target activities.SiteState
	if err := f.t.step(ctx, "preflight", func() error {
		if err := workflow.ExecuteActivity(f.check(f.to), act.GetSiteState, activities.SiteStateInput{Plan: f.in.Plan, Site: f.to}).Get(ctx, &target); err != nil {
			return fmt.Errorf("target site %s: %w", f.to, err)
		}
		if err := workflow.ExecuteActivity(f.check(f.to), act.AccessStatus, activities.AccessStatusInput{Plan: f.in.Plan, Site: f.to}).Get(ctx, nil); err != nil {
			return fmt.Errorf("target site %s: %w", f.to, err)
		}
		if f.in.Mode == ModePlanned {
			var src activities.SiteState
			if err := workflow.ExecuteActivity(f.check(f.from), act.GetSiteState, activities.SiteStateInput{Plan: f.in.Plan, Site: f.from}).Get(ctx, &src); err != nil {
				return fmt.Errorf("a planned failover needs the active site %s: %w", f.from, err)
			}
			if err := workflow.ExecuteActivity(f.check(f.from), act.AccessStatus, activities.AccessStatusInput{Plan: f.in.Plan, Site: f.from}).Get(ctx, nil); err != nil {
				return fmt.Errorf("a planned failover needs the active site %s: %w", f.from, err)
			}
		}
		if f.in.Mode == ModeUnplanned && target.Latest == "" && f.in.Point == "" {
			return invalidInput(fmt.Sprintf("site %s holds no restore point of plan %s: nothing to fail over to", f.to, f.in.Plan))
		}
		return nil
	}); err != nil {
		return err
	}

	// Fence the old active site.
	fenceAt := workflow.Now(ctx)
	err := f.t.step(ctx, "fence "+f.from, func() error {
		return workflow.ExecuteActivity(f.fenceCtx(), act.SetAccess, activities.SetAccessInput{Plan: f.in.Plan, Site: f.from, Mode: access.ReadOnly}).Get(ctx, nil)
	})
	switch {
	case err == nil:
		rep.Fenced = true
		fenceAt = workflow.Now(ctx)
		f.onUndo("make "+f.from+" read-write again", func(ctx workflow.Context) error {
			return workflow.ExecuteActivity(f.site(f.from), act.SetAccess, activities.SetAccessInput{Plan: f.in.Plan, Site: f.from, Mode: access.ReadWrite}).Get(ctx, nil)
		})
	case f.in.Mode == ModeUnplanned:
		rep.FenceNote = "unreachable, not fenced: " + errorMessage(err)
	default:
		return fmt.Errorf("fence %s: %w", f.from, err)
	}

	// Planned: a final backup and transmit after fencing lose nothing.
	point := f.in.Point
	if f.in.Mode == ModePlanned && point == "" {
		if err := f.t.step(ctx, "final sync", func() error {
			var b BackupResult
			if err := f.child(OpBackup, Backup, BackupInput{Plan: f.in.Plan, Site: f.from}, &b); err != nil {
				return err
			}
			point = b.Point
			return f.child(OpTransmit, Transmit, TransmitInput{Plan: f.in.Plan, From: f.from, To: f.to, Point: b.Point}, nil)
		}); err != nil {
			return err
		}
	}

	// Raise the epoch at the new active site (and at the old one when it
	// answers), so the old site can never overwrite the new one.
	if err := f.t.step(ctx, "epoch", func() error {
		// The old site's epoch, when it answers, so the new one is above both.
		var old activities.SiteState
		_ = workflow.ExecuteActivity(f.fenceCtx(), act.GetSiteState, activities.SiteStateInput{Plan: f.in.Plan, Site: f.from}).Get(ctx, &old)
		var set repo.Epoch
		if err := workflow.ExecuteActivity(f.site(f.to), act.SetEpoch, activities.SetEpochInput{
			Plan: f.in.Plan, Site: f.to, Active: f.to, Op: f.op, Min: old.Epoch.Epoch, Reason: fmt.Sprintf("%s failover from %s", f.in.Mode, f.from),
		}).Get(ctx, &set); err != nil {
			return err
		}
		rep.Epoch = set.Epoch
		if rep.Fenced {
			// Best effort: a dark site learns it at failback.
			_ = workflow.ExecuteActivity(f.site(f.from), act.SetEpoch, activities.SetEpochInput{
				Plan: f.in.Plan, Site: f.from, Active: f.to, Op: f.op, Min: set.Epoch - 1, Reason: fmt.Sprintf("%s failover to %s", f.in.Mode, f.to),
			}).Get(ctx, nil)
		}
		return nil
	}); err != nil {
		return err
	}
	f.onUndo("give the active role back to "+f.from, func(ctx workflow.Context) error {
		for _, site := range []string{f.from, f.to} {
			if err := workflow.ExecuteActivity(f.site(site), act.SetEpoch, activities.SetEpochInput{
				Plan: f.in.Plan, Site: site, Active: f.from, Op: f.op + "-undo", Min: rep.Epoch, Reason: "failover undone",
			}).Get(ctx, nil); err != nil {
				return err
			}
		}
		return nil
	})

	// Bring the target up: restore unless the standby already holds the point.
	var restored RestoreResult
	if err := f.t.step(ctx, "restore "+f.to, func() error {
		if point == "" {
			point = target.Latest
		}
		if point == target.Standby && point != "" {
			return nil
		}
		rep.Restored = true
		return f.child(OpRestore, Restore, RestoreInput{Plan: f.in.Plan, Site: f.to, Point: point}, &restored)
	}); err != nil {
		return err
	}
	rep.Point = point
	if rep.Restored {
		rep.PointTime = restored.Snapshot
	} else {
		rep.PointTime = target.LatestTime
	}
	rep.RPO = max(fenceAt.Sub(rep.PointTime), 0)

	if err := runSteps(ctx, f.t, f.info, "failover", f.to); err != nil {
		return err
	}

	// Open the target for writes, then point the name at it.
	if err := f.t.step(ctx, "read-write "+f.to, func() error {
		return workflow.ExecuteActivity(f.site(f.to), act.SetAccess, activities.SetAccessInput{Plan: f.in.Plan, Site: f.to, Mode: access.ReadWrite}).Get(ctx, nil)
	}); err != nil {
		return err
	}
	f.onUndo("make "+f.to+" read-only again", func(ctx workflow.Context) error {
		return workflow.ExecuteActivity(f.site(f.to), act.SetAccess, activities.SetAccessInput{Plan: f.in.Plan, Site: f.to, Mode: access.ReadOnly}).Get(ctx, nil)
	})
	_ = workflow.ExecuteActivity(f.site(f.to), act.MarkStandby, activities.MarkStandbyInput{Plan: f.in.Plan, Site: f.to}).Get(ctx, nil)
	if err := f.t.step(ctx, "dns "+f.to, func() error {
		return workflow.ExecuteActivity(f.site(f.to), act.SwitchDNS, activities.SwitchDNSInput{Plan: f.in.Plan, To: f.to}).Get(ctx, &rep.DNS)
	}); err != nil {
		return err
	}
	rep.RTO = workflow.Now(ctx).Sub(rep.Started)
	return nil
}

// fenceCtx bounds fencing: planned, the old site must answer; unplanned, a
// dark site is given a minute for its worker to pick the task up and three
// tries, then the failover goes on without it.
func (f *failover) fenceCtx() workflow.Context {
	if f.in.Mode == ModePlanned {
		return workflow.WithActivityOptions(f.ctx, workflow.ActivityOptions{
			TaskQueue: siteQueue(f.ctx, f.from), StartToCloseTimeout: 5 * time.Minute,
			ScheduleToCloseTimeout: 15 * time.Minute, RetryPolicy: retryPolicy,
		})
	}
	return workflow.WithActivityOptions(f.ctx, workflow.ActivityOptions{
		TaskQueue: siteQueue(f.ctx, f.from), ScheduleToStartTimeout: time.Minute, StartToCloseTimeout: 2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: time.Second, BackoffCoefficient: 2, MaximumAttempts: 3},
	})
}

func (f *failover) onUndo(what string, do func(ctx workflow.Context) error) {
	f.undo = append(f.undo, undoStep{what, do})
}

// compensate undoes the steps done, last first, in a context that outlives
// a cancelled workflow, and says what it did.
func (f *failover) compensate() []string {
	ctx, _ := workflow.NewDisconnectedContext(f.ctx)
	var done []string
	for i := len(f.undo) - 1; i >= 0; i-- {
		u := f.undo[i]
		if err := u.do(ctx); err != nil {
			done = append(done, u.what+": FAILED: "+errorMessage(err))
			continue
		}
		done = append(done, u.what)
	}
	return done
}

// save stores the report at the site that is active now (the target unless
// the failover was undone).
func (f *failover) save(rep SwitchReport) {
	ctx, _ := workflow.NewDisconnectedContext(f.ctx)
	site := f.to
	if rep.Outcome != "completed" {
		site = f.from
	}
	if err := workflow.ExecuteActivity(f.site(site), act.SaveReport, activities.SaveReportInput{
		Plan: f.in.Plan, Site: site, ID: rep.Started.UTC().Format("20060102T150405.000Z") + "-" + f.op, Report: rep,
	}).Get(ctx, nil); err != nil {
		workflow.GetLogger(f.ctx).Warn("report not stored", "site", site, "error", err)
	}
}

// child runs a procedure as a child workflow on this workflow's queue.
func (f *failover) child(op string, wf, in, res any) error {
	ctx := workflow.WithChildOptions(f.ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            workflow.GetInfo(f.ctx).WorkflowExecution.ID + "/" + f.op + "/" + op,
		TaskQueue:             workflow.GetInfo(f.ctx).TaskQueueName,
		ParentClosePolicy:     enums.PARENT_CLOSE_POLICY_TERMINATE,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	})
	return workflow.ExecuteChildWorkflow(ctx, wf, in).Get(ctx, res)
}

// errorMessage is the innermost message of an activity or child error.
func errorMessage(err error) string {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return app.Error()
	}
	return err.Error()
}
