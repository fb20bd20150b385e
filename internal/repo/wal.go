package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// A repository of a PostgreSQL plan also holds the cluster's write-ahead
// log, one object per file PostgreSQL archives (docs/format.md, "WAL"):
//
//	wal/<name>  sha256(plain) || seal(plain, "wal/<name>")
//
// where name is what archive_command gets as %f: a segment
// (000000010000000000000003), a partial segment (….partial), a timeline
// history (00000002.history) or a backup history file (….backup). The
// digest outside the sealed body lets a reader check the plaintext of an
// unencrypted repository too, and names the content in a listing-free
// comparison; with a key, the GCM tag over the name also refuses a body
// copied under another name.
const walDir = "wal/"

// MaxWALFile is the largest WAL file a repository takes: PostgreSQL's
// largest segment size (initdb --wal-segsize=1024).
const MaxWALFile = 1 << 30

var walName = regexp.MustCompile(`^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$`)

// ValidWALName checks that name is a WAL file name as PostgreSQL archives
// them.
func ValidWALName(name string) error {
	if !walName.MatchString(name) {
		return fmt.Errorf("%q is not a WAL file name (24 hex digits, optionally .partial or .<8 hex>.backup, or <8 hex>.history)", name)
	}
	return nil
}

// WALKey returns where the WAL file name is stored, relative to the
// repository root.
func WALKey(name string) string { return walDir + name }

// WALFile describes one stored WAL file.
type WALFile struct {
	Name     string    `json:"name"`
	Stored   int64     `json:"stored"` // bytes of the stored object
	Modified time.Time `json:"modified"`
}

// ErrWALConflict is wrapped by PutWAL when the repository holds a different
// file under the same name. It is permanent: PostgreSQL must not be told
// that a segment is archived while the archive holds another one.
var ErrWALConflict = errors.New("the repository holds a different WAL file under this name")

var (
	walDecOnce sync.Once
	walDec     *zstd.Decoder
	walDecErr  error
)

func walDecoder() (*zstd.Decoder, error) {
	walDecOnce.Do(func() {
		walDec, walDecErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxWALFile),
			zstd.WithDecoderMaxWindow(ChunkMax))
	})
	return walDec, walDecErr
}

// SealWAL encodes the plaintext of WAL file name for storage.
func (r *Repo) SealWAL(name string, plain []byte) ([]byte, error) {
	if err := ValidWALName(name); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	if len(plain) > MaxWALFile {
		return nil, drivers.Permanentf(drivers.ReasonInvalidInput, "WAL file %s: %d bytes is more than %d", name, len(plain), MaxWALFile)
	}
	sum := sha256.Sum256(plain)
	sealed, err := r.seal(plain, []byte(WALKey(name)))
	if err != nil {
		return nil, fmt.Errorf("seal WAL file %s: %w", name, err)
	}
	return append(sum[:], sealed...), nil
}

// OpenWAL decodes a stored body of WAL file name and verifies it. Any
// failure is permanent with reason Corrupt and names the object.
func (r *Repo) OpenWAL(name string, body []byte) ([]byte, error) {
	plain, err := r.openWAL(name, body)
	if err != nil {
		return nil, classify(fmt.Errorf("WAL file %s at %s: %w", name, r.where(WALKey(name)), err))
	}
	return plain, nil
}

func (r *Repo) openWAL(name string, body []byte) ([]byte, error) {
	if len(body) < sha256.Size {
		return nil, errCorrupt{fmt.Sprintf("%d bytes is too short to be a stored WAL file (corrupted)", len(body))}
	}
	dec, err := walDecoder()
	if err != nil {
		return nil, err
	}
	plain, err := r.open(body[sha256.Size:], []byte(WALKey(name)), &dec)
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(plain); !bytes.Equal(sum[:], body[:sha256.Size]) {
		return nil, errCorrupt{"content does not match its digest (corrupted)"}
	}
	return plain, nil
}

// PutWAL stores WAL file name once. Storing the same content again is a
// success (PostgreSQL retries archive_command after a crash between the
// upload and its own bookkeeping); a different content under the name fails
// with a permanent error wrapping ErrWALConflict and leaves the stored file
// alone. It returns once the store has acknowledged the object, and whether
// this call stored it.
func (r *Repo) PutWAL(ctx context.Context, name string, plain []byte) (stored bool, err error) {
	body, err := r.SealWAL(name, plain)
	if err != nil {
		return false, err
	}
	return r.PutWALRaw(ctx, name, body)
}

