package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

// Format v3: manifests whose entries are stored in chunks (docs/format.md,
// "Format v3: entries in chunks"). The point object under points/ holds the
// header, one line per entry part and the trailer; the entry lines
// themselves, as in v1 and v2, are cut into parts at content-defined line
// boundaries and stored as ordinary chunks. Readers page through the parts,
// so that no worker holds a whole tree's entries: a 10,000,000-entry point
// is about 1,500 parts and a point object of a few hundred KiB. Entries are
// in tree order (CompareTreePaths), which lets a reader check them with one
// directory stack instead of a set of every path, and lets a backup find a
// parent point's entry by seeking instead of with a map of them all.

// ManifestVersionChunked is the manifest version whose entries are stored
// in chunks (format v3). Every restore point written since is v3.
const ManifestVersionChunked = 3

// ErrUnsorted is wrapped by PointWriter.Add for an entry that does not come
// after the one before it in tree order: the caller can sort and write again
// (CommitPoint does).
var ErrUnsorted = errors.New("entries are not in tree order")

// CompareTreePaths orders entry paths as a depth-first walk that visits the
// names of each directory in byte order (the dir source's order): "." first,
// a directory right before its contents, "a/b" before "a.c". It is byte
// order with "/" taken as lower than any other byte.
func CompareTreePaths(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == ".":
		return -1
	case b == ".":
		return 1
	}
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		if ca < cb {
			return -1
		}
		return 1
	}
	return len(a) - len(b)
}

// parentPath is the path of p's directory: "." for a top-level name.
func parentPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}

// EntryPart is one chunk of a v3 manifest's entry lines.
type EntryPart struct {
	ID    ID
	Size  int64  // plaintext bytes
	Count int64  // entries whose line begins in it
	First string // path of the first entry whose line begins in it; "" when Count is 0
}

// entryTarget tunes the cuts of entry parts: a cut follows a line when the
// CRC-32C of the line has its low entryMaskBits bits set and the part holds
// at least entryPartMin bytes, or before a line that would take it past
// entryPartMax (ChunkMax). A line longer than that is split across parts.
const (
	entryPartMin  = 64 << 10
	entryMaskBits = 12 // about one cut per 4,096 lines past the minimum
	entryPartMax  = ChunkMax
)

// treeValidator checks entries in tree order with one stack of the
// directories that enclose the last entry: memory grows with the depth of
// the tree, not its size. Strict order rules out duplicates; a parent must be
// on the stack, so it came before and is a directory. The distinct chunk
// ids, for the totals, are kept as an idSet (about 20 bytes an id, a map
// would take 80 or more).
type treeValidator struct {
	n      int64
	prev   string
	dirs   []string
	ids    idSet
	totals Totals // UniqueChunks is counted by final
	// partial: the entries do not begin at the root (a resumed read), so
	// parents cannot be checked; order and fields still are.
	partial bool
}

func newTreeValidator() *treeValidator {
	return &treeValidator{}
}

// final returns the totals of the entries added so far.
func (v *treeValidator) final() Totals {
	v.ids.compact()
	t := v.totals
	t.UniqueChunks = int64(len(v.ids.ids))
	return t
}

func (v *treeValidator) add(e *Entry) error {
	switch {
	case v.n == 0 && !v.partial:
		if e.Path != "." {
			return errors.New(`the first entry must be the root "."`)
		}
	default:
		if err := checkPath(e.Path); err != nil {
			return err
		}
		if v.n > 0 {
			switch c := CompareTreePaths(v.prev, e.Path); {
			case c == 0:
				return errors.New("duplicate path")
			case c > 0:
				return fmt.Errorf("%w: it comes after %q", ErrUnsorted, v.prev)
			}
		}
		if !v.partial {
			parent := parentPath(e.Path)
			for len(v.dirs) > 0 && v.dirs[len(v.dirs)-1] != parent {
				v.dirs = v.dirs[:len(v.dirs)-1]
			}
			if len(v.dirs) == 0 {
				return fmt.Errorf("parent %q is not a directory that comes before it", parent)
			}
		}
	}
	if err := checkEntry(e); err != nil {
		return err
	}
	if e.Type == source.TypeDir && !v.partial {
		v.dirs = append(v.dirs, e.Path)
	}
	v.prev = e.Path
	v.n++
	countEntry(&v.totals, nil, e)
	for _, c := range e.Chunks {
		if !c.Hole {
			v.ids.add(c.ID)
		}
	}
	return nil
}

