package datapath

import (
	"context"
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/internal/repo"
)

// StreamFetchers bounds the chunks fetched ahead of the one being written.
const StreamFetchers = 8

// WriteStream writes the chunks of e to w in order, fetching up to
// StreamFetchers ahead; each is verified against its id by GetChunk. A hole
// is written as zeros. w is a restore command's stdin (an exec source).
func WriteStream(ctx context.Context, r *repo.Repo, e *repo.Entry, w io.Writer, rep Reporter) (RestoreStats, error) {
	var res RestoreStats
	type fetched struct {
		ref  repo.Ref
		data []byte
		err  error
		done chan struct{}
	}
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan *fetched, StreamFetchers)
	sem := make(chan struct{}, StreamFetchers)
	g.Go(func() error {
		defer close(queue)
		for _, ref := range e.Chunks {
			f := &fetched{ref: ref, done: make(chan struct{})}
			select {
			case queue <- f:
			case <-gctx.Done():
				return gctx.Err()
			}
			if ref.Hole {
				close(f.done)
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-gctx.Done():
				return gctx.Err()
			}
			go func() {
				defer func() { <-sem }()
				f.data, f.err = r.GetChunk(gctx, ref.ID)
				close(f.done)
			}()
		}
		return nil
	})
	g.Go(func() error {
		zeros := make([]byte, 1<<20)
		for f := range queue {
			select {
			case <-f.done:
			case <-gctx.Done():
				return gctx.Err()
			}
			if f.err != nil {
				return fmt.Errorf("restore chunk %s: %w", f.ref.ID, f.err)
			}
			if f.ref.Hole {
				for left := f.ref.Size; left > 0; {
					n := min(left, int64(len(zeros)))
					if _, err := w.Write(zeros[:n]); err != nil {
						return fmt.Errorf("write to the restore command: %w", err)
					}
					left -= n
				}
			} else {
				data, err := f.ref.Bytes(f.data)
				if err != nil {
					return drivers.Permanent(drivers.ReasonCorrupt, err)
				}
				if _, err := w.Write(data); err != nil {
					return fmt.Errorf("write to the restore command: %w", err)
				}
				res.Chunks++
				res.BytesWritten += f.ref.Size
			}
			done, chunks := res.BytesWritten, res.Chunks
			rep.Update(func(p *Progress) { p.BytesDone, p.ChunksDone = done, chunks })
		}
		return nil
	})
	err := g.Wait()
	// Let the fetches still running end before their results are dropped.
	for range StreamFetchers {
		sem <- struct{}{}
	}
	return res, err
}