// PutWALRaw stores body, as produced by SealWAL of a repository with the same
// key, under the rules of PutWAL: for copying WAL between sites without
// decoding it. The body is checked before it is stored.
func (r *Repo) PutWALRaw(ctx context.Context, name string, body []byte) (stored bool, err error) {
	if _, err := r.OpenWAL(name, body); err != nil {
		return false, err
	}
	key := WALKey(name)
	_, err = r.st.PutIf(ctx, r.key(key), bytes.NewReader(body), int64(len(body)), store.IfAbsent())
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, drivers.ErrPreconditionFailed) {
		return false, fmt.Errorf("put WAL file %s at %s: %w", name, r.where(key), err)
	}
	had, err := r.GetWALRaw(ctx, name)
	if err != nil {
		return false, err
	}
	if bytes.Equal(had[:sha256.Size], body[:sha256.Size]) {
		// The digest alone decides: the stored body may be sealed with
		// another nonce. It is verified to be what its digest says, so a
		// damaged copy is not taken for the segment.
		if _, err := r.OpenWAL(name, had); err != nil {
			return false, err
		}
		return false, nil
	}
	return false, drivers.Permanent(drivers.ReasonConflict, fmt.Errorf("put WAL file %s at %s: %w", name, r.where(key), ErrWALConflict))
}

// GetWAL reads WAL file name and returns its verified plaintext. An absent
// file wraps drivers.ErrNotFound; a damaged one is permanent with reason
// Corrupt.
func (r *Repo) GetWAL(ctx context.Context, name string) ([]byte, error) {
	body, err := r.GetWALRaw(ctx, name)
	if err != nil {
		return nil, err
	}
	return r.OpenWAL(name, body)
}

// GetWALRaw reads the stored body of WAL file name as is.
func (r *Repo) GetWALRaw(ctx context.Context, name string) ([]byte, error) {
	if err := ValidWALName(name); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	body, err := r.get(ctx, WALKey(name), MaxWALFile+MaxWALFile/64+1<<20)
	if err != nil {
		return nil, classify(fmt.Errorf("get WAL file %s at %s: %w", name, r.where(WALKey(name)), err))
	}
	return body, nil
}

// ListWAL calls fn for every stored WAL file whose name starts with from or
// sorts after it, in name order (which is WAL order within a timeline).
// Keys under wal/ that are not WAL file names are skipped.
func (r *Repo) ListWAL(ctx context.Context, from string, fn func(WALFile) error) error {
	prefix := r.key(walDir)
	err := r.list(ctx, prefix, func(o store.Object) error {
		name := strings.TrimPrefix(o.Key, prefix)
		if name < from || ValidWALName(name) != nil {
			return nil
		}
		return fn(WALFile{Name: name, Stored: o.Size, Modified: o.Modified})
	})
	if err != nil {
		return fmt.Errorf("list WAL at %s: %w", r.where(walDir), err)
	}
	return nil
}

// DeleteWAL removes WAL file name. Deleting an absent file is not an error.
// Only retention calls it, under the rules of docs/format.md, "WAL".
func (r *Repo) DeleteWAL(ctx context.Context, name string) error {
	if err := ValidWALName(name); err != nil {
		return drivers.Permanent(drivers.ReasonInvalidInput, err)
	}
	if err := r.st.Delete(ctx, r.key(WALKey(name))); err != nil {
		return fmt.Errorf("delete WAL file %s at %s: %w", name, r.where(WALKey(name)), err)
	}
	return nil
}

// BackupLabel is the file at the root of a PostgreSQL base backup that names
// where its WAL begins; a restore point of a postgres source (Manifest.Source
// "postgres") holds the data directory with it.
const BackupLabel = "backup_label"

// StartWAL returns the first WAL file a base backup needs, read from the
// "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)" line of its
// backup_label. Every WAL file from it on (within the backup's timeline and
// its successors) must be kept for the point to be restorable.
func StartWAL(label []byte) (string, error) {
	for _, line := range strings.Split(string(label), "\n") {
		rest, ok := strings.CutPrefix(line, "START WAL LOCATION: ")
		if !ok {
			continue
		}
		_, file, ok := strings.Cut(rest, "(file ")
		name, _, closed := strings.Cut(file, ")")
		if !ok || !closed || len(name) != 24 || ValidWALName(name) != nil {
			return "", fmt.Errorf("backup_label: cannot read the WAL file in %q", line)
		}
		return name, nil
	}
	return "", errors.New("backup_label has no START WAL LOCATION line")
}

// PointStartWAL returns StartWAL of the backup_label in m, a restore point of
// a postgres source.
func (r *Repo) PointStartWAL(ctx context.Context, m *Manifest) (string, error) {
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Path != BackupLabel || e.Type != "file" {
			continue
		}
		var label []byte
		for _, ref := range e.Chunks {
			if ref.Hole {
				label = append(label, make([]byte, ref.Size)...)
				continue
			}
			b, err := r.GetChunk(ctx, ref.ID)
			if err != nil {
				return "", err
			}
			if b, err = ref.Bytes(b); err != nil {
				return "", drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("point %s: %w", m.Point, err))
			}
			label = append(label, b...)
		}
		name, err := StartWAL(label)
		if err != nil {
			return "", drivers.Permanent(drivers.ReasonCorrupt, fmt.Errorf("point %s: %w", m.Point, err))
		}
		return name, nil
	}
	return "", drivers.Permanentf(drivers.ReasonInvalidInput, "point %s (source %s) has no %s: it is not a PostgreSQL base backup", m.Point, m.Source, BackupLabel)
}
