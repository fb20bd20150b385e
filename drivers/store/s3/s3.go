// Package s3 is the object store on any S3-compatible service (MinIO, Ceph RGW,
// AWS S3…), built on minio-go.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/drorch/drorch/drivers"
	"github.com/drorch/drorch/drivers/store"
	"github.com/drorch/drorch/internal/s3client"
	"github.com/drorch/drorch/internal/secret"
)

// Config locates a bucket and says how to reach it.
type Config struct {
	Endpoint  string // host:port, no scheme
	Bucket    string
	Prefix    string // optional, no leading/trailing slash
	Region    string // optional (default "us-east-1")
	AccessKey secret.Secret
	SecretKey secret.Secret
	Insecure  bool   // plain HTTP (TLS off)
	CAFile    string // optional PEM bundle to trust for TLS, in addition to the system's
	Parallel  int    // max concurrent uploads, and separately downloads (default 8)
}

const (
	defaultRegion   = "us-east-1"
	defaultParallel = 8

	// dialTimeout bounds connecting; a partitioned site drops packets rather
	// than refusing, and minio-go's default of 30 s times its retries is too
	// long (s3client bounds those).
	dialTimeout = 10 * time.Second

	// streamPartSize is the multipart part size for uploads of unknown size.
	// minio-go would otherwise plan for a 5 TiB object and buffer ~537 MiB per
	// part; 16 MiB keeps memory at one part per upload and still allows objects
	// of up to 160 GiB (10 000 parts).
	streamPartSize = 16 << 20

	probePrefix = ".drorch-probe-"
)

type s3Store struct {
	client    *minio.Client
	crcClient *minio.Client // plain HTTP only: client, able to send x-amz-checksum-crc32c
	bucket    string
	prefix    string // "" or "a/b" without slashes at either end
	region    string
	location  string

	// Uploads and downloads are bounded separately, so that streaming a Get
	// into a Put on the same store can never deadlock on its own slots.
	puts chan struct{}
	gets chan struct{}

	// accepted is set once the server has accepted a request signed with
	// these credentials: a later SignatureDoesNotMatch on an upload is then
	// far more likely a body damaged on the way than a wrong key.
	accepted atomic.Bool
}

var _ store.Store = (*s3Store)(nil)

// New returns a store for cfg. It checks the configuration but does not
// contact the server; Prepare does.
func New(cfg Config) (store.Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("s3 store: %w", err))
	}
	if cfg.Region == "" {
		cfg.Region = defaultRegion
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = defaultParallel
	}
	opts := s3client.Options{
		Endpoint: cfg.Endpoint, Region: cfg.Region, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey,
		Insecure: cfg.Insecure, CAFile: cfg.CAFile, DialTimeout: dialTimeout,
	}
	client, err := s3client.New(opts)
	if err != nil {
		return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("s3 store: %w", err))
	}
	var crcClient *minio.Client
	if cfg.Insecure {
		// Only Put of a body with its CRC32C uses it (see Put); the header
		// it sends keeps minio-go from adding a trailer of its own.
		opts.TrailingHeaders = true
		if crcClient, err = s3client.New(opts); err != nil {
			return nil, drivers.Permanent(drivers.ReasonInvalidConfig, fmt.Errorf("s3 store: %w", err))
		}
	}
	loc := "s3://" + cfg.Endpoint + "/" + cfg.Bucket
	if cfg.Prefix != "" {
		loc += "/" + cfg.Prefix
	}
	return &s3Store{
		client:    client,
		crcClient: crcClient,
		bucket:    cfg.Bucket,
		prefix:    cfg.Prefix,
		region:    cfg.Region,
		location:  loc,
		puts:      make(chan struct{}, cfg.Parallel),
		gets:      make(chan struct{}, cfg.Parallel),
	}, nil
}

