package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
)

const testPoint = "2026-11-22T10:01:50.123Z-3f2a9c1b"

func testManifest(encryption string) *Manifest {
	cet := time.FixedZone("CET", 3600)
	a, b := Hash([]byte("a")), Hash([]byte("b"))
	m := &Manifest{
		Version:     FormatVersion,
		Plan:        "web",
		Point:       testPoint,
		Site:        "dc1",
		Source:      "dir",
		Snapshot:    time.Date(2026, 11, 22, 11, 1, 50, 123456789, cet),
		Epoch:       3,
		Chunker:     ChunkerSpec,
		Compression: CompressionZstd,
		Encryption:  encryption,
		Entries: []Entry{
			{Path: ".", Type: source.TypeDir, Mode: 0o755, ModTime: time.Date(2026, 1, 1, 0, 0, 0, 1, time.UTC)},
			{Path: "etc", Type: source.TypeDir, Mode: 0o1777, UID: 1000, GID: 1000, ModTime: time.Unix(1, 999999999)},
			{Path: "etc/app.conf", Type: source.TypeFile, Mode: 0o4755, Size: 3, ModTime: time.Unix(1700000000, 5).In(cet),
				Chunks: []Ref{{ID: a, Size: 1}, {ID: b, Size: 2}}},
			{Path: "etc/empty", Type: source.TypeFile, Mode: 0o600, ModTime: time.Unix(0, 0)},
			{Path: "etc/sparse", Type: source.TypeFile, Mode: 0o2644, Size: 10<<30 + 2, ModTime: time.Unix(0, 0),
				Chunks: []Ref{{ID: a, Size: 1}, {Hole: true, Size: 10 << 30}, {ID: a, Size: 1}}},
			{Path: "etc/link", Type: source.TypeSymlink, Mode: 0o777, Target: "../x\x80y", ModTime: time.Unix(2, 0)},
			{Path: "etc/\xff\xfename", Type: source.TypeDir, Mode: 0o700, ModTime: time.Unix(3, 0)},
			{Path: "etc/\xff\xfename/x", Type: source.TypeSymlink, Mode: 0o777, Target: "/abs/日本", ModTime: time.Unix(3, 0)},
			{Path: "etc/line\nbreak <&> \"quoted\"", Type: source.TypeDir, Mode: 0o700, ModTime: time.Unix(3, 0)},
			{Path: "日本語 ü", Type: source.TypeFile, Mode: 0o644, Size: 1, ModTime: time.Unix(4, 0), Chunks: []Ref{{ID: b, Size: 1}}},
		},
	}
	m.ComputeTotals()
	return m
}

// normalized returns m as decoding gives it back: times in UTC, no empty chunk lists.
func normalized(m *Manifest) *Manifest {
	c := *m
	c.Snapshot = c.Snapshot.UTC()
	c.Entries = make([]Entry, len(m.Entries))
	for i, e := range m.Entries {
		e.ModTime = e.ModTime.UTC()
		if len(e.Chunks) == 0 {
			e.Chunks = nil
		}
		c.Entries[i] = e
	}
	return &c
}

func TestManifestRoundTrip(t *testing.T) {
	m := testManifest(EncryptionNone)
	want := Totals{Entries: 10, Files: 4, Dirs: 4, Symlinks: 2, Chunks: 5, UniqueChunks: 2, Bytes: 3 + 10<<30 + 2 + 1, HoleBytes: 10 << 30}
	if m.Totals != want {
		t.Fatalf("ComputeTotals: %+v, want %+v", m.Totals, want)
	}
	b, err := EncodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, s := range []string{
		`{"format":"drorch-manifest","version":1,"plan":"web","point":"` + testPoint + `","site":"dc1","source":"dir","snapshot":"2026-11-22T10:01:50.123456789Z","epoch":3,`,
		`"path64":"` + base64.StdEncoding.EncodeToString([]byte("etc/\xff\xfename")) + `"`,
		`"target64":`,
		`{"hole":true,"size":10737418240}`,
		`{"id":"` + Hash([]byte("a")).String() + `","size":1}`,
		`"mtime":"1970-01-01T00:00:01.999999999Z"`,
		`line\nbreak <&> \"quoted\"`,
		`"path":"日本語 ü"`,
		`"path":"etc/empty","type":"file","mode":384,"uid":0,"gid":0,"size":0,"mtime":"1970-01-01T00:00:00Z","chunks":[]}`,
		"\n" + `{"totals":{"entries":10,`,
	} {
		if !strings.Contains(text, s) {
			t.Errorf("encoding lacks %s", s)
		}
	}
	if strings.Contains(text, "\ufffd") {
		t.Error("encoding replaced bytes with U+FFFD")
	}
	if n := strings.Count(text, "\n"); n != 2+len(m.Entries) {
		t.Errorf("%d lines, want %d", n, 2+len(m.Entries))
	}
	got, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := normalized(m); !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	again, err := EncodeManifest(got)
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}

