// Package repo reads and writes the drorch repository format v1: the objects a
// site keeps for one plan under "<plan>/" of its store — content-defined chunks
// (zstd, then AES-256-GCM when a key is set), manifests naming restore points,
// the plan's epoch used for fencing, and the staged state of operations in
// progress. docs/format.md describes the same format for people, precisely
// enough to recover data without drorch; the two must change together.
package repo

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
)

// FormatVersion is the repository format this package reads and writes.
const FormatVersion = 1

// Values of Manifest.Compression and Manifest.Encryption in format v1.
const (
	CompressionZstd  = "zstd"
	EncryptionAESGCM = "aes-256-gcm"
	EncryptionNone   = "none"
)

// MaxMetadataSize bounds the plaintext of a manifest or a staging object, so
// that a hostile or damaged object cannot make a reader allocate without limit.
// At roughly 200 bytes an entry it allowed v1 and v2 manifests of about five
// million entries; a v3 point object names its entry parts instead (about
// 150 bytes a part of some 4,000 entries), and has no such limit in practice.
const MaxMetadataSize = 1 << 30

const nonceSize = 12 // AES-GCM standard nonce

var planRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidPlan reports whether plan can name a repository.
func ValidPlan(plan string) error {
	if !planRE.MatchString(plan) {
		return fmt.Errorf("plan name %q must match %s", plan, planRE)
	}
	return nil
}

// Repo is the repository of one plan in one store. It is safe for concurrent use.
type Repo struct {
	st      store.Store
	plan    string
	aead    cipher.AEAD // nil when not encrypted
	macKey  []byte      // authenticates epoch.json; nil when not encrypted
	damaged damagedSet  // chunks recorded as damaged, as UsableChunks found them
	// sealed is when epoch.json began to be sealed here, once r has read
	// or written the marker that records it (sealmark.go); nil before.
	sealed atomic.Pointer[time.Time]
}

// New opens the repository of plan in st, under the key prefix "<plan>/". key
// is nil for an unencrypted repository, or an AES-256 key of 32 bytes. New does
// no I/O.
func New(st store.Store, plan string, key []byte) (*Repo, error) {
	if st == nil {
		return nil, drivers.Permanentf(drivers.ReasonInvalidConfig, "repository of plan %q: no store", plan)
	}
	if err := ValidPlan(plan); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, err)
	}
	r := &Repo{st: st, plan: plan}
	if key != nil {
		if len(key) != KeySize {
			return nil, drivers.Permanentf(drivers.ReasonInvalidConfig,
				"repository of plan %q: key must be %d bytes, got %d", plan, KeySize, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, drivers.Permanent(drivers.ReasonInvalidConfig, err)
		}
		if r.aead, err = cipher.NewGCM(block); err != nil {
			return nil, drivers.Permanent(drivers.ReasonInvalidConfig, err)
		}
		r.macKey = deriveEpochKey(key)
	}
	return r, nil
}

// Location names the repository for messages: the store's location and the plan.
func (r *Repo) Location() string { return r.st.Location() + "/" + r.plan }

// Plan returns the plan whose repository r is.
func (r *Repo) Plan() string { return r.plan }

// Encrypted reports whether r seals objects with a key.
func (r *Repo) Encrypted() bool { return r.aead != nil }

// Encryption returns the Manifest.Encryption value for r.
func (r *Repo) Encryption() string {
	if r.aead != nil {
		return EncryptionAESGCM
	}
	return EncryptionNone
}

// Store returns the store r lives in.
func (r *Repo) Store() store.Store { return r.st }

// key turns a key relative to the repository root into one relative to the store root.
func (r *Repo) key(rel string) string { return r.plan + "/" + rel }

// where names an object for messages.
func (r *Repo) where(rel string) string { return r.Location() + "/" + rel }

// The codecs are shared by every Repo: klauspost's EncodeAll and DecodeAll are
// safe for concurrent use and keep per-goroutine state in pools, so one pair
// serves all workers without re-allocating encoder tables per repository.
var (
	codecOnce sync.Once
	encoder   *zstd.Encoder
	chunkDec  *zstd.Decoder // output limited to ChunkMax
	metaDec   *zstd.Decoder // output limited to MaxMetadataSize
	codecErr  error
)

func codecs() error {
	codecOnce.Do(func() {
		// SpeedFastest: incompressible data (most bulk data: media, archives,
		// already compressed databases) runs at memory speed at either level,
		// and on text SpeedDefault measured 15-20% slower for objects only 10%
		// smaller (BenchmarkSealChunk); the backup's bottleneck must stay the
		// upload. The window is ChunkMax so that the chunk decoder, whose
		// window is limited to ChunkMax, accepts every frame written here,
		// including those of tiny chunks that are not single-segment.
		// No frame checksum: every chunk is checked against its SHA-256 id
		// (and its GCM tag) when read, and the checksum halved the speed of
		// compressing incompressible data.
		encoder, codecErr = zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderCRC(false),
			zstd.WithWindowSize(ChunkMax),
			zstd.WithEncoderConcurrency(0))
		if codecErr != nil {
			return
		}
		chunkDec, codecErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(ChunkMax),
			zstd.WithDecoderMaxWindow(ChunkMax))
		if codecErr != nil {
			return
		}
		metaDec, codecErr = zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(0),
			zstd.WithDecoderMaxMemory(MaxMetadataSize),
			zstd.WithDecoderMaxWindow(64<<20))
	})
	return codecErr
}

