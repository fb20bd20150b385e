package activities

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/metrics"
	"github.com/drorch/drorch/internal/repo"
)

// ResolvePointInput names a restore point, or asks for the latest one.
type ResolvePointInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point,omitempty"` // empty: the latest valid point at Site
}

// PointSummary describes a restore point after its manifest was read and
// verified.
type PointSummary struct {
	Point    string      `json:"point"`
	Site     string      `json:"site"`
	Snapshot time.Time   `json:"snapshot"`
	Epoch    uint64      `json:"epoch"`
	Totals   repo.Totals `json:"totals"`
	// Staged is the length of the chunk list PrepareTransmit staged (the
	// point's distinct chunks), which the copy's ranges index.
	Staged int `json:"staged,omitempty"`
}

// PrepareTransmitInput names the restore point to send from a site.
type PrepareTransmitInput struct {
	Plan  string `json:"plan"`
	From  string `json:"from"`
	Op    string `json:"op"`
	Point string `json:"point,omitempty"`
}

// PrepareTransmit reads and verifies the restore point's manifest at the
// source site and stages the set of chunks it needs.
func (a *Activities) PrepareTransmit(ctx context.Context, in PrepareTransmitInput) (PointSummary, error) {
	rep := a.startReporter(ctx, "prepare")
	defer rep.close()
	res, err := a.prepareTransmit(rep.work, in)
	return res, temporalError(err)
}

func (a *Activities) prepareTransmit(ctx context.Context, in PrepareTransmitInput) (PointSummary, error) {
	r, err := a.repo(in.Plan, in.From)
	if err != nil {
		return PointSummary{}, err
	}
	p, err := a.openPointAt(ctx, r, in.Point)
	if err != nil {
		return PointSummary{}, err
	}
	ids, err := chunkList(ctx, p)
	if err != nil {
		return PointSummary{}, err
	}
	if err := r.PutStaging(ctx, in.Op, "chunks", ids); err != nil {
		return PointSummary{}, err
	}
	sum := summary(&p.Meta, in.From)
	sum.Staged = len(ids)
	return sum, nil
}

// manifest reads the named point, or the latest one, from r, with all its
// entries: for the points known to be small (a command's stream, a
// PostgreSQL base backup). Others use openPointAt.
func (a *Activities) manifest(ctx context.Context, r *repo.Repo, point string) (*repo.Manifest, error) {
	p, err := a.openPointAt(ctx, r, point)
	if err != nil {
		return nil, err
	}
	return p.Manifest(ctx)
}

// openPointAt opens the named point, or the latest one, at r, with the
// errors of manifest; its entries are read on demand, so that a point of
// any size costs the memory of its header and part list.
func (a *Activities) openPointAt(ctx context.Context, r *repo.Repo, point string) (*repo.Point, error) {
	if point == "" {
		pts, err := r.Points(ctx)
		if err != nil {
			return nil, fmt.Errorf("list restore points at %s: %w", r.Location(), err)
		}
		if len(pts) == 0 {
			return nil, drivers.Permanent(drivers.ReasonNotFound, fmt.Errorf("no restore point at %s: run a backup first: %w", r.Location(), drivers.ErrNotFound))
		}
		point = pts[len(pts)-1].ID
	} else if err := repo.ValidPointID(point); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("restore point %q: %w", point, err))
	}
	p, err := r.OpenPoint(ctx, point)
	if drivers.IsNotFound(err) {
		return nil, drivers.Permanent(drivers.ReasonNotFound, err)
	}
	return p, err
}

func summary(m *repo.Manifest, site string) PointSummary {
	return PointSummary{Point: m.Point, Site: site, Snapshot: m.Snapshot, Epoch: m.Epoch, Totals: m.Totals}
}

// chunkList returns the distinct chunks a point names, its entry parts
// included (the destination needs them as much as the data), sorted. The
// entries are streamed: memory grows with the distinct chunks only.
func chunkList(ctx context.Context, p *repo.Point) ([]repo.ID, error) {
	needs, err := p.Needs(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]repo.ID, 0, len(needs))
	seen := make(map[repo.ID]struct{}, len(needs))
	for _, n := range needs {
		if _, ok := seen[n.ID]; !ok { // a part may hold the same bytes as a data chunk
			seen[n.ID] = struct{}{}
			ids = append(ids, n.ID)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return bytes.Compare(ids[i][:], ids[j][:]) < 0 })
	return ids, nil
}

