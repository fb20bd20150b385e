// Package activities does drorch's real work: it reads sources, moves chunks
// through the sites' object stores and writes restores. Each activity touches
// one site and runs on that site's task queue; workflows only decide the order.
package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/source/dir"
	"github.com/drorch/drorch/drivers/store"
	"github.com/drorch/drorch/drivers/store/s3"
	"github.com/drorch/drorch/internal/config"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
)

// Activities holds what the activities need: the deployment config (with its
// secrets, which stay in this process), a Temporal client to report progress
// to the calling workflow, and the stores opened so far.
type Activities struct {
	cfg    *config.Config
	client client.Client // nil in unit tests: progress then goes to heartbeats only
	log    zerolog.Logger

	mu     sync.Mutex
	stores map[string]store.Store // by site

	// storeSlots bounds the chunks this worker hashes, seals and uploads
	// at once, whatever the number of upload activities it runs (a
	// backup's ranges, --data-slots): more than uploadWorkers only adds
	// contention on the worker's cores.
	storeSlots chan struct{}
	uploads    uploadCache // the setup of the backups whose ranges run here

	// HeartbeatInterval is how often long activities heartbeat while they
	// make progress.
	HeartbeatInterval time.Duration
	// StallTimeout is how long a long activity may go without progress (no
	// byte, chunk or file moved, no resume point reached) before it stops
	// heartbeating: its attempt then fails on the heartbeat timeout and is
	// retried from its last resume point, instead of a hung transfer
	// looking alive forever.
	StallTimeout time.Duration

	recordHeartbeat func(ctx context.Context, details any) // nil: activity.RecordHeartbeat; tests replace it
}

// DefaultStallTimeout is StallTimeout's default: longer than any step that
// legitimately moves nothing, such as listing a large repository.
const DefaultStallTimeout = 10 * time.Minute

// New returns the activities for cfg. cl may be nil.
func New(cfg *config.Config, cl client.Client, log zerolog.Logger) *Activities {
	return &Activities{
		cfg:               cfg,
		client:            cl,
		log:               log,
		stores:            map[string]store.Store{},
		storeSlots:        make(chan struct{}, datapath.UploadWorkers),
		HeartbeatInterval: 2 * time.Second,
		StallTimeout:      DefaultStallTimeout,
	}
}

// store returns the object store of site, opened once per process.
func (a *Activities) store(site string) (store.Store, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st, ok := a.stores[site]; ok {
		return st, nil
	}
	s, err := a.cfg.Site(site)
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	st, err := s3.New(s3.Config{
		Endpoint:  s.Store.Endpoint,
		Bucket:    s.Store.Bucket,
		Prefix:    s.Store.Prefix,
		Region:    s.Store.Region,
		AccessKey: s.Store.AccessKey,
		SecretKey: s.Store.SecretKey,
		Insecure:  s.Store.Insecure,
		CAFile:    s.Store.CAFile,
		Parallel:  s.Store.Parallel,
	})
	if err != nil {
		return nil, fmt.Errorf("site %s: %w", site, err)
	}
	a.stores[site] = st
	return st, nil
}

// plan looks a plan up; an unknown plan is a permanent error.
func (a *Activities) plan(name string) (*config.Plan, error) {
	p, err := a.cfg.Plan(name)
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	return p, nil
}

// repo opens the repository of plan at site.
func (a *Activities) repo(planName, site string) (*repo.Repo, error) {
	p, err := a.plan(planName)
	if err != nil {
		return nil, err
	}
	if !p.HasSite(site) {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "plan %s has no site %q (its sites are %s)", p.Name, site, siteList(p.Sites()))
	}
	st, err := a.store(site)
	if err != nil {
		return nil, err
	}
	var key []byte
	if p.Encryption != nil {
		if key, err = repo.ParseKey(p.Encryption.Key.Value()); err != nil {
			return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("plan %s: encryption key %s: %w", p.Name, p.Encryption.Key, err))
		}
	}
	r, err := repo.New(st, p.Name, key)
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, err)
	}
	return r, nil
}