// validate reports every problem with cfg at once, each naming its field.
func (cfg Config) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{field}, args...)...))
	}
	errs = append(errs, s3client.Check(s3client.Options{Endpoint: cfg.Endpoint, AccessKey: cfg.AccessKey, SecretKey: cfg.SecretKey, Insecure: cfg.Insecure, CAFile: cfg.CAFile}, cfg.Bucket)...)
	if p := cfg.Prefix; p != "" {
		switch {
		case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
			bad("prefix", "%q must not start or end with a slash", p)
		case strings.Contains(p, "//"):
			bad("prefix", "%q must not contain an empty segment", p)
		default:
			for seg := range strings.SplitSeq(p, "/") {
				if seg == "." || seg == ".." {
					bad("prefix", "%q must not contain %q segments", p, seg)
					break
				}
			}
		}
	}
	if cfg.Parallel < 0 {
		bad("parallel", "must not be negative, got %d", cfg.Parallel)
	}
	return errors.Join(errs...)
}

func (s *s3Store) Location() string { return s.location }

// object returns the object name of key under the store's prefix.
func (s *s3Store) object(op, key string) (string, error) {
	if key == "" || strings.HasPrefix(key, "/") {
		return "", drivers.Permanentf(drivers.ReasonInvalidInput, "%s %q at %s: key must be non-empty and relative", op, key, s.location)
	}
	if s.prefix == "" {
		return key, nil
	}
	return s.prefix + "/" + key, nil
}

// Prepare proves the bucket is reachable and writable, creating it if missing.
func (s *s3Store) Prepare(ctx context.Context) error {
	exists, err := s.client.BucketExists(ctx, s.bucket)
	denied := false
	if err != nil {
		err = s.precise(ctx, err)
		if minio.ToErrorResponse(err).Code != "AccessDenied" {
			return s.classify("prepare", "", err)
		}
		// S3 checks permissions before existence: a key that may not look at
		// the bucket cannot tell whether it exists. Trying to create it tells.
		denied = true
	}
	if !exists {
		err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
		switch code := minio.ToErrorResponse(err).Code; {
		case err == nil:
		case code == "BucketAlreadyOwnedByYou" && !denied:
			// A concurrent Prepare won the race.
		case code == "BucketAlreadyOwnedByYou":
			return drivers.Permanentf(drivers.ReasonAccessDenied,
				"prepare %s: access denied: bucket %s exists but these credentials may not list it (AccessDenied)", s.location, s.bucket)
		case code == "AccessDenied" && denied:
			return drivers.Permanentf(drivers.ReasonAccessDenied,
				"prepare %s: access denied: bucket %s does not exist or these credentials may not list it, and they may not create it (AccessDenied)", s.location, s.bucket)
		case code == "AccessDenied":
			return drivers.Permanentf(drivers.ReasonAccessDenied,
				"prepare %s: access denied: bucket %s does not exist and these credentials may not create it (AccessDenied)", s.location, s.bucket)
		case code == "BucketAlreadyExists":
			return drivers.Permanentf(drivers.ReasonAccessDenied,
				"prepare %s: access denied: bucket %s belongs to another account (BucketAlreadyExists)", s.location, s.bucket)
		default:
			return s.classify("prepare: create bucket", "", err)
		}
	}

	// Reading the bucket's existence proves little: a read-only key, a bucket
	// policy denying writes (our own fencing) or a full disk all pass it.
	probe := probePrefix + randomHex(8)
	body := []byte("drorch write probe\n")
	if err := s.Put(ctx, probe, bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("prepare: write probe: %w", err)
	}
	if err := s.Delete(ctx, probe); err != nil {
		return fmt.Errorf("prepare: delete write probe: %w", err)
	}
	return nil
}

// precise replaces the error of a HEAD request, which has no body to name its
// cause, by the error of a GET when the HEAD's is vague: the bare AccessDenied
// that S3 servers other than MinIO answer for wrong credentials too, or a
// status without an S3 error code (a plain HTTP request to an HTTPS port).
func (s *s3Store) precise(ctx context.Context, err error) error {
	resp := minio.ToErrorResponse(err)
	if resp.Code != "AccessDenied" && (resp.StatusCode == 0 || resp.Code != resp.Message) {
		return err
	}
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.listPrefix(""), MaxKeys: 1}) {
		if obj.Err != nil && minio.ToErrorResponse(obj.Err).Code != "" {
			return obj.Err
		}
		break
	}
	return err
}

