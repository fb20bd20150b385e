package datapath

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// Small files (format v2). A regular file smaller than repo.ChunkMin is read
// whole and appended to its piece's run: the files of a piece are cut into
// chunks as one content-defined stream, and each file references slices of
// those chunks, so 20,000 files of 2 KiB cost a few dozen objects instead of
// 20,000. A run never spans pieces: a piece is the unit of resume.

// isSmall reports whether the item is a whole file that goes into the run.
func isSmall(e source.Entry, it Item) bool {
	return e.Size > 0 && e.Size < repo.ChunkMin && it.Offset == 0 && it.Length == e.Size
}

// smallRun is the run of the piece being read.
type smallRun struct {
	run   *repo.Run
	ctx   context.Context
	s     sender
	pp    *pendingPiece
	files []runFile // files whose bytes are not all cut yet, in stream order
}

// runFile is file k of the piece at stream bytes [start, end).
type runFile struct {
	k          int
	start, end int64
}

// sliceFix fills in a slice ref's chunk id once the store worker has hashed
// the chunk.
type sliceFix struct {
	ref *repo.Ref
	id  *repo.ID
}

func newSmallRun() (*smallRun, error) {
	s := &smallRun{}
	r, err := repo.NewRun(s.emit)
	if err != nil {
		return nil, err
	}
	s.run = r
	return s, nil
}

// start begins the run of piece pp.
func (s *smallRun) start(ctx context.Context, pp *pendingPiece, snd sender) {
	s.ctx, s.pp, s.s, s.files = ctx, pp, snd, s.files[:0]
}

// add appends the content of file k of the piece.
func (s *smallRun) add(k int, data []byte) error {
	start := s.run.Offset()
	s.files = append(s.files, runFile{k: k, start: start, end: start + int64(len(data))})
	return s.run.Write(data)
}

// flush cuts the rest of the piece's run.
func (s *smallRun) flush() error {
	if err := s.run.Flush(); err != nil {
		return err
	}
	if len(s.files) != 0 {
		return fmt.Errorf("run: %d files left uncut after the flush", len(s.files))
	}
	return nil
}

// emit gives each file the slices of the chunk [off, off+len(data)) that
// hold its bytes, and sends the chunk to the store workers.
func (s *smallRun) emit(data []byte, off int64) error {
	chunk, err := s.s.send(s.ctx, s.pp, data)
	if err != nil {
		return err
	}
	end := off + int64(len(data))
	for len(s.files) > 0 {
		f := s.files[0]
		from, to := max(f.start, off), min(f.end, end)
		if to > from {
			ref := &repo.Ref{Off: from - off, Size: to - from, Slice: true}
			s.pp.refs[f.k] = append(s.pp.refs[f.k], ref)
			s.pp.fix = append(s.pp.fix, sliceFix{ref: ref, id: &chunk.ID})
		}
		if f.end > end {
			break
		}
		s.files = s.files[1:]
	}
	return nil
}

// readWhole reads the small file e whole, and its SHA-256; errChanged when
// it is not what the snapshot listed, before or after.
func (u *Uploader) readWhole(ctx context.Context, e source.Entry) ([]byte, string, error) {
	f, err := u.Source.Open(ctx, e.Path)
	if err != nil {
		if drivers.IsNotFound(err) {
			return nil, "", fmt.Errorf("file %q vanished since the snapshot: %w", e.Path, errChanged)
		}
		return nil, "", fmt.Errorf("open %q: %w", e.Path, err)
	}
	defer f.Close()
	if changed, err := f.Changed(e); err != nil {
		return nil, "", err
	} else if changed {
		return nil, "", errChanged
	}
	// One byte more than the size tells a file that grew.
	data := make([]byte, e.Size+1)
	n, err := io.ReadFull(io.NewSectionReader(f, 0, e.Size+1), data)
	switch {
	case err != nil && err != io.ErrUnexpectedEOF && err != io.EOF:
		return nil, "", fmt.Errorf("read %q: %w", e.Path, err)
	case int64(n) != e.Size:
		return data[:n], "", errChanged
	}
	data = data[:n]
	if changed, err := f.Changed(e); err != nil {
		return data, "", err
	} else if changed {
		return data, "", errChanged
	}
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:]), nil
}
