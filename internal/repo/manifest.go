package repo

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/drorch/drorch/drivers/source"
)

// ManifestFormat is the "format" value of a manifest's header line.
const ManifestFormat = "drorch-manifest"

// Manifest describes one restore point: every entry of the source tree as it
// was at the snapshot, and for each file the chunks that rebuild it.
type Manifest struct {
	Version     int       // FormatVersion
	Plan        string    // the plan whose repository holds it
	Point       string    // point id, see NewPointID
	Site        string    // site whose repository it was first written to
	Source      string    // source driver kind, e.g. "dir"
	Snapshot    time.Time // when the snapshot was taken
	Epoch       uint64    // the plan's epoch when the point was written
	Chunker     string    // ChunkerSpec
	Compression string    // CompressionZstd
	Encryption  string    // EncryptionAESGCM or EncryptionNone
	Entries     []Entry   // the root "." first, parents before children
	Totals      Totals    // as ComputeTotals fills it
}

// Entry is one node of the tree.
type Entry struct {
	// Path is slash-separated and relative to the root; "." is the root. Its
	// components may hold any bytes but "/" and NUL, not only UTF-8.
	Path    string
	Type    source.Type // TypeFile, TypeDir or TypeSymlink
	Mode    uint32      // 0o7777 bits: permissions, 0o4000 setuid, 0o2000 setgid, 0o1000 sticky
	UID     int
	GID     int
	Size    int64     // files only; zero for the others
	ModTime time.Time // nanosecond precision is kept
	Target  string    // symlinks only: the target, any bytes but NUL
	Chunks  []Ref     // files only: in order, sizes summing to Size
	// SHA256 is the hex SHA-256 of the whole content (format v2): set on
	// every file with a slice ref, whose chunks' ids cannot check it.
	SHA256 string
}

// Ref is one stretch of a file: the chunk ID of Size bytes, or when Hole is
// set, Size zero bytes that are not stored (ID unset), or when Slice is set
// (format v2), bytes [Off, Off+Size) of chunk ID.
type Ref struct {
	ID    ID
	Size  int64
	Hole  bool
	Off   int64 `json:",omitempty"`
	Slice bool  `json:",omitempty"`
}

// Bytes returns the bytes r stands for in chunk, its verified plaintext: all
// of it, or for a slice bytes [Off, Off+Size). A chunk too short for r is an
// error (the chunk or the manifest is damaged).
func (r Ref) Bytes(chunk []byte) ([]byte, error) {
	switch {
	case !r.Slice && int64(len(chunk)) != r.Size:
		return nil, fmt.Errorf("chunk %s holds %d bytes, the restore point says %d", r.ID, len(chunk), r.Size)
	case r.Slice && (r.Off < 0 || r.Size < 0 || r.Off+r.Size > int64(len(chunk))):
		return nil, fmt.Errorf("chunk %s holds %d bytes, the restore point names its bytes %d to %d", r.ID, len(chunk), r.Off, r.Off+r.Size)
	}
	return chunk[r.Off : r.Off+r.Size], nil
}

// ManifestVersionSlices is the manifest version of a restore point with a
// slice ref or a file's SHA-256 (format v2); one without either stays
// FormatVersion (1), byte for byte as before v2.
const ManifestVersionSlices = 2

// version is the manifest version m is written with.
func (m *Manifest) version() int {
	for i := range m.Entries {
		if m.Entries[i].usesV2() {
			return ManifestVersionSlices
		}
	}
	return FormatVersion
}

// usesV2 reports whether e needs manifest format v2.
func (e *Entry) usesV2() bool {
	if e.SHA256 != "" {
		return true
	}
	for _, c := range e.Chunks {
		if c.Slice {
			return true
		}
	}
	return false
}

// Totals summarises a manifest. Bytes counts file sizes including holes;
// HoleBytes the part of Bytes in holes; Chunks the data refs, UniqueChunks the
// distinct chunk ids among them.
type Totals struct {
	Entries      int64 `json:"entries"`
	Files        int64 `json:"files"`
	Dirs         int64 `json:"dirs"`
	Symlinks     int64 `json:"symlinks"`
	Chunks       int64 `json:"chunks"`
	UniqueChunks int64 `json:"unique_chunks"`
	Bytes        int64 `json:"bytes"`
	HoleBytes    int64 `json:"hole_bytes"`
}

