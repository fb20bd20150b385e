package workflows

import (
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/drivers/access"
)

// FailbackInput starts data recovery: the plan returns to its primary after
// a failover.
//
//	temporal workflow start --type Failback --task-queue drorch --workflow-id drorch/files/switch \
//	  --input '{"plan":"files"}'
type FailbackInput struct {
	Plan string `json:"plan"`
	// AutoComplete completes as soon as the primary has caught up, without
	// the complete signal (as config failback.autoComplete does).
	AutoComplete bool `json:"autoComplete,omitempty"`
	// Resume is the state a long data recovery carries when it continues
	// as new; users leave it out.
	Resume *FailbackResume `json:"resume,omitempty"`
}

// FailbackResume is a data recovery's state between runs of one workflow.
type FailbackResume struct {
	Op        string          `json:"op"`
	Started   time.Time       `json:"started"`
	From      string          `json:"from"` // the active site
	To        string          `json:"to"`   // the returning primary
	Rounds    int             `json:"rounds"`
	Lag       Duration        `json:"lag"`
	Preserved string          `json:"preserved,omitempty"`
	Complete  *CompleteSignal `json:"complete,omitempty"` // the operator's signal, once received
	Steps     []StepProgress  `json:"steps"`
	Notes     []string        `json:"notes,omitempty"`
}

// CompleteSignal is the complete signal's payload.
type CompleteSignal struct {
	By string `json:"by,omitempty"`
	// Force completes even though the primary has not caught up: the final
	// sync, while neither site takes writes, then takes as long as a round.
	Force bool `json:"force,omitempty"`
}

// runsPerFailback bounds the sync rounds of one run; then the workflow
// continues as new, so a data recovery may wait for days on a short history.
const runsPerFailback = 100

// Failback is data recovery (DESIGN §1): the plan's primary comes back
// under the active site. Begin: the active site stays read-write, the
// returning primary becomes read-only, its own data is preserved as a
// restore point in its repository (it may hold writes that never reached
// the active site) and it learns the active site's epoch. Sync rounds then
// bring the active site's data to the primary (backup, transmit, restore)
// until the primary's lag is below failback.lagThreshold, and go on every
// failback.interval until the operator's complete signal (or at once with
// autoComplete). Complete: the active site becomes read-only, a final sync
// loses nothing, the primary becomes active and read-write, DNS returns to
// it, and forward replication resumes. A failure while completing is undone
// like a failover's; a failure before leaves the active site as it was.
func Failback(ctx workflow.Context, in FailbackInput) (rep SwitchReport, err error) {
	started := workflow.Now(ctx)
	// The complete update is answered from the first moment (refused while
	// the run is starting), so that it is never mistaken for an older run's.
	f := &failback{in: in}
	if workflow.GetVersion(ctx, versionCompleteUpdate, workflow.DefaultVersion, 1) >= 1 {
		f.byUpdate = true
		if err := f.completions(ctx); err != nil {
			return rep, err
		}
	}
	t, info, err := begin(ctx, OpFailback, in.Plan)
	defer func() { t.finish(err) }()
	if err != nil {
		return rep, err
	}
	release, err := claimSwitch(ctx, in.Plan, "data recovery")
	defer func() {
		if !workflow.IsContinueAsNewError(err) {
			release()
		}
	}()
	if err != nil {
		return rep, err
	}
	info = current(ctx, info)
	r := in.Resume
	if r == nil {
		if info.Active == info.Primary {
			return rep, invalidInput(fmt.Sprintf("plan %s is active at its primary %s: there is nothing to fail back (drorch failover --planned switches over)", in.Plan, info.Primary))
		}
		id, _ := opID(ctx, OpFailback)
		r = &FailbackResume{Op: id, Started: started, From: info.Active, To: info.Primary}
	} else {
		t.p.Steps = append(r.Steps, t.p.Steps...)
	}
	if err := upsert(ctx, t, r.To); err != nil {
		return rep, err
	}
	if err := claimTargets(ctx, in.Plan, "data recovery to "+r.To, r.To); err != nil {
		return rep, err
	}
	f.switchRun = newSwitchRunID(ctx, t, info, OpFailback, r.Op, "", r.From, r.To, r.Started)
	f.auto = in.AutoComplete || info.Failback.AutoComplete
	f.signals = workflow.GetSignalChannel(ctx, SignalComplete)
	f.caught = r.Rounds > 0 && r.Lag.D() < info.Failback.LagThreshold
	f.rep.Notes = r.Notes
	f.r = r // from here on, complete is answered
	err = f.run()
	if workflow.IsContinueAsNewError(err) {
		return rep, err
	}
	f.rep.Rounds, f.rep.Lag, f.rep.Preserved = r.Rounds, r.Lag, r.Preserved
	rep = f.finish(err)
	if err == nil {
		workflow.GetLogger(ctx).Info("data recovery completed", "plan", in.Plan, "active", r.To, "from", r.From, "rounds", r.Rounds, "rto", rep.RTO)
	} else {
		workflow.GetLogger(ctx).Warn("data recovery "+rep.Outcome, "plan", in.Plan, "error", err)
	}
	return rep, err
}