// CheckDestinationInput names the site a restore point is sent to.
type CheckDestinationInput struct {
	Plan  string `json:"plan"`
	To    string `json:"to"`
	Point string `json:"point"`
	Epoch uint64 `json:"epoch"` // the point's epoch
}

// CheckDestinationResult says whether the destination already holds the point.
type CheckDestinationResult struct {
	Repository string `json:"repository"`
	Epoch      uint64 `json:"epoch"`
	HasPoint   bool   `json:"hasPoint"`
}

// CheckDestination prepares the destination's repository and refuses a
// restore point from an older epoch than the destination's own: after a
// failover the old active site may not overwrite the new one.
func (a *Activities) CheckDestination(ctx context.Context, in CheckDestinationInput) (CheckDestinationResult, error) {
	res, err := a.checkDestination(ctx, in)
	return res, temporalError(err)
}

func (a *Activities) checkDestination(ctx context.Context, in CheckDestinationInput) (CheckDestinationResult, error) {
	prep, err := a.prepareSite(ctx, PrepareSiteInput{Plan: in.Plan, Site: in.To})
	if err != nil {
		return CheckDestinationResult{}, err
	}
	r, err := a.repo(in.Plan, in.To)
	if err != nil {
		return CheckDestinationResult{}, err
	}
	if err := checkEpoch(ctx, r, in.Epoch, "transmit "+in.Point); err != nil {
		return CheckDestinationResult{}, err
	}
	has, err := r.HasManifest(ctx, in.Point)
	if err != nil {
		return CheckDestinationResult{}, err
	}
	return CheckDestinationResult{Repository: prep.Repository, Epoch: prep.Epoch, HasPoint: has}, nil
}

// CopyChunksInput names the staged chunk set to copy between sites.
type CopyChunksInput struct {
	Plan  string `json:"plan"`
	From  string `json:"from"`
	To    string `json:"to"`
	Op    string `json:"op"`
	Bytes int64  `json:"bytes"` // for progress
	// ChunkFrom and ChunkTo bound the part of the staged chunk list this
	// activity copies, [ChunkFrom, ChunkTo); ChunkTo 0 is the whole list.
	// Several activities copy one point's ranges in parallel
	// (docs/scaleout.md).
	ChunkFrom int `json:"chunkFrom,omitempty"`
	ChunkTo   int `json:"chunkTo,omitempty"`
}

// CopyChunksResult counts what was copied.
type CopyChunksResult struct {
	Chunks       int64 `json:"chunks"`       // chunks the point needs
	ChunksCopied int64 `json:"chunksCopied"` // chunks the destination lacked
	BytesCopied  int64 `json:"bytesCopied"`  // stored bytes moved
}

const copyWorkers = 16

// CopyChunks copies, from the source site's repository to the destination's,
// every chunk of the point that the destination lacks. Each chunk is verified
// before it is written (its GCM tag with a key, else decompressed and
// hashed: repo.VerifyChunkBody), and written with a checksum the store
// checks. A retried attempt lists the
// destination again, so it never re-sends what arrived.
func (a *Activities) CopyChunks(ctx context.Context, in CopyChunksInput) (CopyChunksResult, error) {
	started := time.Now()
	res, err := a.copyChunks(ctx, in)
	if err == nil {
		metrics.TransmitBytes(in.Plan, in.To, res.BytesCopied)
		metrics.OperationDone("transmit", time.Since(started))
	}
	return res, temporalError(err)
}