// ComputeTotals fills m.Totals from m.Entries.
func (m *Manifest) ComputeTotals() {
	var t Totals
	ids := make(map[ID]struct{})
	for i := range m.Entries {
		countEntry(&t, ids, &m.Entries[i])
	}
	m.Totals = t
}

func countEntry(t *Totals, ids map[ID]struct{}, e *Entry) {
	t.Entries++
	switch e.Type {
	case source.TypeFile:
		t.Files++
		t.Bytes += e.Size
	case source.TypeDir:
		t.Dirs++
	case source.TypeSymlink:
		t.Symlinks++
	}
	for _, c := range e.Chunks {
		if c.Hole {
			t.HoleBytes += c.Size
			continue
		}
		t.Chunks++
		if ids == nil {
			continue // the caller counts distinct ids its own way
		}
		if _, ok := ids[c.ID]; !ok {
			ids[c.ID] = struct{}{}
			t.UniqueChunks++
		}
	}
}

// modeBits are the Unix mode bits an entry keeps.
const modeBits = 0o7777

// FileMode converts Unix mode bits (permissions, setuid 0o4000, setgid 0o2000,
// sticky 0o1000) to an fs.FileMode with no type bits.
func FileMode(mode uint32) fs.FileMode {
	m := fs.FileMode(mode) & fs.ModePerm
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// UnixMode converts the permission, setuid, setgid and sticky bits of m to
// Unix mode bits; type bits are dropped.
func UnixMode(m fs.FileMode) uint32 {
	mode := uint32(m & fs.ModePerm)
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// The lines of the encoding. Encoding and decoding use separate types: the
// decoder needs to tell an absent field from a zero one.
type (
	headerLine struct {
		Format      string `json:"format"`
		Version     int    `json:"version"`
		Plan        string `json:"plan"`
		Point       string `json:"point"`
		Site        string `json:"site"`
		Source      string `json:"source"`
		Snapshot    string `json:"snapshot"`
		Epoch       uint64 `json:"epoch"`
		Chunker     string `json:"chunker"`
		Compression string `json:"compression"`
		Encryption  string `json:"encryption"`
	}
	entryOut struct {
		Path     string      `json:"path,omitempty"`
		Path64   []byte      `json:"path64,omitempty"`
		Type     source.Type `json:"type"`
		Mode     uint32      `json:"mode"`
		UID      int         `json:"uid"`
		GID      int         `json:"gid"`
		Size     *int64      `json:"size,omitempty"`
		MTime    string      `json:"mtime"`
		Target   string      `json:"target,omitempty"`
		Target64 []byte      `json:"target64,omitempty"`
		Chunks   *[]refOut   `json:"chunks,omitempty"`
		SHA256   string      `json:"sha256,omitempty"`
	}
	refOut struct {
		ID   *ID    `json:"id,omitempty"`
		Hole bool   `json:"hole,omitempty"`
		Size int64  `json:"size"`
		Off  *int64 `json:"off,omitempty"`
	}
	entryIn struct {
		Path     *string  `json:"path"`
		Path64   *string  `json:"path64"`
		Type     *string  `json:"type"`
		Mode     *uint32  `json:"mode"`
		UID      *int     `json:"uid"`
		GID      *int     `json:"gid"`
		Size     *int64   `json:"size"`
		MTime    *string  `json:"mtime"`
		Target   *string  `json:"target"`
		Target64 *string  `json:"target64"`
		Chunks   *[]refIn `json:"chunks"`
		SHA256   *string  `json:"sha256"`
	}
	refIn struct {
		ID   *string `json:"id"`
		Hole *bool   `json:"hole"`
		Size *int64  `json:"size"`
		Off  *int64  `json:"off"`
	}
	trailerLine struct {
		Totals *Totals `json:"totals"`
		Digest *string `json:"digest"`
	}
)

const digestPrefix = "sha256:"

// EncodeManifest encodes m as JSON lines: a header, one line per entry, and a
// trailer with the totals and the SHA-256 of all the lines before it. It
// checks m as DecodeManifest would, so that nothing unreadable is written;
// m.Totals must be what ComputeTotals gives.
func EncodeManifest(m *Manifest) ([]byte, error) {
	if err := checkHeader(m); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(headerOf(m, m.version())); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	v := newValidator(len(m.Entries))
	var refs []refOut
	for i := range m.Entries {
		e := &m.Entries[i]
		if err := v.add(e); err != nil {
			return nil, fmt.Errorf("encode manifest: entry %d (%q): %w", i, e.Path, err)
		}
		if err := encodeEntry(enc, e, &refs); err != nil {
			return nil, fmt.Errorf("encode manifest: entry %d (%q): %w", i, e.Path, err)
		}
	}
	if v.totals != m.Totals {
		return nil, fmt.Errorf("encode manifest: totals %+v do not match the entries, which give %+v (call ComputeTotals)", m.Totals, v.totals)
	}
	sum := sha256.Sum256(buf.Bytes())
	digest := digestPrefix + hex.EncodeToString(sum[:])
	if err := enc.Encode(trailerLine{Totals: &m.Totals, Digest: &digest}); err != nil {
		return nil, fmt.Errorf("encode manifest: %w", err)
	}
	return buf.Bytes(), nil
}

// encodeEntry writes the line of e, which v.add has checked; refs is
// scratch space kept between calls.
func encodeEntry(enc *json.Encoder, e *Entry, refs *[]refOut) error {
	if !validTime(e.ModTime) {
		return fmt.Errorf("modification time %v is outside years 0-9999", e.ModTime)
	}
	out := entryOut{
		Type:  e.Type,
		Mode:  e.Mode,
		UID:   e.UID,
		GID:   e.GID,
		MTime: e.ModTime.UTC().Format(time.RFC3339Nano),
	}
	// encoding/json would replace invalid UTF-8 with U+FFFD: such names
	// are written in base64 instead.
	if utf8.ValidString(e.Path) {
		out.Path = e.Path
	} else {
		out.Path64 = []byte(e.Path)
	}
	if utf8.ValidString(e.Target) {
		out.Target = e.Target
	} else {
		out.Target64 = []byte(e.Target)
	}
	if e.Type == source.TypeFile {
		out.Size = &e.Size
		rs := (*refs)[:0]
		if rs == nil {
			rs = []refOut{} // never nil: an empty file's chunks are [], not null
		}
		for j := range e.Chunks {
			c := &e.Chunks[j]
			switch {
			case c.Hole:
				rs = append(rs, refOut{Hole: true, Size: c.Size})
			case c.Slice:
				rs = append(rs, refOut{ID: &c.ID, Size: c.Size, Off: &c.Off})
			default:
				rs = append(rs, refOut{ID: &c.ID, Size: c.Size})
			}
		}
		*refs = rs
		out.Chunks = &rs
		out.SHA256 = e.SHA256
	}
	return enc.Encode(out)
}

// DecodeManifest decodes and checks a manifest written by EncodeManifest. It is
// strict: any departure from the format is an error naming the line. Memory
// use is bounded by a small multiple of len(b).
func DecodeManifest(b []byte) (*Manifest, error) {
	return decodeManifest(b, true)
}

// manifestError names the line a decoding error is about.
func manifestError(line int, format string, args ...any) error {
	return fmt.Errorf("manifest line %d: %s", line, fmt.Sprintf(format, args...))
}

// decodeManifest is DecodeManifest; verifyDigest=false lets the fuzz test reach
// the checks behind the digest.
func decodeManifest(b []byte, verifyDigest bool) (*Manifest, error) {
	if len(b) == 0 {
		return nil, errors.New("manifest is empty")
	}
	lines := bytes.Count(b, []byte{'\n'})
	if b[len(b)-1] != '\n' {
		return nil, manifestError(lines+1, "no newline at the end of the manifest (truncated?)")
	}
	next := func(b []byte) (line, rest []byte) {
		i := bytes.IndexByte(b, '\n')
		return b[:i], b[i+1:]
	}

	first, rest := next(b)
	var h headerLine
	if err := decodeLine(first, &h); err != nil {
		return nil, manifestError(1, "header: %v", err)
	}
	m, err := fromHeader(&h)
	if err != nil {
		return nil, manifestError(1, "header: %v", err)
	}
	if lines < 2 {
		return nil, manifestError(1, "missing trailer (truncated?)")
	}

	// The trailer is the last line; the digest covers every byte before it.
	lastStart := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
	var t trailerLine
	if err := decodeLine(b[lastStart:len(b)-1], &t); err != nil || t.Totals == nil || t.Digest == nil {
		why := "missing trailer (truncated?)"
		if err != nil && bytes.HasPrefix(b[lastStart:], []byte(`{"totals"`)) {
			why = fmt.Sprintf("trailer: %v", err)
		}
		return nil, manifestError(lines, "%s", why)
	}
	if verifyDigest {
		sum := sha256.Sum256(b[:lastStart])
		if want := digestPrefix + hex.EncodeToString(sum[:]); *t.Digest != want {
			return nil, manifestError(lines, "digest %q does not match the content, whose digest is %s (corrupted)", *t.Digest, want)
		}
	}

	// Each entry line is at least 60 bytes: this bounds the first allocation.
	m.Entries = make([]Entry, 0, min(lines-2, len(b)/60+1))
	v := newValidator(cap(m.Entries))
	body := rest[:lastStart-len(first)-1]
	for n := 2; len(body) > 0; n++ {
		var line []byte
		line, body = next(body)
		var in entryIn
		if err := decodeLine(line, &in); err != nil {
			return nil, manifestError(n, "%v", err)
		}
		e, err := fromEntryLine(&in)
		if err != nil {
			return nil, manifestError(n, "%v", err)
		}
		if err := v.add(&e); err != nil {
			return nil, manifestError(n, "entry %q: %v", e.Path, err)
		}
		if m.Version < ManifestVersionSlices && e.usesV2() {
			return nil, manifestError(n, "entry %q: \"off\" and \"sha256\" need format version %d, the header says %d", e.Path, ManifestVersionSlices, m.Version)
		}
		m.Entries = append(m.Entries, e)
	}
	if len(m.Entries) == 0 {
		return nil, manifestError(lines, "no entries: the root \".\" is missing")
	}
	if v.totals != *t.Totals {
		return nil, manifestError(lines, "totals %+v do not match the entries, which give %+v", *t.Totals, v.totals)
	}
	m.Totals = *t.Totals
	return m, nil
}

// decodeLine decodes one line holding exactly one JSON object with no fields
// that v does not know.
func decodeLine(line []byte, v any) error {
	if len(line) == 0 {
		return errors.New("empty line")
	}
	if line[0] != '{' {
		return errors.New("not a JSON object")
	}
	// Said plainly (the decoder refuses it too, in its own words).
	if !utf8.Valid(line) {
		return errors.New("not valid UTF-8")
	}
	// encoding/json/v2 (the module that mirrors it until Go 1.27): four
	// times as fast as v1's Decoder on an entry line, which every reader
	// of a point decodes for each of millions of entries. It is stricter
	// than v1: exact field names, no duplicate names, invalid UTF-8
	// refused; and, as Unmarshal, nothing after the object.
	return lineError(jsonv2.Unmarshal(line, v, jsonv2.RejectUnknownMembers(true)))
}

// lineError says what the decoder found wrong with a line in the words of
// the format (fields and values), not of Go's types.
func lineError(err error) error {
	var sem *jsonv2.SemanticError
	var syn *jsontext.SyntacticError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &sem) && errors.Is(sem.Err, jsonv2.ErrUnknownName):
		if parent := sem.JSONPointer.Parent(); parent != "" {
			return fmt.Errorf("unknown field %q in %s", sem.JSONPointer.LastToken(), parent)
		}
		return fmt.Errorf("unknown field %q", sem.JSONPointer.LastToken())
	case errors.As(err, &sem) && sem.JSONValue != nil:
		// A line may be as long as MaxMetadataSize: the value is cut.
		v := string(sem.JSONValue)
		if len(v) > 64 {
			v = strings.ToValidUTF8(v[:64], "") + "…"
		}
		return fmt.Errorf("field %s cannot be %s", sem.JSONPointer, v)
	case errors.As(err, &sem) && sem.JSONKind != 0:
		return fmt.Errorf("field %s cannot be a JSON %s", sem.JSONPointer, sem.JSONKind)
	case errors.As(err, &syn):
		if syn.JSONPointer != "" {
			return fmt.Errorf("invalid JSON at byte %d, in %s: %v", syn.ByteOffset, syn.JSONPointer, syn.Err)
		}
		return fmt.Errorf("invalid JSON at byte %d: %v", syn.ByteOffset, syn.Err)
	}
	return err
}