type failback struct {
	*switchRun
	in      FailbackInput
	r       *FailbackResume
	auto    bool
	signals workflow.ReceiveChannel
	// byUpdate: complete is an update (versionCompleteUpdate), not a signal.
	byUpdate bool
	caught   bool // the last round ended under the lag threshold
}

// versionCompleteUpdate: complete is an update whose validator refuses it
// while the primary has not caught up (docs/versioning.md).
const versionCompleteUpdate = "complete-update"

// CompleteResult is the complete update's answer.
type CompleteResult struct {
	Lag    Duration `json:"lag"`
	Rounds int      `json:"rounds"`
}

// completions answers the complete update: refused before the primary has
// caught up (unless forced) and once completing has begun.
func (f *failback) completions(ctx workflow.Context) error {
	return workflow.SetUpdateHandlerWithOptions(ctx, UpdateComplete,
		func(ctx workflow.Context, in CompleteSignal) (CompleteResult, error) {
			f.take(in)
			return CompleteResult{Lag: f.r.Lag, Rounds: f.r.Rounds}, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, in CompleteSignal) error {
			switch {
			case f.r == nil:
				return fmt.Errorf("data recovery of %s is starting: try again in a few seconds", f.in.Plan)
			case f.r.Complete != nil && !in.Force:
				return fmt.Errorf("data recovery of %s is already completing", f.in.Plan)
			case in.Force:
				return nil
			case f.r.Rounds == 0 || !f.caught && f.r.Complete == nil:
				lag := "no sync round has finished yet"
				if f.r.Rounds > 0 {
					lag = fmt.Sprintf("the primary's lag is %s, over the threshold %s", f.r.Lag.D().Round(time.Second), f.info.Failback.LagThreshold)
				}
				return fmt.Errorf("not caught up yet: %s; wait for it, or complete --force (the final sync then runs while neither site takes writes)", lag)
			}
			return nil
		}})
}

func (f *failback) run() error {
	if f.r.Rounds == 0 {
		if err := f.begin(); err != nil {
			return err
		}
	}
	if err := f.catchUp(); err != nil {
		return err
	}
	return f.complete()
}

// begin protects the returning primary: read-only, its own data kept as a
// restore point, and the active site's epoch recorded there so nothing it
// still runs can write over the active site.
func (f *failback) begin() error {
	ctx := f.ctx
	if err := f.t.step(ctx, "preflight", func() error {
		_, err := f.preflight("data recovery needs the", f.from, f.to)
		return err
	}); err != nil {
		return err
	}
	if err := f.t.step(ctx, "read-only "+f.to, func() error { return f.setAccess(f.site(f.to), f.to, access.ReadOnly) }); err != nil {
		return err
	}
	if err := f.t.step(ctx, "preserve "+f.to, func() error {
		var b BackupResult
		err := f.child("preserve", Backup, BackupInput{Plan: f.info.Plan, Site: f.to}, &b)
		if errorType(err) == "NotFound" {
			f.note(fmt.Sprintf("nothing to preserve at %s: %s", f.to, errorMessage(err)))
			return nil
		}
		if err != nil {
			return wrap(err, "keeping %s's own data before it is overwritten", f.to)
		}
		f.r.Preserved = b.Point
		return nil
	}); err != nil {
		return err
	}
	return f.t.step(ctx, "epoch "+f.to, func() error {
		return workflow.ExecuteActivity(f.site(f.to), act.SetEpoch, f.epochInput(f.to, f.from, f.op+"-begin",
			fmt.Sprintf("data recovery from %s: %s is the active site", f.from, f.from), 0, max(f.info.Epoch, 1))).Get(ctx, nil)
	})
}