func (a *Activities) copyChunks(ctx context.Context, in CopyChunksInput) (CopyChunksResult, error) {
	src, err := a.repo(in.Plan, in.From)
	if err != nil {
		return CopyChunksResult{}, err
	}
	dst, err := a.repo(in.Plan, in.To)
	if err != nil {
		return CopyChunksResult{}, err
	}
	// Heartbeats begin before the listing, which takes minutes in a
	// repository of millions of chunks (its objects count as progress).
	rep := a.startReporter(ctx, "copy")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	var ids []repo.ID
	if err := src.GetStaging(ctx, in.Op, "chunks", &ids); err != nil {
		return CopyChunksResult{}, fmt.Errorf("read the chunk list of transmit %s: %w", in.Op, err)
	}
	ids = in.chunkRange(ids)
	have, err := dst.UsableChunks(ctx) // damaged chunks are copied again
	if err != nil {
		return CopyChunksResult{}, fmt.Errorf("list chunks at %s: %w", dst.Location(), err)
	}
	var missing []repo.ID
	for _, id := range ids {
		if _, ok := have[id]; !ok {
			missing = append(missing, id)
		}
	}
	res := CopyChunksResult{Chunks: int64(len(ids))}
	rep.Update(func(p *Progress) {
		p.ChunksTotal, p.ChunksDone, p.BytesTotal = int64(len(ids)), int64(len(ids)-len(missing)), in.Bytes
	})
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(copyWorkers)
	for _, id := range missing {
		g.Go(func() error {
			n, err := copyChunk(gctx, src, dst, id)
			if err != nil {
				return err
			}
			mu.Lock()
			res.ChunksCopied++
			res.BytesCopied += n
			mu.Unlock()
			rep.Update(func(p *Progress) { p.ChunksDone++; p.ChunksNew++; p.BytesNew += n; p.BytesDone += n })
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return CopyChunksResult{}, err
	}
	return res, nil
}

func copyChunk(ctx context.Context, src, dst *repo.Repo, id repo.ID) (int64, error) {
	body, err := src.GetChunkRaw(ctx, id)
	if err != nil {
		if drivers.IsNotFound(err) {
			return 0, drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("chunk %s is missing at the source %s: %w", id, src.Location(), err))
		}
		return 0, err
	}
	if err := src.VerifyChunkBody(id, body); err != nil {
		return 0, err
	}
	if err := dst.PutChunkRaw(ctx, id, body); err != nil {
		return 0, fmt.Errorf("copy chunk %s to %s: %w", id, dst.Location(), err)
	}
	return int64(len(body)), nil
}

// CommitTransmitInput names the point to make valid at the destination.
type CommitTransmitInput struct {
	Plan  string `json:"plan"`
	From  string `json:"from"`
	To    string `json:"to"`
	Op    string `json:"op"`
	Point string `json:"point"`
	Epoch uint64 `json:"epoch"`
}

// CommitTransmit checks that every chunk of the point is at the destination
// and writes the manifest there last, by the commit rule of
// repo.CommitPoint: only then is the point valid at the destination, and
// never if the destination's epoch passes the point's meanwhile. A point
// that is not valid at the source (abandoned there) is never sent.
func (a *Activities) CommitTransmit(ctx context.Context, in CommitTransmitInput) (PointSummary, error) {
	rep := a.startReporter(ctx, "commit")
	defer rep.close()
	res, err := a.commitTransmit(rep.work, in)
	if err == nil {
		metrics.PointCommitted(in.Plan, in.To, res.Snapshot)
	}
	return res, temporalError(err)
}

func (a *Activities) commitTransmit(ctx context.Context, in CommitTransmitInput) (PointSummary, error) {
	src, err := a.repo(in.Plan, in.From)
	if err != nil {
		return PointSummary{}, err
	}
	dst, err := a.repo(in.Plan, in.To)
	if err != nil {
		return PointSummary{}, err
	}
	if p, err := dst.OpenPoint(ctx, in.Point); err == nil {
		return summary(&p.Meta, in.To), nil
	} else if !drivers.IsNotFound(err) {
		return PointSummary{}, err
	}
	p, err := src.OpenPoint(ctx, in.Point)
	if err != nil {
		return PointSummary{}, fmt.Errorf("transmit %s from %s: %w", in.Point, in.From, err)
	}
	if p.Meta.Epoch != in.Epoch {
		return PointSummary{}, drivers.Permanentf(drivers.ReasonCorrupt, "commit transmit %s: the manifest at %s says epoch %d, the transmission was prepared with %d", in.Point, src.Location(), p.Meta.Epoch, in.Epoch)
	}
	// The needs are read before the reservation: reading a large point's
	// entries takes a while, and only the listing must follow it.
	needs, err := p.Needs(ctx)
	if err != nil {
		return PointSummary{}, fmt.Errorf("transmit %s from %s: %w", in.Point, in.From, err)
	}
	err = dst.CommitCopy(ctx, p, func(ctx context.Context) error {
		have, err := dst.Chunks(ctx)
		if err != nil {
			return err
		}
		return dst.CheckPresent("commit transmit "+in.Point, needs, have)
	})
	if err != nil {
		return PointSummary{}, err
	}
	return summary(&p.Meta, in.To), nil
}

// CleanupInput names an operation whose staging is removed at a site.
type CleanupInput struct {
	Plan string `json:"plan"`
	Site string `json:"site"`
	Op   string `json:"op"`
}

// Cleanup removes the staging objects of an operation.
func (a *Activities) Cleanup(ctx context.Context, in CleanupInput) error {
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return temporalError(err)
	}
	return temporalError(r.DeleteStaging(ctx, in.Op))
}
