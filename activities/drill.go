package activities

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/drivers/source/dir"
	"github.com/drorch/drorch/internal/datapath"
	"github.com/drorch/drorch/internal/repo"
)

// VerifyTargetInput names a restored tree and the point it must match.
type VerifyTargetInput struct {
	Plan  string `json:"plan"`
	Site  string `json:"site"`
	Point string `json:"point"`
	Path  string `json:"path"`
}

// VerifyTargetResult counts what was checked.
type VerifyTargetResult struct {
	Entries int64    `json:"entries"`
	Bytes   int64    `json:"bytes"`
	Chunks  int64    `json:"chunks"`
	Errors  []string `json:"errors,omitempty"` // the first differences found; empty when the tree matches
}

// maxVerifyErrors bounds the differences a verification reports.
const maxVerifyErrors = 20

// VerifyTarget reads a restored tree back and checks it against the point's
// manifest: every entry's type, mode, size, mtime and symlink target, and
// every byte: each data range must hash to its chunk id, each hole must read
// as zeros. Nothing else may be in the tree.
func (a *Activities) VerifyTarget(ctx context.Context, in VerifyTargetInput) (VerifyTargetResult, error) {
	if _, ok := a.execRestore(in.Plan, in.Site, in.Path); ok {
		res, err := a.verifyStream(ctx, in)
		return res, temporalError(err)
	}
	r, err := a.repo(in.Plan, in.Site)
	if err != nil {
		return VerifyTargetResult{}, temporalError(err)
	}
	m, err := r.GetManifest(ctx, in.Point)
	if err != nil {
		return VerifyTargetResult{}, temporalError(err)
	}
	d, err := dir.New(in.Path)
	if err != nil {
		return VerifyTargetResult{}, temporalError(err)
	}
	rep := a.startReporter(ctx, "verify")
	defer rep.close()
	ctx = rep.work // ends when the work stalls
	rep.Update(func(p *Progress) { p.BytesTotal = m.Totals.Bytes })
	want := make(map[string]*repo.Entry, len(m.Entries))
	for i := range m.Entries {
		want[m.Entries[i].Path] = &m.Entries[i]
	}
	var res VerifyTargetResult
	fail := func(format string, args ...any) {
		if len(res.Errors) < maxVerifyErrors {
			res.Errors = append(res.Errors, fmt.Sprintf(format, args...))
		}
	}
	seen := 0
	err = d.Scan(ctx, func(e source.Entry) error {
		w, ok := want[e.Path]
		if !ok {
			fail("%q is in the restored tree but not in the restore point", e.Path)
			return nil
		}
		seen++
		res.Entries++
		switch {
		case e.Type != w.Type:
			fail("%q is a %s, the restore point has a %s", e.Path, e.Type, w.Type)
			return nil
		case repo.UnixMode(e.Mode) != w.Mode && !setuidLeftOut(r, e, w):
			fail("%q has mode %o, the restore point %o", e.Path, repo.UnixMode(e.Mode), w.Mode)
		case e.Type != source.TypeDir && e.Path != "." && !e.ModTime.Equal(w.ModTime):
			fail("%q was modified %s, the restore point says %s", e.Path, e.ModTime, w.ModTime)
		case e.Type == source.TypeSymlink && e.Target != w.Target:
			fail("symlink %q points to %q, the restore point to %q", e.Path, e.Target, w.Target)
		}
		if e.Type != source.TypeFile {
			return nil
		}
		if e.Size != w.Size {
			fail("%q holds %d bytes, the restore point %d", e.Path, e.Size, w.Size)
			return nil
		}
		n, err := verifyFile(ctx, d, e.Path, w)
		res.Chunks += n
		res.Bytes += e.Size
		rep.Update(func(p *Progress) { p.BytesDone = res.Bytes; p.ChunksDone = res.Chunks })
		if err != nil {
			fail("%v", err)
		}
		return nil
	})
	if err != nil {
		return res, temporalError(fmt.Errorf("verify %s: %w", in.Path, err))
	}
	if seen != len(m.Entries) {
		for _, e := range m.Entries {
			if _, err := os.Lstat(filepath.Join(in.Path, filepath.FromSlash(e.Path))); err != nil {
				fail("%q of the restore point is missing from the restored tree", e.Path)
			}
		}
	}
	return res, nil
}