// sourceAt returns the configured source of plan at site.
func (a *Activities) sourceAt(planName, site string) (*config.Source, *dir.Dir, error) {
	p, err := a.plan(planName)
	if err != nil {
		return nil, nil, err
	}
	sc, err := p.SourceAt(site)
	if err != nil {
		return nil, nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	if sc.Driver == execDriver || sc.Logical() {
		return sc, nil, nil // no tree: exec.go reads and writes its stream
	}
	d, err := dir.New(sc.Path)
	if err != nil {
		return nil, nil, err
	}
	return sc, d, nil
}

// target returns where a restore at site writes: path when given, else the
// plan's source at that site.
func (a *Activities) target(planName, site, path string) (source.Target, error) {
	if path != "" {
		if filepath.Clean(path) == "/" {
			return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "restore target /: refusing to replace the root file system; restore into a directory")
		}
		return dir.New(path)
	}
	sc, d, err := a.sourceAt(planName, site)
	if err == nil && d == nil {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "plan %s's source at %s is not a directory tree (driver %s): give a directory with --to", planName, site, sc.Driver)
	}
	return d, err
}

// temporalError turns a permanent driver error into a non-retryable Temporal
// error, keeping its reason as the error type. Other errors are returned as
// they are and retried by Temporal.
func temporalError(err error) error {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err
	}
	if reason, ok := drivers.IsPermanent(err); ok {
		return temporal.NewNonRetryableApplicationError(err.Error(), reason, nil)
	}
	if reason, advice, ok := drivers.LocalPermanent(err); ok {
		return temporal.NewNonRetryableApplicationError(err.Error()+": "+advice, reason, nil)
	}
	return err
}

// WorkerOptions are the options of every worker that runs drorch's
// activities. Heartbeats reach the server at least every 2 seconds (the SDK
// otherwise holds them back for up to 0.8 of the heartbeat timeout), so a
// retried activity resumes from close to where the lost worker was. Every
// activity runs behind the retry interceptor (retry.go) with the default
// retry budget; WorkerOptionsFor uses each plan's own.
func WorkerOptions() worker.Options { return WorkerOptionsFor(nil) }

// WorkerOptionsFor are WorkerOptions with the retry budgets of cfg's plans.
// (A function, not a method: every exported method of Activities is
// registered as an activity.)
func WorkerOptionsFor(cfg *config.Config) worker.Options {
	return worker.Options{
		MaxHeartbeatThrottleInterval: 2 * time.Second,
		Interceptors:                 []interceptor.WorkerInterceptor{newRetryInterceptor(budgetOf(cfg))},
	}
}

// temporalApplicationError is an application error of the given type,
// retryable or not.
func temporalApplicationError(msg, typ string, nonRetryable bool) error {
	return temporal.NewApplicationErrorWithOptions(msg, typ, temporal.ApplicationErrorOptions{NonRetryable: nonRetryable})
}

// Progress is what a long activity reports while it runs, in its heartbeat
// details: the CLI (drorch status, --wait) and the Web UI's pending
// activities read it from there. It never enters the workflow's history,
// which so stays the same length however long the activity runs.
type Progress = datapath.Progress

var _ datapath.Reporter = (*reporter)(nil)

// reporter heartbeats a long activity on a ticker with its resume point and
// progress while the activity makes progress. Heartbeating from a ticker
// rather than from the data path keeps a slow but live transfer from
// looking dead; stopping once nothing has moved for StallTimeout keeps a
// hung one from looking alive.
type reporter struct {
	a   *Activities
	ctx context.Context // the activity's
	// work is the context the activity's work runs in: cancelled when it
	// has stalled, so that the attempt ends here too and its retry can
	// take over (a stalled attempt would otherwise run on, holding what it
	// holds, until its start-to-close timeout).
	work    context.Context
	stop    context.CancelCauseFunc
	mu      sync.Mutex
	p       Progress
	res     any       // resume details, heartbeated with the progress
	seen    Progress  // the counters when progress last moved
	moved   time.Time // when progress last moved
	stalled bool
	// scanned counts the metadata work done in work (repo.WithCounter);
	// watched are other counters of work done for this step, such as a
	// listing shared with other activities.
	scanned atomic.Int64
	watched []*atomic.Int64
	halt    chan struct{}
	done    chan struct{}
}

