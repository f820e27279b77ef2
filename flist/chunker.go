package flist

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"

	"github.com/zosproject/zos/chunkstore"
)

// Chunking says how file contents are cut into chunks. Files are cut
// independently (a chunk never spans two files), so identical files always
// dedup; the choice matters for large files that change between versions.
type Chunking struct {
	// Kind is "fastcdc" (content-defined, FastCDC with normalised chunking)
	// or "fixed".
	Kind string
	// Min, Avg and Max chunk sizes in bytes. Fixed chunking uses Avg.
	Min, Avg, Max int
}

// DefaultChunking is FastCDC with 256 KiB / 1 MiB / 4 MiB bounds; see the
// package documentation for the measurement behind the choice.
var DefaultChunking = Chunking{Kind: "fastcdc", Min: 256 << 10, Avg: 1 << 20, Max: 4 << 20}

// FixedChunking returns fixed-size chunking with the given size.
func FixedChunking(size int) Chunking {
	return Chunking{Kind: "fixed", Min: size, Avg: size, Max: size}
}

// Name is a short description recorded in Meta.Chunking.
func (c Chunking) Name() string {
	if c.Kind == "fixed" {
		return fmt.Sprintf("fixed-%s", sizeName(c.Avg))
	}
	return fmt.Sprintf("fastcdc-%s-%s-%s", sizeName(c.Min), sizeName(c.Avg), sizeName(c.Max))
}

func sizeName(n int) string {
	switch {
	case n%(1<<20) == 0:
		return fmt.Sprintf("%dm", n>>20)
	case n%(1<<10) == 0:
		return fmt.Sprintf("%dk", n>>10)
	}
	return fmt.Sprint(n)
}

// Validate checks the bounds.
func (c Chunking) Validate() error {
	switch c.Kind {
	case "fixed":
		if c.Avg <= 0 || c.Avg > chunkstore.MaxChunkSize {
			return fmt.Errorf("flist: fixed chunk size %d out of range (1..%d)", c.Avg, chunkstore.MaxChunkSize)
		}
	case "fastcdc":
		if c.Min < 64 || c.Min > c.Avg || c.Avg > c.Max || c.Max > chunkstore.MaxChunkSize {
			return fmt.Errorf("flist: fastcdc bounds %d/%d/%d invalid (need 64 <= min <= avg <= max <= %d)", c.Min, c.Avg, c.Max, chunkstore.MaxChunkSize)
		}
		if bits.OnesCount(uint(c.Avg)) != 1 {
			return fmt.Errorf("flist: fastcdc average %d must be a power of two", c.Avg)
		}
	default:
		return fmt.Errorf("flist: unknown chunking %q (want fastcdc or fixed)", c.Kind)
	}
	return nil
}

// gear is FastCDC's table of 256 random 64-bit values. It is part of the
// format: changing it changes every cut point and loses dedup with older
// flists. Generated with splitmix64 from a fixed seed.
var gear = func() (g [256]uint64) {
	x := uint64(0x7a6f732d666c6973) // "zos-flis"
	for i := range g {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		g[i] = z ^ (z >> 31)
	}
	return g
}()

// cutPoint returns the length of the next chunk of data (len(data) when no
// boundary is found before it). The caller passes at most Max bytes, or
// fewer only at the end of the file.
func (c *Chunking) cutPoint(data []byte) int {
	n := len(data)
	if c.Kind == "fixed" {
		return min(n, c.Avg)
	}
	if n <= c.Min {
		return n
	}
	n = min(n, c.Max)
	normal := min(c.Avg, n)
	b := bits.TrailingZeros(uint(c.Avg))
	// Normalised chunking (level 2): a stricter mask before the average
	// size, a looser one after. Top bits of the gear hash depend on the
	// last 64 bytes, so the masks use them.
	maskS := ^uint64(0) << (64 - (b + 2))
	maskL := ^uint64(0) << (64 - (b - 2))
	var fp uint64
	i := c.Min
	for ; i < normal; i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&maskS == 0 {
			return i + 1
		}
	}
	for ; i < n; i++ {
		fp = fp<<1 + gear[data[i]]
		if fp&maskL == 0 {
			return i + 1
		}
	}
	return n
}

