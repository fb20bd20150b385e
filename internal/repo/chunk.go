package repo

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

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
	return r.openChunk(id, body, false)
}

// openChunk is OpenChunk; own says body is the caller's to reuse for the
// plaintext (openBody).
func (r *Repo) openChunk(id ID, body []byte, own bool) ([]byte, error) {
	plain, err := r.openBody(body, id[:], &chunkDec, own)
	if err == nil && Hash(plain) != id {
		err = errCorrupt{"content does not match its id (corrupted)"}
	}
	if err != nil {
		return nil, classify(fmt.Errorf("chunk %s at %s: %w", id, r.where(ChunkKey(id)), err))
	}
	return plain, nil
}

// VerifyChunkBody checks a stored body of chunk id as cheaply as is sound,
// for copying it unchanged (transmit): with a key, that its AES-256-GCM tag,
// computed over the id as additional data, verifies, which only a holder of
// the key sealing this id can produce and which any change to the body
// breaks; the plaintext is not decompressed nor hashed (docs/format.md,
// "Verifying a copy"). Without a key there is no tag, and the body is opened
// and hashed in full, as OpenChunk. Errors are OpenChunk's.
func (r *Repo) VerifyChunkBody(id ID, body []byte) error {
	if r.aead == nil {
		_, err := r.OpenChunk(id, body)
		return err
	}
	var err error
	if len(body) < nonceSize+r.aead.Overhead() {
		err = errCorrupt{fmt.Sprintf("%d bytes is too short to be sealed (corrupted, or written without a key)", len(body))}
	} else {
		scratch := getScratch(len(body))
		_, oerr := r.aead.Open((*scratch)[:0], body[:nonceSize], body[nonceSize:], id[:])
		scratchPool.Put(scratch)
		if oerr != nil {
			err = errCorrupt{"cannot be decrypted: wrong key, written without a key, stored under another name, or corrupted"}
		}
	}
	if err != nil {
		return classify(fmt.Errorf("chunk %s at %s: %w", id, r.where(ChunkKey(id)), err))
	}
	return nil
}

// scratchPool holds buffers for plaintext that is checked and dropped.
var scratchPool sync.Pool

func getScratch(n int) *[]byte {
	if b, ok := scratchPool.Get().(*[]byte); ok && cap(*b) >= n {
		return b
	}
	b := make([]byte, 0, max(n, ChunkMax+64<<10))
	return &b
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
	return r.openChunk(id, body, true) // body was read for this call alone
}