// heartbeat is what long activities record: where to resume and how far along.
type heartbeat struct {
	Resume   any      `json:"resume"`
	Progress Progress `json:"progress"`
}

func (a *Activities) startReporter(ctx context.Context, step string) *reporter {
	now := time.Now()
	r := &reporter{a: a, ctx: ctx, p: Progress{Step: step, Started: now.UTC()}, moved: now, halt: make(chan struct{}), done: make(chan struct{})}
	// Until this attempt records a resume point of its own, its heartbeats
	// carry the last attempt's: one lost while it lists or sets up must not
	// make the next start over.
	if prev := previousResume(ctx); prev != nil {
		r.res = prev
	}
	r.work, r.stop = context.WithCancelCause(ctx)
	r.work = repo.WithCounter(r.work, &r.scanned)
	go func() {
		defer close(r.done)
		t := time.NewTicker(a.HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-r.halt:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				r.beat(false)
			}
		}
	}()
	return r
}

// Update changes the progress under the lock.
func (r *reporter) Update(f func(p *Progress)) {
	r.mu.Lock()
	f(&r.p)
	r.mu.Unlock()
}

// watch counts n's work as this step's progress: work shared with other
// activities, done under another context than r.work.
func (r *reporter) watch(n *atomic.Int64) {
	r.mu.Lock()
	r.watched = append(r.watched, n)
	r.mu.Unlock()
}

// Resume records where a retried attempt should continue and heartbeats it at
// once: it marks durable progress.
func (r *reporter) Resume(v any) {
	r.mu.Lock()
	r.res = v
	r.moved = time.Now()
	r.mu.Unlock()
	r.beat(false)
}

// counters are the parts of a Progress that show work moving.
func counters(p Progress) [9]int64 {
	return [9]int64{p.FilesTotal, p.FilesDone, p.BytesTotal, p.BytesDone, p.BytesNew, p.ChunksTotal, p.ChunksDone, p.ChunksNew, p.Scanned}
}

func (r *reporter) beat(final bool) {
	r.mu.Lock()
	now := time.Now()
	r.p.Scanned = r.scanned.Load()
	for _, n := range r.watched {
		r.p.Scanned += n.Load()
	}
	if counters(r.p) != counters(r.seen) {
		r.seen, r.moved = r.p, now
	}
	stalled := !final && r.a.StallTimeout > 0 && now.Sub(r.moved) > r.a.StallTimeout
	first := stalled && !r.stalled
	r.stalled = stalled
	r.p.Updated = now.UTC()
	hb := heartbeat{Resume: r.res, Progress: r.p}
	r.mu.Unlock()
	if first {
		r.a.log.Warn().Str("step", hb.Progress.Step).Dur("stalled", r.a.StallTimeout).
			Msg("no progress: this attempt stops and is retried from its last resume point")
		r.stop(fmt.Errorf("%s made no progress for %s", hb.Progress.Step, r.a.StallTimeout))
	}
	switch {
	case stalled:
	case r.a.recordHeartbeat != nil:
		r.a.recordHeartbeat(r.ctx, hb)
	case activity.IsActivity(r.ctx):
		activity.RecordHeartbeat(r.ctx, hb)
	}
}

// close stops the ticker and records the final progress.
func (r *reporter) close() {
	close(r.halt)
	<-r.done
	r.beat(true)
	r.stop(nil)
}

// resumeDetails decodes the resume point of a previous attempt into v and
// reports whether there was one.
func resumeDetails(ctx context.Context, v any) bool {
	prev := previousResume(ctx)
	return prev != nil && json.Unmarshal(prev, v) == nil
}

// previousResume is the resume point the last attempt heartbeated, nil when
// there is none.
func previousResume(ctx context.Context) json.RawMessage {
	if !activity.IsActivity(ctx) || !activity.HasHeartbeatDetails(ctx) {
		return nil
	}
	var hb struct {
		Resume json.RawMessage `json:"resume"`
	}
	if err := activity.GetHeartbeatDetails(ctx, &hb); err != nil {
		return nil
	}
	if len(hb.Resume) == 0 || string(hb.Resume) == "null" {
		return nil
	}
	return hb.Resume
}

// siteList names a plan's sites for a message: "a and b", "a, b and c".
func siteList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
