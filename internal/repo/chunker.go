package repo

import (
	"errors"
	"io"

	chunkers "github.com/PlakarKorp/go-cdc-chunkers"
	// Imported for its registration of ChunkAlgorithm with chunkers.
	_ "github.com/PlakarKorp/go-cdc-chunkers/chunkers/fastcdc"
)

// Chunking parameters of format v1. Changing any of them changes every chunk
// boundary, so deduplication against existing repositories would be lost: they
// are part of the format, recorded in each manifest as ChunkerSpec.
const (
	ChunkAlgorithm = "fastcdc-v1.0.0" // as registered in go-cdc-chunkers
	ChunkMin       = 256 << 10
	ChunkAvg       = 1 << 20
	ChunkMax       = 4 << 20
)

// ChunkerSpec is the Manifest.Chunker value of format v1:
// ChunkAlgorithm/ChunkMin/ChunkAvg/ChunkMax.
const ChunkerSpec = "fastcdc-v1.0.0/262144/1048576/4194304"

// Chunker cuts a stream into content-defined chunks, so that an insertion or
// deletion moves only the boundaries near it and the other chunks stay shared.
type Chunker struct {
	c   *chunkers.Chunker
	eof bool
}

// NewChunker returns a chunker over r with the v1 parameters. buf is the scan
// buffer; nil allocates one, otherwise it must hold at least ChunkMax bytes and
// is owned by the chunker until it is dropped or Reset onto another stream.
func NewChunker(r io.Reader, buf []byte) (*Chunker, error) {
	opts := &chunkers.ChunkerOpts{MinSize: ChunkMin, NormalSize: ChunkAvg, MaxSize: ChunkMax}
	var (
		c   *chunkers.Chunker
		err error
	)
	if buf == nil {
		c, err = chunkers.NewChunker(ChunkAlgorithm, r, opts)
	} else {
		if len(buf) < ChunkMax {
			return nil, errors.New("chunker buffer must hold at least ChunkMax bytes")
		}
		c, err = chunkers.NewChunkerBuffer(ChunkAlgorithm, r, opts, buf)
	}
	if err != nil {
		return nil, err
	}
	return &Chunker{c: c}, nil
}

// Next returns the next chunk, which stays valid until the following call to
// Next or Reset, and io.EOF after the last one. Empty input yields no chunk.
// A read error from the stream is returned as is.
func (c *Chunker) Next() ([]byte, error) {
	if c.eof {
		return nil, io.EOF
	}
	// The library returns the last chunk together with io.EOF (or an empty
	// first chunk with io.EOF); callers get one chunk per call instead.
	data, err := c.c.Next()
	switch {
	case err == io.EOF:
		c.eof = true
		if len(data) == 0 {
			return nil, io.EOF
		}
		return data, nil
	case err != nil:
		return nil, err
	}
	return data, nil
}

// Reset makes c chunk r from its start, reusing the scan buffer.
func (c *Chunker) Reset(r io.Reader) {
	c.c.Reset(r)
	c.eof = false
}
