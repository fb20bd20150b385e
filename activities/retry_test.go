package activities

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/internal/testenv"
)

type flakyInput struct {
	Plan      string
	Heartbeat bool  // heartbeat at all
	Progress  bool  // make progress in every attempt before failing
	SucceedAt int32 // the attempt that succeeds; 0: none
	// Scan is how long every attempt does metadata work (Progress.Scanned
	// moving) before it fails.
	Scan time.Duration
	// Restart: every attempt heartbeats first without counts, then with
	// the same counts it starts from (a copy's chunks already there).
	Restart bool
}

func flakyWorkflow(ctx workflow.Context, in flakyInput) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 10 * time.Second, ScheduleToCloseTimeout: 2 * time.Minute, HeartbeatTimeout: 10 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 200 * time.Millisecond, BackoffCoefficient: 1, MaximumInterval: 200 * time.Millisecond},
	})
	return workflow.ExecuteActivity(ctx, "Flaky", in).Get(ctx, nil)
}

func flaky(ctx context.Context, in flakyInput) error {
	n := activity.GetInfo(ctx).Attempt
	if in.SucceedAt > 0 && n >= in.SucceedAt {
		return nil
	}
	if in.Restart {
		activity.RecordHeartbeat(ctx, heartbeat{})
		activity.RecordHeartbeat(ctx, heartbeat{Progress: Progress{ChunksDone: 5}})
	}
	for i, began := int64(1), time.Now(); time.Since(began) < in.Scan; i++ {
		activity.RecordHeartbeat(ctx, heartbeat{Progress: Progress{Scanned: i}})
		time.Sleep(50 * time.Millisecond)
	}
	if in.Heartbeat {
		activity.RecordHeartbeat(ctx, heartbeat{Progress: Progress{ChunksDone: 10}}) // where every attempt gets
		if in.Progress {
			activity.RecordHeartbeat(ctx, heartbeat{Progress: Progress{ChunksDone: int64(n)*10 + 1}})
		}
	}
	return errors.New("store answered 503 Service Unavailable")
}

// A step that keeps failing without progress gives up once its budget is
// spent, naming its last error; one that makes progress goes on; a
// permanent error ends at once.
func TestRetryBudget(t *testing.T) {
	srv := testenv.SharedTemporal(t)
	cl := srv.Client(t)
	queue := "retry-budget-" + time.Now().Format("150405.000000")
	const budget = 2 * time.Second
	ri := newRetryInterceptor(func(plan string) time.Duration {
		if plan != "p" {
			t.Errorf("budget asked for plan %q", plan)
		}
		return budget
	})
	w := worker.New(cl, queue, worker.Options{MaxHeartbeatThrottleInterval: 100 * time.Millisecond, Interceptors: []interceptor.WorkerInterceptor{ri}})
	w.RegisterWorkflow(flakyWorkflow)
	w.RegisterActivityWithOptions(flaky, activity.RegisterOptions{Name: "Flaky"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	run := func(in flakyInput) (error, time.Duration) {
		t.Helper()
		start := time.Now()
		r, err := cl.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{TaskQueue: queue}, flakyWorkflow, in)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return r.Get(ctx, nil), time.Since(start)
	}
	for _, tc := range []struct {
		name string
		in   flakyInput
	}{
		{"never heartbeats", flakyInput{Plan: "p"}},
		{"heartbeats without progress", flakyInput{Plan: "p", Heartbeat: true}},
		// Its counts move within each attempt, but never past where the
		// attempts before got.
		{"starts from the same counts", flakyInput{Plan: "p", Restart: true}},
		// Each attempt's own scanning is not failing time, the earlier
		// attempts' is: scanning is done again, no progress.
		{"scans, then fails every time", flakyInput{Plan: "p", Scan: budget / 2}},
	} {
		err, took := run(tc.in)
		var app *temporal.ApplicationError
		if !errors.As(err, &app) || app.Type() != ReasonRetryBudget || !app.NonRetryable() {
			t.Fatalf("%s: %v; want a non-retryable %s", tc.name, err, ReasonRetryBudget)
		}
		if !strings.Contains(app.Error(), "503 Service Unavailable") || !strings.Contains(app.Error(), "retryBudget") {
			t.Errorf("%s: the error does not name the last failure and the setting: %s", tc.name, app.Error())
		}
		if took < budget || took > budget+10*time.Second {
			t.Errorf("%s: gave up after %s, budget %s", tc.name, took, budget)
		}
	}
	// Progress in every attempt: retried past the budget until it succeeds.
	if err, took := run(flakyInput{Plan: "p", Heartbeat: true, Progress: true, SucceedAt: 20}); err != nil || took < budget {
		t.Fatalf("a step that makes progress: %v after %s", err, took)
	}
	// Metadata work longer than the budget in each attempt (a commit of a
	// hundred million entries) is not failing time: the third attempt runs.
	if err, took := run(flakyInput{Plan: "p", Scan: budget + time.Second, SucceedAt: 3}); err != nil || took < 2*budget {
		t.Fatalf("a step that scans longer than the budget before each failure: %v after %s", err, took)
	}
}