// uploader stores chunks with bounded concurrency; results land in the
// Chunk slots the caller passes.
type uploader struct {
	store chunkstore.Receiver
	sem   chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error
	free  chan []byte
}

func newUploader(store chunkstore.Receiver, concurrency int) *uploader {
	return &uploader{store: store, sem: make(chan struct{}, concurrency), free: make(chan []byte, concurrency)}
}

func (u *uploader) failed() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

// put stores a copy of data and fills dst.Ref when done.
func (u *uploader) put(ctx context.Context, data []byte, dst *Chunk) error {
	if err := u.failed(); err != nil {
		return err
	}
	dst.Size = uint32(len(data))
	select {
	case u.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	// One MaxChunkSize buffer per upload slot, reused: no per-chunk
	// allocation, memory bounded by the concurrency.
	var buf []byte
	select {
	case buf = <-u.free:
	default:
		buf = make([]byte, 0, chunkstore.MaxChunkSize)
	}
	buf = append(buf[:0], data...)
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		ref, err := u.store.Put(ctx, buf)
		if err == nil && ref != chunkstore.Sum(buf) {
			err = fmt.Errorf("%w: store returned ref %s for a chunk whose ref is %s", chunkstore.ErrCorrupt, ref.Short(), chunkstore.Sum(buf).Short())
		}
		select {
		case u.free <- buf:
		default:
		}
		<-u.sem
		if err != nil {
			u.mu.Lock()
			if u.err == nil {
				u.err = fmt.Errorf("flist: store chunk: %w", err)
			}
			u.mu.Unlock()
			return
		}
		dst.Ref = ref
	}()
	return nil
}

// wait blocks until every started upload finished and returns the first
// error.
func (u *uploader) wait() error {
	u.wg.Wait()
	return u.failed()
}

// chunkReader cuts r, which must yield exactly want bytes, into chunks and
// uploads each. The returned slice's Refs are filled in asynchronously: call
// u.wait before reading them. Reading a different number of bytes is an
// error (a file that changed while being read, or a truncated archive).
func chunkReader(ctx context.Context, r io.Reader, want int64, c *Chunking, u *uploader, buf []byte, onBytes func(int)) ([]Chunk, error) {
	if want < 0 || want > MaxFileSize {
		return nil, fmt.Errorf("%w: file size %d out of range", ErrBadArchive, want)
	}
	if want == 0 {
		return nil, nil
	}
	// Every chunk but the last is at least Min bytes, so this capacity is
	// never exceeded and the slots the uploads write into never move.
	out := make([]Chunk, 0, want/int64(c.Min)+2)
	var total int64
	fill := 0
	eof := false
	for {
		for !eof && fill < c.Max {
			n, err := r.Read(buf[fill:c.Max])
			fill += n
			total += int64(n)
			if onBytes != nil && n > 0 {
				onBytes(n)
			}
			if err == io.EOF {
				eof = true
			} else if err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, fmt.Errorf("%w: truncated (%v)", ErrBadArchive, err)
				}
				return nil, err
			}
			if total > want {
				return nil, fmt.Errorf("%w: more than the expected %d bytes (file changed while reading?)", ErrBadArchive, want)
			}
		}
		if fill == 0 {
			break
		}
		cut := c.cutPoint(buf[:fill])
		if len(out) == cap(out) {
			return nil, fmt.Errorf("flist: internal error: chunk slots exhausted")
		}
		out = append(out, Chunk{})
		if err := u.put(ctx, buf[:cut], &out[len(out)-1]); err != nil {
			return nil, err
		}
		copy(buf, buf[cut:fill])
		fill -= cut
	}
	if total != want {
		return nil, fmt.Errorf("%w: read %d bytes, expected %d (truncated, or changed while reading)", ErrBadArchive, total, want)
	}
	return out, ctx.Err()
}