// Manifest lines for the rejection table. The trailer is added by build.
const (
	hdr     = `{"format":"drorch-manifest","version":1,"plan":"web","point":"2026-11-22T10:01:50.123Z-3f2a9c1b","site":"dc1","source":"dir","snapshot":"2026-11-22T10:01:50.5Z","epoch":3,"chunker":"fastcdc-v1.0.0/262144/1048576/4194304","compression":"zstd","encryption":"none"}`
	rootDir = `{"path":".","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`
	totals0 = `{"entries":1,"files":0,"dirs":1,"symlinks":0,"chunks":0,"unique_chunks":0,"bytes":0,"hole_bytes":0}`
	idA     = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb" // Hash("a")
)

func dir(path string) string {
	return fmt.Sprintf(`{"path":%q,"type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`, path)
}

func file(path string, size int64, chunks string) string {
	return fmt.Sprintf(`{"path":%q,"type":"file","mode":420,"uid":0,"gid":0,"size":%d,"mtime":"2026-11-22T10:00:00Z","chunks":[%s]}`, path, size, chunks)
}

// build joins lines and adds a trailer with the given totals and a correct digest.
func build(totals string, lines ...string) []byte {
	body := strings.Join(lines, "\n") + "\n"
	sum := sha256.Sum256([]byte(body))
	return []byte(body + `{"totals":` + totals + `,"digest":"sha256:` + hex.EncodeToString(sum[:]) + `"}` + "\n")
}

// An empty file encodes "chunks":[] even when it is the first file of the
// manifest (a nil slice would encode as null, which the decoder refuses).
func TestManifestEmptyFirstFile(t *testing.T) {
	m := &Manifest{Version: FormatVersion, Plan: "p", Point: NewPointID(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), "ab"),
		Site: "s", Source: "dir", Snapshot: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC), Epoch: 1,
		Chunker: ChunkerSpec, Compression: CompressionZstd, Encryption: EncryptionNone,
		Entries: []Entry{
			{Path: ".", Type: source.TypeDir, Mode: 0o755, ModTime: time.Unix(1, 0)},
			{Path: "empty", Type: source.TypeFile, Mode: 0o644, ModTime: time.Unix(1, 0)},
		}}
	m.ComputeTotals()
	b, err := EncodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeManifest(b); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

