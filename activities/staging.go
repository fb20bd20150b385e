package activities

import (
	"context"
	"fmt"
	"time"

	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// Limits of one piece of a backup: the unit of work that, once uploaded, is
// recorded in the repository's staging area and never redone by a retried
// attempt. A file larger than segmentSize is split into segments at fixed
// offsets, so even a single 100 GiB disk image resumes near where it stopped,
// and the chunk boundaries (the chunker restarts at each segment) are the
// same from one backup to the next.
const (
	pieceMaxItems = 2000
	pieceMaxBytes = 256 << 20
	segmentSize   = 256 << 20
)

// stagedEntry is a source entry as kept in staging objects. Path and target are
// byte strings so that names that are not UTF-8 survive JSON unchanged.
type stagedEntry struct {
	Path    []byte      `json:"p"`
	Type    source.Type `json:"t"`
	Mode    uint32      `json:"m"`
	UID     int         `json:"u,omitempty"`
	GID     int         `json:"g,omitempty"`
	Size    int64       `json:"s,omitempty"`
	ModTime time.Time   `json:"mt"`
	Target  []byte      `json:"l,omitempty"`
}

func stage(e source.Entry) stagedEntry {
	return stagedEntry{
		Path: []byte(e.Path), Type: e.Type, Mode: repo.UnixMode(e.Mode), UID: e.UID, GID: e.GID,
		Size: e.Size, ModTime: e.ModTime, Target: []byte(e.Target),
	}
}

func (s stagedEntry) source() source.Entry {
	return source.Entry{
		Path: string(s.Path), Type: s.Type, Mode: repo.FileMode(s.Mode), UID: s.UID, GID: s.GID,
		Size: s.Size, ModTime: s.ModTime, Target: string(s.Target),
	}
}

func (s stagedEntry) manifest(refs []repo.Ref) repo.Entry {
	return repo.Entry{
		Path: string(s.Path), Type: s.Type, Mode: s.Mode, UID: s.UID, GID: s.GID,
		Size: s.Size, ModTime: s.ModTime, Target: string(s.Target), Chunks: refs,
	}
}

// item is one entry, or one segment of a file, in a piece.
type item struct {
	Index  int64       `json:"i"` // position of the entry in the snapshot
	Entry  stagedEntry `json:"e"`
	Offset int64       `json:"o,omitempty"` // segment start (files)
	Length int64       `json:"n,omitempty"` // segment length (files)
}

// piece is a bounded batch of items, in snapshot order.
type piece struct {
	Items []item `json:"items"`
}

// uploaded is a piece after upload: each item with its chunk references and
// the entry as it was actually read (a file re-read after a change has new
// size and mtime).
type uploaded struct {
	Items []uploadedItem `json:"items"`
}

type uploadedItem struct {
	Index  int64       `json:"i"`
	Entry  stagedEntry `json:"e"`
	Offset int64       `json:"o,omitempty"`
	Refs   []repo.Ref  `json:"r,omitempty"`
	Sum    string      `json:"h,omitempty"` // SHA-256 of a file of slices (format v2)
}

func pieceName(i int) string    { return fmt.Sprintf("piece-%06d", i) }
func uploadedName(i int) string { return fmt.Sprintf("uploaded-%06d", i) }

const snapshotName = "snapshot"

// splitter cuts the snapshot's entries into pieces.
type splitter struct {
	cur   piece
	bytes int64
	emit  func(piece) error
}

func (s *splitter) add(it item) error {
	if len(s.cur.Items) >= pieceMaxItems || (s.bytes+it.Length > pieceMaxBytes && len(s.cur.Items) > 0) {
		if err := s.flush(); err != nil {
			return err
		}
	}
	s.cur.Items = append(s.cur.Items, it)
	s.bytes += it.Length
	return nil
}

func (s *splitter) flush() error {
	if len(s.cur.Items) == 0 {
		return nil
	}
	err := s.emit(s.cur)
	s.cur, s.bytes = piece{}, 0
	return err
}

// addEntry adds e, split into segments when it is a large file.
func (s *splitter) addEntry(index int64, e source.Entry) error {
	se := stage(e)
	if e.Type != source.TypeFile || e.Size <= segmentSize {
		return s.add(item{Index: index, Entry: se, Length: max(e.Size, 0)})
	}
	for off := int64(0); off < e.Size; off += segmentSize {
		if err := s.add(item{Index: index, Entry: se, Offset: off, Length: min(segmentSize, e.Size-off)}); err != nil {
			return err
		}
	}
	return nil
}

// firstMissing returns the first i in [0, n) whose staging object name(i) is
// not in the repository's staging area of op, or n when all are there: one
// listing, so a resumed step checks what earlier attempts reported done
// before it relies on it.
func firstMissing(ctx context.Context, r *repo.Repo, op string, name func(int) string, n int) (int, error) {
	if n <= 0 {
		return 0, nil
	}
	names, err := r.ListStaging(ctx, op)
	if err != nil {
		return 0, err
	}
	have := make(map[string]bool, len(names))
	for _, s := range names {
		have[s] = true
	}
	for i := range n {
		if !have[name(i)] {
			return i, nil
		}
	}
	return n, nil
}
