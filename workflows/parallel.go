package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/drorch/drorch/activities"
)

// Change ids (workflow.GetVersion): a backup's upload and a transmit's copy
// run as several activities over ranges of the work, on the site's data
// queue, at most the plan's Parallel at once. Runs begun before them keep
// one activity on the site queue.
const (
	changeParallelUpload = "parallel-upload"
	changeParallelCopy   = "parallel-copy"
)

// defaultParallel is a plan's parallelism when Describe did not say
// (config.DefaultParallel; workflows read no config).
const defaultParallel = 4

// parallelism is how many data activities of one run may be in flight.
func parallelism(info activities.PlanInfo) int {
	if info.Parallel > 0 {
		return info.Parallel
	}
	return defaultParallel
}

// span is a half-open range [from, to) of pieces or chunk indexes.
type span struct{ from, to int }

// spans cuts n items into contiguous ranges for at most p activities at
// once: 2p ranges (fewer when n is smaller), so that a worker that finishes
// early takes another while each range stays large enough to amortise an
// activity's setup (listing the repository's chunks, reading the parent
// manifest).
func spans(n, p int) []span {
	if n <= 0 {
		return nil
	}
	parts := min(n, 2*max(p, 1))
	size := (n + parts - 1) / parts
	var out []span
	for from := 0; from < n; from += size {
		out = append(out, span{from, min(from+size, n)})
	}
	return out
}

// dataCtx is for the data-moving activities of one range: the site's data
// queue, whose workers each run a bounded number of them, so the ranges
// spread over every worker at the site without starving the control
// activities on the site queue. A cancelled range is waited for, so that
// no attempt still writes staging when the workflow cleans it up.
func dataCtx(ctx workflow.Context, site string) workflow.Context {
	ctx = longCtx(ctx, SiteDataTaskQueue(workflow.GetInfo(ctx).TaskQueueName, site))
	opts := workflow.GetActivityOptions(ctx)
	opts.WaitForCancellation = true
	return workflow.WithActivityOptions(ctx, opts)
}

// inParallel starts one activity per span with start, at most p in flight,
// and hands each result to done as it arrives (in the workflow's
// goroutine: done needs no lock). The first failure cancels the others and
// is returned once every started activity has ended.
func inParallel(ctx workflow.Context, ss []span, p int, start func(ctx workflow.Context, s span) workflow.Future, done func(f workflow.Future) error) error {
	cctx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	sel := workflow.NewSelector(ctx)
	var first error
	next, running := 0, 0
	for next < len(ss) || running > 0 {
		for first == nil && running < max(p, 1) && next < len(ss) {
			sel.AddFuture(start(cctx, ss[next]), func(f workflow.Future) {
				running--
				if err := done(f); err != nil && first == nil {
					first = err
					cancel()
				}
			})
			next++
			running++
		}
		if running == 0 {
			break
		}
		sel.Select(ctx)
	}
	return first
}

// addProgress adds the counters of a finished range to the tracker's Done,
// which the CLI adds to the running ranges' heartbeats.
func (t *tracker) addProgress(step string, f func(p *activities.Progress)) {
	if t.p.Done == nil || t.p.Done.Step != step {
		t.p.Done = &activities.Progress{Step: step}
	}
	f(t.p.Done)
}

// parallelUpload uploads the snapshot's pieces as ranges, in parallel.
func parallelUpload(ctx workflow.Context, t *tracker, info activities.PlanInfo, in activities.UploadInput) (activities.UploadResult, error) {
	var a *activities.Activities
	var sum activities.UploadResult
	err := inParallel(ctx, spans(in.Pieces, parallelism(info)), parallelism(info),
		func(ctx workflow.Context, s span) workflow.Future {
			part := in
			part.From, part.To = s.from, s.to
			return workflow.ExecuteActivity(dataCtx(ctx, in.Site), a.Upload, part)
		},
		func(f workflow.Future) error {
			var up activities.UploadResult
			if err := f.Get(ctx, &up); err != nil {
				return err
			}
			addUpload(&sum, up)
			t.addProgress("upload", func(p *activities.Progress) {
				p.BytesDone += up.BytesRead + up.BytesUnchanged
				p.BytesNew += up.BytesNew
				p.ChunksDone += up.Chunks
				p.ChunksNew += up.ChunksNew
			})
			return nil
		})
	return sum, err
}

// addUpload adds the counts of b to a; Parent is any range's (they all
// read the same latest point).
func addUpload(a *activities.UploadResult, b activities.UploadResult) {
	a.Add(b)
	if a.Parent == "" {
		a.Parent = b.Parent
	}
}

// parallelCopy copies the staged chunk list as ranges, in parallel, on the
// destination's data queue.
func parallelCopy(ctx workflow.Context, t *tracker, info activities.PlanInfo, staged int, in activities.CopyChunksInput) (activities.CopyChunksResult, error) {
	var a *activities.Activities
	var sum activities.CopyChunksResult
	err := inParallel(ctx, spans(staged, parallelism(info)), parallelism(info),
		func(ctx workflow.Context, s span) workflow.Future {
			part := in
			part.ChunkFrom, part.ChunkTo = s.from, s.to
			return workflow.ExecuteActivity(dataCtx(ctx, in.To), a.CopyChunks, part)
		},
		func(f workflow.Future) error {
			var cp activities.CopyChunksResult
			if err := f.Get(ctx, &cp); err != nil {
				return err
			}
			sum.Chunks += cp.Chunks
			sum.ChunksCopied += cp.ChunksCopied
			sum.BytesCopied += cp.BytesCopied
			t.addProgress("copy", func(p *activities.Progress) {
				p.ChunksDone += cp.Chunks
				p.ChunksNew += cp.ChunksCopied
				p.BytesNew += cp.BytesCopied
				p.BytesDone += cp.BytesCopied
			})
			return nil
		})
	return sum, err
}