// The lines of a v3 point object beside the header and the trailer.
type (
	partOut struct {
		Part partRefOut `json:"part"`
	}
	partRefOut struct {
		ID      ID     `json:"id"`
		Size    int64  `json:"size"`
		Count   int64  `json:"count"`
		First   string `json:"first,omitempty"`
		First64 []byte `json:"first64,omitempty"`
	}
	partIn struct {
		Part *partRefIn `json:"part"`
	}
	partRefIn struct {
		ID      *string `json:"id"`
		Size    *int64  `json:"size"`
		Count   *int64  `json:"count"`
		First   *string `json:"first"`
		First64 *string `json:"first64"`
	}
)

// PointWriter writes a restore point in format v3: entries are added one
// at a time, in tree order, and stored in parts as they fill; Commit then
// writes the point object. Memory is one part and the set of distinct chunks
// the entries name, whatever their number.
type PointWriter struct {
	r     *Repo
	m     Manifest // header fields
	known func(ID) bool
	v     *treeValidator

	line  bytes.Buffer // the line being encoded
	enc   *json.Encoder
	refs  []refOut
	buf   []byte // the current part
	cur   EntryPart
	parts []EntryPart

	needs needSet // data chunks, in order of first use

	g        *errgroup.Group // part uploads in flight
	gctx     context.Context
	stored   int64 // stored bytes of the parts uploaded
	newParts int64
	added    *atomic.Int64 // the entries taken, on the counter of NewPointWriter's ctx
	mu       sync.Mutex
	plain    []byte // the point object, once finished
}

// NewPointWriter begins a restore point whose header fields are those of m
// (whose Entries must be empty). known, when set, reports the chunks the
// repository holds: a part among them is not uploaded again.
func (r *Repo) NewPointWriter(ctx context.Context, m *Manifest, known func(ID) bool) (*PointWriter, error) {
	if len(m.Entries) != 0 {
		return nil, errors.New("NewPointWriter: the manifest's entries are added with Add")
	}
	h := *m
	h.Version = ManifestVersionChunked
	if err := r.checkOwn(&h); err != nil {
		return nil, err
	}
	if err := checkHeader(&h); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest %s: %w", h.Point, err))
	}
	w := &PointWriter{r: r, m: h, known: known, v: newTreeValidator(), added: counterOf(ctx)}
	w.enc = json.NewEncoder(&w.line)
	w.enc.SetEscapeHTML(false)
	w.g, w.gctx = errgroup.WithContext(ctx)
	w.g.SetLimit(4)
	return w, nil
}

// checkOwn checks that m belongs in r.
func (r *Repo) checkOwn(m *Manifest) error {
	if m.Plan != r.plan {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: it is of plan %q, the repository of %q", m.Point, m.Plan, r.plan)
	}
	if m.Encryption != r.Encryption() {
		return drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: encryption %q, but the repository's is %q", m.Point, m.Encryption, r.Encryption())
	}
	if err := ValidPointID(m.Point); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest: %w", err))
	}
	return nil
}

