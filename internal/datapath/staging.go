package datapath

import (
	"context"
	"fmt"
	"time"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/source"
	"github.com/drorch/drorch/internal/repo"
)

// Limits of one Piece of a backup: the unit of work that, once uploaded, is
// recorded in the repository's staging area and never redone by a retried
// attempt. A file larger than SegmentSize is split into segments at fixed
// offsets, so even a single 100 GiB disk image resumes near where it stopped,
// and the chunk boundaries (the chunker restarts at each segment) are the
// same from one backup to the next.
const (
	PieceMaxItems = 2000
	PieceMaxBytes = 256 << 20
	SegmentSize   = 256 << 20
)

// StagedEntry is a source entry as kept in staging objects. Path and target are
// byte strings so that names that are not UTF-8 survive JSON unchanged.
type StagedEntry struct {
	Path    []byte      `json:"p"`
	Type    source.Type `json:"t"`
	Mode    uint32      `json:"m"`
	UID     int         `json:"u,omitempty"`
	GID     int         `json:"g,omitempty"`
	Size    int64       `json:"s,omitempty"`
	ModTime time.Time   `json:"mt"`
	Target  []byte      `json:"l,omitempty"`
}

// Stage is e as kept in staging.
func Stage(e source.Entry) StagedEntry {
	return StagedEntry{
		Path: []byte(e.Path), Type: e.Type, Mode: repo.UnixMode(e.Mode), UID: e.UID, GID: e.GID,
		Size: e.Size, ModTime: e.ModTime, Target: []byte(e.Target),
	}
}

// Source is the entry as the source driver names it.
func (s StagedEntry) Source() source.Entry {
	return source.Entry{
		Path: string(s.Path), Type: s.Type, Mode: repo.FileMode(s.Mode), UID: s.UID, GID: s.GID,
		Size: s.Size, ModTime: s.ModTime, Target: string(s.Target),
	}
}

// Manifest is the entry as a manifest records it, with its chunks refs.
func (s StagedEntry) Manifest(refs []repo.Ref) repo.Entry {
	return repo.Entry{
		Path: string(s.Path), Type: s.Type, Mode: s.Mode, UID: s.UID, GID: s.GID,
		Size: s.Size, ModTime: s.ModTime, Target: string(s.Target), Chunks: refs,
	}
}

// Item is one entry, or one segment of a file, in a piece.
type Item struct {
	Index  int64       `json:"i"` // position of the entry in the snapshot
	Entry  StagedEntry `json:"e"`
	Offset int64       `json:"o,omitempty"` // segment start (files)
	Length int64       `json:"n,omitempty"` // segment length (files)
}

// Piece is a bounded batch of items, in snapshot order.
type Piece struct {
	Items []Item `json:"items"`
}

// Uploaded is a piece after upload: each item with its chunk references and
// the entry as it was actually read (a file re-read after a change has new
// size and mtime).
type Uploaded struct {
	Items []UploadedItem `json:"items"`
}

// UploadedItem is one item of an Uploaded piece: the entry as read and its
// chunk references.
type UploadedItem struct {
	Index  int64       `json:"i"`
	Entry  StagedEntry `json:"e"`
	Offset int64       `json:"o,omitempty"`
	Refs   []repo.Ref  `json:"r,omitempty"`
	Sum    string      `json:"h,omitempty"` // SHA-256 of a file of slices (format v2)
}

// PieceName is the staging name of piece i of a snapshot.
func PieceName(i int) string { return fmt.Sprintf("piece-%06d", i) }

// UploadedName is the staging name of the record of uploaded piece i, as
// written since format v2. Its refs may be slices, which a drorch older than
// v2 would read as whole chunks (it ignores fields it does not know), so
// the record has a name such a drorch does not look for: its Commit then
// fails, saying the record is gone, instead of writing a restore point that
// cannot be restored (a rolling upgrade, old and new workers at one site).
func UploadedName(i int) string { return fmt.Sprintf("uploaded2-%06d", i) }

// LegacyUploadedName is the name a drorch older than v2 gave the record of
// uploaded piece i: read, never written, so that a backup an older worker
// began is committed by a newer one.
func LegacyUploadedName(i int) string { return fmt.Sprintf("uploaded-%06d", i) }

