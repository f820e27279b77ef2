// Package memexport is a sparse in-memory nbd.Export: the counterpart of
// `nbdkit memory`, for tests and for benchmarking the NBD server without a
// storage back end.
//
// Memory is allocated in pages (32 KiB by default) on first write; reads of
// unwritten pages return zeroes, TRIM and WRITE_ZEROES of whole pages free
// them (unless NO_HOLE), and BLOCK_STATUS reports unallocated pages as
// holes that read as zero. Page lookups are lock-free (a two-level table of
// atomic pointers); page contents are guarded by striped RWMutexes, so
// requests to different pages never contend. Flush and FUA are no-ops:
// there is nothing to make durable.
package memexport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/zosproject/zos/blockd/nbd"
)

// Options configure an Export.
type Options struct {
	// PageSize is the allocation unit, a power of two in [512, 1 MiB];
	// default 32 KiB.
	PageSize int
	// MaxSize is the largest size Resize may grow to; default the initial
	// size.
	MaxSize int64
	// ReadOnly makes every write fail with nbd.ErrReadOnly.
	ReadOnly bool
}

// DefaultPageSize is the default allocation unit.
const DefaultPageSize = 32 << 10

const (
	tableBits = 12 // pages per second-level table
	numLocks  = 1024
)

// ErrOptions is wrapped by option validation errors.
var ErrOptions = errors.New("memexport: invalid options")

// ErrRange is returned for a range outside the export (the NBD server never
// sends one).
var ErrRange = errors.New("memexport: range outside export")

type table [1 << tableBits]atomic.Pointer[[]byte]

// Export is a sparse in-memory block device. It is safe for concurrent use.
type Export struct {
	pageShift uint
	pageSize  int64
	readOnly  bool
	maxSize   int64
	size      atomic.Int64
	pages     atomic.Int64 // allocated pages
	l1        []atomic.Pointer[table]
	locks     [numLocks]sync.RWMutex
	resizeMu  sync.Mutex
}

var _ nbd.Export = (*Export)(nil)

// New returns an empty (all-zero) export of size bytes.
func New(size int64, opts Options) (*Export, error) {
	if opts.PageSize == 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = size
	}
	ps := opts.PageSize
	switch {
	case size < 0:
		return nil, fmt.Errorf("%w: negative size %d", ErrOptions, size)
	case ps < 512 || ps > 1<<20 || ps&(ps-1) != 0:
		return nil, fmt.Errorf("%w: page size %d is not a power of two in [512, 1MiB]", ErrOptions, ps)
	case opts.MaxSize < size:
		return nil, fmt.Errorf("%w: MaxSize %d < size %d", ErrOptions, opts.MaxSize, size)
	}
	shift := uint(0)
	for 1<<shift < ps {
		shift++
	}
	npages := (opts.MaxSize + int64(ps) - 1) >> shift
	e := &Export{
		pageShift: shift,
		pageSize:  int64(ps),
		readOnly:  opts.ReadOnly,
		maxSize:   opts.MaxSize,
		l1:        make([]atomic.Pointer[table], (npages+(1<<tableBits)-1)>>tableBits),
	}
	e.size.Store(size)
	return e, nil
}

// MustNew is New for tests and benchmarks; it panics on bad options.
func MustNew(size int64, opts Options) *Export {
	e, err := New(size, opts)
	if err != nil {
		panic(err)
	}
	return e
}

// Size implements nbd.Export.
func (e *Export) Size() int64 { return e.size.Load() }

// Allocated returns the bytes of memory held by pages.
func (e *Export) Allocated() int64 { return e.pages.Load() * e.pageSize }

// Resize changes the size (up to Options.MaxSize). Shrinking drops the
// data past the new end; growing exposes zeroes. Connections already open
// keep the size they negotiated.
func (e *Export) Resize(size int64) error {
	if size < 0 || size > e.maxSize {
		return fmt.Errorf("%w: size %d outside [0, %d]", ErrOptions, size, e.maxSize)
	}
	e.resizeMu.Lock()
	defer e.resizeMu.Unlock()
	old := e.size.Load()
	if size < old {
		e.discard(size, old-size, false)
	}
	e.size.Store(size)
	return nil
}

func (e *Export) page(idx int64, alloc bool) *[]byte {
	t := e.l1[idx>>tableBits].Load()
	if t == nil {
		if !alloc {
			return nil
		}
		t = new(table)
		if !e.l1[idx>>tableBits].CompareAndSwap(nil, t) {
			t = e.l1[idx>>tableBits].Load()
		}
	}
	slot := &t[idx&(1<<tableBits-1)]
	p := slot.Load()
	if p == nil && alloc {
		b := make([]byte, e.pageSize)
		p = &b
		slot.Store(p) // under the page's write lock: no race with another allocator
		e.pages.Add(1)
	}
	return p
}