// seal compresses plain and, when r has a key, encrypts it:
// nonce(12) || AES-256-GCM-Seal(zstd(plain), ad). The nonce is random: keys
// are long-lived and shared by sites, so a counter could not be kept unique.
// Data that would not compress is framed in raw blocks (rawframe.go).
func (r *Repo) seal(plain, ad []byte) ([]byte, error) {
	if err := codecs(); err != nil {
		return nil, err
	}
	compress := encoder.EncodeAll
	// Not above ChunkMax: a raw frame's window is its whole content, and
	// the decoders of chunks and WAL files accept windows up to ChunkMax.
	if len(plain) <= ChunkMax && incompressible(plain) {
		compress = rawFrame
	}
	if r.aead == nil {
		return compress(plain, make([]byte, 0, len(plain)+len(plain)/64+64)), nil
	}
	// Compress behind room for the nonce and seal in place: one allocation.
	buf := make([]byte, nonceSize, nonceSize+len(plain)+len(plain)/64+64+r.aead.Overhead())
	buf = compress(plain, buf)
	nonce := buf[:nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return r.aead.Seal(buf[:nonceSize], nonce, buf[nonceSize:], ad), nil
}

// errCorrupt describes why a body could not be opened; callers name the object.
type errCorrupt struct{ why string }

func (e errCorrupt) Error() string { return e.why }

// open reverses seal. Its errors are errCorrupt; it never modifies body.
// dec points at the decoder to use, read only after codecs() has made it: a
// process whose first use of the codecs is a read must not see it nil.
func (r *Repo) open(body, ad []byte, dec **zstd.Decoder) ([]byte, error) {
	return r.openBody(body, ad, dec, false)
}

// openBody is open; when own is true, body is the caller's to reuse: it is
// decrypted and its raw blocks joined in place (the result shares its
// storage), which spares a copy and an allocation of the chunk per read.
func (r *Repo) openBody(body, ad []byte, dec **zstd.Decoder, own bool) ([]byte, error) {
	if err := codecs(); err != nil {
		return nil, err
	}
	z := body
	if r.aead != nil {
		if len(body) < nonceSize+r.aead.Overhead() {
			return nil, errCorrupt{fmt.Sprintf("%d bytes is too short to be sealed (corrupted, or written without a key)", len(body))}
		}
		var dst []byte // nil: a new buffer
		if own {
			dst = body[nonceSize:nonceSize]
		}
		var err error
		z, err = r.aead.Open(dst, body[:nonceSize], body[nonceSize:], ad)
		if err != nil {
			return nil, errCorrupt{"cannot be decrypted: wrong key, written without a key, stored under another name, or corrupted"}
		}
		own = true // z is a buffer of its own now, or the caller's
	}
	if plain, ok := rawFrameContent(z, own); ok {
		return plain, nil
	}
	plain, err := (*dec).DecodeAll(z, nil)
	if err != nil {
		why := "cannot be decompressed"
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
			why = "decompresses to more than the format allows"
		}
		if r.aead == nil {
			why += " (is the repository encrypted? then a key is needed)"
		}
		return nil, errCorrupt{fmt.Sprintf("%s: %v (corrupted)", why, err)}
	}
	return plain, nil
}

// get reads a whole object of at most max bytes.
func (r *Repo) get(ctx context.Context, rel string, max int64) ([]byte, error) {
	rc, err := r.st.Get(ctx, r.key(rel))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return readAll(rc, max)
}

// getSized is get for the objects read most, chunks: when the store says
// the object's size, the body is read into a buffer of exactly that size
// (the growth of a bytes.Buffer cost a fifth of the worker's CPU in a
// transmit). A body that ends before, or runs past, the size announced is a
// transient error: the next attempt reads it again.
func (r *Repo) getSized(ctx context.Context, rel string, max int64) ([]byte, error) {
	rc, o, err := r.st.GetObject(ctx, r.key(rel))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if o.Size <= 0 || o.Size > max {
		return readAll(rc, max)
	}
	buf := make([]byte, o.Size+1) // one more, to see a body longer than announced
	n, err := io.ReadFull(rc, buf)
	switch {
	case err == io.ErrUnexpectedEOF && int64(n) == o.Size:
		return buf[:n], nil
	case err == nil:
		return nil, fmt.Errorf("the body is longer than the %d bytes its object holds", o.Size)
	case err == io.ErrUnexpectedEOF || err == io.EOF:
		return nil, fmt.Errorf("the body ended after %d of the %d bytes of its object: %w", n, o.Size, io.ErrUnexpectedEOF)
	default:
		return nil, err
	}
}

// readAll reads rc to its end, at most max bytes.
func readAll(rc io.Reader, max int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(rc, max+1))
	if err != nil {
		return nil, err
	}
	if n > max {
		return nil, errCorrupt{fmt.Sprintf("object is larger than the %d bytes the format allows (corrupted)", max)}
	}
	return buf.Bytes(), nil
}

// put stores body under rel. A *bytes.Buffer lets the store see the bytes
// (the s3 store sends their CRC32C instead of signing the payload).
func (r *Repo) put(ctx context.Context, rel string, body []byte) error {
	return r.st.Put(ctx, r.key(rel), bytes.NewBuffer(body), int64(len(body)))
}

// classify makes an errCorrupt permanent; other errors (the store's) keep their class.
func classify(err error) error {
	var c errCorrupt
	if errors.As(err, &c) {
		return drivers.Permanent(drivers.ReasonCorrupt, err)
	}
	return err
}
