package datapath

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// Stream reads out to its end through the chunker, uploads the chunks the
// repository lacks with UploadWorkers workers, and records the stream in
// staging as op's pieces: a root directory and one file, name, of the
// stream's bytes, piece by piece (each SegmentSize bytes of it), the first
// piece again at the end with the stream's size. Memory stays bounded: the
// chunks in flight and the references of one piece. A Closer out is closed
// when the upload fails, so that a read blocked on it returns.
func (u *Uploader) Stream(ctx context.Context, op string, snap time.Time, name string, out io.Reader) (pieces int, size int64, err error) {
	root := StagedEntry{Path: []byte("."), Type: source.TypeDir, Mode: 0o700, ModTime: snap}
	file := StagedEntry{Path: []byte(name), Type: source.TypeFile, Mode: 0o600, ModTime: snap}
	newPiece := func(i int, off int64) *pendingPiece {
		pp := &pendingPiece{index: i}
		if i == 0 {
			pp.out.Items = append(pp.out.Items, UploadedItem{Index: 0, Entry: root})
			pp.refs = append(pp.refs, nil)
		}
		pp.out.Items = append(pp.out.Items, UploadedItem{Index: 1, Entry: file, Offset: off})
		pp.refs = append(pp.refs, nil)
		return pp
	}
	read := make(chan *pendingPiece, 1)
	var first *pendingPiece
	err = u.pipeline(ctx, func(ctx context.Context, s sender) error {
		defer close(read)
		// A failure elsewhere closes the pipe: a read blocked on a
		// command that writes nothing more returns.
		defer context.AfterFunc(ctx, func() {
			if c, ok := out.(io.Closer); ok {
				c.Close()
			}
		})()
		ch, err := repo.NewChunker(out, nil)
		if err != nil {
			return err
		}
		pp, inPiece := newPiece(0, 0), int64(0)
		for {
			data, err := ch.Next()
			if len(data) > 0 {
				ref, serr := s.send(ctx, pp, data)
				if serr != nil {
					return serr
				}
				last := len(pp.refs) - 1
				pp.refs[last] = append(pp.refs[last], ref)
				n := int64(len(data))
				size += n
				inPiece += n
				u.count(pp, func(r *UploadResult) { r.BytesRead += n })
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read the backup command's stdout: %w", err)
			}
			if inPiece >= SegmentSize {
				select {
				case read <- pp:
				case <-ctx.Done():
					return ctx.Err()
				}
				pp, inPiece = newPiece(pp.index+1, size), 0
			}
		}
		select {
		case read <- pp:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, func(ctx context.Context) error {
		for pp := range read {
			if err := pp.settle(ctx); err != nil {
				return err
			}
			if pp.index == 0 {
				first = pp // written at the end, with the stream's size
			} else if err := u.repo.PutStaging(ctx, op, UploadedName(pp.index), pp.out); err != nil {
				return err
			}
			pieces = pp.index + 1
		}
		return nil
	})
	if err != nil {
		return 0, size, err
	}
	if first != nil {
		first.out.Items[1].Entry.Size = size
		if err := u.repo.PutStaging(ctx, op, UploadedName(0), first.out); err != nil {
			return 0, size, err
		}
	}
	return pieces, size, nil
}

// Entries records a stream of entries, such as the members of a tar
// stream, as op's pieces in staging: produce runs in a goroutine of its own
// and adds the entries in order to w, the content of each file read from a
// reader; every chunk the repository lacks is uploaded by UploadWorkers
// workers, and each piece is written to staging once its chunks are stored.
// It returns how many pieces were recorded.
func (u *Uploader) Entries(ctx context.Context, op string, produce func(ctx context.Context, w *EntryWriter) error) (pieces int, err error) {
	ch, err := repo.NewChunker(nil, nil)
	if err != nil {
		return 0, err
	}
	w := &EntryWriter{u: u, op: op, ch: ch}
	err = u.pipeline(ctx, func(ctx context.Context, s sender) error {
		w.s = s
		if err := produce(ctx, w); err != nil {
			return err
		}
		return w.flush(ctx)
	}, nil)
	return w.index, err
}

// EntryWriter collects the entries given to it by an Entries producer into
// pieces.
type EntryWriter struct {
	u     *Uploader
	op    string
	ch    *repo.Chunker
	s     sender
	index int
	next  int64 // entry index
	cur   *pendingPiece
	bytes int64
}

func (p *EntryWriter) piece() *pendingPiece {
	if p.cur == nil {
		p.cur = &pendingPiece{index: p.index}
	}
	return p.cur
}

// Add appends the entry e; content, for a regular file, is read to its end
// as the file's bytes. The piece is written out when it is full.
func (p *EntryWriter) Add(ctx context.Context, e StagedEntry, content io.Reader) error {
	var refs []*repo.Ref
	if content != nil {
		var err error
		if refs, err = p.file(ctx, content); err != nil {
			return fmt.Errorf("read %q: %w", e.Path, err)
		}
	}
	pp := p.piece()
	pp.out.Items = append(pp.out.Items, UploadedItem{Index: p.next, Entry: e})
	pp.refs = append(pp.refs, refs)
	p.next++
	if len(pp.out.Items) >= PieceMaxItems || p.bytes >= PieceMaxBytes {
		return p.flush(ctx)
	}
	return nil
}

// file chunks one file's content into upload jobs of the current piece.
func (p *EntryWriter) file(ctx context.Context, rd io.Reader) ([]*repo.Ref, error) {
	pp := p.piece()
	return p.s.chunks(ctx, p.ch, rd, pp, func(n int64) {
		p.u.count(pp, func(r *UploadResult) { r.BytesRead += n })
		p.bytes += n
	})
}

// flush waits for the current piece's chunks and records it in staging.
func (p *EntryWriter) flush(ctx context.Context) error {
	pp := p.cur
	if pp == nil || len(pp.out.Items) == 0 {
		return nil
	}
	if err := pp.settle(ctx); err != nil {
		return err
	}
	if err := p.u.repo.PutStaging(ctx, p.op, UploadedName(pp.index), pp.out); err != nil {
		return err
	}
	p.index++
	p.cur, p.bytes = nil, 0
	return nil
}