func (e *Export) free(idx int64) {
	t := e.l1[idx>>tableBits].Load()
	if t == nil {
		return
	}
	if t[idx&(1<<tableBits-1)].Swap(nil) != nil {
		e.pages.Add(-1)
	}
}

func (e *Export) lock(idx int64) *sync.RWMutex { return &e.locks[idx%numLocks] }

func (e *Export) check(off, n int64) error {
	if off < 0 || n < 0 || off > e.size.Load()-n {
		return fmt.Errorf("%w: [%d, +%d) outside export of %d bytes", ErrRange, off, n, e.size.Load())
	}
	return nil
}

// ReadAt implements nbd.Export.
func (e *Export) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := e.check(off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		idx := off >> e.pageShift
		po := off & (e.pageSize - 1)
		n := min(int64(len(p)), e.pageSize-po)
		mu := e.lock(idx)
		mu.RLock()
		if pg := e.page(idx, false); pg != nil {
			copy(p[:n], (*pg)[po:])
		} else {
			clear(p[:n])
		}
		mu.RUnlock()
		p = p[n:]
		off += n
	}
	return nil
}

// WriteAt implements nbd.Export.
func (e *Export) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if e.readOnly {
		return nbd.ErrReadOnly
	}
	if err := e.check(off, int64(len(p))); err != nil {
		return err
	}
	for len(p) > 0 {
		idx := off >> e.pageShift
		po := off & (e.pageSize - 1)
		n := min(int64(len(p)), e.pageSize-po)
		mu := e.lock(idx)
		mu.Lock()
		copy((*e.page(idx, true))[po:], p[:n])
		mu.Unlock()
		p = p[n:]
		off += n
	}
	return nil
}

// Flush implements nbd.Export; memory needs no flushing.
func (e *Export) Flush(ctx context.Context) error { return nil }

// Trim implements nbd.Export: whole pages in the range are freed, partial
// pages are zeroed.
func (e *Export) Trim(ctx context.Context, off, length int64, fua bool) error {
	if e.readOnly {
		return nbd.ErrReadOnly
	}
	if err := e.check(off, length); err != nil {
		return err
	}
	e.discard(off, length, false)
	return nil
}

// WriteZeroes implements nbd.Export. Zeroing is always cheap here (whole
// pages are freed or cleared, never written page by page from the
// network), so ZeroFast always succeeds.
func (e *Export) WriteZeroes(ctx context.Context, off, length int64, flags nbd.ZeroFlags) error {
	if e.readOnly {
		return nbd.ErrReadOnly
	}
	if err := e.check(off, length); err != nil {
		return err
	}
	e.discard(off, length, flags&nbd.ZeroNoHole != 0)
	return nil
}

// discard zeroes [off, off+length): whole pages are freed, or with keep
// allocated and cleared; partial pages are cleared if allocated.
func (e *Export) discard(off, length int64, keep bool) {
	for length > 0 {
		idx := off >> e.pageShift
		po := off & (e.pageSize - 1)
		n := min(length, e.pageSize-po)
		mu := e.lock(idx)
		mu.Lock()
		switch {
		case n == e.pageSize && !keep:
			e.free(idx)
		case keep:
			clear((*e.page(idx, true))[po : po+n])
		default:
			if pg := e.page(idx, false); pg != nil {
				clear((*pg)[po : po+n])
			}
		}
		mu.Unlock()
		length -= n
		off += n
	}
}

var zeroPage [1 << 20]byte

// BlockStatus implements nbd.Export: unallocated pages are holes reading as
// zero, allocated pages that hold only zeroes read as zero, the rest is
// data.
func (e *Export) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	if err := e.check(off, length); err != nil {
		return nil, err
	}
	var out []nbd.Extent
	for length > 0 {
		idx := off >> e.pageShift
		po := off & (e.pageSize - 1)
		n := min(length, e.pageSize-po)
		mu := e.lock(idx)
		mu.RLock()
		var f nbd.ExtentFlags
		if pg := e.page(idx, false); pg == nil {
			f = nbd.ExtentHole | nbd.ExtentZero
		} else if bytes.Equal((*pg)[po:po+n], zeroPage[:n]) {
			f = nbd.ExtentZero
		}
		mu.RUnlock()
		if k := len(out); k > 0 && out[k-1].Flags == f {
			out[k-1].Length += n
		} else {
			out = append(out, nbd.Extent{Length: n, Flags: f})
		}
		length -= n
		off += n
	}
	return out, nil
}
