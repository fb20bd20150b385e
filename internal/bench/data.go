package main

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"
)

const (
	kiB = int64(1) << 10
	miB = int64(1) << 20
	giB = int64(1) << 30
)

// parseSize reads "256MiB", "1GiB" or a plain number of bytes.
func parseSize(s string) (int64, error) {
	num, unit := strings.TrimSpace(s), int64(1)
	for suffix, u := range map[string]int64{"MiB": miB, "GiB": giB} {
		if n, ok := strings.CutSuffix(num, suffix); ok {
			num, unit = strings.TrimSpace(n), u
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with MiB or GiB", s)
	}
	return n * unit, nil
}

// dataSet is the generated source tree.
type dataSet struct {
	dir   string
	files []dataFile // large ones first
	large int
	bytes int64
	data  *rand.ChaCha8 // fast enough to keep up with a disk
	rng   *rand.Rand    // sizes and offsets, drawn from data
}

type dataFile struct {
	rel  string
	size int64
}

// generate writes incompressible files totalling size bytes into dir: half of
// it in a few large files of 64–256 MiB, half in small files of 4 KiB–1 MiB
// (about 1000 files per GiB), which is what a file server's tree looks like to
// a chunker: long streams and many files smaller than one chunk.
func generate(dir string, size int64) (*dataSet, error) {
	var seed [32]byte
	_, _ = crand.Read(seed[:])
	ds := &dataSet{dir: dir, data: rand.NewChaCha8(seed)}
	ds.rng = rand.New(ds.data)
	rng, left := ds.rng, size/2
	nLarge := max(2, int((left+80*miB)/(160*miB)))
	for i := range nLarge {
		n := left / int64(nLarge-i)
		if i < nLarge-1 {
			n += rng.Int64N(n/4+1) - n/8 // not all of one size
		}
		left -= n
		ds.files = append(ds.files, dataFile{rel: fmt.Sprintf("large/%02d.img", i), size: n})
	}
	ds.large = len(ds.files)
	for left, i := size-size/2, 0; left > 0; i++ {
		n := min(left, 4*kiB+rng.Int64N(miB-4*kiB+1))
		left -= n
		ds.files = append(ds.files, dataFile{rel: fmt.Sprintf("small/%02d/%04d.dat", i/100, i), size: n})
	}
	for _, f := range ds.files {
		if err := ds.write(f.rel, 0, f.size, os.O_CREATE|os.O_EXCL|os.O_WRONLY); err != nil {
			return nil, err
		}
		ds.bytes += f.size
	}
	return ds, nil
}

// change overwrites about 1% of the data set with new random bytes, as 1 MiB
// regions spread evenly over the large files, and returns the bytes overwritten.
func (ds *dataSet) change() (int64, error) {
	regions := max(1, int((ds.bytes/100+miB/2)/miB))
	var changed int64
	for i := range regions {
		f := ds.files[i%ds.large]
		inFile := (regions - i%ds.large + ds.large - 1) / ds.large
		slot := f.size / int64(inFile) // one region per slot: they never overlap
		if slot < miB {
			continue
		}
		off := int64(i/ds.large)*slot + ds.rng.Int64N(slot-miB+1)
		if err := ds.write(f.rel, off, miB, os.O_WRONLY); err != nil {
			return changed, err
		}
		changed += miB
	}
	return changed, nil
}

// write writes n random bytes at off into the file rel.
func (ds *dataSet) write(rel string, off, n int64, flag int) error {
	p := filepath.Join(ds.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, flag, 0o644)
	if err != nil {
		return err
	}
	_, err = io.CopyN(io.NewOffsetWriter(f, off), ds.data, n)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// baseline uploads every file of the data set as one plain object, eight at a
// time, with minio-go's defaults: the speed of the store itself, which the
// backup is measured against.
func baseline(ctx context.Context, mc *minio.Client, bucket string, ds *dataSet) (time.Duration, error) {
	if err := mc.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		return 0, fmt.Errorf("make bucket %s: %w", bucket, err)
	}
	start := time.Now()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, f := range ds.files {
		g.Go(func() error {
			r, err := os.Open(filepath.Join(ds.dir, f.rel))
			if err != nil {
				return err
			}
			defer r.Close()
			if _, err := mc.PutObject(ctx, bucket, f.rel, r, f.size, minio.PutObjectOptions{ContentType: "application/octet-stream"}); err != nil {
				return fmt.Errorf("put %s: %w", f.rel, err)
			}
			return nil
		})
	}
	err := g.Wait()
	return time.Since(start), err
}
