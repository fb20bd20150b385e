package repo

import (
	"crypto/sha256"
	"encoding/hex"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drorch/drorch/drivers/source"
)

// Format v2: a file made of slices of shared chunks, with its whole SHA-256.
func TestManifestV2RoundTrip(t *testing.T) {
	m := testManifest(EncryptionNone)
	run := Hash([]byte("run"))
	sum := sha256.Sum256([]byte("hello"))
	m.Entries = append(m.Entries,
		Entry{Path: "small1", Type: source.TypeFile, Mode: 0o644, Size: 5, ModTime: time.Unix(5, 0).UTC(),
			Chunks: []Ref{{ID: run, Off: 0, Size: 5, Slice: true}}, SHA256: hex.EncodeToString(sum[:])},
		Entry{Path: "small2", Type: source.TypeFile, Mode: 0o644, Size: 7, ModTime: time.Unix(5, 0).UTC(),
			Chunks: []Ref{{ID: run, Off: 5, Size: 3, Slice: true}, {ID: Hash([]byte("b")), Off: 0, Size: 4, Slice: true}}, SHA256: hex.EncodeToString(sum[:])},
	)
	m.ComputeTotals()
	if m.Totals.Chunks != 8 || m.Totals.UniqueChunks != 3 {
		t.Fatalf("totals %+v: want 8 data refs, 3 distinct ids", m.Totals)
	}
	b, err := EncodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, s := range []string{
		`"version":2,`,
		`{"id":"` + run.String() + `","size":5,"off":0}`,
		`{"id":"` + run.String() + `","size":3,"off":5}`,
		`"sha256":"` + hex.EncodeToString(sum[:]) + `"`,
		`{"id":"` + Hash([]byte("a")).String() + `","size":1}`, // a whole chunk has no "off"
	} {
		if !strings.Contains(text, s) {
			t.Errorf("encoding lacks %s", s)
		}
	}
	got, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	want := normalized(m)
	want.Version = ManifestVersionSlices
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
	}
	again, err := EncodeManifest(got)
	if err != nil || string(again) != text {
		t.Fatalf("re-encoding differs: %v", err)
	}

	// Without slices the same code writes version 1, byte for byte as before.
	v1, err := EncodeManifest(testManifest(EncryptionNone))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(v1), `"version":1,`) || strings.Contains(string(v1), `"off"`) || strings.Contains(string(v1), `"sha256":"`) {
		t.Fatalf("a manifest without slices is not plain v1:\n%s", v1)
	}
}