func fromHeader(h *headerLine) (*Manifest, error) {
	if h.Format != ManifestFormat {
		return nil, fmt.Errorf("format is %q, not %q", h.Format, ManifestFormat)
	}
	if h.Version != FormatVersion && h.Version != ManifestVersionSlices {
		return nil, fmt.Errorf("format version %d is not supported here (this drorch reads versions %d to %d; version %d through OpenPoint)", h.Version, FormatVersion, ManifestVersionChunked, ManifestVersionChunked)
	}
	snap, err := time.Parse(time.RFC3339Nano, h.Snapshot)
	if err != nil {
		return nil, fmt.Errorf("snapshot time: %v", err)
	}
	m := &Manifest{
		Version:     h.Version,
		Plan:        h.Plan,
		Point:       h.Point,
		Site:        h.Site,
		Source:      h.Source,
		Snapshot:    snap.UTC(),
		Epoch:       h.Epoch,
		Chunker:     h.Chunker,
		Compression: h.Compression,
		Encryption:  h.Encryption,
	}
	if err := checkHeader(m); err != nil {
		return nil, err
	}
	return m, nil
}

// checkHeader checks the fields of m other than Entries and Totals.
func checkHeader(m *Manifest) error {
	if m.Version != FormatVersion && m.Version != ManifestVersionSlices && m.Version != ManifestVersionChunked {
		return fmt.Errorf("format version %d is not supported (this drorch writes versions %d to %d)", m.Version, FormatVersion, ManifestVersionChunked)
	}
	if err := ValidPlan(m.Plan); err != nil {
		return err
	}
	if err := ValidPointID(m.Point); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"site", m.Site}, {"source", m.Source}, {"chunker", m.Chunker},
	} {
		if f.v == "" || !utf8.ValidString(f.v) {
			return fmt.Errorf("%s must be a non-empty UTF-8 string", f.name)
		}
	}
	if !validTime(m.Snapshot) {
		return fmt.Errorf("snapshot time %v is outside years 0-9999", m.Snapshot)
	}
	if m.Compression != CompressionZstd {
		return fmt.Errorf("compression %q is not supported (only %q)", m.Compression, CompressionZstd)
	}
	if m.Encryption != EncryptionAESGCM && m.Encryption != EncryptionNone {
		return fmt.Errorf("encryption %q is not supported (only %q or %q)", m.Encryption, EncryptionAESGCM, EncryptionNone)
	}
	return nil
}