func TestDecodeManifestValid(t *testing.T) {
	m, err := DecodeManifest(build(`{"entries":4,"files":1,"dirs":2,"symlinks":1,"chunks":2,"unique_chunks":1,"bytes":12,"hole_bytes":10}`,
		hdr, rootDir, dir("a"), file("a/f", 12, `{"id":"`+idA+`","size":1},{"hole":true,"size":10},{"id":"`+idA+`","size":1}`),
		`{"path":"l","type":"symlink","mode":511,"uid":0,"gid":0,"mtime":"2026-11-22T11:00:00+01:00","target":"a/f"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Entries) != 4 || m.Entries[2].Chunks[1] != (Ref{Hole: true, Size: 10}) || !m.Entries[3].ModTime.Equal(time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("%+v", m.Entries)
	}
	if m.Snapshot.Nanosecond() != 5e8 {
		t.Fatalf("snapshot %v", m.Snapshot)
	}
}

func TestDecodeManifestRejects(t *testing.T) {
	ok := build(totals0, hdr, rootDir)
	if _, err := DecodeManifest(ok); err != nil {
		t.Fatalf("base case: %v", err)
	}
	withHeader := func(old, new string) []byte {
		return build(totals0, strings.Replace(hdr, old, new, 1), rootDir)
	}
	one := func(entry string) []byte { return build(totals0, hdr, rootDir, entry) }
	ref := func(s string) []byte { return one(file("f", 1, s)) }
	cases := []struct {
		name string
		in   []byte
		want string // the error must contain this
	}{
		{"empty", nil, "empty"},
		{"no final newline", ok[:len(ok)-1], "line 3: no newline"},
		{"header only", []byte(hdr + "\n"), "line 1: missing trailer"},
		{"wrong format", withHeader(`"drorch-manifest"`, `"restic"`), `line 1: header: format is "restic"`},
		{"wrong version", withHeader(`"version":1`, `"version":3`), "line 1: header: format version 3"},
		{"unknown header field", withHeader(`"epoch":3`, `"epoch":3,"x":1`), `line 1: header: unknown field "x"`},
		{"bad plan", withHeader(`"plan":"web"`, `"plan":"../x"`), "line 1: header: plan name"},
		{"bad point", withHeader(`Z-3f2a9c1b"`, `Z-X"`), "line 1: header: point id"},
		{"no site", withHeader(`"site":"dc1"`, `"site":""`), "line 1: header: site"},
		{"compression", withHeader(`"zstd"`, `"gzip"`), `line 1: header: compression "gzip"`},
		{"encryption", withHeader(`"encryption":"none"`, `"encryption":"rot13"`), `line 1: header: encryption "rot13"`},
		{"bad snapshot", withHeader(`2026-11-22T10:01:50.5Z`, `yesterday`), "line 1: header: snapshot time"},
		{"header not an object", build(totals0, "[]", rootDir), "line 1: header: not a JSON object"},
		{"bad digest", bytes.Replace(ok, []byte(`"sha256:`), []byte(`"sha256:00`), 1), "line 3: digest"},
		{"content changed", bytes.Replace(ok, []byte(`"mode":493`), []byte(`"mode":448`), 1), "line 3: digest"},
		{"missing trailer", []byte(hdr + "\n" + rootDir + "\n"), "line 2: missing trailer"},
		{"trailer unknown field", bytes.Replace(ok, []byte(`,"digest"`), []byte(`,"x":1,"digest"`), 1), `line 3: trailer: unknown field "x"`},
		{"no entries", build(`{}`, hdr), "line 2: no entries"},
		{"unknown entry field", one(`{"path":"a","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z","xattr":{}}`), `line 3: unknown field "xattr"`},
		{"empty line", build(totals0, hdr, rootDir, ""), "line 3: empty line"},
		// Names are exact and appear once: a reader that took the first or
		// the last of two, or "Path" for "path", could read another tree
		// than the writer meant.
		{"a field twice", one(`{"path":"a","path":"b","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: invalid JSON at byte 12, in /path: duplicate object member name`},
		{"a long wrong value", one(`{"path":"a","type":"dir","mode":` + strings.Repeat("9", 1000) + `,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: field /mode cannot be ` + strings.Repeat("9", 64) + "…"},
		{"a field in other case", one(`{"Path":"a","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: unknown field "Path"`},
		{"two objects on a line", one(dir("a") + " {}"), "line 3: invalid JSON at byte 84: invalid character '{' after top-level value"},
		{"invalid UTF-8", one(`{"path":"a` + "\xff" + `","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "line 3: not valid UTF-8"},
		{"missing path", one(`{"type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: missing "path"`},
		{"path and path64", one(`{"path":"a","path64":"YQ==","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: both "path" and "path64"`},
		{"bad path64", one(`{"path64":"YQ","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: "path64" is not standard base64`},
		{"empty path", one(dir("")), "line 3: entry \"\": empty path"},
		{"absolute path", one(dir("/etc")), "line 3: entry \"/etc\": absolute path"},
		{"dotdot", one(dir("..")), `line 3: entry "..": path has a ".." component`},
		{"escapes the root", build(totals0, hdr, rootDir, dir("a"), dir("a/../../b")), `line 4: entry "a/../../b": path has a ".." component`},
		{"dot component", one(dir("./a")), `path has a "." component`},
		{"empty component", build(totals0, hdr, rootDir, dir("a"), dir("a//b")), "line 4: entry \"a//b\": path has an empty component"},
		{"trailing slash", build(totals0, hdr, rootDir, dir("a"), dir("a/")), "path has an empty component"},
		{"NUL in path", one(`{"path":"a\u0000b","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "line 3: entry \"a\\x00b\": path contains NUL"},
		{"NUL via path64", one(`{"path64":"YQBi","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "path contains NUL"},
		{"root not first", build(totals0, hdr, dir("a"), rootDir), `line 2: entry "a": the first entry must be the root "."`},
		{"root twice", one(rootDir), `line 3: entry ".": the root "." must come first and only once`},
		{"duplicate", build(totals0, hdr, rootDir, dir("a"), dir("a")), `line 4: entry "a": duplicate path`},
		{"duplicate file", build(totals0, hdr, rootDir, file("f", 0, ""), dir("f")), `line 4: entry "f": duplicate path`},
		{"child before parent", build(totals0, hdr, rootDir, dir("a/b"), dir("a")), `line 3: entry "a/b": parent "a" does not come before it`},
		{"parent is a file", build(totals0, hdr, rootDir, file("f", 0, ""), dir("f/x")), `line 4: entry "f/x": parent "f" is not a directory`},
		{"root is a file with children", build(totals0, hdr, file(".", 0, ""), dir("x")), `line 3: entry "x": parent "." is not a directory`},
		{"unknown type", one(`{"path":"p","type":"fifo","mode":420,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: entry "p": unknown type "fifo"`},
		{"type other", one(`{"path":"p","type":"other","mode":420,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `unknown type "other"`},
		{"missing type", one(`{"path":"p","mode":420,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: missing "type"`},
		{"mode bits", one(`{"path":"p","type":"dir","mode":16877,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "line 3: entry \"p\": mode 040755 has bits outside"},
		{"negative mode", one(`{"path":"p","type":"dir","mode":-1,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "line 3: field /mode cannot be -1"},
		{"negative uid", one(`{"path":"p","type":"dir","mode":493,"uid":-1,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "negative uid"},
		{"missing mtime", one(`{"path":"p","type":"dir","mode":493,"uid":0,"gid":0}`), `line 3: missing "mtime"`},
		{"bad mtime", one(`{"path":"p","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22 10:00:00"}`), "line 3: mtime"},
		{"mtime before year 0 in UTC", one(`{"path":"p","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"0000-01-01T00:00:00+01:00"}`), "line 3: mtime is outside years 0-9999"},
		{"negative size", one(file("f", -1, "")), `line 3: entry "f": negative size -1`},
		{"file without chunks", one(`{"path":"f","type":"file","mode":420,"uid":0,"gid":0,"size":0,"mtime":"2026-11-22T10:00:00Z"}`), `line 3: a file needs "size" and "chunks"`},
		{"sizes do not add up", ref(`{"id":"` + idA + `","size":2}`), `line 3: entry "f": chunk sizes add up to more than the size 1`},
		{"sizes fall short", one(file("f", 5, `{"id":"`+idA+`","size":2}`)), "chunk sizes add up to 2, not the size 5"},
		{"hole with id", ref(`{"id":"` + idA + `","hole":true,"size":1}`), "line 3: chunk 0: a hole has no id"},
		{"zero-size ref", one(file("f", 0, `{"id":"`+idA+`","size":0}`)), "line 3: entry \"f\": chunk 0: size 0 is not positive"},
		{"zero-size hole", one(file("f", 0, `{"hole":true,"size":0}`)), "chunk 0: size 0 is not positive"},
		{"negative ref", ref(`{"id":"` + idA + `","size":-1}`), "chunk 0: size -1 is not positive"},
		{"ref over ChunkMax", one(file("f", ChunkMax+1, `{"id":"`+idA+`","size":4194305}`)), "chunk 0: size 4194305 is more than ChunkMax"},
		{"ref without id", ref(`{"size":1}`), `chunk 0: missing "id"`},
		{"ref with zero id", ref(`{"id":"` + strings.Repeat("0", 64) + `","size":1}`), "chunk 0: missing id"},
		{"ref with bad id", ref(`{"id":"` + strings.ToUpper(idA) + `","size":1}`), "line 3: chunk 0: chunk id must be lowercase hex"},
		{"ref without size", ref(`{"id":"` + idA + `"}`), `chunk 0: missing "size"`},
		{"ref unknown field", ref(`{"id":"` + idA + `","size":1,"offset":0}`), `unknown field "offset"`},
		{"chunks on a dir", one(`{"path":"d","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z","chunks":[]}`), `line 3: a dir has no "size" or "chunks"`},
		{"size on a symlink", one(`{"path":"l","type":"symlink","mode":511,"uid":0,"gid":0,"size":3,"mtime":"2026-11-22T10:00:00Z","target":"abc"}`), `a symlink has no "size" or "chunks"`},
		{"symlink without target", one(`{"path":"l","type":"symlink","mode":511,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z"}`), "symlink target must be non-empty"},
		{"target on a dir", one(`{"path":"d","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z","target":"x"}`), "a dir has no target"},
		{"totals", build(`{"entries":2,"files":0,"dirs":2,"symlinks":0,"chunks":0,"unique_chunks":0,"bytes":0,"hole_bytes":0}`, hdr, rootDir), "line 3: totals"},
		{"totals missing", build(`{}`, hdr, rootDir), "line 3: totals"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeManifest(c.in)
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestEncodeManifestRejects(t *testing.T) {
	for name, change := range map[string]func(m *Manifest){
		"version":          func(m *Manifest) { m.Version = 0 },
		"chunker":          func(m *Manifest) { m.Chunker = "" },
		"invalid UTF-8":    func(m *Manifest) { m.Site = "\xff" },
		"point":            func(m *Manifest) { m.Point = "latest" },
		"stale totals":     func(m *Manifest) { m.Entries = m.Entries[:3] },
		"escaping path":    func(m *Manifest) { m.Entries[2].Path = "etc/../../x"; m.ComputeTotals() },
		"type other":       func(m *Manifest) { m.Entries[3].Type = source.TypeOther; m.ComputeTotals() },
		"hole with id":     func(m *Manifest) { m.Entries[4].Chunks[1].ID = Hash(nil) },
		"year 10000":       func(m *Manifest) { m.Entries[1].ModTime = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"size on dir":      func(m *Manifest) { m.Entries[1].Size = 4096; m.ComputeTotals() },
		"target on a file": func(m *Manifest) { m.Entries[3].Target = "x" },
	} {
		m := testManifest(EncryptionNone)
		change(m)
		if _, err := EncodeManifest(m); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestModes(t *testing.T) {
	for _, c := range []struct {
		unix uint32
		mode fs.FileMode
	}{
		{0o644, 0o644},
		{0o4755, fs.ModeSetuid | 0o755},
		{0o2750, fs.ModeSetgid | 0o750},
		{0o1777, fs.ModeSticky | 0o777},
		{0o7000, fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky},
	} {
		if got := FileMode(c.unix); got != c.mode {
			t.Errorf("FileMode(%#o) = %v, want %v", c.unix, got, c.mode)
		}
		if got := UnixMode(c.mode | fs.ModeDir); got != c.unix {
			t.Errorf("UnixMode(%v) = %#o, want %#o", c.mode, got, c.unix)
		}
	}
}

func TestRepoManifests(t *testing.T) {
	ctx := context.Background()
	for _, key := range [][]byte{nil, testKey} {
		r, st := newTestRepo(t, key)
		m := r.NewManifest(testPoint, "dc1", "dir", time.Date(2026, 11, 22, 10, 1, 50, 7, time.UTC), 3)
		m.Entries = testManifest(r.Encryption()).Entries
		m.ComputeTotals()
		if has, err := r.HasManifest(ctx, testPoint); err != nil || has {
			t.Fatalf("HasManifest before: %v %v", has, err)
		}
		_, err := r.GetManifest(ctx, testPoint)
		if !errors.Is(err, drivers.ErrNotFound) || !strings.Contains(err.Error(), testPoint) || !strings.Contains(err.Error(), "mem://test/web") {
			t.Fatalf("absent manifest: %v", err)
		}
		if err := r.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
		got, err := r.GetManifest(ctx, testPoint)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, asStored(m)) {
			t.Fatalf("round trip differs")
		}
		if has, err := r.HasManifest(ctx, testPoint); err != nil || !has {
			t.Fatalf("HasManifest after: %v %v", has, err)
		}

		// Another point, junk, and a manifest of another plan.
		m2 := *m
		m2.Point = "2026-11-21T23:59:59.000Z-b"
		if err := r.PutManifest(ctx, &m2); err != nil {
			t.Fatal(err)
		}
		st.set("web/points/README", nil)
		st.set("web/points/latest.json.zst", nil)
		st.set("web/points/"+testPoint+".json", nil)
		st.set("web2/points/2020-01-01T00:00:00Z-a.json.zst", nil)
		points, err := r.Points(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(points) != 2 || points[0].ID != m2.Point || points[1].ID != testPoint || points[0].Size == 0 ||
			!points[1].Time.Equal(time.Date(2026, 11, 22, 10, 1, 50, 123e6, time.UTC)) {
			t.Fatalf("Points: %+v", points)
		}

		// A manifest stored under another point's name is refused.
		st.set("web/points/"+m2.Point+".json.zst", st.raw("web/points/"+testPoint+".json.zst"))
		_, err = r.GetManifest(ctx, m2.Point)
		wantReason(t, err, drivers.ReasonCorrupt)
		if !strings.Contains(err.Error(), m2.Point) {
			t.Errorf("message does not name the point: %v", err)
		}
		// So is a damaged one.
		body := bytes.Clone(st.raw("web/points/" + testPoint + ".json.zst"))
		body[len(body)/2] ^= 1
		st.set("web/points/"+testPoint+".json.zst", body)
		_, err = r.GetManifest(ctx, testPoint)
		wantReason(t, err, drivers.ReasonCorrupt)

		// Manifests that do not belong to this repository are not written.
		bad := *m
		bad.Plan = "other"
		wantReason(t, r.PutManifest(ctx, &bad), drivers.ReasonInvalidInput)
		bad = *m
		bad.Encryption = map[bool]string{true: EncryptionNone, false: EncryptionAESGCM}[r.Encrypted()]
		wantReason(t, r.PutManifest(ctx, &bad), drivers.ReasonInvalidInput)
		bad = *m
		bad.Totals.Bytes++
		wantReason(t, r.PutManifest(ctx, &bad), drivers.ReasonInvalidInput)
		_, err = r.GetManifest(ctx, "latest")
		wantReason(t, err, drivers.ReasonInvalidInput)
	}
}

// An unencrypted manifest copied from another plan's repository is refused.
func TestManifestOtherPlan(t *testing.T) {
	ctx := context.Background()
	r, st := newTestRepo(t, nil)
	other, _ := New(st, "db", nil)
	m := other.NewManifest(testPoint, "dc1", "dir", time.Unix(0, 0), 1)
	m.Entries = []Entry{{Path: ".", Type: source.TypeDir, Mode: 0o755}}
	m.ComputeTotals()
	if err := other.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	st.set("web/points/"+testPoint+".json.zst", st.raw("db/points/"+testPoint+".json.zst"))
	_, err := r.GetManifest(ctx, testPoint)
	wantReason(t, err, drivers.ReasonCorrupt)
}

func FuzzDecodeManifest(f *testing.F) {
	b, err := EncodeManifest(testManifest(EncryptionNone))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(build(totals0, hdr, rootDir))
	f.Add(build(`{}`, hdr, rootDir, dir("a"), file("a/f", 12, `{"id":"`+idA+`","size":1},{"hole":true,"size":10},{"id":"`+idA+`","size":1}`),
		`{"path64":"/w==","type":"symlink","mode":511,"uid":0,"gid":0,"mtime":"2026-11-22T11:00:00+01:00","target64":"gA=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := DecodeManifest(b); err == nil {
			if _, err := EncodeManifest(m); err != nil {
				t.Fatalf("decoded manifest does not encode: %v", err)
			}
		}
		// The digest would stop almost every mutation; check what lies behind it too.
		m, err := decodeManifest(b, false)
		if err != nil {
			return
		}
		again, err := EncodeManifest(m)
		if err != nil {
			t.Fatalf("decoded manifest does not encode: %v", err)
		}
		m2, err := DecodeManifest(again)
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("decode(encode(m)) != m:\n%+v\n%+v", m, m2)
		}
	})
}

// asStored is m as a commit stores it (format v3): normalized, with its
// entries in tree order.
func asStored(m *Manifest) *Manifest {
	c := normalized(m)
	c.Version = ManifestVersionChunked
	c.Entries = slices.SortedStableFunc(slices.Values(c.Entries), func(a, b Entry) int { return CompareTreePaths(a.Path, b.Path) })
	return c
}