// Splitter cuts the snapshot's entries into pieces: add them in snapshot
// order with AddEntry, then Flush.
type Splitter struct {
	cur   Piece
	bytes int64
	Emit  func(Piece) error // called with each full piece
}

func (s *Splitter) add(it Item) error {
	if len(s.cur.Items) >= PieceMaxItems || (s.bytes+it.Length > PieceMaxBytes && len(s.cur.Items) > 0) {
		if err := s.Flush(); err != nil {
			return err
		}
	}
	s.cur.Items = append(s.cur.Items, it)
	s.bytes += it.Length
	return nil
}

// Flush emits the last, partly filled piece.
func (s *Splitter) Flush() error {
	if len(s.cur.Items) == 0 {
		return nil
	}
	err := s.Emit(s.cur)
	s.cur, s.bytes = Piece{}, 0
	return err
}

// AddEntry adds e, split into segments when it is a large file.
func (s *Splitter) AddEntry(index int64, e source.Entry) error {
	se := Stage(e)
	if e.Type != source.TypeFile || e.Size <= SegmentSize {
		return s.add(Item{Index: index, Entry: se, Length: max(e.Size, 0)})
	}
	for off := int64(0); off < e.Size; off += SegmentSize {
		if err := s.add(Item{Index: index, Entry: se, Offset: off, Length: min(SegmentSize, e.Size-off)}); err != nil {
			return err
		}
	}
	return nil
}

// EachUploaded calls fn with each entry of the uploaded pieces
// 0..pieces-1 of op, in snapshot order, the segments of a large file joined
// into one entry (across pieces too). It holds one piece and the entry
// being joined, never every entry: the *repo.Entry is fn's until it
// returns. A record that is gone (the staging was cleaned up or lost) is a
// drivers.Permanent error: no retry brings it back, the backup must run
// again. fn's errors are returned as they are.
func EachUploaded(ctx context.Context, r *repo.Repo, op string, pieces int, fn func(*repo.Entry) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type fetched struct {
		up  Uploaded
		err error
	}
	// The next piece is read while this one is written: a commit of
	// 10,000,000 entries reads 5,000 of them.
	ahead := make(chan fetched, 1)
	go func() {
		defer close(ahead)
		for i := range pieces {
			up, err := readUploaded(ctx, r, op, i)
			select {
			case ahead <- fetched{up, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var cur repo.Entry
	have := false
	last := int64(-1)
	for range pieces {
		f, ok := <-ahead
		if !ok {
			return ctx.Err()
		}
		if f.err != nil {
			return f.err
		}
		for _, it := range f.up.Items {
			if have && it.Index == last && it.Offset > 0 {
				// The next segment of the file already begun.
				cur.Chunks = append(cur.Chunks, it.Refs...)
				continue
			}
			if have {
				if err := fn(&cur); err != nil {
					return err
				}
			}
			cur = it.Entry.Manifest(it.Refs)
			cur.SHA256 = it.Sum // format v2: a file of slices
			have, last = true, it.Index
		}
	}
	if have {
		return fn(&cur)
	}
	return nil
}

// readUploaded reads the record of uploaded piece i of op, under either
// name.
func readUploaded(ctx context.Context, r *repo.Repo, op string, i int) (Uploaded, error) {
	var up Uploaded
	err := r.GetStaging(ctx, op, UploadedName(i), &up)
	if drivers.IsNotFound(err) {
		err = r.GetStaging(ctx, op, LegacyUploadedName(i), &up)
	}
	if err != nil {
		if drivers.IsNotFound(err) {
			return up, drivers.Permanentf(drivers.ReasonNotFound, "the record of uploaded piece %d is gone from %s (staging cleaned up or lost): run the backup again", i, r.Location())
		}
		return up, fmt.Errorf("read uploaded piece %d: %w", i, err)
	}
	return up, nil
}

// AddUploaded appends to m the entries of the uploaded pieces 0..pieces-1
// of op, as EachUploaded reads them; the caller computes the totals. For
// backups known to be small (and for tests): it holds every entry.
func AddUploaded(ctx context.Context, r *repo.Repo, op string, pieces int, m *repo.Manifest) error {
	return EachUploaded(ctx, r, op, pieces, func(e *repo.Entry) error {
		m.Entries = append(m.Entries, *e)
		return nil
	})
}
