package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"

	"github.com/drorch/drorch/internal/config"
)

// Retries that end. Temporal retries a failed activity until its
// schedule-to-close timeout; for a step that moves data for a day that
// timeout must be long, so on its own it would let a step fail for days
// before anyone hears of it. Every activity therefore runs behind an
// interceptor that
//   - converts errors once: permanent driver errors and local file-system
//     errors no retry fixes (EIO, ENOSPC, EROFS, EACCES…) become
//     non-retryable with advice (temporalError);
//   - keeps a retry budget: once a step has been failing, without progress,
//     for longer than its plan's retryBudget (default 1 h), its next
//     retryable error is made non-retryable ("RetryBudgetExhausted"), naming
//     the last error, so the workflow fails and the stuck plan surfaces
//     within its RPO rather than days later.
//
// "Without progress" is measured across attempts in the heartbeat details:
// the interceptor adds a second detail, retryState, to every heartbeat,
// which carries the furthest any attempt got (its mark). An attempt that
// reports a resume point other than the mark's, or more bytes, chunks or
// files done than the mark, has made progress, and the failing streak
// begins again from its failure. (Not more than its own first heartbeat:
// an attempt heartbeats before it has set the counts it starts from, such
// as the chunks a copy finds already there.)
// The failing attempt's own metadata work (the time in which
// Progress.Scanned moved: a listing, a commit reading its entries) is not
// counted as failing: a commit that reads a hundred million entries for an
// hour and then meets a store error has not failed for an hour. That work
// is done again by the next attempt, so it is no progress either: the time
// earlier attempts spent on it counts, and a step whose every attempt scans
// and then fails still gives up.
// An activity that never heartbeats counts from when it was first scheduled.

// ReasonRetryBudget is the error type of a step that gave up after failing
// for longer than its plan's retry budget.
const ReasonRetryBudget = "RetryBudgetExhausted"

// retryState is carried in the heartbeat details from attempt to attempt.
type retryState struct {
	// FailingSince is when the current streak of failed attempts began;
	// zero once the attempt that carries it has made progress.
	FailingSince time.Time `json:"failingSince,omitzero"`
	// Mark is the furthest the step's attempts have got.
	Mark progressMark `json:"mark,omitzero"`
}

// progressMark is how far a heartbeat says a step got.
type progressMark struct {
	Resume     string `json:"resume,omitempty"` // a hash of its JSON; "" for none
	BytesDone  int64  `json:"bytesDone,omitempty"`
	ChunksDone int64  `json:"chunksDone,omitempty"`
	FilesDone  int64  `json:"filesDone,omitempty"`
}

// advance raises m to p and reports whether p got further: another resume
// point, or more of any count.
func (m *progressMark) advance(p progressMark) bool {
	moved := p.Resume != "" && p.Resume != m.Resume
	if moved {
		m.Resume = p.Resume
	}
	for _, c := range [...]struct{ mark, now *int64 }{{&m.BytesDone, &p.BytesDone}, {&m.ChunksDone, &p.ChunksDone}, {&m.FilesDone, &p.FilesDone}} {
		if *c.now > *c.mark {
			*c.mark, moved = *c.now, true
		}
	}
	return moved
}

// retryInterceptor installs the inbound interceptor on every activity.
type retryInterceptor struct {
	interceptor.WorkerInterceptorBase
	budget func(plan string) time.Duration
	now    func() time.Time
}

func newRetryInterceptor(budget func(plan string) time.Duration) *retryInterceptor {
	return &retryInterceptor{budget: budget, now: time.Now}
}

func (r *retryInterceptor) InterceptActivity(ctx context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	return &retryInbound{ActivityInboundInterceptorBase: interceptor.ActivityInboundInterceptorBase{Next: next}, r: r}
}

type retryInbound struct {
	interceptor.ActivityInboundInterceptorBase
	r   *retryInterceptor
	out *retryOutbound
}

func (i *retryInbound) Init(outbound interceptor.ActivityOutboundInterceptor) error {
	i.out = &retryOutbound{ActivityOutboundInterceptorBase: interceptor.ActivityOutboundInterceptorBase{Next: outbound}, now: i.r.now}
	return i.Next.Init(i.out)
}

func (i *retryInbound) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	info := activity.GetInfo(ctx)
	i.out.begin(carriedState(ctx, info, i.r.now()))
	res, err := i.Next.ExecuteActivity(ctx, in)
	if err == nil {
		return res, nil
	}
	err = temporalError(err)
	if !retryable(err) || ctx.Err() != nil {
		return res, err
	}
	if errors.Is(err, context.Canceled) {
		// Cancelled from within while the activity itself was not: only
		// the reporter does that, when the work has stalled.
		err = fmt.Errorf("%s made no progress for the worker's --stall-timeout, so this attempt stopped and the next resumes from its last resume point: %w", info.ActivityType.Name, err)
	}
	since, scanning := i.out.failingSince()
	if since.IsZero() {
		return res, err // this attempt made progress: a new streak begins
	}
	budget := i.r.budget(planOf(in.Args))
	if failing := i.r.now().Sub(since) - scanning; failing >= budget {
		return res, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"%s gave up after failing for %s without progress (attempt %d; the plan's retry budget is %s, set plans.<plan>.retryBudget to change it): %v",
			info.ActivityType.Name, failing.Round(time.Second), info.Attempt, budget, err), ReasonRetryBudget, nil)
	}
	return res, err
}