func TestDecodeManifestV2(t *testing.T) {
	hdr2 := strings.Replace(hdr, `"version":1`, `"version":2`, 1)
	sum := strings.Repeat("ab", 32)
	slice := func(off, size int64, sha string) string {
		s := `{"path":"f","type":"file","mode":420,"uid":0,"gid":0,"size":` + itoa(size) + `,"mtime":"2026-11-22T10:00:00Z","chunks":[{"id":"` + idA + `","size":` + itoa(size) + `,"off":` + itoa(off) + `}]`
		if sha != "" {
			s += `,"sha256":"` + sha + `"`
		}
		return s + "}"
	}
	tot := func(size int64) string {
		return `{"entries":2,"files":1,"dirs":1,"symlinks":0,"chunks":1,"unique_chunks":1,"bytes":` + itoa(size) + `,"hole_bytes":0}`
	}
	m, err := DecodeManifest(build(tot(3), hdr2, rootDir, slice(7, 3, sum)))
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Entries[1].Chunks[0]; r != (Ref{ID: mustID(t, idA), Off: 7, Size: 3, Slice: true}) || m.Entries[1].SHA256 != sum || m.Version != 2 {
		t.Fatalf("decoded %+v", m.Entries[1])
	}
	// A v2 manifest without slices is read too.
	if _, err := DecodeManifest(build(totals0, hdr2, rootDir)); err != nil {
		t.Fatalf("v2 without slices: %v", err)
	}
	// Off 0 is a slice (it is written), off+size may reach ChunkMax.
	if _, err := DecodeManifest(build(tot(ChunkMax), hdr2, rootDir, slice(0, ChunkMax, sum))); err != nil {
		t.Fatalf("slice of a whole ChunkMax chunk: %v", err)
	}

	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"off in v1", build(tot(3), hdr, rootDir, slice(0, 3, sum)), `line 3: entry "f": "off" and "sha256" need format version 2, the header says 1`},
		{"sha256 in v1", build(tot(1), hdr, rootDir, file("f", 1, `{"id":"`+idA+`","size":1}`)[:len(file("f", 1, `{"id":"`+idA+`","size":1}`))-1]+`,"sha256":"`+sum+`"}`), `line 3: entry "f": "off" and "sha256" need format version 2`},
		{"negative off", build(tot(3), hdr2, rootDir, slice(-1, 3, sum)), `line 3: entry "f": chunk 0: off -1 is negative`},
		{"past ChunkMax", build(tot(3), hdr2, rootDir, slice(ChunkMax-2, 3, sum)), `line 3: entry "f": chunk 0: off 4194302 + size 3 is more than ChunkMax`},
		{"slice without sha256", build(tot(3), hdr2, rootDir, slice(0, 3, "")), `line 3: entry "f": chunk 0: a file with a slice needs "sha256"`},
		{"short sha256", build(tot(3), hdr2, rootDir, slice(0, 3, "abc")), `line 3: entry "f": sha256 "abc" is not 64 lowercase hex digits`},
		{"upper-case sha256", build(tot(3), hdr2, rootDir, slice(0, 3, strings.ToUpper(sum))), `line 3: entry "f": sha256 "ABAB`},
		{"empty sha256", build(tot(3), hdr2, rootDir, slice(0, 3, "")[:len(slice(0, 3, ""))-1]+`,"sha256":""}`), `line 3: "sha256" is empty`},
		{"hole with off", build(`{"entries":2,"files":1,"dirs":1,"symlinks":0,"chunks":0,"unique_chunks":0,"bytes":3,"hole_bytes":3}`, hdr2, rootDir, file("f", 3, `{"hole":true,"size":3,"off":0}`)), "line 3: chunk 0: a hole has no off"},
		{"sha256 on a dir", build(totals0, hdr2, rootDir, `{"path":"d","type":"dir","mode":493,"uid":0,"gid":0,"mtime":"2026-11-22T10:00:00Z","sha256":"`+sum+`"}`), `line 3: a dir has no "sha256"`},
		{"version 4", build(totals0, strings.Replace(hdr, `"version":1`, `"version":4`, 1), rootDir), "line 1: header: format version 4 is not supported here"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeManifest(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestEncodeManifestV2Rejects(t *testing.T) {
	base := func() *Manifest {
		m := testManifest(EncryptionNone)
		m.Entries = append(m.Entries, Entry{Path: "s", Type: source.TypeFile, Mode: 0o644, Size: 2, ModTime: time.Unix(5, 0),
			Chunks: []Ref{{ID: Hash([]byte("r")), Off: 1, Size: 2, Slice: true}}, SHA256: strings.Repeat("0", 64)})
		m.ComputeTotals()
		return m
	}
	if _, err := EncodeManifest(base()); err != nil {
		t.Fatalf("base case: %v", err)
	}
	last := func(m *Manifest) *Entry { return &m.Entries[len(m.Entries)-1] }
	for name, change := range map[string]func(m *Manifest){
		"no sha256":      func(m *Manifest) { last(m).SHA256 = "" },
		"bad sha256":     func(m *Manifest) { last(m).SHA256 = "xyz" },
		"negative off":   func(m *Manifest) { last(m).Chunks[0].Off = -1 },
		"off past max":   func(m *Manifest) { last(m).Chunks[0].Off = ChunkMax },
		"off no slice":   func(m *Manifest) { last(m).Chunks[0].Slice = false },
		"sha256 on dir":  func(m *Manifest) { m.Entries[1].SHA256 = strings.Repeat("0", 64) },
		"slice and hole": func(m *Manifest) { last(m).Chunks[0] = Ref{Hole: true, Slice: true, Size: 2} },
	} {
		m := base()
		change(m)
		if _, err := EncodeManifest(m); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func mustID(t *testing.T, s string) ID {
	t.Helper()
	id, err := ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Garbage collection reads a v2 manifest's chunk ids, slices' included, with
// its streaming scanner, and takes no "sha256" for one.
func TestScanManifestV2(t *testing.T) {
	m := testManifest(EncryptionNone)
	run := Hash([]byte("run"))
	m.Entries = append(m.Entries, Entry{Path: "s", Type: source.TypeFile, Mode: 0o644, Size: 2, ModTime: time.Unix(5, 0),
		Chunks: []Ref{{ID: run, Off: 7, Size: 2, Slice: true}}, SHA256: Hash([]byte("not a chunk")).String()})
	m.ComputeTotals()
	b, err := EncodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	got := map[ID]bool{}
	if _, err := scanManifest(strings.NewReader(string(b)), m.Plan, m.Point, func(id ID) { got[id] = true }); err != nil {
		t.Fatal(err)
	}
	want := map[ID]bool{Hash([]byte("a")): true, Hash([]byte("b")): true, run: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("scanManifest found %d ids %v, want %d", len(got), got, len(want))
	}
}