// Add appends e, which must come after the entry before it in tree order
// (an error wrapping ErrUnsorted otherwise; other invalid entries are
// permanent InvalidInput errors). It may upload a part.
func (w *PointWriter) Add(ctx context.Context, e *Entry) error {
	if w.plain != nil {
		return errors.New("PointWriter.Add after Finish")
	}
	if err := w.v.add(e); err != nil {
		err = fmt.Errorf("put manifest %s: entry %d (%q): %w", w.m.Point, w.v.n, e.Path, err)
		if errors.Is(err, ErrUnsorted) {
			return err
		}
		return drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	w.added.Add(1)
	w.line.Reset()
	if err := encodeEntry(w.enc, e, &w.refs); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest %s: entry %d (%q): %w", w.m.Point, w.v.n-1, e.Path, err))
	}
	w.needs.add(e)
	line := w.line.Bytes()
	if len(w.buf) > 0 && (len(w.buf)+len(line) > entryPartMax || len(line) > entryPartMax) {
		// A line begins a part unless it fits in the current one; a line
		// longer than a part begins one of its own.
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	if w.cur.Count == 0 {
		w.cur.First = e.Path
	}
	w.cur.Count++
	for len(w.buf)+len(line) > entryPartMax {
		n := entryPartMax - len(w.buf)
		w.buf = append(w.buf, line[:n]...)
		line = line[n:]
		if err := w.flush(ctx); err != nil {
			return err
		}
	}
	w.buf = append(w.buf, line...)
	if len(w.buf) >= entryPartMin && cutAfter(line) || w.cur.Count == 0 {
		// Content-defined; or the end of a long line, whose last piece
		// ends its part so that the next line begins one.
		return w.flush(ctx)
	}
	return nil
}

// cutAfter reports whether a part may end after line: whether the low
// entryMaskBits of its CRC-32C are all set. It depends on the line alone, so
// that the cuts of unchanged stretches of a tree are the same from one
// backup to the next, and so are their parts.
func cutAfter(line []byte) bool {
	const mask = 1<<entryMaskBits - 1
	return crc32.Checksum(line, castagnoli)&mask == mask
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// flush stores the current part, unless the repository has it, in the
// background.
func (w *PointWriter) flush(ctx context.Context) error {
	if len(w.buf) == 0 {
		return nil
	}
	part := w.buf
	w.buf = make([]byte, 0, min(2*len(part), entryPartMax))
	id := Hash(part)
	w.cur.ID, w.cur.Size = id, int64(len(part))
	w.parts = append(w.parts, w.cur)
	w.cur = EntryPart{}
	if w.known != nil && w.known(id) {
		return nil
	}
	// Before the next part is queued: the first error stops the writer.
	if err := w.gctx.Err(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return w.g.Wait()
	}
	w.g.Go(func() error {
		stored, err := w.r.PutChunk(w.gctx, id, part)
		if err != nil {
			return fmt.Errorf("put manifest %s: store its entries as chunk %s: %w", w.m.Point, id, err)
		}
		w.mu.Lock()
		w.stored += stored
		w.newParts++
		w.mu.Unlock()
		return nil
	})
	return nil
}

// Finish stores the last part, waits for every part to be stored, and
// encodes the point object. It returns the totals.
func (w *PointWriter) Finish(ctx context.Context) (Totals, error) {
	if w.plain != nil {
		return w.m.Totals, nil
	}
	if err := w.flush(ctx); err != nil {
		return Totals{}, err
	}
	if err := w.g.Wait(); err != nil {
		return Totals{}, err
	}
	if w.v.n == 0 {
		return Totals{}, drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: no entries: the root \".\" is missing", w.m.Point)
	}
	w.m.Totals = w.v.final()
	plain, err := encodePointObject(&w.m, w.parts)
	if err != nil {
		return Totals{}, drivers.Permanent(drivers.ReasonInvalidInput, fmt.Errorf("put manifest %s: %w", w.m.Point, err))
	}
	if len(plain) > MaxMetadataSize {
		return Totals{}, drivers.Permanentf(drivers.ReasonInvalidInput, "put manifest %s: its point object of %d bytes is more than the %d the format allows", w.m.Point, len(plain), MaxMetadataSize)
	}
	w.plain = plain
	return w.m.Totals, nil
}

// Needs returns every chunk the point names: its parts, then the distinct
// data chunks, for the check before Commit.
func (w *PointWriter) Needs() []ChunkNeed {
	out := make([]ChunkNeed, 0, len(w.parts)+len(w.needs.out))
	for _, p := range w.parts {
		out = append(out, ChunkNeed{ID: p.ID, Size: p.Size, Path: "(the restore point's entries)"})
	}
	return append(out, w.needs.out...)
}

// Parts returns the parts written, and how many were uploaded and what
// they took in the store (the others were there already).
func (w *PointWriter) Parts() (parts []EntryPart, uploaded, stored int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.parts, w.newParts, w.stored
}

// Commit finishes the point and commits it: CommitPoint's rule, with check
// run after the reservation (see CommitPoint). check must cover every
// chunk of Needs, the parts included; a nil check makes Commit check that
// the parts are stored (and nothing else).
func (w *PointWriter) Commit(ctx context.Context, check func(context.Context) error) error {
	if _, err := w.Finish(ctx); err != nil {
		return err
	}
	if check == nil {
		check = func(ctx context.Context) error { return w.r.checkParts(ctx, w.m.Point, w.parts) }
	}
	return w.r.commitPlain(ctx, w.m.Point, w.m.Epoch, w.plain, check)
}

// checkParts checks that the parts of point are stored, one Stat each.
func (r *Repo) checkParts(ctx context.Context, point string, parts []EntryPart) error {
	for i, p := range parts {
		if _, err := r.st.Stat(ctx, r.key(ChunkKey(p.ID))); err != nil {
			if drivers.IsNotFound(err) {
				return drivers.Permanentf(ReasonMissingChunk, "commit %s: part %d of its entries, chunk %s, is not in %s", point, i, p.ID, r.Location())
			}
			return fmt.Errorf("commit %s: stat part %d of its entries at %s: %w", point, i, r.where(ChunkKey(p.ID)), err)
		}
	}
	return nil
}

// encodePointObject encodes the point object of a v3 manifest: the header
// (version 3), one line per part, and the trailer with the totals and the
// digest of every line before it.
func encodePointObject(m *Manifest, parts []EntryPart) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(headerOf(m, ManifestVersionChunked)); err != nil {
		return nil, err
	}
	for _, p := range parts {
		out := partRefOut{ID: p.ID, Size: p.Size, Count: p.Count}
		if utf8.ValidString(p.First) {
			out.First = p.First
		} else {
			out.First64 = []byte(p.First)
		}
		if err := enc.Encode(partOut{Part: out}); err != nil {
			return nil, err
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	digest := digestPrefix + hex.EncodeToString(sum[:])
	if err := enc.Encode(trailerLine{Totals: &m.Totals, Digest: &digest}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// headerOf is the header line of m written as version.
func headerOf(m *Manifest, version int) headerLine {
	return headerLine{
		Format:      ManifestFormat,
		Version:     version,
		Plan:        m.Plan,
		Point:       m.Point,
		Site:        m.Site,
		Source:      m.Source,
		Snapshot:    m.Snapshot.UTC().Format(time.RFC3339Nano),
		Epoch:       m.Epoch,
		Chunker:     m.Chunker,
		Compression: m.Compression,
		Encryption:  m.Encryption,
	}
}

// decodePointObject decodes and checks the point object of a v3 manifest
// (whose header line decoded as h): its part lines, the trailer and the
// digest. The entries themselves are checked as they are read.
func decodePointObject(b []byte, m *Manifest) ([]EntryPart, error) {
	lines := bytes.Count(b, []byte{'\n'})
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, manifestError(lines+1, "no newline at the end of the manifest (truncated?)")
	}
	if lines < 3 {
		return nil, manifestError(lines, "missing trailer (truncated?)")
	}
	lastStart := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
	var t trailerLine
	if err := decodeLine(b[lastStart:len(b)-1], &t); err != nil || t.Totals == nil || t.Digest == nil {
		why := "missing trailer (truncated?)"
		if err != nil && bytes.HasPrefix(b[lastStart:], []byte(`{"totals"`)) {
			why = fmt.Sprintf("trailer: %v", err)
		}
		return nil, manifestError(lines, "%s", why)
	}
	sum := sha256.Sum256(b[:lastStart])
	if want := digestPrefix + hex.EncodeToString(sum[:]); *t.Digest != want {
		return nil, manifestError(lines, "digest %q does not match the content, whose digest is %s (corrupted)", *t.Digest, want)
	}
	body := b[bytes.IndexByte(b, '\n')+1 : lastStart]
	parts := make([]EntryPart, 0, lines-2)
	var count int64
	var lastFirst string
	for n := 2; len(body) > 0; n++ {
		i := bytes.IndexByte(body, '\n')
		line := body[:i]
		body = body[i+1:]
		var in partIn
		if err := decodeLine(line, &in); err != nil {
			return nil, manifestError(n, "%v", err)
		}
		p, err := fromPartLine(in.Part)
		if err != nil {
			return nil, manifestError(n, "part: %v", err)
		}
		switch {
		case len(parts) == 0 && (p.Count == 0 || p.First != "."):
			return nil, manifestError(n, `part: the first part must begin with the root "."`)
		case len(parts) > 0 && p.Count > 0 && CompareTreePaths(lastFirst, p.First) >= 0:
			return nil, manifestError(n, "part: its first entry %q does not come after the previous part's first %q", p.First, lastFirst)
		}
		if p.Count > 0 {
			lastFirst = p.First
		}
		count += p.Count
		parts = append(parts, p)
	}
	if count != t.Totals.Entries {
		return nil, manifestError(lines, "the parts hold %d entries, the totals say %d", count, t.Totals.Entries)
	}
	m.Totals = *t.Totals
	return parts, nil
}

func fromPartLine(in *partRefIn) (EntryPart, error) {
	var p EntryPart
	if in == nil || in.ID == nil || in.Size == nil || in.Count == nil {
		return p, errors.New(`needs "id", "size" and "count"`)
	}
	id, err := ParseID(*in.ID)
	if err != nil {
		return p, err
	}
	first, err := oneOf("first", in.First, in.First64)
	if err != nil {
		return p, err
	}
	p = EntryPart{ID: id, Size: *in.Size, Count: *in.Count, First: first}
	switch {
	case p.Size <= 0 || p.Size > entryPartMax:
		return p, fmt.Errorf("size %d is not within 1 to %d", p.Size, entryPartMax)
	case p.Count < 0 || p.Count > p.Size:
		return p, fmt.Errorf("count %d is not within 0 to its size", p.Count)
	case (p.Count == 0) != (in.First == nil && in.First64 == nil):
		return p, errors.New(`"first" names the first entry of a part with entries, and only then`)
	}
	return p, nil
}

// Point is a restore point opened for reading: its header and totals, with
// its entries read on demand. A v3 point's entries are paged in from its
// parts, so that memory does not grow with their number; a v1 or v2 point's
// are decoded whole, as they always were.
type Point struct {
	Meta  Manifest    // the header fields and Totals; Meta.Entries is nil
	Parts []EntryPart // v3 only

	r      *Repo
	plain  []byte  // the point object as stored, decrypted and decompressed
	legacy []Entry // v1 and v2
}

// OpenPoint reads and checks the point object of a valid restore point,
// with the errors of GetManifest.
func (r *Repo) OpenPoint(ctx context.Context, point string) (*Point, error) {
	began := time.Now()
	p, err := r.openPoint(ctx, point)
	if drivers.IsNotFound(err) {
		// Absent; say so for good when it was abandoned (and deleted).
		if e, eerr := r.GetEpoch(ctx); eerr == nil && e.abandoned(point) != nil {
			return nil, r.invalid(e, point)
		}
	}
	if err != nil {
		return nil, err
	}
	// epoch.json after the point object: a writer reserves its point
	// before it writes the object, so this read sees the point listed if
	// it is not committed.
	e, err := r.validAt(ctx, began)
	if err != nil {
		return nil, err
	}
	if err := r.invalid(e, point); err != nil {
		return nil, err
	}
	return p, nil
}

// openPoint reads and checks the stored point object of point, valid or not.
func (r *Repo) openPoint(ctx context.Context, point string) (*Point, error) {
	if err := ValidPointID(point); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	return r.pointAt(ctx, manifestKey(point), point)
}

// pointAt reads and checks the point object of point stored at key.
func (r *Repo) pointAt(ctx context.Context, key, point string) (*Point, error) {
	fail := func(err error) (*Point, error) {
		return nil, classify(fmt.Errorf("manifest of restore point %s at %s: %w", point, r.where(key), err))
	}
	body, err := r.get(ctx, key, MaxMetadataSize+1<<20)
	if err != nil {
		return fail(err)
	}
	plain, err := r.open(body, []byte("manifest:"+point), &metaDec)
	if err != nil {
		return fail(err)
	}
	p, err := decodePoint(plain)
	if err != nil {
		return fail(errCorrupt{err.Error()})
	}
	p.r = r
	switch m := &p.Meta; {
	case m.Point != point:
		return fail(errCorrupt{fmt.Sprintf("it is the manifest of point %s (copied under another name?)", m.Point)})
	case m.Plan != r.plan:
		return fail(errCorrupt{fmt.Sprintf("it is a manifest of plan %q (copied from another plan?)", m.Plan)})
	case m.Encryption != r.Encryption():
		return fail(errCorrupt{fmt.Sprintf("it says encryption %q, but the repository's is %q", m.Encryption, r.Encryption())})
	}
	return p, nil
}

// decodePoint decodes a point object of any version.
func decodePoint(plain []byte) (*Point, error) {
	i := bytes.IndexByte(plain, '\n')
	if i < 0 {
		if len(plain) == 0 {
			return nil, errors.New("manifest is empty")
		}
		return nil, manifestError(1, "no newline at the end of the manifest (truncated?)")
	}
	var h headerLine
	if err := decodeLine(plain[:i], &h); err != nil {
		return nil, manifestError(1, "header: %v", err)
	}
	if h.Version != ManifestVersionChunked {
		m, err := DecodeManifest(plain)
		if err != nil {
			return nil, err
		}
		p := &Point{Meta: *m, plain: plain, legacy: m.Entries}
		p.Meta.Entries = nil
		return p, nil
	}
	h.Version = FormatVersion // fromHeader checks the fields of v1
	m, err := fromHeader(&h)
	if err != nil {
		return nil, manifestError(1, "header: %v", err)
	}
	m.Version = ManifestVersionChunked
	parts, err := decodePointObject(plain, m)
	if err != nil {
		return nil, err
	}
	return &Point{Meta: *m, Parts: parts, plain: plain}, nil
}

// Chunked reports whether p is a v3 point, whose entries are in parts.
func (p *Point) Chunked() bool { return p.Meta.Version == ManifestVersionChunked }

// Entries calls fn with each entry from index from on, in order, until fn
// returns an error (returned as is). Reading from 0, the entries are checked
// as DecodeManifest checks a whole manifest, totals included; from a later
// index, their order and fields only. The *Entry is fn's until it returns.
func (p *Point) Entries(ctx context.Context, from int64, fn func(i int64, e *Entry) error) error {
	read := counterOf(ctx)
	if !p.Chunked() {
		for i := from; i < int64(len(p.legacy)); i++ {
			read.Add(1)
			if err := fn(i, &p.legacy[i]); err != nil {
				return err
			}
		}
		return nil
	}
	k, i := 0, int64(0)
	for k < len(p.Parts) && i+p.Parts[k].Count <= from {
		i += p.Parts[k].Count
		k++
	}
	if k == len(p.Parts) {
		return nil
	}
	v := newTreeValidator()
	v.partial = i > 0
	return p.read(ctx, k, len(p.Parts), i, v, func(n int64, e *Entry) error {
		read.Add(1)
		if n < from {
			return nil
		}
		return fn(n, e)
	})
}

// PartError is the failure to fetch one part of a point's entries: the
// chunk is missing, or its object is damaged (it does not decrypt or hash
// to its id, or holds another size than the point object says). A check
// records the part as a damaged chunk, which the next backup of the same
// entries writes again. It wraps the fetch's error, so it keeps that
// error's reason.
type PartError struct {
	Part ID
	err  error
}

func (e *PartError) Error() string { return e.err.Error() }
func (e *PartError) Unwrap() error { return e.err }

// read decodes the entries of parts k..end-1, the first of which holds
// entry index first, checks each with v (when set) and calls fn with it. At
// the end of the point's last part it checks v's totals, when v began at
// the root. Parts are fetched ahead of the decoding. Errors about the
// content are permanent Corrupt ones naming the point; fn's are returned as
// they are.
func (p *Point) read(ctx context.Context, k, end int, first int64, v *treeValidator, fn func(int64, *Entry) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type fetched struct {
		data []byte
		err  error
	}
	ahead := make(chan fetched, 2)
	go func() {
		defer close(ahead)
		for j := k; j < end; j++ {
			data, err := p.r.GetChunk(ctx, p.Parts[j].ID)
			if drivers.IsNotFound(err) {
				// A valid point whose entries are gone will not heal
				// by retrying: like a missing data chunk, it is
				// permanent.
				// Not a not-found error: that would say the point itself
				// is absent.
				err = drivers.Permanentf(ReasonMissingChunk, "the chunk holding its entries is missing: %v", err)
			}
			if err == nil && int64(len(data)) != p.Parts[j].Size {
				err = drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("chunk %s holds %d bytes, the point object says %d", p.Parts[j].ID, len(data), p.Parts[j].Size))
			}
			select {
			case ahead <- fetched{data, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	corrupt := func(format string, args ...any) error {
		return drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("entries of restore point %s at %s: %s (corrupted)", p.Meta.Point, p.r.Location(), fmt.Sprintf(format, args...)))
	}
	var long []byte // a line that began in an earlier part
	inLong := false
	n := first
	for j := k; j < end; j++ {
		f, ok := <-ahead
		if !ok {
			return ctx.Err()
		}
		if f.err != nil {
			return &PartError{Part: p.Parts[j].ID, err: fmt.Errorf("entries of restore point %s: part %d of %d: %w", p.Meta.Point, j, len(p.Parts), f.err)}
		}
		part, data := p.Parts[j], f.data
		if part.Count > 0 && inLong {
			return corrupt("part %d has entries of its own, but the line before it did not end", j)
		}
		var count int64
		for len(data) > 0 {
			begins := !inLong
			if begins {
				count++
			}
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				if len(long)+len(data) > MaxMetadataSize {
					return corrupt("entry %d: its line is longer than %d bytes", n, MaxMetadataSize)
				}
				long, inLong = append(long, data...), true
				break
			}
			line := data[:i]
			data = data[i+1:]
			if inLong {
				line = append(long, line...)
				long, inLong = nil, false
			}
			var in entryIn
			if err := decodeLine(line, &in); err != nil {
				return corrupt("entry %d: %v", n, err)
			}
			e, err := fromEntryLine(&in)
			if err != nil {
				return corrupt("entry %d: %v", n, err)
			}
			if begins && count == 1 && e.Path != part.First {
				return corrupt("part %d begins with %q, the point object says %q", j, e.Path, part.First)
			}
			if v != nil {
				if err := v.add(&e); err != nil {
					return corrupt("entry %d (%q): %v", n, e.Path, err)
				}
			}
			if err := fn(n, &e); err != nil {
				return err
			}
			n++
		}
		if count != part.Count {
			return corrupt("part %d holds %d entries, the point object says %d", j, count, part.Count)
		}
	}
	if end == len(p.Parts) {
		switch {
		case inLong:
			return corrupt("the last entry does not end with a newline (truncated?)")
		case v != nil && !v.partial && v.final() != p.Meta.Totals:
			return corrupt("totals %+v do not match the entries, which give %+v", p.Meta.Totals, v.final())
		}
	}
	return nil
}

// Needs returns every chunk p names: its parts, then the distinct data
// chunks in the order they first appear. It reads every entry once; memory
// grows with the number of distinct chunks, not of entries.
func (p *Point) Needs(ctx context.Context) ([]ChunkNeed, error) {
	var set needSet
	for _, part := range p.Parts {
		set.out = append(set.out, ChunkNeed{ID: part.ID, Size: part.Size, Path: "(the restore point's entries)"})
	}
	err := p.Entries(ctx, 0, func(_ int64, e *Entry) error {
		set.add(e)
		return nil
	})
	return set.out, err
}

// Manifest reads every entry of p into a Manifest: for the points known to
// be small (a command's stream, a PostgreSQL base backup) and for tests.
func (p *Point) Manifest(ctx context.Context) (*Manifest, error) {
	m := p.Meta
	if !p.Chunked() {
		m.Entries = p.legacy
		return &m, nil
	}
	m.Entries = make([]Entry, 0, min(m.Totals.Entries, 1<<20))
	err := p.Entries(ctx, 0, func(_ int64, e *Entry) error {
		m.Entries = append(m.Entries, *e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// Cursor finds entries of a point by path, paging its parts in: for a
// backup that looks up each file of its tree, in tree order, in the parent
// point. A lookup before the last one, or far past it, seeks to the right
// part first. Not safe for concurrent use.
type Cursor struct {
	p      *Point
	byPath map[string]*Entry // v1 and v2: an index of the files
	starts []int             // v3: the parts with entries
	k      int               // the part loaded, with the rest of its last line
	loaded []Entry
}

// Cursor returns a new Cursor over p.
func (p *Point) Cursor() *Cursor { return &Cursor{p: p, k: -1} }

// Find returns the entry at path, or nil when p has none.
func (c *Cursor) Find(ctx context.Context, path string) (*Entry, error) {
	if !c.p.Chunked() {
		if c.byPath == nil {
			c.byPath = make(map[string]*Entry, len(c.p.legacy))
			for i := range c.p.legacy {
				c.byPath[c.p.legacy[i].Path] = &c.p.legacy[i]
			}
		}
		return c.byPath[path], nil
	}
	// The part where path would be: the last with entries whose first
	// entry is not after it.
	parts := c.p.Parts
	if c.starts == nil {
		for i, part := range parts {
			if part.Count > 0 {
				c.starts = append(c.starts, i)
			}
		}
	}
	s := sort.Search(len(c.starts), func(i int) bool { return CompareTreePaths(parts[c.starts[i]].First, path) > 0 }) - 1
	if s < 0 {
		return nil, nil
	}
	k := c.starts[s]
	if k != c.k {
		end := k + 1
		for end < len(parts) && parts[end].Count == 0 {
			end++ // the rest of a long line
		}
		c.loaded = c.loaded[:0]
		var first int64
		for _, part := range parts[:k] {
			first += part.Count
		}
		err := c.p.read(ctx, k, end, first, nil, func(_ int64, e *Entry) error {
			c.loaded = append(c.loaded, *e)
			return nil
		})
		if err != nil {
			c.k = -1
			return nil, err
		}
		c.k = k
	}
	i, ok := slices.BinarySearchFunc(c.loaded, path, func(e Entry, p string) int { return CompareTreePaths(e.Path, p) })
	if !ok {
		return nil, nil
	}
	return &c.loaded[i], nil
}

// scanParts calls add for every chunk id the entries in p's parts name,
// but those in parts that seen holds, and adds the parts it read to seen.
// Only a part of whole lines is skipped: a group of parts split inside a
// long line is always read.
func (p *Point) scanParts(ctx context.Context, seen map[ID]struct{}, add func(ID)) error {
	var first int64 // entry index at the start of part k
	for k := 0; k < len(p.Parts); {
		// The group of k: a part with entries and the continuations of
		// its last line.
		end := k + 1
		for end < len(p.Parts) && p.Parts[end].Count == 0 {
			end++
		}
		// A part that holds whole lines names the same chunks wherever
		// it is; a line split over parts belongs to the whole group,
		// which another point may share only in part: such a group is
		// always read (long lines are rare).
		run := k
		if end == k+1 {
			if _, ok := seen[p.Parts[k].ID]; ok {
				run = end
			}
		}
		count := int64(0)
		for _, part := range p.Parts[k:end] {
			count += part.Count
		}
		if run < end { // not all seen
			err := p.read(ctx, k, end, first, nil, func(_ int64, e *Entry) error {
				for _, c := range e.Chunks {
					if !c.Hole {
						add(c.ID)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			for _, part := range p.Parts[k:end] {
				seen[part.ID] = struct{}{}
			}
		}
		first += count
		k = end
	}
	return nil
}

// CommitCopy commits at r the restore point p read from another repository
// of the same plan (a transmit): the same point object, re-sealed with r's
// key, after the caller copied every chunk of p.Needs. check and the rule
// are PointWriter.Commit's, under the epoch p was written with.
func (r *Repo) CommitCopy(ctx context.Context, p *Point, check func(context.Context) error) error {
	m := &p.Meta
	if err := r.checkOwn(m); err != nil {
		return err
	}
	if check == nil {
		check = func(ctx context.Context) error { return r.checkParts(ctx, m.Point, p.Parts) }
	}
	return r.commitPlain(ctx, m.Point, m.Epoch, p.plain, check)
}
