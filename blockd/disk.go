package blockd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zosproject/zos/blockd/internal/par"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/raft/fsm"
)

// emptyRef names the empty chunk. A leaf slot holding it is an allocated
// block of zeroes (WRITE_ZEROES with NO_HOLE); reads never fetch it.
var emptyRef = chunkstore.Sum(nil)

// zeroes is a shared block of zeroes, never written.
var zeroes = make([]byte, MaxBlockSize)

// Accounting cost of a dirty entry without data and of a zeroed span.
const (
	entryCost = 64
	spanCost  = 48
	// smallZero: zeroing at most this many whole blocks records one entry
	// per block; larger ranges are recorded as a span and punched out of
	// the tree at flush.
	smallZero = 64
	// keepChunk bounds the blocks one step of a NO_HOLE zeroing records
	// before it waits for the write-back cache.
	keepChunk = 4096
	// maxStatusBlocks bounds the blocks one BlockStatus call inspects.
	maxStatusBlocks = 1 << 18
	// maxStatusExtents bounds the extents of one BlockStatus answer.
	maxStatusExtents = 4096
	// maxCacheHint bounds the bytes one CACHE request prefetches.
	maxCacheHint = 64 << 20
)

// dblock is one block in the write-back cache. data == nil means the block
// reads as zeroes: absent from the tree after flush, or, with keep,
// allocated as the empty chunk.
type dblock struct {
	data []byte
	keep bool
}

func (b *dblock) cost() int64 { return entryCost + int64(cap(b.data)) }

// zeroEntry is the shared "reads as zeroes" answer of zeroed spans.
var zeroEntry = &dblock{}

// flushRun is one flush in progress: it makes durable every mutation with a
// sequence number up to seq.
type flushRun struct {
	seq  uint64
	done chan struct{}
	err  error
}

// Disk is one vdisk opened on this node: the engine behind an NBD export.
// It is safe for concurrent use by many connections. A read-write Disk
// holds the vdisk's lease; a read-only Disk serves a fixed head (a snapshot
// or the head at open time).
//
// Writes land in a bounded write-back cache of whole blocks (a partial write
// reads the rest of its block first). Flush stores every dirty block as a
// chunk, writes the changed tree nodes and commits the new head through the
// control plane, fenced by the lease epoch, before it returns. Reads see the
// cache first, then the committed tree.
type Disk struct {
	svc   *Service
	name  string // vdisk name
	label string // export name (name, name@snap, name:ro)
	typ   string
	bs    int64
	shift uint
	ro    bool
	epoch uint64
	store chunkstore.Store
	tree  *tree.Tree
	log   *slog.Logger

	size atomic.Int64

	ctx    context.Context // cancelled when the disk is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup

	bufs chan []byte // free block buffers

	mu         sync.Mutex
	head       chunkstore.Ref // committed head
	dirty      map[uint64]*dblock
	zeros      spans // zeroed ranges not yet flushed (dirty entries override)
	flushing   map[uint64]*dblock
	flushZeros spans
	dirtyMem   int64 // accounted bytes of dirty and zeros
	flushMem   int64 // accounted bytes of flushing and flushZeros
	writeSeq   uint64
	durableSeq uint64
	baseGen    uint64 // bumped when the layers below dirty change
	run        *flushRun
	lastErr    error
	fenced     error
	space      chan struct{} // closed (and replaced) when cache memory is freed
	closed     bool
	leaseUntil time.Time
}

type diskParams struct {
	name, label, typ string
	bs, size         int64
	head             chunkstore.Ref
	readOnly         bool
	epoch            uint64
	leaseUntil       time.Time
	store            chunkstore.Store
	tree             *tree.Tree
}

func newDisk(svc *Service, p diskParams) *Disk {
	ctx, cancel := context.WithCancel(svc.ctx)
	d := &Disk{
		svc: svc, name: p.name, label: p.label, typ: p.typ, bs: p.bs,
		shift: uint(bits.TrailingZeros64(uint64(p.bs))), ro: p.readOnly, epoch: p.epoch,
		store: p.store, tree: p.tree, ctx: ctx, cancel: cancel,
		log:  svc.log.With("vdisk", p.label),
		head: p.head, dirty: map[uint64]*dblock{}, space: make(chan struct{}),
		leaseUntil: p.leaseUntil,
	}
	d.size.Store(p.size)
	d.bufs = make(chan []byte, 64)
	if !d.ro {
		d.wg.Add(2)
		go d.renewLoop()
		go d.writebackLoop()
	}
	return d
}

var _ nbd.Export = (*Disk)(nil)
var _ nbd.Cacher = (*Disk)(nil)

// Name returns the vdisk's name; Label the export name it was opened as.
func (d *Disk) Name() string  { return d.name }
func (d *Disk) Label() string { return d.label }