// catchUp runs sync rounds until the primary has caught up and completion
// is wanted, continuing as new after runsPerFailback rounds.
func (f *failback) catchUp() error {
	ctx, r := f.ctx, f.r
	threshold := f.info.Failback.LagThreshold
	for n := 0; ; n++ {
		if n == runsPerFailback || workflow.GetInfo(ctx).GetContinueAsNewSuggested() {
			f.poll()
			r.Steps = carriedSteps(f.t.p.Steps)
			r.Notes = f.rep.Notes
			return workflow.NewContinueAsNewError(ctx, Failback, FailbackInput{Plan: f.in.Plan, AutoComplete: f.in.AutoComplete, Resume: r})
		}
		r.Rounds++
		if err := f.t.step(ctx, fmt.Sprintf("sync %d", r.Rounds), func() error {
			b, err := f.sync(fmt.Sprintf("sync-%d", r.Rounds), f.from, f.to)
			if err != nil {
				return err
			}
			r.Lag = Duration(workflow.Now(ctx).Sub(b.Snapshot))
			return nil
		}); err != nil {
			return err
		}
		f.poll()
		caught := r.Lag.D() < threshold
		f.caught = caught
		if f.ready(caught) {
			break
		}
		if caught {
			f.t.p.Waiting = fmt.Sprintf("caught up (lag %s, under %s): waiting for drorch complete --plan %s; syncing every %s meanwhile",
				r.Lag.D().Round(time.Second), threshold, f.in.Plan, f.info.Failback.Interval)
		} else {
			f.t.p.Waiting = fmt.Sprintf("lag %s, over the threshold %s: next sync round in %s", r.Lag.D().Round(time.Second), threshold, f.info.Failback.Interval)
		}
		if f.byUpdate {
			_, _ = workflow.AwaitWithTimeout(ctx, f.info.Failback.Interval, func() bool { return f.r.Complete != nil })
		} else {
			timer, cancel := workflow.WithCancel(ctx)
			sel := workflow.NewSelector(ctx)
			sel.AddReceive(f.signals, func(c workflow.ReceiveChannel, _ bool) { f.receive(c) })
			sel.AddFuture(workflow.NewTimer(timer, f.info.Failback.Interval), func(workflow.Future) {})
			sel.Select(ctx)
			cancel()
		}
		f.t.p.Waiting = ""
		if ctx.Err() != nil {
			return temporal.NewCanceledError("data recovery cancelled")
		}
		if f.ready(caught) {
			break
		}
	}
	f.t.p.Waiting = ""
	return nil
}

// ready says whether to complete now.
func (f *failback) ready(caught bool) bool {
	c := f.r.Complete
	return caught && (f.auto || c != nil) || c != nil && c.Force
}

// poll takes the complete signals that arrived while a round ran (runs
// from before the complete update).
func (f *failback) poll() {
	for !f.byUpdate {
		var s CompleteSignal
		if !f.signals.ReceiveAsync(&s) {
			return
		}
		f.take(s)
	}
}

func (f *failback) receive(c workflow.ReceiveChannel) {
	var s CompleteSignal
	c.Receive(f.ctx, &s)
	f.take(s)
}

func (f *failback) take(s CompleteSignal) {
	if f.r.Complete == nil || s.Force {
		f.r.Complete = &s
	}
}

// complete switches to the primary with zero data loss.
func (f *failback) complete() error {
	ctx, rep := f.ctx, f.rep
	if c := f.r.Complete; c != nil && c.By != "" {
		f.note("completed at the request of " + c.By)
	}
	fenceAt := workflow.Now(ctx)
	if err := f.readOnly(f.site(f.from), f.from); err != nil {
		return err
	}
	rep.Fenced = true
	if err := f.t.step(ctx, "final sync", func() error {
		b, err := f.sync("final", f.from, f.to)
		if err != nil {
			return err
		}
		rep.Point, rep.PointTime = b.Point, b.Snapshot
		rep.RPO = Duration(max(fenceAt.Sub(b.Snapshot), 0))
		return nil
	}); err != nil {
		return err
	}
	if err := f.epoch(fmt.Sprintf("data recovery from %s to %s", f.from, f.to), false); err != nil {
		return err
	}
	if err := runSteps(ctx, f.t, f.info, "failback", f.to); err != nil {
		return err
	}
	if err := f.readWrite(f.to); err != nil {
		return err
	}
	if err := f.dns(f.to); err != nil {
		return err
	}
	rep.RTO = Duration(workflow.Now(ctx).Sub(fenceAt))
	markSynced(ctx, f.switchRun, f.from, rep.Point)
	// Forward replication resumes: the first restore point of the new
	// epoch at the primary, held at the secondary too. Failing here does not
	// undo the switch; the next scheduled backup and transmit catch up.
	if err := f.t.step(ctx, "resume replication", func() error {
		var b BackupResult
		if err := f.child("forward/"+OpBackup, Backup, BackupInput{Plan: f.info.Plan, Site: f.to}, &b); err != nil {
			return err
		}
		return f.child("forward/"+OpTransmit, Transmit, TransmitInput{Plan: f.info.Plan, From: f.to, To: f.from, Point: b.Point}, nil)
	}); err != nil {
		f.note("forward replication not resumed: " + errorMessage(err))
	}
	return nil
}

// carriedSteps keeps what a continued run shows of the earlier ones: every
// step but the sync rounds, and the last round.
func carriedSteps(steps []StepProgress) []StepProgress {
	var out []StepProgress
	last := -1
	for i, s := range steps {
		if strings.HasPrefix(s.Name, "sync ") {
			last = i
			continue
		}
		if s.Name == "describe" {
			continue
		}
		out = append(out, s)
	}
	if last >= 0 {
		out = append(out, steps[last])
	}
	return out
}