// validTime reports whether t survives RFC 3339, which has four-digit years.
func validTime(t time.Time) bool {
	y := t.UTC().Year()
	return 0 <= y && y <= 9999
}

func fromEntryLine(in *entryIn) (Entry, error) {
	var e Entry
	var err error
	if e.Path, err = oneOf("path", in.Path, in.Path64); err != nil {
		return e, err
	}
	if e.Target, err = oneOf("target", in.Target, in.Target64); err != nil {
		return e, err
	}
	if in.Type == nil {
		return e, errors.New(`missing "type"`)
	}
	e.Type = source.Type(*in.Type)
	if in.Mode == nil {
		return e, errors.New(`missing "mode"`)
	}
	e.Mode = *in.Mode
	if in.UID == nil || in.GID == nil {
		return e, errors.New(`missing "uid" or "gid"`)
	}
	e.UID, e.GID = *in.UID, *in.GID
	if in.MTime == nil {
		return e, errors.New(`missing "mtime"`)
	}
	t, err := time.Parse(time.RFC3339Nano, *in.MTime)
	if err != nil {
		return e, fmt.Errorf("mtime: %v", err)
	}
	e.ModTime = t.UTC()
	if !validTime(e.ModTime) {
		return e, errors.New("mtime is outside years 0-9999 in UTC")
	}
	if e.Type == source.TypeFile {
		if in.Size == nil || in.Chunks == nil {
			return e, errors.New(`a file needs "size" and "chunks"`)
		}
	} else if in.Size != nil || in.Chunks != nil {
		return e, fmt.Errorf(`a %s has no "size" or "chunks"`, e.Type)
	}
	if in.Size != nil {
		e.Size = *in.Size
	}
	if in.SHA256 != nil {
		if e.Type != source.TypeFile {
			return e, fmt.Errorf(`a %s has no "sha256"`, e.Type)
		}
		if *in.SHA256 == "" {
			return e, errors.New(`"sha256" is empty`)
		}
		e.SHA256 = *in.SHA256
	}
	if in.Chunks != nil && len(*in.Chunks) > 0 {
		e.Chunks = make([]Ref, len(*in.Chunks))
		for i, r := range *in.Chunks {
			if r.Size == nil {
				return e, fmt.Errorf(`chunk %d: missing "size"`, i)
			}
			e.Chunks[i].Size = *r.Size
			if r.Hole != nil && *r.Hole {
				if r.ID != nil {
					return e, fmt.Errorf("chunk %d: a hole has no id", i)
				}
				if r.Off != nil {
					return e, fmt.Errorf("chunk %d: a hole has no off", i)
				}
				e.Chunks[i].Hole = true
				continue
			}
			if r.Off != nil {
				e.Chunks[i].Off, e.Chunks[i].Slice = *r.Off, true
			}
			if r.ID == nil {
				return e, fmt.Errorf(`chunk %d: missing "id"`, i)
			}
			if e.Chunks[i].ID, err = ParseID(*r.ID); err != nil {
				return e, fmt.Errorf("chunk %d: %v", i, err)
			}
		}
	}
	return e, nil
}