// Put uploads r under key. The server rejects bytes damaged on the way: over
// TLS the channel does; over plain HTTP, a body whose bytes are at hand (r
// has a Bytes method, as *bytes.Buffer) is sent with its CRC32C in the signed
// x-amz-checksum-crc32c header, which the server checks, and any other body
// is signed over its payload (SigV4 streaming: a SHA-256 and an HMAC per
// 64 KiB on both ends).
func (s *s3Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	// No Content-MD5: over plain HTTP the payload is checked as above; over
	// TLS the channel does; and drorch verifies every chunk against its id
	// when it reads it. MD5 on top cost a sixth of the worker's CPU in a backup.
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	client := s.client
	if size < 0 {
		size = -1
		opts.PartSize = streamPartSize
	} else if b, ok := r.(interface{ Bytes() []byte }); ok && s.crcClient != nil && int64(len(b.Bytes())) == size && size <= streamPartSize {
		// The payload's SHA-256 and the per-64 KiB signatures cost a third
		// of the worker's CPU in a backup or transmit, and as much again in
		// the server; CRC32C, computed in hardware, catches the same
		// transmission damage. See docs/format.md, "Integrity in transit".
		opts.DisableContentSha256 = true
		opts.DisableMultipart = true
		opts.UserMetadata = map[string]string{checksumHeader: crc32c(b.Bytes())}
		client = s.crcClient
	}
	_, err := s.put(ctx, client, "put", key, r, size, opts)
	return err
}

// checksumHeader carries a PUT body's CRC32C (base64 of its 4 big-endian
// bytes); servers with S3's additional checksums (AWS, MinIO) reject a body
// that does not match it with BadDigest (transient: sent again).
const checksumHeader = "x-amz-checksum-crc32c"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(b, castagnoli))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// PutIf uploads r under key with If-Match or If-None-Match: *, which MinIO and
// AWS S3 evaluate atomically with the write. It is one PUT request, never a
// multipart upload, whose conditions servers apply to the completion alone.
func (s *s3Store) PutIf(ctx context.Context, key string, r io.Reader, size int64, cond store.Condition) (string, error) {
	op := "put (if absent)"
	if cond.IfMatch != "" {
		op = "put (if version " + cond.IfMatch + ")"
	}
	switch {
	case cond.IfAbsent == (cond.IfMatch != ""):
		return "", drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s at %s: the condition must be either if-absent or if-match, not %+v", op, key, s.location, cond)
	case size < 0:
		return "", drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s at %s: a conditional put needs the size of its body", op, key, s.location)
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true}
	if cond.IfAbsent {
		opts.SetMatchETagExcept("*")
	} else {
		opts.SetMatchETag(cond.IfMatch)
	}
	etag, err := s.put(ctx, s.client, op, key, r, size, opts)
	if err != nil && cond.IfMatch != "" && drivers.IsNotFound(err) {
		// AWS answers If-Match on an absent key with NoSuchKey: the version
		// the caller read is gone, which is a failed condition too.
		return "", fmt.Errorf("%s %s at %s: the object was deleted: %w", op, key, s.location, drivers.ErrPreconditionFailed)
	}
	return etag, err
}

// put uploads r under key with opts and returns the stored version's ETag.
func (s *s3Store) put(ctx context.Context, client *minio.Client, op, key string, r io.Reader, size int64, opts minio.PutObjectOptions) (string, error) {
	name, err := s.object(op, key)
	if err != nil {
		return "", err
	}
	if err := acquire(ctx, s.puts); err != nil {
		return "", s.classify(op, key, err)
	}
	defer release(s.puts)
	if size >= 0 {
		r = &sizedReader{r: r, left: size}
	}
	info, err := client.PutObject(ctx, s.bucket, name, r, size, opts)
	if err != nil {
		if sr, ok := r.(*sizedReader); ok && sr.short {
			return "", drivers.Permanentf(drivers.ReasonInvalidInput, "%s %s at %s: the reader ended after %d of %d bytes: %w",
				op, key, s.location, size-sr.left, size, io.ErrUnexpectedEOF)
		}
		return "", s.classify(op, key, err)
	}
	s.accepted.Store(true)
	return info.ETag, nil
}

