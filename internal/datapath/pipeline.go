package datapath

import (
	"bytes"
	"context"
	"errors"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/internal/repo"
)

// The one way every upload (a snapshot's files, a command's stream, a tar
// stream's entries) moves chunks: a producer sends each chunk of a piece to
// the store workers (sender.send, sender.chunks), and the piece is recorded
// once settle has waited for its chunks and folded their references in.

// pipeline runs produce, which sends chunks through the sender it is given,
// beside the store workers and, when not nil, record; it returns the first
// error once every goroutine has ended. The sender is closed when produce
// returns.
func (u *Uploader) pipeline(ctx context.Context, produce func(ctx context.Context, s sender) error, record func(ctx context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	jobs := u.storeWorkers(gctx, g)
	g.Go(func() error {
		defer close(jobs)
		return produce(gctx, sender{jobs: jobs})
	})
	if record != nil {
		g.Go(func() error { return record(gctx) })
	}
	err := g.Wait()
	// Release what no worker took, so no waiter is left behind.
	for j := range jobs {
		j.piece.done.Done()
	}
	return err
}

// sender hands chunks to the store workers of a pipeline.
type sender struct {
	jobs chan<- chunkJob
}

// send hands a copy of data (a chunker reuses its buffer) to the store
// workers as a chunk of pp. The returned reference is filled in once the
// chunk is hashed: read it after pp.settle.
func (s sender) send(ctx context.Context, pp *pendingPiece, data []byte) (*repo.Ref, error) {
	ref := &repo.Ref{}
	pp.done.Add(1)
	select {
	case s.jobs <- chunkJob{data: bytes.Clone(data), ref: ref, piece: pp}:
		return ref, nil
	case <-ctx.Done():
		pp.done.Done()
		return nil, ctx.Err()
	}
}

// chunks cuts rd to its end with ch and sends each chunk as one of pp,
// calling sent with its size; it returns the chunks' references.
func (s sender) chunks(ctx context.Context, ch *repo.Chunker, rd io.Reader, pp *pendingPiece, sent func(n int64)) ([]*repo.Ref, error) {
	ch.Reset(rd)
	var refs []*repo.Ref
	for {
		data, err := ch.Next()
		if len(data) > 0 {
			ref, serr := s.send(ctx, pp, data)
			if serr != nil {
				return nil, serr
			}
			refs = append(refs, ref)
			sent(int64(len(data)))
		}
		if errors.Is(err, io.EOF) {
			return refs, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// settle waits until every chunk of pp is stored, then folds the chunks'
// references (and the chunk ids of slices) into its record.
func (pp *pendingPiece) settle(ctx context.Context) error {
	waited := make(chan struct{})
	go func() { pp.done.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
		return ctx.Err()
	}
	for _, f := range pp.fix {
		f.ref.ID = *f.id
	}
	for k, refs := range pp.refs {
		for _, r := range refs {
			pp.out.Items[k].Refs = append(pp.out.Items[k].Refs, *r)
		}
	}
	return nil
}