// oneOf decodes a name given either as UTF-8 ("path") or as base64 ("path64").
func oneOf(field string, s, s64 *string) (string, error) {
	switch {
	case s != nil && s64 != nil:
		return "", fmt.Errorf("both %q and %q", field, field+"64")
	case s64 != nil:
		b, err := base64.StdEncoding.Strict().DecodeString(*s64)
		if err != nil || strings.ContainsAny(*s64, "\r\n") {
			return "", fmt.Errorf("%q is not standard base64", field+"64")
		}
		return string(b), nil
	case s != nil:
		return *s, nil
	case field == "path":
		return "", errors.New(`missing "path"`)
	}
	return "", nil
}

// validator checks entries one at a time, in order, and sums their totals.
// It keeps one set of paths, so a manifest is checked in time and memory
// linear in its size.
type validator struct {
	isDir  map[string]bool // every path seen: whether it is a directory
	ids    map[ID]struct{}
	totals Totals
}

func newValidator(n int) *validator {
	return &validator{isDir: make(map[string]bool, n), ids: make(map[ID]struct{})}
}

func (v *validator) add(e *Entry) error {
	if len(v.isDir) == 0 {
		if e.Path != "." {
			return errors.New(`the first entry must be the root "."`)
		}
	} else {
		if err := checkPath(e.Path); err != nil {
			return err
		}
		if _, dup := v.isDir[e.Path]; dup {
			return errors.New("duplicate path")
		}
		parent := "."
		if i := strings.LastIndexByte(e.Path, '/'); i >= 0 {
			parent = e.Path[:i]
		}
		dir, seen := v.isDir[parent]
		if !seen {
			return fmt.Errorf("parent %q does not come before it", parent)
		}
		if !dir {
			return fmt.Errorf("parent %q is not a directory", parent)
		}
	}
	if err := checkEntry(e); err != nil {
		return err
	}
	v.isDir[e.Path] = e.Type == source.TypeDir
	countEntry(&v.totals, v.ids, e)
	return nil
}