// GetChunkRaw reads the stored body of chunk id as is, for copying between
// repositories that share a key without decoding. An absent chunk wraps
// drivers.ErrNotFound.
func (r *Repo) GetChunkRaw(ctx context.Context, id ID) ([]byte, error) {
	body, err := r.getSized(ctx, ChunkKey(id), maxChunkBody)
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
	if r.damaged.has(id) {
		// Written anew from verified data: the damage is repaired.
		if err := r.ClearDamaged(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// Chunks lists every chunk present, with its stored size, in one listing.
// Keys under chunks/ that are not chunk keys are ignored.
func (r *Repo) Chunks(ctx context.Context) (map[ID]int64, error) {
	prefix := r.key(chunksDir)
	out := make(map[ID]int64)
	err := r.list(ctx, prefix, func(o store.Object) error {
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

// Stored sizes. A chunk's object is zstd(plain), then sealed (nonce and GCM
// tag, 28 bytes) when the repository has a key; the manifest records the
// plaintext size only, and compression can shrink a chunk to almost
// nothing (a run of zeros), so only bounds can be checked without reading:
//   - at least 6 + 4 bytes per started 128 KiB (+ 28 sealed): a zstd frame
//     has a 4-byte magic number and a frame header of 2 bytes or more, and
//     holds blocks of at most 128 KiB, each with a 3-byte header and at least
//     one byte (a run-length block); an empty or cut-short object is damaged;
//   - at most zstdBound(plain) (+ 28 sealed): zstd's worst case for
//     incompressible data, so an object larger than that is not this chunk.
// A truncated object within the bounds is found only by reading it
// (OpenChunk), as `drorch check --read-data` does.

// minFrame is the least a zstd frame of a non-empty chunk takes: magic (4),
// frame header (2), one block header (3) and one byte of block content.
const minFrame = 10

// zstdMin is the least zstd can take for n > 0 bytes: the frame and, per
// started block of 128 KiB, a block header and one byte.
func zstdMin(n int64) int64 {
	const block = 128 << 10
	return minFrame - 4 + 4*((n+block-1)/block)
}

// zstdBound is ZSTD_compressBound: the most zstd may take for n bytes.
func zstdBound(n int64) int64 {
	const block = 128 << 10
	b := n + n>>8
	if n < block {
		b += (block - n) >> 11
	}
	return b + 64 // frame header, checksum and a margin for the encoder's framing
}

// StoredBounds returns the least and the most bytes the stored object of a
// chunk of plain plaintext bytes may take in r; plain <= 0 gives the bounds
// of any chunk.
func (r *Repo) StoredBounds(plain int64) (lo, hi int64) {
	var seal int64
	if r.aead != nil {
		seal = int64(nonceSize + r.aead.Overhead())
	}
	if plain <= 0 {
		return minFrame + seal, maxChunkBody
	}
	return zstdMin(plain) + seal, min(zstdBound(plain)+seal, maxChunkBody)
}

// CheckStoredSize reports, as a permanent Corrupt error naming the chunk,
// a stored object whose size cannot be that of chunk id of plain plaintext
// bytes (plain <= 0: of any chunk).
func (r *Repo) CheckStoredSize(id ID, plain, stored int64) error {
	lo, hi := r.StoredBounds(plain)
	if stored >= lo && stored <= hi {
		return nil
	}
	what := fmt.Sprintf("a chunk of %d bytes stores in %d to %d", plain, lo, hi)
	if plain <= 0 {
		what = fmt.Sprintf("a chunk stores in %d to %d", lo, hi)
	}
	return drivers.Permanentf(drivers.ReasonCorrupt, "chunk %s at %s is damaged: its object holds %d bytes, but %s (truncated, emptied or replaced)",
		id, r.where(ChunkKey(id)), stored, what)
}

// ChunkNeed is a chunk a manifest names, with its plaintext size.
type ChunkNeed struct {
	ID   ID
	Size int64  // 0: unknown (the manifest names only slices of it)
	Path string // the first file that names it, for messages
}

// Needs returns the distinct chunks m names, in the order they first appear.
func Needs(m *Manifest) []ChunkNeed {
	var set needSet
	for i := range m.Entries {
		set.add(&m.Entries[i])
	}
	return set.out
}

// needSet gathers the distinct data chunks of entries, in the order they
// first appear, each with its size once an entry tells it.
type needSet struct {
	idx map[ID]int
	out []ChunkNeed
}

func (s *needSet) add(e *Entry) {
	if s.idx == nil {
		s.idx = make(map[ID]int)
	}
	for _, ref := range e.Chunks {
		if ref.Hole {
			continue
		}
		size := ref.Size
		if ref.Slice {
			size = 0 // a slice does not tell the chunk's size
		}
		if i, ok := s.idx[ref.ID]; ok {
			if s.out[i].Size == 0 {
				s.out[i].Size = size
			}
			continue
		}
		s.idx[ref.ID] = len(s.out)
		s.out = append(s.out, ChunkNeed{ID: ref.ID, Size: size, Path: e.Path})
	}
}

// ReasonMissingChunk is the permanent-error reason of a chunk a restore
// point needs that the repository does not hold.
const ReasonMissingChunk = "MissingChunk"

// CheckPresent checks, against one listing of the repository (present, as
// Chunks returns it), that every chunk of needs is there with a plausible
// stored size. It returns nil, or a permanent error (ReasonMissingChunk or
// Corrupt) that names the first bad chunk, the file that needs it, how many
// are bad, and what to do: what is for messages ("commit 2026-…").
func (r *Repo) CheckPresent(what string, needs []ChunkNeed, present map[ID]int64) error {
	var first error
	var missing, damaged int
	for _, n := range needs {
		stored, ok := present[n.ID]
		var err error
		switch {
		case !ok:
			missing++
			err = drivers.Permanentf(ReasonMissingChunk, "%s: chunk %s of %q is not in %s", what, n.ID, n.Path, r.Location())
		default:
			if serr := r.CheckStoredSize(n.ID, n.Size, stored); serr != nil {
				damaged++
				err = drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("%s: %q needs it: %w", what, n.Path, serr))
			}
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		return nil
	}
	reason, _ := drivers.IsPermanent(first)
	return drivers.Permanentf(reason, "%v (%d missing and %d damaged of %d chunks): the objects were deleted or damaged after they were written "+
		"(a lifecycle rule, a retention or a person deleting under %s, or failing storage); no retry brings them back. "+
		"Run `drorch check --plan %s` to list the damage; a new backup of the same data uploads them again",
		first, missing, damaged, len(needs), r.Location(), r.plan)
}

// Damaged chunks. `drorch check` records each chunk it finds missing or
// damaged as staging/damaged/<id>.json.zst (a Damage). UsableChunks leaves
// them out of the chunks a backup or transmit takes as present, so the next
// one that has the data writes the chunk again, and that write removes the
// record (PutChunkRaw).

// damagedOp is the staging operation under which damage is recorded.
const damagedOp = "damaged"

// Damage is the record of one damaged or missing chunk.
type Damage struct {
	Chunk   ID        `json:"chunk"`
	Problem string    `json:"problem"`
	Found   time.Time `json:"found"`
	By      string    `json:"by,omitempty"` // what found it, e.g. the check's workflow id
}

// MarkDamaged records d.
func (r *Repo) MarkDamaged(ctx context.Context, d Damage) error {
	return r.PutStaging(ctx, damagedOp, d.Chunk.String(), d)
}

// ClearDamaged removes the record of chunk id, if any.
func (r *Repo) ClearDamaged(ctx context.Context, id ID) error {
	key := stagingKey(damagedOp, id.String())
	if err := r.st.Delete(ctx, r.key(key)); err != nil {
		return fmt.Errorf("clear the damage record of chunk %s at %s: %w", id, r.where(key), err)
	}
	r.damaged.remove(id)
	return nil
}

// Damaged lists the chunks recorded as damaged.
func (r *Repo) Damaged(ctx context.Context) (map[ID]struct{}, error) {
	names, err := r.ListStaging(ctx, damagedOp)
	if err != nil {
		return nil, err
	}
	out := make(map[ID]struct{}, len(names))
	for _, n := range names {
		if id, err := ParseID(n); err == nil {
			out[id] = struct{}{}
		}
	}
	return out, nil
}

// UsableChunks is Chunks without the chunks a writer must not trust: those
// recorded as damaged, and those whose object size no chunk can have (an
// empty or cut-short object). A backup or transmit that needs one of them
// writes it again. r remembers the damaged ones, so that writing one clears
// its record.
func (r *Repo) UsableChunks(ctx context.Context) (map[ID]int64, error) {
	present, err := r.Chunks(ctx)
	if err != nil {
		return nil, err
	}
	damaged, err := r.Damaged(ctx)
	if err != nil {
		return nil, err
	}
	for id, size := range present {
		if r.CheckStoredSize(id, 0, size) != nil {
			delete(present, id)
		}
	}
	for id := range damaged {
		delete(present, id)
	}
	r.damaged.set(damaged)
	return present, nil
}

// damagedSet is the set of damaged chunks a Repo knows of.
type damagedSet struct {
	mu  sync.Mutex
	ids map[ID]struct{}
}

func (d *damagedSet) set(ids map[ID]struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ids = ids
}

func (d *damagedSet) has(id ID) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.ids[id]
	return ok
}

func (d *damagedSet) remove(id ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.ids, id)
}