// BlockSize returns the vdisk's block size.
func (d *Disk) BlockSize() int64 { return d.bs }

// ReadOnly reports whether the Disk refuses writes.
func (d *Disk) ReadOnly() bool { return d.ro }

// Size implements nbd.Export.
func (d *Disk) Size() int64 { return d.size.Load() }

// Head returns the last committed head.
func (d *Disk) Head() chunkstore.Ref {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.head
}

// Epoch returns the lease epoch of a read-write Disk (0 when read-only).
func (d *Disk) Epoch() uint64 { return d.epoch }

// Stats is a Disk's cache state.
type Stats struct {
	DirtyBlocks    int   `json:"dirty_blocks"`
	DirtyBytes     int64 `json:"dirty_bytes"`
	FlushingBlocks int   `json:"flushing_blocks"`
	Fenced         bool  `json:"fenced"`
}

// Stats reports the write-back cache state.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Stats{DirtyBlocks: len(d.dirty), DirtyBytes: d.dirtyMem + d.flushMem, FlushingBlocks: len(d.flushing), Fenced: d.fenced != nil}
}

func (d *Disk) setSize(n int64) { d.size.Store(n) }

// --- helpers ---

// getBuf returns a block buffer (contents undefined).
func (d *Disk) getBuf() []byte {
	select {
	case b := <-d.bufs:
		return b
	default:
		return make([]byte, d.bs)
	}
}

// putBuf recycles a block buffer nobody references any more.
func (d *Disk) putBuf(b []byte) {
	if int64(cap(b)) != d.bs {
		return
	}
	select {
	case d.bufs <- b[:d.bs]:
	default:
	}
}

func (d *Disk) checkRange(off, n int64) error {
	if off < 0 || n < 0 || off+n > d.Size() || off+n < off {
		return fmt.Errorf("blockd: vdisk %s: range [%d, %d) outside its %d bytes: %w", d.label, off, off+n, d.Size(), syscall.EINVAL)
	}
	return nil
}

