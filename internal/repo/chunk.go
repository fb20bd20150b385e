package repo

import (
	"context"
	"fmt"
	"strings"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// maxChunkBody bounds a stored chunk: zstd adds a few bytes per 128 KiB block
// to incompressible data, sealing 28.
const maxChunkBody = ChunkMax + 64<<10

const chunksDir = "chunks/"

// ChunkKey returns where the chunk id is stored, relative to the repository
// root: "chunks/<first 2 hex digits>/<64 hex digits>".
func ChunkKey(id ID) string {
	s := id.String()
	return chunksDir + s[:2] + "/" + s
}

// SealChunk encodes the plaintext of chunk id for storage: zstd, then, when r
// has a key, nonce || AES-256-GCM with the 32 id bytes as additional data, so
// that a body copied under another chunk's name fails to open. id must be
// Hash(plain); it is not checked here (OpenChunk checks it on every read).
func (r *Repo) SealChunk(id ID, plain []byte) ([]byte, error) {
	if len(plain) > ChunkMax {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput,
			"seal chunk %s: %d bytes is more than ChunkMax (%d)", id, len(plain), ChunkMax)
	}
	body, err := r.seal(plain, id[:])
	if err != nil {
		return nil, fmt.Errorf("seal chunk %s: %w", id, err)
	}
	return body, nil
}

// OpenChunk decodes a stored body of chunk id and verifies that the plaintext
// hashes to id. Any failure is permanent with reason Corrupt and names the
// chunk's full id and location. body is not modified.
func (r *Repo) OpenChunk(id ID, body []byte) ([]byte, error) {
	plain, err := r.open(body, id[:], &chunkDec)
	if err == nil && Hash(plain) != id {
		err = errCorrupt{"content does not match its id (corrupted)"}
	}
	if err != nil {
		return nil, classify(fmt.Errorf("chunk %s at %s: %w", id, r.where(ChunkKey(id)), err))
	}
	return plain, nil
}

// PutChunk stores chunk id with plaintext plain and returns the stored size.
// It is idempotent: a chunk's content never changes, so storing it again only
// costs the upload.
func (r *Repo) PutChunk(ctx context.Context, id ID, plain []byte) (stored int64, err error) {
	body, err := r.SealChunk(id, plain)
	if err != nil {
		return 0, err
	}
	if err := r.PutChunkRaw(ctx, id, body); err != nil {
		return 0, err
	}
	return int64(len(body)), nil
}

// GetChunk reads chunk id and returns its verified plaintext. An absent chunk
// wraps drivers.ErrNotFound; a damaged one is permanent with reason Corrupt.
func (r *Repo) GetChunk(ctx context.Context, id ID) ([]byte, error) {
	body, err := r.GetChunkRaw(ctx, id)
	if err != nil {
		return nil, err
	}
	return r.OpenChunk(id, body)
}

// GetChunkRaw reads the stored body of chunk id as is, for copying between
// repositories that share a key without decoding. An absent chunk wraps
// drivers.ErrNotFound.
func (r *Repo) GetChunkRaw(ctx context.Context, id ID) ([]byte, error) {
	body, err := r.get(ctx, ChunkKey(id), maxChunkBody)
	if err != nil {
		return nil, classify(fmt.Errorf("get chunk %s at %s: %w", id, r.where(ChunkKey(id)), err))
	}
	return body, nil
}

// PutChunkRaw stores body, as produced by SealChunk of a repository with the
// same key, as chunk id. It is idempotent.
func (r *Repo) PutChunkRaw(ctx context.Context, id ID, body []byte) error {
	if err := r.put(ctx, ChunkKey(id), body); err != nil {
		return fmt.Errorf("put chunk %s at %s: %w", id, r.where(ChunkKey(id)), err)
	}
	return nil
}

// Chunks lists every chunk present, with its stored size, in one listing.
// Keys under chunks/ that are not chunk keys are ignored.
func (r *Repo) Chunks(ctx context.Context) (map[ID]int64, error) {
	prefix := r.key(chunksDir)
	out := make(map[ID]int64)
	err := r.st.List(ctx, prefix, func(o store.Object) error {
		rel, ok := strings.CutPrefix(o.Key, prefix)
		if !ok || len(rel) != 2+1+64 || rel[2] != '/' || rel[:2] != rel[3:5] {
			return nil
		}
		id, err := ParseID(rel[3:])
		if err != nil {
			return nil
		}
		out[id] = o.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list chunks at %s: %w", r.where(chunksDir), err)
	}
	return out, nil
}
