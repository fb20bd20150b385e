package activities

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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
	p, err := r.OpenPoint(ctx, in.Point)
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
	rep.Update(func(pr *Progress) { pr.BytesTotal = p.Meta.Totals.Bytes })
	v := &treeVerifier{r: r, d: d}
	v.progress = func() {
		bytes, chunks := v.res.Bytes, v.res.Chunks
		rep.Update(func(pr *Progress) { pr.BytesDone = bytes; pr.ChunksDone = chunks })
	}
	if p.Chunked() {
		err = v.mergeJoin(ctx, p)
	} else {
		err = v.byPath(ctx, p, in.Path)
	}
	if err != nil {
		return v.res, temporalError(fmt.Errorf("verify %s: %w", in.Path, err))
	}
	return v.res, nil
}

// treeVerifier compares a restored tree with a restore point's entries.
type treeVerifier struct {
	r        *repo.Repo
	d        *dir.Dir
	res      VerifyTargetResult
	progress func()
	buf      []byte // ChunkMax bytes, for every file in turn
}

func (v *treeVerifier) fail(format string, args ...any) {
	if len(v.res.Errors) < maxVerifyErrors {
		v.res.Errors = append(v.res.Errors, fmt.Sprintf(format, args...))
	}
}

// mergeJoin compares a v3 point, whose entries are in tree order, with the
// scan of the tree, which walks in the same order: one entry of each at a
// time, so that memory does not grow with the tree.
func (v *treeVerifier) mergeJoin(ctx context.Context, p *repo.Point) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		e   repo.Entry
		err error
	}
	want := make(chan item, 64)
	go func() {
		defer close(want)
		err := p.Entries(ctx, 0, func(_ int64, e *repo.Entry) error {
			it := item{e: *e}
			it.e.Chunks = slices.Clone(e.Chunks) // e is Entries' only during the call
			select {
			case want <- it:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			select {
			case want <- item{err: err}:
			case <-ctx.Done():
			}
		}
	}()
	var cur *repo.Entry
	var werr error
	pull := func() {
		cur = nil
		if it, ok := <-want; ok {
			if it.err != nil {
				werr = it.err
				return
			}
			cur = &it.e
		}
	}
	pull()
	err := v.d.Scan(ctx, func(e source.Entry) error {
		for cur != nil && repo.CompareTreePaths(cur.Path, e.Path) < 0 {
			v.fail("%q of the restore point is missing from the restored tree", cur.Path)
			pull()
		}
		if werr != nil {
			return werr
		}
		if cur == nil || cur.Path != e.Path {
			v.fail("%q is in the restored tree but not in the restore point", e.Path)
			return nil
		}
		v.entry(ctx, e, cur)
		pull()
		return werr
	})
	if err != nil {
		return err
	}
	for ; cur != nil; pull() {
		v.fail("%q of the restore point is missing from the restored tree", cur.Path)
	}
	return werr
}

// byPath compares a v1 or v2 point, whose entries are in memory already
// and in no set order, with the scan of the tree through a map by path.
func (v *treeVerifier) byPath(ctx context.Context, p *repo.Point, root string) error {
	m, err := p.Manifest(ctx)
	if err != nil {
		return err
	}
	want := make(map[string]*repo.Entry, len(m.Entries))
	for i := range m.Entries {
		want[m.Entries[i].Path] = &m.Entries[i]
	}
	seen := 0
	err = v.d.Scan(ctx, func(e source.Entry) error {
		w, ok := want[e.Path]
		if !ok {
			v.fail("%q is in the restored tree but not in the restore point", e.Path)
			return nil
		}
		seen++
		v.entry(ctx, e, w)
		return nil
	})
	if err != nil {
		return err
	}
	if seen != len(m.Entries) {
		for _, e := range m.Entries {
			if _, err := os.Lstat(filepath.Join(root, filepath.FromSlash(e.Path))); err != nil {
				v.fail("%q of the restore point is missing from the restored tree", e.Path)
			}
		}
	}
	return nil
}

// entry compares one entry of the restored tree with the point's, every
// byte of a file included.
func (v *treeVerifier) entry(ctx context.Context, e source.Entry, w *repo.Entry) {
	v.res.Entries++
	switch {
	case e.Type != w.Type:
		v.fail("%q is a %s, the restore point has a %s", e.Path, e.Type, w.Type)
		return
	case repo.UnixMode(e.Mode) != w.Mode && !setuidLeftOut(v.r, e, w):
		v.fail("%q has mode %o, the restore point %o", e.Path, repo.UnixMode(e.Mode), w.Mode)
	case e.Type != source.TypeDir && e.Path != "." && !e.ModTime.Equal(w.ModTime):
		v.fail("%q was modified %s, the restore point says %s", e.Path, e.ModTime, w.ModTime)
	case e.Type == source.TypeSymlink && e.Target != w.Target:
		v.fail("symlink %q points to %q, the restore point to %q", e.Path, e.Target, w.Target)
	}
	if e.Type != source.TypeFile {
		return
	}
	if e.Size != w.Size {
		v.fail("%q holds %d bytes, the restore point %d", e.Path, e.Size, w.Size)
		return
	}
	if v.buf == nil {
		v.buf = make([]byte, repo.ChunkMax)
	}
	n, err := verifyFile(ctx, v.d, e.Path, w, v.buf)
	v.res.Chunks += n
	v.res.Bytes += e.Size
	v.progress()
	if err != nil {
		v.fail("%v", err)
	}
}

// setuidLeftOut reports whether a restored file's mode differs from the
// point's only by the setuid and setgid bits that a restore from a repository
// without a key leaves out (see RestoreDataInput.KeepSetuid).
func setuidLeftOut(r *repo.Repo, e source.Entry, w *repo.Entry) bool {
	const bits = uint32(syscall.S_ISUID | syscall.S_ISGID)
	return !r.Encrypted() && e.Type == source.TypeFile && repo.UnixMode(e.Mode) == w.Mode&^bits
}

// verifyFile checks every byte of a restored file against its refs.
// buf holds ChunkMax bytes: one for the whole tree, not one per file.
func verifyFile(ctx context.Context, d *dir.Dir, path string, w *repo.Entry, buf []byte) (int64, error) {
	f, err := d.Open(ctx, path)
	if err != nil {
		return 0, fmt.Errorf("open %q: %w", path, err)
	}
	defer f.Close()
	var off, chunks int64
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