// setuidLeftOut reports whether a restored file's mode differs from the
// point's only by the setuid and setgid bits that a restore from a repository
// without a key leaves out (see RestoreDataInput.KeepSetuid).
func setuidLeftOut(r *repo.Repo, e source.Entry, w *repo.Entry) bool {
	const bits = uint32(syscall.S_ISUID | syscall.S_ISGID)
	return !r.Encrypted() && e.Type == source.TypeFile && repo.UnixMode(e.Mode) == w.Mode&^bits
}

// verifyFile checks every byte of a restored file against its refs.
func verifyFile(ctx context.Context, d *dir.Dir, path string, w *repo.Entry) (int64, error) {
	f, err := d.Open(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("open %q: %w", path, err)
	}
	defer f.Close()
	var off, chunks int64
	buf := make([]byte, repo.ChunkMax)
	if w.SHA256 != "" {
		// A file of slices (format v2): a slice cannot be hashed alone,
		// the whole file is.
		why, err := datapath.CheckSHA256(ctx, f, w, buf)
		if err != nil {
			return 0, err
		}
		if why != "" {
			return 0, fmt.Errorf("%q: %s", path, why)
		}
		for _, ref := range w.Chunks {
			if !ref.Hole {
				chunks++
			}
		}
		return chunks, nil
	}
	for _, ref := range w.Chunks {
		if ref.Hole {
			// A hole can be any length: read it in chunk-sized blocks.
			for pos := off; pos < off+ref.Size; pos += int64(len(buf)) {
				b := buf[:min(int64(len(buf)), off+ref.Size-pos)]
				if _, err := f.ReadAt(b, pos); err != nil && err != io.EOF {
					return chunks, fmt.Errorf("read %q at %d: %w", path, pos, err)
				}
				if !datapath.AllZero(b) {
					return chunks, fmt.Errorf("%q at %d: the restore point has a hole of %d bytes there, the file holds data", path, off, ref.Size)
				}
			}
			off += ref.Size
			continue
		}
		if ref.Size > int64(len(buf)) {
			return chunks, fmt.Errorf("%q at %d: a chunk of %d bytes is larger than the format allows", path, off, ref.Size)
		}
		b := buf[:ref.Size]
		if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
			return chunks, fmt.Errorf("read %q at %d: %w", path, off, err)
		}
		if repo.ID(sha256.Sum256(b)) != ref.ID {
			return chunks, fmt.Errorf("%q at %d: %d bytes do not match chunk %s", path, off, ref.Size, ref.ID)
		}
		chunks++
		off += ref.Size
		if err := ctx.Err(); err != nil {
			return chunks, err
		}
	}
	return chunks, nil
}

// within reports whether path is dir or inside it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// RemoveTargetInput names a sandbox to remove.
type RemoveTargetInput struct {
	Plan string `json:"plan"`
	Path string `json:"path"`
}

// RemoveTarget removes a drill's sandbox. It refuses a path that is one of
// the plan's sources: a drill never touches production.
func (a *Activities) RemoveTarget(ctx context.Context, in RemoveTargetInput) error {
	p, err := a.plan(in.Plan)
	if err != nil {
		return temporalError(err)
	}
	clean := filepath.Clean(in.Path)
	for site, s := range p.Source {
		// Symlinks resolve on this host; a source of another site is
		// compared as written, and as it would resolve here.
		if err := refuseLive("drill sandbox", clean, s.Path, site); err != nil {
			return temporalError(err)
		}
	}
	if clean == "/" || !filepath.IsAbs(clean) {
		return temporalError(drivers.Permanentf(drivers.ReasonInvalidInput, "refusing to remove %q", in.Path))
	}
	return temporalError(os.RemoveAll(clean))
}
