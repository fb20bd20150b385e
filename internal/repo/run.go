package repo

import (
	"bytes"
	"errors"
	"io"
)

// Run cuts a stream of small files, appended one after another, into
// content-defined chunks (format v2): the same chunker as for one file, over
// their concatenation, so that a run of small files costs one object per
// ~ChunkAvg bytes instead of one per file, and an unchanged stretch of the
// run cuts the same chunks again. The cut of a chunk depends only on the bytes
// from its start (at most ChunkMax of them), so cutting whenever ChunkMax
// bytes are buffered gives the chunks of the whole stream chunked at once,
// with at most ChunkMax plus one Write buffered.
type Run struct {
	ch   *Chunker
	buf  []byte // bytes not yet cut
	off  int64  // stream offset of buf[0]
	emit func(data []byte, off int64) error
}

// NewRun returns a run that calls emit with each chunk cut, in stream order,
// and its offset in the stream; data is valid only during the call.
func NewRun(emit func(data []byte, off int64) error) (*Run, error) {
	ch, err := NewChunker(nil, nil)
	if err != nil {
		return nil, err
	}
	return &Run{ch: ch, emit: emit}, nil
}

// Offset is the stream offset the next Write starts at.
func (r *Run) Offset() int64 { return r.off + int64(len(r.buf)) }

// Write appends p to the stream and cuts the chunks it completes.
func (r *Run) Write(p []byte) error {
	r.buf = append(r.buf, p...)
	return r.cut(ChunkMax)
}

// Flush cuts everything buffered; the stream then starts again at offset 0.
func (r *Run) Flush() error {
	if err := r.cut(1); err != nil {
		return err
	}
	r.buf, r.off = r.buf[:0], 0
	return nil
}

// cut emits chunks off the front of the buffer while it holds at least min
// bytes.
func (r *Run) cut(min int) error {
	pos := 0
	for len(r.buf)-pos >= min {
		r.ch.Reset(bytes.NewReader(r.buf[pos:]))
		data, err := r.ch.Next()
		if err != nil && err != io.EOF {
			return err
		}
		if len(data) == 0 {
			return errors.New("run: the chunker cut an empty chunk")
		}
		if err := r.emit(r.buf[pos:pos+len(data)], r.off+int64(pos)); err != nil {
			return err
		}
		pos += len(data)
	}
	if pos > 0 {
		n := copy(r.buf, r.buf[pos:])
		r.buf = r.buf[:n]
		r.off += int64(pos)
	}
	return nil
}