// sizedReader reads at most left bytes and notes when r ends before that. A
// short body would otherwise surface as an HTTP error that looks transient,
// and a retry cannot make the source longer.
type sizedReader struct {
	r     io.Reader
	left  int64
	short bool
}

func (s *sizedReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	n, err := s.r.Read(p)
	s.left -= int64(n)
	if err == io.EOF && s.left > 0 {
		s.short = true
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Get opens key for reading. It sends one GET and waits for the response
// headers, so an absent key is reported by Get rather than by the first Read.
// The returned body holds one of the Parallel download slots until it is read
// to the end or closed; a caller that does neither leaks the slot.
func (s *s3Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, _, err := s.GetObject(ctx, key)
	return rc, err
}

// GetObject is Get, with the object's description from the same response.
func (s *s3Store) GetObject(ctx context.Context, key string) (io.ReadCloser, store.Object, error) {
	name, err := s.object("get", key)
	if err != nil {
		return nil, store.Object{}, err
	}
	if err := acquire(ctx, s.gets); err != nil {
		return nil, store.Object{}, s.classify("get", key, err)
	}
	// Core.GetObject is one request. Client.GetObject is lazy, and its Stat
	// would add a HEAD before every GET: twice the round trips per chunk.
	rc, info, _, err := minio.Core{Client: s.client}.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		release(s.gets)
		return nil, store.Object{}, s.classify("get", key, err)
	}
	s.accepted.Store(true)
	return &body{s: s, key: key, rc: rc}, store.Object{Key: key, Size: info.Size, Modified: info.LastModified, ETag: info.ETag}, nil
}

// body is a download that gives its slot back exactly once, at EOF or Close.
type body struct {
	s        *s3Store
	key      string
	rc       io.ReadCloser
	released sync.Once
}

func (b *body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	switch {
	case err == io.EOF:
		b.release()
	case err != nil:
		err = b.s.classify("get", b.key, err)
	}
	return n, err
}

func (b *body) Close() error {
	err := b.rc.Close()
	b.release()
	return err
}

func (b *body) release() { b.released.Do(func() { release(b.s.gets) }) }

func (s *s3Store) Stat(ctx context.Context, key string) (store.Object, error) {
	name, err := s.object("stat", key)
	if err != nil {
		return store.Object{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		return store.Object{}, s.classify("stat", key, err)
	}
	s.accepted.Store(true)
	return store.Object{Key: key, Size: info.Size, Modified: info.LastModified, ETag: info.ETag}, nil
}

func (s *s3Store) listPrefix(prefix string) string {
	if s.prefix == "" {
		return prefix
	}
	return s.prefix + "/" + prefix
}

// List walks every object whose key starts with prefix, in lexical order as
// S3 lists them.
func (s *s3Store) List(ctx context.Context, prefix string, fn func(store.Object) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing when fn returns early
	full := s.listPrefix(prefix)
	trim := len(s.listPrefix(""))
	for obj := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
		if obj.Err != nil {
			return s.classify("list", prefix, obj.Err)
		}
		s.accepted.Store(true)
		if len(obj.Key) < trim || !strings.HasPrefix(obj.Key, full) {
			continue // a server that ignores the prefix must not leak other keys
		}
		if err := fn(store.Object{Key: obj.Key[trim:], Size: obj.Size, Modified: obj.LastModified}); err != nil {
			return err
		}
	}
	// A cancelled listing may end without an error entry.
	if err := ctx.Err(); err != nil {
		return s.classify("list", prefix, err)
	}
	return nil
}

func (s *s3Store) Delete(ctx context.Context, key string) error {
	name, err := s.object("delete", key)
	if err != nil {
		return err
	}
	err = s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{})
	if err = s.classify("delete", key, err); drivers.IsNotFound(err) {
		return nil
	}
	return err
}

func acquire(ctx context.Context, slots chan struct{}) error {
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func release(slots chan struct{}) { <-slots }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on supported platforms
	return hex.EncodeToString(b)
}
