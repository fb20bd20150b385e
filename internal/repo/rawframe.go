package repo

import (
	"encoding/binary"
	"math"
	"sync"
)

// Incompressible chunks. Most bulk data (media, archives, compressed or
// encrypted databases and images) does not compress, and trying cost zstd
// a sixth of the worker's CPU in a backup of such data for nothing. seal
// judges a chunk on a sample first and stores one that would not shrink as a
// zstd frame of raw blocks: a standard frame that every zstd decoder reads,
// so the format does not change (docs/format.md, "Chunks"). open reads such a
// frame back by moving the blocks together, without a decoder.

const (
	zstdMagic    = 0xFD2FB528
	zstdBlockMax = 128 << 10 // a block's most content (RFC 8878, Block_Maximum_Size)

	sampleWindow  = 16 << 10
	sampleWindows = 4
	// Chunks shorter than this are compressed without a trial: the sample
	// would be most of them.
	sampleMin = 8 * sampleWindow
)

// rawFrame appends to dst a zstd frame holding plain in raw blocks (its
// arguments are in EncodeAll's order): magic,
// a frame header of one descriptor byte (single segment, 4-byte content
// size, no checksum, no dictionary) and the 4-byte size, then blocks of at
// most 128 KiB, each behind a 3-byte header (last flag, type raw, size).
func rawFrame(plain, dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, zstdMagic)
	dst = append(dst, 0b10_1_0_0_0_00) // FCS flag 2 (4 bytes), single segment
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(plain)))
	for {
		n := min(len(plain), zstdBlockMax)
		h := uint32(n) << 3 // type 0: raw
		if n == len(plain) {
			h |= 1 // last block
		}
		dst = append(dst, byte(h), byte(h>>8), byte(h>>16))
		dst = append(dst, plain[:n]...)
		plain = plain[n:]
		if len(plain) == 0 {
			return dst
		}
	}
}

// rawFrameContent returns the content of z when z is a frame of raw blocks
// only, without a checksum, as rawFrame writes; ok is false for any other
// frame (compressed blocks, several frames, trailing bytes…), which the zstd
// decoder then reads or refuses. When own is true the content is moved to
// the front of z in place and returned as a prefix of z; otherwise it is
// copied into a new slice.
func rawFrameContent(z []byte, own bool) (plain []byte, ok bool) {
	if len(z) < 6 || binary.LittleEndian.Uint32(z) != zstdMagic {
		return nil, false
	}
	fhd := z[4]
	if fhd&0b100 != 0 || fhd&0b11 != 0 || fhd&0b1000 != 0 {
		return nil, false // checksum, dictionary or reserved bit: leave it to the decoder
	}
	single := fhd&0b10_0000 != 0
	pos := 5
	if !single {
		pos++ // window descriptor
	}
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fhd>>6 == 0 && single {
		fcsSize = 1
	}
	if len(z) < pos+fcsSize {
		return nil, false
	}
	var fcs uint64
	switch fcsSize {
	case 1:
		fcs = uint64(z[pos])
	case 2:
		fcs = uint64(binary.LittleEndian.Uint16(z[pos:])) + 256
	case 4:
		fcs = uint64(binary.LittleEndian.Uint32(z[pos:]))
	case 8:
		fcs = binary.LittleEndian.Uint64(z[pos:])
	}
	pos += fcsSize
	// First pass: every block raw, sizes within bounds, the last one ending z.
	total := 0
	for p := pos; ; {
		if len(z)-p < 3 {
			return nil, false
		}
		h := uint32(z[p]) | uint32(z[p+1])<<8 | uint32(z[p+2])<<16
		size := int(h >> 3)
		if (h>>1)&3 != 0 || size > zstdBlockMax || len(z)-p-3 < size {
			return nil, false
		}
		p += 3 + size
		total += size
		if total > ChunkMax {
			return nil, false
		}
		if h&1 != 0 {
			if p != len(z) {
				return nil, false
			}
			break
		}
	}
	if fcsSize > 0 && fcs != uint64(total) {
		return nil, false
	}
	var out []byte
	if own {
		out = z[:0]
	} else {
		out = make([]byte, 0, total)
	}
	for p := pos; len(out) < total; {
		size := int((uint32(z[p]) | uint32(z[p+1])<<8 | uint32(z[p+2])<<16) >> 3)
		out = append(out, z[p+3:p+3+size]...) // in place: moves left, never past p
		p += 3 + size
	}
	return out, true
}

// samplePool holds the buffers incompressible uses: a sample and its
// compressed form.
var samplePool = sync.Pool{New: func() any {
	b := make([]byte, 2*sampleWindows*sampleWindow+1024)
	return &b
}}

// incompressible judges whether zstd would save less than 1/64 of plain,
// on four windows of 16 KiB spread over it: when their bytes are near
// uniform (order-0 entropy of 7.8 bits or more) and zstd cannot shrink them
// either. It errs towards compressing: a chunk judged compressible costs
// only the CPU it cost before this test.
func incompressible(plain []byte) bool {
	if len(plain) < sampleMin {
		return false
	}
	bp := samplePool.Get().(*[]byte)
	defer samplePool.Put(bp)
	buf := *bp
	sample := buf[:0]
	step := (len(plain) - sampleWindow) / (sampleWindows - 1)
	for i := range sampleWindows {
		sample = append(sample, plain[i*step:i*step+sampleWindow]...)
	}
	if entropy(sample) < 7.8 {
		return false
	}
	z := encoder.EncodeAll(sample, buf[len(sample):len(sample)])
	return len(z) >= len(sample)-len(sample)/64
}

// entropy is the order-0 entropy of b in bits per byte.
func entropy(b []byte) float64 {
	var hist [256]int
	for _, c := range b {
		hist[c]++
	}
	n := float64(len(b))
	var h float64
	for _, c := range hist {
		if c > 0 {
			p := float64(c) / n
			h -= p * math.Log2(p)
		}
	}
	return h
}