// checkEntry checks the fields of e but its place in the tree.
func checkEntry(e *Entry) error {
	switch e.Type {
	case source.TypeFile, source.TypeDir, source.TypeSymlink:
	default:
		return fmt.Errorf("unknown type %q", e.Type)
	}
	if e.Mode&^modeBits != 0 {
		return fmt.Errorf("mode %#o has bits outside %#o", e.Mode, modeBits)
	}
	if e.UID < 0 || e.GID < 0 {
		return fmt.Errorf("negative uid %d or gid %d", e.UID, e.GID)
	}
	if e.Size < 0 {
		return fmt.Errorf("negative size %d", e.Size)
	}
	if e.Type != source.TypeFile && (e.Size != 0 || len(e.Chunks) != 0 || e.SHA256 != "") {
		return fmt.Errorf("a %s has no size, chunks or sha256", e.Type)
	}
	if e.Type == source.TypeSymlink {
		if e.Target == "" || strings.IndexByte(e.Target, 0) >= 0 {
			return errors.New("a symlink target must be non-empty and free of NUL")
		}
	} else if e.Target != "" {
		return fmt.Errorf("a %s has no target", e.Type)
	}
	if e.SHA256 != "" && !validSHA256(e.SHA256) {
		return fmt.Errorf("sha256 %q is not 64 lowercase hex digits", e.SHA256)
	}
	var sum int64
	for i, c := range e.Chunks {
		switch {
		case c.Slice && c.Hole:
			return fmt.Errorf("chunk %d: a hole is not a slice", i)
		case c.Slice && c.Off < 0:
			return fmt.Errorf("chunk %d: off %d is negative", i, c.Off)
		case c.Slice && c.Off > ChunkMax-c.Size:
			return fmt.Errorf("chunk %d: off %d + size %d is more than ChunkMax (%d)", i, c.Off, c.Size, ChunkMax)
		case c.Slice && e.SHA256 == "":
			return fmt.Errorf(`chunk %d: a file with a slice needs "sha256"`, i)
		case !c.Slice && c.Off != 0:
			return fmt.Errorf("chunk %d: off %d on a ref that is not a slice", i, c.Off)
		case c.Size <= 0:
			return fmt.Errorf("chunk %d: size %d is not positive", i, c.Size)
		case c.Hole && !c.ID.IsZero():
			return fmt.Errorf("chunk %d: a hole has no id", i)
		case !c.Hole && c.ID.IsZero():
			return fmt.Errorf("chunk %d: missing id", i)
		case !c.Hole && c.Size > ChunkMax:
			return fmt.Errorf("chunk %d: size %d is more than ChunkMax (%d)", i, c.Size, ChunkMax)
		case c.Size > e.Size-sum:
			return fmt.Errorf("chunk sizes add up to more than the size %d", e.Size)
		}
		sum += c.Size
	}
	if sum != e.Size {
		return fmt.Errorf("chunk sizes add up to %d, not the size %d", sum, e.Size)
	}
	return nil
}

// validSHA256 reports whether s is 64 lowercase hex digits.
func validSHA256(s string) bool {
	_, err := ParseID(s)
	return err == nil
}

// checkPath checks a path other than the root: relative, slash-separated,
// no empty, "." or ".." components, no NUL.
func checkPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case p == ".":
		return errors.New(`the root "." must come first and only once`)
	case p[0] == '/':
		return errors.New("absolute path")
	case strings.IndexByte(p, 0) >= 0:
		return errors.New("path contains NUL")
	}
	for c := range strings.SplitSeq(p, "/") {
		switch c {
		case "":
			return errors.New("path has an empty component")
		case ".", "..":
			return fmt.Errorf("path has a %q component", c)
		}
	}
	return nil
}
