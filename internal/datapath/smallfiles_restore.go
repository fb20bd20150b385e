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

// Restoring files of slices (format v2, see smallfiles.go). The walker gives
// one job the consecutive slices of a chunk, across files, so the chunk is
// fetched once; a slice cannot be checked against its chunk id alone, so a
// file of slices is gathered in memory and checked whole against its SHA-256
// before it is created and written in one go.

// maxSliceTargets bounds the files one job carries: a chunk of tiny files is
// fetched once per this many of them. A job is also sent once its slices
// add up to ChunkMax bytes: runs of identical small files (zero-filled,
// copies) cut into chunks of one id over and over, and a job per id would
// gather them all.
const maxSliceTargets = 8192

// inMemoryBudget bounds the bytes of small files gathered in memory at once,
// across all jobs: the walker waits for room before it takes the next one
// (after sending the job it was filling, which frees room once written).
const inMemoryBudget = 64 << 20

// sliceTarget is one slice of a job's chunk and where it goes: bytes
// [ref.Off, ref.Off+ref.Size) of the chunk at off in file f.
type sliceTarget struct {
	f   *openFile
	ref repo.Ref
	off int64
}

// inMemory reports whether e is a file of slices small enough to be gathered
// in memory and written once: what drorch writes for files under ChunkMin.
func inMemory(e *repo.Entry) bool {
	if e.SHA256 == "" || e.Size > repo.ChunkMax {
		return false
	}
	for _, r := range e.Chunks {
		if !r.Hole && !r.Slice {
			return false
		}
	}
	return true
}

// putSlices fetches and verifies the job's chunk and puts each slice of it
// in its file; done is called for each.
func (w *Restorer) putSlices(ctx context.Context, j restoreJob, done func(*openFile) error) error {
	data, err := w.Repo.GetChunk(ctx, j.ref.ID)
	if err != nil {
		if drivers.IsNotFound(err) {
			return drivers.Permanent(drivers.ReasonCorrupt, err)
		}
		return err
	}
	w.mu.Lock()
	w.res.Chunks++
	w.mu.Unlock()
	for _, t := range j.slices {
		end := t.ref.Off + t.ref.Size
		if end > int64(len(data)) {
			return drivers.Permanentf(drivers.ReasonCorrupt, "chunk %s at %s holds %d bytes, but file %q names its bytes %d to %d",
				j.ref.ID, w.Repo.Location(), len(data), w.path(t.f), t.ref.Off, end)
		}
		b := data[t.ref.Off:end]
		switch {
		case t.f.whole != nil:
			copy(t.f.whole[t.off:], b)
		case !AllZero(b):
			if _, err := t.f.fw.WriteAt(b, t.off); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			w.mu.Lock()
			w.res.BytesWritten += int64(len(b))
			w.mu.Unlock()
		}
		w.Reporter.Update(func(p *Progress) { p.BytesDone += int64(len(b)) })
		if err := done(t.f); err != nil {
			return err
		}
	}
	w.Reporter.Update(func(p *Progress) { p.ChunksDone++ })
	return nil
}

// path names the file f for messages.
func (w *Restorer) path(f *openFile) string { return f.e.Path }

// wholeFile takes a small file of slices from the target when the target's
// file at that path has the same size and SHA-256 (a slice cannot be compared
// alone), and reports whether it did; the target's file is closed either way.
func (w *Restorer) wholeFile(f *openFile, e *repo.Entry) (local bool) {
	if f.old == nil {
		return false
	}
	defer func() { f.old.Close(); f.old = nil }()
	if size, _, err := f.old.Stat(); err != nil || size != e.Size {
		return false
	}
	n, err := f.old.ReadAt(f.whole, 0)
	if int64(n) != e.Size || err != nil && err != io.EOF || !sameSHA256(f.whole, e.SHA256) {
		clear(f.whole)
		return false
	}
	var refs int64
	for _, r := range e.Chunks {
		if !r.Hole {
			refs++
		}
	}
	w.mu.Lock()
	w.res.Chunks += refs
	w.res.ChunksLocal += refs
	w.res.BytesLocal += e.Size
	w.mu.Unlock()
	w.Reporter.Update(func(p *Progress) { p.BytesDone += e.Size; p.ChunksDone += refs })
	return true
}

func sameSHA256(b []byte, want string) bool {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) == want
}

// finishWhole checks a small file of slices gathered in memory against its
// SHA-256, then creates, writes and closes it.
func (w *Restorer) finishWhole(e *repo.Entry, f *openFile) error {
	if !sameSHA256(f.whole, e.SHA256) {
		return drivers.Permanentf(drivers.ReasonCorrupt, "file %q: its %d bytes rebuilt from the restore point's slices do not have the SHA-256 %s it names (a damaged manifest or chunk at %s)",
			e.Path, e.Size, e.SHA256, w.Repo.Location())
	}
	fw, err := w.Target.File(f.se)
	if err != nil {
		return err
	}
	if !AllZero(f.whole) {
		if _, err := fw.WriteAt(f.whole, 0); err != nil {
			fw.Close()
			return fmt.Errorf("write: %w", err)
		}
		w.mu.Lock()
		w.res.BytesWritten += e.Size
		w.mu.Unlock()
	}
	f.whole = nil
	w.memory.Release(e.Size)
	if err := fw.Close(); err != nil {
		return fmt.Errorf("finish %q: %w", e.Path, err)
	}
	return nil
}

// verifyStaged checks, by reading it back, a file with a SHA-256 too large to
// be kept in memory (not written by drorch, whose files of slices are small).
func (w *Restorer) verifyStaged(e *repo.Entry, f *openFile) error {
	if e.SHA256 == "" {
		return nil
	}
	sf, err := w.Target.Staged(e.Path)
	if err != nil {
		return fmt.Errorf("read back %q to check its SHA-256: %w", e.Path, err)
	}
	defer sf.Close()
	why, err := CheckSHA256(context.Background(), sf, e, make([]byte, 1<<20))
	if err != nil {
		return err
	}
	if why != "" {
		return drivers.Permanentf(drivers.ReasonCorrupt, "file %q: %s (a damaged manifest or chunk at %s)", e.Path, why, w.Repo.Location())
	}
	return nil
}

// CheckSHA256 reads the file f of e.Size bytes and returns what is wrong, or
// "" when its SHA-256 is e's.
func CheckSHA256(ctx context.Context, f source.File, e *repo.Entry, buf []byte) (string, error) {
	h := sha256.New()
	for off := int64(0); off < e.Size; {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		b := buf[:min(int64(len(buf)), e.Size-off)]
		if n, err := f.ReadAt(b, off); n != len(b) {
			return fmt.Sprintf("cannot be read at %d: %v", off, err), nil
		}
		h.Write(b)
		off += int64(len(b))
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != e.SHA256 {
		return fmt.Sprintf("its content has SHA-256 %s, the restore point %s", got, e.SHA256), nil
	}
	return "", nil
}