// segments splits [off, off+n) into per-block pieces.
func (d *Disk) segments(off, n int64, fn func(idx uint64, inOff int, pOff, length int64) error) error {
	for pos := int64(0); pos < n; {
		abs := off + pos
		idx := uint64(abs >> d.shift)
		in := abs & (d.bs - 1)
		l := min(d.bs-in, n-pos)
		if err := fn(idx, int(in), pos, l); err != nil {
			return err
		}
		pos += l
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroes))
		if !bytes.Equal(b[:n], zeroes[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// trimZeros drops trailing zero bytes: a block is stored without them.
func trimZeros(b []byte) []byte {
	i := len(b)
	for i >= 8 && b[i-1] == 0 && b[i-2] == 0 && b[i-3] == 0 && b[i-4] == 0 &&
		b[i-5] == 0 && b[i-6] == 0 && b[i-7] == 0 && b[i-8] == 0 {
		i -= 8
	}
	for i > 0 && b[i-1] == 0 {
		i--
	}
	return b[:i]
}

// copyBlock copies block data (possibly trimmed) from inOff into dst.
func copyBlock(dst, data []byte, inOff int) {
	n := 0
	if inOff < len(data) {
		n = copy(dst, data[inOff:])
	}
	clear(dst[n:])
}

// peekLocked returns the in-memory state of idx: found is false when the
// committed tree defines it.
func (d *Disk) peekLocked(idx uint64) (*dblock, bool) {
	if b, ok := d.dirty[idx]; ok {
		return b, true
	}
	if len(d.zeros) > 0 && d.zeros.contains(idx) {
		return zeroEntry, true
	}
	if b, ok := d.flushing[idx]; ok {
		return b, true
	}
	if len(d.flushZeros) > 0 && d.flushZeros.contains(idx) {
		return zeroEntry, true
	}
	return nil, false
}

// blockData returns the (possibly trimmed) content of the block ref.
func (d *Disk) blockData(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	if ref == emptyRef {
		return nil, nil
	}
	b, err := d.svc.blocks.Get(ctx, ref, d.fetchBlock)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > d.bs {
		return nil, fmt.Errorf("%w: block %s of vdisk %s is %d bytes, more than the block size %d", ErrCorruptBlock, ref.Short(), d.label, len(b), d.bs)
	}
	return b, nil
}

func (d *Disk) fetchBlock(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	b, err := d.store.Fetch(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("blockd: vdisk %s: read block %s: %w", d.label, ref.Short(), err)
	}
	return b, nil
}

// lookup returns the content of block idx in the tree at head (nil = zeroes).
func (d *Disk) lookup(ctx context.Context, head chunkstore.Ref, idx uint64) ([]byte, error) {
	ref, err := d.tree.Lookup(ctx, head, idx)
	if err != nil {
		return nil, fmt.Errorf("blockd: vdisk %s: block %d: %w", d.label, idx, err)
	}
	if ref.IsZero() {
		return nil, nil
	}
	return d.blockData(ctx, ref)
}

// --- reads ---

// ReadAt implements nbd.Export.
func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	type miss struct {
		idx   uint64
		inOff int
		dst   []byte
		head  chunkstore.Ref
	}
	var misses []miss
	d.segments(off, int64(len(p)), func(idx uint64, inOff int, pOff, l int64) error {
		dst := p[pOff : pOff+l]
		d.mu.Lock()
		if b, ok := d.peekLocked(idx); ok {
			copyBlock(dst, b.data, inOff)
			d.mu.Unlock()
			return nil
		}
		head := d.head
		d.mu.Unlock()
		misses = append(misses, miss{idx, inOff, dst, head})
		return nil
	})
	err := par.Do(ctx, len(misses), d.svc.cfg.Parallelism, func(ctx context.Context, i int) error {
		m := misses[i]
		data, err := d.lookup(ctx, m.head, m.idx)
		if err != nil {
			return err
		}
		copyBlock(m.dst, data, m.inOff)
		return nil
	})
	if err != nil {
		d.log.Warn("read failed", "off", off, "len", len(p), "err", err)
		return err
	}
	d.svc.m.readBytes.Add(float64(len(p)))
	return nil
}

// Cache implements nbd.Cacher: it fetches the blocks of the range into the
// block cache.
func (d *Disk) Cache(ctx context.Context, off, length int64) error {
	if err := d.checkRange(off, length); err != nil {
		return err
	}
	length = min(length, maxCacheHint)
	var idxs []uint64
	var heads []chunkstore.Ref
	d.mu.Lock()
	for i := uint64(off >> d.shift); int64(i)<<d.shift < off+length; i++ {
		if _, ok := d.peekLocked(i); !ok {
			idxs = append(idxs, i)
			heads = append(heads, d.head)
		}
	}
	d.mu.Unlock()
	return par.Do(ctx, len(idxs), d.svc.cfg.Parallelism, func(ctx context.Context, i int) error {
		_, err := d.lookup(ctx, heads[i], idxs[i])
		return err
	})
}

// --- writes ---

func (d *Disk) writable() error {
	switch {
	case d.ro:
		return fmt.Errorf("%w: %s is read-only", nbd.ErrReadOnly, d.label)
	case d.closed:
		return fmt.Errorf("%w: vdisk %s", ErrClosed, d.label)
	case d.fenced != nil:
		return d.fenced
	}
	return nil
}

// reserve waits until the write-back cache has room, starting a flush if
// none runs. It fails if the cache stays full because flushes fail.
func (d *Disk) reserve(ctx context.Context) error {
	stalled := false
	for {
		d.mu.Lock()
		if err := d.writable(); err != nil {
			d.mu.Unlock()
			return err
		}
		if d.dirtyMem+d.flushMem < d.svc.cfg.MaxDirtyBytes {
			d.mu.Unlock()
			return nil
		}
		if stalled && d.run == nil && d.lastErr != nil {
			err := d.lastErr
			d.mu.Unlock()
			return fmt.Errorf("blockd: vdisk %s: write-back cache full and flushing fails: %w", d.label, err)
		}
		if !stalled {
			d.svc.m.writeStalls.Inc()
			stalled = true
		}
		if d.run == nil {
			d.startFlushLocked()
		}
		ch := d.space
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// notifySpaceLocked wakes writers waiting for cache room.
func (d *Disk) notifySpaceLocked() {
	close(d.space)
	d.space = make(chan struct{})
}

func (d *Disk) addDirtyLocked(delta int64) {
	d.dirtyMem += delta
	d.svc.m.dirtyBytes.Add(float64(delta))
}

// maybeWritebackLocked starts an early flush when enough is dirty.
func (d *Disk) maybeWritebackLocked() {
	if d.run == nil && d.dirtyMem >= d.svc.cfg.WritebackBytes {
		d.startFlushLocked()
	}
}

// setLocked replaces the dirty entry of idx.
func (d *Disk) setLocked(idx uint64, b *dblock) {
	if old, ok := d.dirty[idx]; ok {
		d.addDirtyLocked(-old.cost())
		if old.data != nil && old != b {
			d.putBuf(old.data)
		}
	}
	d.dirty[idx] = b
	d.addDirtyLocked(b.cost())
	d.writeSeq++
}

// WriteAt implements nbd.Export.
func (d *Disk) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := d.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if err := d.reserve(ctx); err != nil {
		return err
	}
	err := d.segments(off, int64(len(p)), func(idx uint64, inOff int, pOff, l int64) error {
		return d.writeBlock(ctx, idx, inOff, p[pOff:pOff+l], false, false)
	})
	if err != nil {
		d.log.Warn("write failed", "off", off, "len", len(p), "err", err)
		return err
	}
	d.svc.m.writtenBytes.Add(float64(len(p)))
	d.mu.Lock()
	d.maybeWritebackLocked()
	d.mu.Unlock()
	if fua {
		return d.Flush(ctx)
	}
	return nil
}

// writeBlock writes src at inOff of block idx. keep marks a block zeroed
// with NO_HOLE. With noFetch, a write that would need the block's old
// content from the store fails with nbd.ErrNotFast instead.
func (d *Disk) writeBlock(ctx context.Context, idx uint64, inOff int, src []byte, keep, noFetch bool) error {
	if inOff == 0 && int64(len(src)) == d.bs {
		if isZero(src) {
			d.mu.Lock()
			defer d.mu.Unlock()
			if err := d.writable(); err != nil {
				return err
			}
			d.setLocked(idx, &dblock{keep: keep})
			return nil
		}
		d.mu.Lock()
		if err := d.writable(); err != nil {
			d.mu.Unlock()
			return err
		}
		if b := d.dirty[idx]; b != nil && b.data != nil {
			copy(b.data, src)
			d.writeSeq++
			d.mu.Unlock()
			return nil
		}
		d.mu.Unlock()
		buf := d.getBuf()
		copy(buf, src)
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.writable(); err != nil {
			return err
		}
		d.setLocked(idx, &dblock{data: buf})
		return nil
	}
	zero := isZero(src)
	for {
		d.mu.Lock()
		if err := d.writable(); err != nil {
			d.mu.Unlock()
			return err
		}
		if b := d.dirty[idx]; b != nil {
			if b.data == nil {
				if zero {
					b.keep = b.keep || keep
					d.writeSeq++
					d.mu.Unlock()
					return nil
				}
				buf := d.getBuf()
				clear(buf)
				copy(buf[inOff:], src)
				d.setLocked(idx, &dblock{data: buf})
			} else {
				copy(b.data[inOff:], src)
				d.writeSeq++
			}
			d.mu.Unlock()
			return nil
		}
		if b, ok := d.peekLocked(idx); ok { // zeroed, or being flushed
			if b.data == nil && zero {
				d.setLocked(idx, &dblock{keep: keep || b.keep})
				d.mu.Unlock()
				return nil
			}
			buf := d.getBuf()
			copyBlock(buf, b.data, 0)
			copy(buf[inOff:], src)
			d.setLocked(idx, &dblock{data: buf})
			d.mu.Unlock()
			return nil
		}
		head, gen := d.head, d.baseGen
		d.mu.Unlock()

		// Read-modify-write from the committed tree.
		ref, err := d.tree.Lookup(ctx, head, idx)
		if err != nil {
			return fmt.Errorf("blockd: vdisk %s: block %d: %w", d.label, idx, err)
		}
		var base []byte
		if !ref.IsZero() {
			if noFetch {
				if _, ok := d.svc.blocks.Peek(ref); !ok && ref != emptyRef {
					return fmt.Errorf("%w: block %d of %s is not cached", nbd.ErrNotFast, idx, d.label)
				}
			}
			if base, err = d.blockData(ctx, ref); err != nil {
				return err
			}
		} else if zero {
			// Zeroes over an absent block: nothing to do unless the
			// block must become allocated.
			if !keep {
				d.mu.Lock()
				ok := d.dirty[idx] == nil && d.baseGen == gen
				if ok {
					d.writeSeq++
				}
				d.mu.Unlock()
				if ok {
					return nil
				}
				continue
			}
		}
		var nb *dblock
		if base == nil && zero {
			nb = &dblock{keep: keep || ref == emptyRef}
		} else {
			buf := d.getBuf()
			copyBlock(buf, base, 0)
			copy(buf[inOff:], src)
			nb = &dblock{data: buf}
		}
		d.mu.Lock()
		if d.dirty[idx] != nil || d.baseGen != gen {
			d.mu.Unlock()
			if nb.data != nil {
				d.putBuf(nb.data)
			}
			continue // the block changed meanwhile: redo on the new state
		}
		if err := d.writable(); err != nil {
			d.mu.Unlock()
			return err
		}
		d.setLocked(idx, nb)
		d.mu.Unlock()
		return nil
	}
}

// zeroWhole marks whole blocks [from, to) as zeroes.
func (d *Disk) zeroWhole(ctx context.Context, from, to uint64, keep bool) error {
	if to <= from {
		return nil
	}
	if keep || to-from <= smallZero {
		for i := from; i < to; {
			if err := d.reserve(ctx); err != nil {
				return err
			}
			end := min(to, i+keepChunk)
			d.mu.Lock()
			if err := d.writable(); err != nil {
				d.mu.Unlock()
				return err
			}
			for ; i < end; i++ {
				d.setLocked(i, &dblock{keep: keep})
			}
			d.maybeWritebackLocked()
			d.mu.Unlock()
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.writable(); err != nil {
		return err
	}
	if uint64(len(d.dirty)) < to-from {
		for i, b := range d.dirty {
			if i >= from && i < to {
				d.addDirtyLocked(-b.cost())
				if b.data != nil {
					d.putBuf(b.data)
				}
				delete(d.dirty, i)
			}
		}
	} else {
		for i := from; i < to; i++ {
			if b, ok := d.dirty[i]; ok {
				d.addDirtyLocked(-b.cost())
				if b.data != nil {
					d.putBuf(b.data)
				}
				delete(d.dirty, i)
			}
		}
	}
	n := len(d.zeros)
	d.zeros = d.zeros.add(from, to)
	d.addDirtyLocked(int64(len(d.zeros)-n) * spanCost)
	d.writeSeq++
	d.maybeWritebackLocked()
	return nil
}

// Trim implements nbd.Export: whole blocks in the range become absent;
// the partial blocks at its edges are left as they are (TRIM is advisory).
func (d *Disk) Trim(ctx context.Context, off, length int64, fua bool) error {
	if d.ro {
		return d.writable()
	}
	if err := d.checkRange(off, length); err != nil {
		return err
	}
	from := uint64((off + d.bs - 1) >> d.shift)
	to := uint64((off + length) >> d.shift)
	if off+length == d.Size() { // the partial last block is whole for the disk
		to = uint64((off + length + d.bs - 1) >> d.shift)
	}
	if err := d.zeroWhole(ctx, from, to, false); err != nil {
		return err
	}
	if fua {
		return d.Flush(ctx)
	}
	return nil
}

// WriteZeroes implements nbd.Export. Whole blocks become absent (or, with
// NoHole, allocated zero blocks) without data writes; partial blocks at the
// edges are read-modify-written, so a ZeroFast request fails with
// nbd.ErrNotFast when an edge block is neither cached nor absent.
func (d *Disk) WriteZeroes(ctx context.Context, off, length int64, flags nbd.ZeroFlags) error {
	if d.ro {
		return d.writable()
	}
	if err := d.checkRange(off, length); err != nil {
		return err
	}
	keep := flags&nbd.ZeroNoHole != 0
	fast := flags&nbd.ZeroFast != 0
	end := off + length
	wholeEnd := end
	if end == d.Size() {
		wholeEnd = (end + d.bs - 1) &^ (d.bs - 1)
	}
	from := uint64((off + d.bs - 1) >> d.shift)
	to := uint64(wholeEnd >> d.shift)
	if from >= to { // inside one block, or two partial ones
		from, to = 0, 0
	}
	// Edges first (they may refuse a fast zero), then whole blocks.
	err := d.segments(off, length, func(idx uint64, inOff int, pOff, l int64) error {
		if idx >= from && idx < to {
			return nil
		}
		return d.writeBlock(ctx, idx, inOff, zeroes[:l], keep, fast)
	})
	if err != nil {
		return err
	}
	if err := d.zeroWhole(ctx, from, to, keep); err != nil {
		return err
	}
	if flags&nbd.ZeroFUA != 0 {
		return d.Flush(ctx)
	}
	return nil
}

// --- block status ---

// BlockStatus implements nbd.Export from the tree and the write-back cache:
// absent blocks are holes that read as zeroes, allocated zero blocks read
// as zeroes, everything else is data. The cost is proportional to the
// allocated blocks in the range, not to its length.
func (d *Disk) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	if err := d.checkRange(off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	b0 := uint64(off >> d.shift)
	b1 := uint64((off + length + d.bs - 1) >> d.shift)
	if b1-b0 > maxStatusBlocks {
		b1 = b0 + maxStatusBlocks
	}
	inRange := func(m map[uint64]*dblock) map[uint64]*dblock {
		out := map[uint64]*dblock{}
		if uint64(len(m)) < b1-b0 {
			for i, b := range m {
				if i >= b0 && i < b1 {
					out[i] = b
				}
			}
		} else {
			for i := b0; i < b1; i++ {
				if b, ok := m[i]; ok {
					out[i] = b
				}
			}
		}
		return out
	}
	d.mu.Lock()
	head := d.head
	dirty, flushing := inRange(d.dirty), inRange(d.flushing)
	zeros, flushZeros := spans(d.zeros.overlapping(b0, b1)), spans(d.flushZeros.overlapping(b0, b1))
	d.mu.Unlock()

	tr := map[uint64]chunkstore.Ref{}
	errStop := errors.New("stop")
	err := d.tree.Walk(ctx, head, b0, b1, func(i uint64, ref chunkstore.Ref) error {
		if len(tr) >= 2*maxStatusExtents {
			b1 = i // describe up to here
			return errStop
		}
		tr[i] = ref
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("blockd: vdisk %s: block status: %w", d.label, err)
	}

	flagsOf := func(b *dblock) nbd.ExtentFlags {
		switch {
		case b.data != nil:
			return 0
		case b.keep:
			return nbd.ExtentZero
		}
		return nbd.ExtentHole | nbd.ExtentZero
	}
	state := func(i uint64) nbd.ExtentFlags {
		if b, ok := dirty[i]; ok {
			return flagsOf(b)
		}
		if zeros.contains(i) {
			return nbd.ExtentHole | nbd.ExtentZero
		}
		if b, ok := flushing[i]; ok {
			return flagsOf(b)
		}
		if flushZeros.contains(i) {
			return nbd.ExtentHole | nbd.ExtentZero
		}
		switch ref, ok := tr[i]; {
		case !ok:
			return nbd.ExtentHole | nbd.ExtentZero
		case ref == emptyRef:
			return nbd.ExtentZero
		}
		return 0
	}
	// The state only changes at these points.
	points := []uint64{b0, b1}
	for _, m := range []map[uint64]*dblock{dirty, flushing} {
		for i := range m {
			points = append(points, i, i+1)
		}
	}
	for _, z := range []spans{zeros, flushZeros} {
		for _, s := range z {
			points = append(points, s.from, s.to)
		}
	}
	for i := range tr {
		points = append(points, i, i+1)
	}
	slices.Sort(points)
	points = slices.Compact(points)

	var out []nbd.Extent
	end := min(off+length, int64(b1)<<d.shift)
	pos := off
	for k := 0; k+1 < len(points) && pos < end && len(out) < maxStatusExtents; k++ {
		p, q := points[k], points[k+1]
		if p < b0 || p >= b1 {
			continue
		}
		f := state(p)
		runEnd := min(int64(q)<<d.shift, end)
		if runEnd <= pos {
			continue
		}
		n := runEnd - pos
		if k := len(out); k > 0 && out[k-1].Flags == f {
			out[k-1].Length += n
		} else {
			out = append(out, nbd.Extent{Length: n, Flags: f})
		}
		pos = runEnd
	}
	return out, nil
}

// --- flush ---

// Flush implements nbd.Export: when it returns nil, every write completed
// before the call is stored in the chunk store and the head naming it is
// committed in the control plane. Concurrent flushes share the work.
func (d *Disk) Flush(ctx context.Context) error {
	if d.ro {
		return nil
	}
	d.mu.Lock()
	target := d.writeSeq
	for {
		if d.fenced != nil {
			err := d.fenced
			d.mu.Unlock()
			return err
		}
		if d.durableSeq >= target {
			d.mu.Unlock()
			return nil
		}
		r := d.run
		if r == nil {
			r = d.startFlushLocked()
		}
		d.mu.Unlock()
		select {
		case <-r.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.seq >= target && r.err != nil {
			return r.err
		}
		d.mu.Lock()
	}
}

// startFlushLocked freezes the dirty state and flushes it in the
// background. It returns the run (never nil).
func (d *Disk) startFlushLocked() *flushRun {
	r := &flushRun{seq: d.writeSeq, done: make(chan struct{})}
	if len(d.dirty) == 0 && len(d.zeros) == 0 {
		d.durableSeq = max(d.durableSeq, d.writeSeq)
		close(r.done)
		return r
	}
	d.run = r
	d.flushing, d.dirty = d.dirty, map[uint64]*dblock{}
	d.flushZeros, d.zeros = d.zeros, nil
	d.flushMem, d.dirtyMem = d.dirtyMem, 0
	d.baseGen++
	d.wg.Add(1)
	go d.runFlush(r, d.head, d.flushing, d.flushZeros)
	return r
}

func (d *Disk) runFlush(r *flushRun, head chunkstore.Ref, blocks map[uint64]*dblock, zs spans) {
	defer d.wg.Done()
	start := time.Now()
	ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
	newHead, stored, err := d.flushBlocks(ctx, head, blocks, zs)
	if err == nil && newHead != head {
		err = d.commitHead(ctx, head, newHead)
	}
	cancel()

	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.head = newHead
		d.durableSeq = max(d.durableSeq, r.seq)
		d.lastErr = nil
		for _, s := range stored {
			d.svc.blocks.Add(s.ref, s.data)
		}
		d.svc.m.dirtyBytes.Add(-float64(d.flushMem))
		d.svc.m.flushBlocks.Add(float64(len(blocks)))
		d.svc.m.flushSeconds.Observe(time.Since(start).Seconds())
	} else {
		// Put the frozen state back under newer writes.
		before := d.dirtyMem + d.flushMem
		for i, b := range blocks {
			if _, ok := d.dirty[i]; ok {
				continue
			}
			if len(d.zeros) > 0 && d.zeros.contains(i) {
				continue // zeroed after the freeze
			}
			d.dirty[i] = b
			d.dirtyMem += b.cost()
		}
		// Restored entries override the old spans (they were written
		// after them); so do entries written after the freeze.
		n := len(d.zeros)
		for _, s := range zs {
			d.zeros = d.zeros.add(s.from, s.to)
		}
		d.dirtyMem += int64(len(d.zeros)-n) * spanCost
		d.svc.m.dirtyBytes.Add(float64(d.dirtyMem - before))
		d.lastErr = err
		d.svc.m.flushErrors.Inc()
		d.log.Error("flush failed; dirty data kept in memory and retried", "blocks", len(blocks), "err", err)
	}
	d.flushing, d.flushZeros, d.flushMem = nil, nil, 0
	d.baseGen++
	d.run = nil
	r.err = err
	close(r.done)
	d.notifySpaceLocked()
}

type storedBlock struct {
	ref  chunkstore.Ref
	data []byte
}

// flushBlocks stores the blocks as chunks in parallel and applies them
// (after punching the zeroed spans) to the tree at head.
func (d *Disk) flushBlocks(ctx context.Context, head chunkstore.Ref, blocks map[uint64]*dblock, zs spans) (chunkstore.Ref, []storedBlock, error) {
	idxs := make([]uint64, 0, len(blocks))
	for i := range blocks {
		idxs = append(idxs, i)
	}
	slices.Sort(idxs)
	changes := make([]tree.Change, len(idxs))
	stored := make([]storedBlock, len(idxs))
	var bytesOut atomic.Int64
	var putEmpty sync.Once
	var emptyErr error
	err := par.Do(ctx, len(idxs), d.svc.cfg.Parallelism, func(ctx context.Context, k int) error {
		i := idxs[k]
		b := blocks[i]
		changes[k].Index = i
		var data []byte
		if b.data != nil {
			data = trimZeros(b.data)
		}
		if len(data) == 0 {
			if b.keep {
				putEmpty.Do(func() { _, emptyErr = d.store.Put(ctx, nil) })
				if emptyErr != nil {
					return fmt.Errorf("blockd: vdisk %s: store empty block: %w", d.label, emptyErr)
				}
				changes[k].Ref = emptyRef
			}
			return nil
		}
		ref, err := d.store.Put(ctx, data)
		if err != nil {
			return fmt.Errorf("blockd: vdisk %s: store block %d: %w", d.label, i, err)
		}
		changes[k].Ref = ref
		stored[k] = storedBlock{ref, data}
		bytesOut.Add(int64(len(data)))
		return nil
	})
	if err != nil {
		return chunkstore.Ref{}, nil, err
	}
	d.svc.m.storedBytes.Add(float64(bytesOut.Load()))
	root := head
	for _, s := range zs {
		if root, err = d.tree.Punch(ctx, root, s.from, s.to); err != nil {
			return chunkstore.Ref{}, nil, fmt.Errorf("blockd: vdisk %s: punch [%d, %d): %w", d.label, s.from, s.to, err)
		}
	}
	if root, err = d.tree.Update(ctx, root, changes); err != nil {
		return chunkstore.Ref{}, nil, fmt.Errorf("blockd: vdisk %s: update tree: %w", d.label, err)
	}
	out := stored[:0]
	for _, s := range stored {
		if !s.ref.IsZero() {
			out = append(out, s)
		}
	}
	return root, out, nil
}

// commitHead moves the head from old to new in the control plane, fenced by
// the lease epoch. Transient control-plane errors are retried until ctx
// ends; a refusal for a stale epoch fences the Disk.
func (d *Disk) commitHead(ctx context.Context, old, new chunkstore.Ref) error {
	args := fsm.VDiskHeadArgs{Name: d.name, Epoch: d.epoch, Old: old, New: new}
	delay := 20 * time.Millisecond
	for {
		_, err := d.svc.cfg.Control.Apply(ctx, fsm.OpVDiskHead, args)
		if err == nil {
			return nil
		}
		var fe *fsm.Error
		if errors.As(err, &fe) {
			switch {
			case errors.Is(err, fsm.ErrConflict):
				// An earlier attempt may have landed before its answer
				// was lost.
				var cur chunkstore.Ref
				rerr := d.svc.cfg.Control.Read(ctx, func(s *fsm.State) error {
					if v := s.VDisks[d.name]; v != nil {
						cur = v.Head
					}
					return nil
				})
				if rerr == nil && cur == new {
					return nil
				}
				return d.fence(fmt.Errorf("head moved under the lease holder: %w", err))
			case errors.Is(err, fsm.ErrStaleEpoch), errors.Is(err, fsm.ErrNotFound):
				return d.fence(err)
			}
			return fmt.Errorf("blockd: vdisk %s: commit head: %w", d.label, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("blockd: vdisk %s: commit head: %w (last error: %v)", d.label, ctx.Err(), err)
		}
		d.log.Warn("commit head failed; retrying", "err", err, "delay", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
		}
		delay = min(2*delay, time.Second)
	}
}

// fence marks the lease lost: writes and flushes fail from now on.
func (d *Disk) fence(cause error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.fenceLocked(cause)
}

func (d *Disk) fenceLocked(cause error) error {
	if d.fenced == nil {
		d.fenced = fmt.Errorf("%w: vdisk %s (epoch %d): %v; writes fail until it is reattached", ErrLeaseLost, d.label, d.epoch, cause)
		d.svc.m.leaseLost.Inc()
		d.log.Error("READ-WRITE LEASE LOST: the vdisk is read-only on this node; unflushed writes are lost",
			"epoch", d.epoch, "cause", cause, "dirty_blocks", len(d.dirty)+len(d.flushing))
		d.notifySpaceLocked()
	}
	return d.fenced
}

// --- background loops ---

func (d *Disk) writebackLoop() {
	defer d.wg.Done()
	if d.svc.cfg.WritebackInterval < 0 {
		return
	}
	t := time.NewTicker(d.svc.cfg.WritebackInterval)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.mu.Lock()
		if d.run == nil && d.fenced == nil && !d.closed && (len(d.dirty) > 0 || len(d.zeros) > 0) {
			d.startFlushLocked()
		}
		d.mu.Unlock()
	}
}

func (d *Disk) renewLoop() {
	defer d.wg.Done()
	cfg := d.svc.cfg
	t := time.NewTicker(cfg.LeaseRenew)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(d.ctx, cfg.LeaseRenew)
		raw, err := cfg.Control.Apply(ctx, fsm.OpLeaseRenew, fsm.LeaseArgs{Name: d.name, Node: cfg.Node, Epoch: d.epoch, TTL: int64(cfg.LeaseTTL)})
		cancel()
		if err == nil {
			var l fsm.Lease
			if json.Unmarshal(raw, &l) == nil && l.Expires > 0 {
				d.mu.Lock()
				d.leaseUntil = time.Unix(0, l.Expires)
				d.mu.Unlock()
			}
			d.svc.m.leaseRenewals.Inc()
			if warned {
				d.log.Info("lease renewed again")
				warned = false
			}
			continue
		}
		if d.ctx.Err() != nil {
			return
		}
		d.svc.m.leaseFailures.Inc()
		if errors.Is(err, fsm.ErrStaleEpoch) || errors.Is(err, fsm.ErrNotFound) {
			d.fence(err)
			return
		}
		d.mu.Lock()
		expired := time.Now().After(d.leaseUntil)
		d.mu.Unlock()
		if expired {
			d.log.Error("lease renewal failing and the lease has expired; another node may take the vdisk over, which fences this one", "err", err)
		} else {
			d.log.Warn("lease renewal failed; retrying", "err", err)
		}
		warned = true
	}
}

// close flushes (unless the vdisk is tmp and is being deleted), gives the
// lease back and stops the background work. It is called once, by the
// Service, when the last user detaches.
func (d *Disk) close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	var err error
	if !d.ro {
		cfg := d.svc.cfg
		if d.typ == fsm.VDiskTmp {
			_, err = cfg.Control.Apply(ctx, fsm.OpVDiskDelete, fsm.VDiskDeleteArgs{Name: d.name, Epoch: d.epoch})
			if err != nil {
				d.log.Error("could not delete tmp vdisk on detach", "err", err)
			} else {
				d.log.Info("tmp vdisk deleted on detach")
			}
		} else {
			if err = d.Flush(ctx); err != nil {
				d.log.Error("final flush failed; unflushed writes are lost", "err", err)
			}
			d.mu.Lock()
			fenced := d.fenced != nil
			d.mu.Unlock()
			if !fenced {
				if _, rerr := cfg.Control.Apply(ctx, fsm.OpLeaseRelease, fsm.LeaseArgs{Name: d.name, Node: cfg.Node, Epoch: d.epoch}); rerr != nil && !errors.Is(rerr, fsm.ErrStaleEpoch) && !errors.Is(rerr, fsm.ErrNotFound) {
					d.log.Warn("lease release failed; it lapses after its TTL", "err", rerr)
				}
			}
		}
	}
	d.mu.Lock()
	d.closed = true
	d.notifySpaceLocked()
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.mu.Lock()
	d.svc.m.dirtyBytes.Add(-float64(d.dirtyMem + d.flushMem))
	d.dirtyMem, d.flushMem = 0, 0
	d.dirty, d.flushing = map[uint64]*dblock{}, nil
	d.mu.Unlock()
	return err
}