// carriedState is the retry state this attempt continues: its FailingSince
// is when the streak of failures began, zero for a first attempt; for a
// retry, what the last heartbeat carried, or now when the attempt before
// made progress, or the first schedule when no attempt ever heartbeated.
func carriedState(ctx context.Context, info activity.Info, now time.Time) retryState {
	if info.Attempt <= 1 {
		return retryState{}
	}
	if !activity.HasHeartbeatDetails(ctx) {
		return retryState{FailingSince: info.ScheduledTime}
	}
	var first json.RawMessage
	var st retryState
	if err := activity.GetHeartbeatDetails(ctx, &first, &st); err != nil {
		return retryState{FailingSince: now}
	}
	if st.FailingSince.IsZero() {
		st.FailingSince = now
	}
	return st
}

// retryable reports whether Temporal would retry err.
func retryable(err error) bool {
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		return !app.NonRetryable()
	}
	return true
}

// planOf finds the plan an activity works for: the Plan field of its input.
func planOf(args []any) string {
	if len(args) == 0 {
		return ""
	}
	v := reflect.ValueOf(args[0])
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	if f := v.FieldByName("Plan"); f.IsValid() && f.Kind() == reflect.String {
		return f.String()
	}
	return ""
}

// budgetOf returns the retry budget of a plan in cfg.
func budgetOf(cfg *config.Config) func(string) time.Duration {
	return func(plan string) time.Duration {
		if cfg != nil {
			if p, err := cfg.Plan(plan); err == nil && p.RetryBudget > 0 {
				return p.RetryBudget
			}
		}
		return config.DefaultRetryBudget
	}
}

// retryOutbound adds the retry state to every heartbeat and notices
// progress: a heartbeat whose first detail gets past the state's mark, in
// its resume point or counts; and it times this attempt's metadata work.
type retryOutbound struct {
	interceptor.ActivityOutboundInterceptorBase
	now      func() time.Time
	mu       sync.Mutex // the reporter heartbeats from two goroutines
	state    retryState
	scanned  int64         // Progress.Scanned at the last heartbeat
	scanning time.Duration // this attempt's time in which Scanned moved
	beat     time.Time     // when the last heartbeat was recorded
}

func (o *retryOutbound) begin(st retryState) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.state, o.scanned, o.scanning, o.beat = st, 0, 0, o.now()
}

// failingSince is when this attempt's streak of failures began (zero: it
// made progress), and how long it spent on metadata work.
func (o *retryOutbound) failingSince() (time.Time, time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.state.FailingSince, o.scanning
}

func (o *retryOutbound) RecordHeartbeat(ctx context.Context, details ...any) {
	if len(details) == 1 {
		mark, scanned := progressOf(details[0])
		o.mu.Lock()
		now := o.now()
		if o.state.Mark.advance(mark) {
			o.state.FailingSince = time.Time{}
		}
		if scanned > o.scanned {
			o.scanning += now.Sub(o.beat) // the time since the last heartbeat went to metadata work
			o.scanned = scanned
		}
		o.beat = now
		details = append(details, o.state)
		o.mu.Unlock()
	}
	o.Next.RecordHeartbeat(ctx, details...)
}

// progressOf reads how far a heartbeat says its step got, and apart from
// it Progress.Scanned: the entries a commit read are read again by its next
// attempt, so an attempt that scans and then fails has made no progress
// that lasts.
func progressOf(v any) (progressMark, int64) {
	b, err := json.Marshal(v)
	if err != nil {
		return progressMark{}, 0
	}
	var hb struct {
		Resume   json.RawMessage `json:"resume"`
		Progress struct {
			BytesDone  int64 `json:"bytesDone"`
			ChunksDone int64 `json:"chunksDone"`
			FilesDone  int64 `json:"filesDone"`
			Scanned    int64 `json:"scanned"`
		} `json:"progress"`
	}
	if json.Unmarshal(b, &hb) != nil {
		return progressMark{Resume: digest(b)}, 0 // not a reporter's: any change is progress
	}
	m := progressMark{BytesDone: hb.Progress.BytesDone, ChunksDone: hb.Progress.ChunksDone, FilesDone: hb.Progress.FilesDone}
	if r := string(hb.Resume); r != "" && r != "null" {
		m.Resume = digest(hb.Resume)
	}
	return m, hb.Progress.Scanned
}

// digest stands for a resume point in the retry state, which every
// heartbeat carries beside the resume point itself.
func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}
