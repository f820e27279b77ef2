package blockd

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zosproject/zos/blockd/internal/par"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/raft/fsm"
)

// emptyRef names the empty chunk. A leaf slot holding it is an allocated
// block of zeroes (WRITE_ZEROES with NO_HOLE); reads never fetch it.
var emptyRef = chunkstore.Sum(nil)

// zeroes is a shared block of zeroes, never written.
var zeroes = make([]byte, MaxBlockSize)

const (
	// sector is the granularity of partial-block tracking: a write
	// aligned to it never reads the rest of its block.
	sector = 512
	// entryCost is the accounting cost of a cache entry besides its data.
	entryCost = 96
	// smallZero: zeroing at most this many whole blocks records one entry
	// per block; larger ranges are recorded as a span and punched out of
	// the tree at commit.
	smallZero = 64
	// keepChunk bounds the blocks one step of a NO_HOLE zeroing records
	// before it waits for the write-back cache.
	keepChunk = 4096
	// maxPendingRefs and maxSpans trigger a commit of the stored blocks
	// even without FLUSH, bounding the memory of the pending layer.
	maxPendingRefs = 1 << 16
	maxSpans       = 4096
	// maxStatusBlocks bounds the blocks one BlockStatus call inspects.
	maxStatusBlocks = 1 << 18
	// maxStatusExtents bounds the extents of one BlockStatus answer.
	maxStatusExtents = 4096
	// maxCacheHint bounds the bytes one CACHE request prefetches.
	maxCacheHint = 64 << 20
)

// dblock is a block in the write-back cache. data == nil means zeroes (then
// the block is complete). A partial block (mask != nil) holds only the
// sectors whose bit is set; the rest is its content below (read at
// write-back, or by a read, never by the write).
type dblock struct {
	data []byte
	mask []uint64
	keep bool   // all-zero content stays allocated (NO_HOLE)
	born uint64 // write sequence number that created it
	busy bool   // a write-back job is reading its base
	// owned: (in flight only) a commit names and stores the block itself.
	owned bool
	// superseded: (in flight only) a newer zeroing covers the block; the
	// job's result is dropped.
	superseded bool
	// In flight: ref is the block's chunk Ref once hashed (a commit can
	// build the tree while the store is still writing the chunk); done
	// and failed tell how the store write ended.
	ref          chunkstore.Ref
	hashed, done bool
	err          error
}

func (b *dblock) complete() bool { return b.mask == nil }

func (b *dblock) cost() int64 { return entryCost + int64(cap(b.data)) }

func (b *dblock) has(s int) bool { return b.mask[s/64]&(1<<(s%64)) != 0 }

// layer is stored state not yet in the tree: zeroed spans and the Refs of
// written-back blocks (the zero Ref: absent). Within a layer, spans are
// newer than the refs they cover (storing a block takes it out of the
// spans).
type layer struct {
	zeros spans
	refs  map[uint64]chunkstore.Ref
}

func newLayer() *layer { return &layer{refs: map[uint64]chunkstore.Ref{}} }

func (l *layer) empty() bool { return len(l.zeros) == 0 && len(l.refs) == 0 }

// commitRun is one commit in progress: it makes durable every mutation with
// a sequence number up to seq.
type commitRun struct {
	seq   uint64
	count uint64 // jcount at its start: the completed mutations it covers
	done  chan struct{}
	err   error
}

type fifoEntry struct {
	idx uint64
	b   *dblock
}

// Disk is one vdisk opened on this node: the engine behind an NBD export.
// It is safe for concurrent use by many connections. A read-write Disk
// holds the vdisk's lease; a read-only Disk serves a fixed head (a snapshot
// or the head at open time).
//
// Layers, newest first: dirty blocks (complete or partial, in memory),
// blocks being written back, the current layer (zeroed spans and stored
// block Refs), frozen layers being committed, and the committed tree.
// Write-back runs continuously in the background once enough is dirty; a
// commit (FLUSH, FUA, or a timer) writes back what is dirty, freezes the
// current layer, applies the frozen layers to the tree and moves the head,
// fenced by the lease epoch.
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
	batch *chunkstore.Batcher // write-back puts, grouped (commits batch themselves)
	tree  *tree.Tree
	log   *slog.Logger

	size atomic.Int64

	ctx    context.Context // cancelled when the disk is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // bounds concurrent store operations of write-back
	// prefetchSem bounds the reads of partial blocks' content started
	// ahead of their write-back.
	prefetchSem chan struct{}
	bufs        chan []byte // free block buffers

	mu            sync.Mutex
	head          chunkstore.Ref // committed head
	dirty         map[uint64]*dblock
	fifo          []fifoEntry // dirty blocks in creation order (stale entries skipped)
	inflight      map[uint64]*dblock
	cur           *layer
	frozen        []*layer // oldest first
	dirtyBytes    int64
	inflightBytes int64
	jobs          int
	writeSeq      uint64
	durableSeq    uint64
	gen           uint64 // bumped when the layers below dirty change
	commit        *commitRun
	pause         bool  // a commit drains write-back: start no background job
	wbErr         error // last write-back error
	fenced        error
	closed        bool
	space         chan struct{} // closed (and replaced) on progress: memory freed, job done
	leaseUntil    time.Time
	moreCommit    bool // a commit is wanted once the running one ends

	// Write journal (journal.go); jlog nil: none, FLUSH commits.
	jlog      journal.Log
	jname     string // journalName
	jbuf      []byte // ops captured since the last append: the next record's payload
	jspare    []byte // a free payload buffer
	jcount    uint64 // mutations completed (captured or dropped): a FLUSH covers those counted before it
	jcut      uint64 // jcount at the last capture into jbuf
	jdone     uint64 // mutations up to this count are durable (appended or committed)
	jdrop     uint64 // mutations up to this count may be missing from the journal (dropped or a failed append)
	jcommit   uint64 // mutations up to this count are in the committed head
	jrun      *commitRun
	jappended []jmark // appended records not trimmed yet
	jlast     uint64  // Seq of the last record appended
	jtrimming bool
	jtrimAt   time.Time
	jtimer    *time.Timer // the commit after appends (commitSoonLocked)
	jpause    time.Time   // no appends before (one failed)
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
		batch:       chunkstore.NewBatcher(p.store, chunkstore.BatcherConfig{Timeout: svc.cfg.FlushTimeout}),
		log:         svc.log.With("vdisk", p.label),
		sem:         make(chan struct{}, svc.cfg.Parallelism),
		prefetchSem: make(chan struct{}, svc.cfg.Parallelism),
		bufs:        make(chan []byte, 64),
		head:        p.head, dirty: map[uint64]*dblock{}, inflight: map[uint64]*dblock{}, cur: newLayer(),
		space: make(chan struct{}), leaseUntil: p.leaseUntil,
	}
	d.size.Store(p.size)
	if !d.ro {
		d.wg.Add(2)
		go d.renewLoop()
		go d.timerLoop()
	}
	return d
}

var _ nbd.Export = (*Disk)(nil)
var _ nbd.Cacher = (*Disk)(nil)

// Name returns the vdisk's name.
func (d *Disk) Name() string { return d.name }

// Label returns the export name the Disk was opened as.
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
	InflightBlocks int   `json:"inflight_blocks"`
	PendingBlocks  int   `json:"pending_blocks"` // stored, not yet committed
	CacheBytes     int64 `json:"cache_bytes"`    // dirty and in-flight data
	Fenced         bool  `json:"fenced"`
}

// Stats reports the write-back cache state.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	pending := len(d.cur.refs)
	for _, l := range d.frozen {
		pending += len(l.refs)
	}
	return Stats{DirtyBlocks: len(d.dirty), InflightBlocks: len(d.inflight), PendingBlocks: pending,
		CacheBytes: d.dirtyBytes + d.inflightBytes, Fenced: d.fenced != nil}
}

func (d *Disk) setSize(n int64) { d.size.Store(n) }

// pendingRefs lists the block chunks stored (or being stored) but not yet
// under the committed head.
func (d *Disk) pendingRefs() []chunkstore.Ref {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []chunkstore.Ref
	for _, l := range append([]*layer{d.cur}, d.frozen...) {
		for _, r := range l.refs {
			if !r.IsZero() {
				out = append(out, r)
			}
		}
	}
	for _, b := range d.inflight {
		if b.hashed && !b.ref.IsZero() {
			out = append(out, b.ref)
		}
	}
	return out
}

// --- helpers ---

func (d *Disk) getBuf() []byte {
	select {
	case b := <-d.bufs:
		return b
	default:
		return make([]byte, d.bs)
	}
}

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

// copyBlock copies block content (possibly trimmed, nil for zeroes) from
// inOff into dst.
func copyBlock(dst, data []byte, inOff int) {
	n := 0
	if inOff < len(data) {
		n = copy(dst, data[inOff:])
	}
	clear(dst[n:])
}

func (d *Disk) blockData(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	if ref.IsZero() || ref == emptyRef {
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

// source is where the content of a block below the dirty layer is.
type source struct {
	kind int // srcZero, srcMem, srcRef, srcTree
	data []byte
	ref  chunkstore.Ref
	head chunkstore.Ref
}

const (
	srcZero = iota
	srcMem
	srcRef
	srcTree
)

// belowDirtyLocked resolves block idx in the layers under the dirty one.
func (d *Disk) belowDirtyLocked(idx uint64) source {
	if b := d.inflight[idx]; b != nil && !b.superseded {
		if b.data == nil {
			return source{kind: srcZero}
		}
		return source{kind: srcMem, data: b.data}
	}
	ls := d.frozen
	for k := len(ls); k >= 0; k-- {
		l := d.cur
		if k < len(ls) {
			l = ls[k]
		}
		if len(l.zeros) > 0 && l.zeros.contains(idx) {
			return source{kind: srcZero}
		}
		if r, ok := l.refs[idx]; ok {
			if r.IsZero() || r == emptyRef {
				return source{kind: srcZero}
			}
			return source{kind: srcRef, ref: r}
		}
	}
	return source{kind: srcTree, head: d.head}
}

// content returns the (possibly trimmed; nil for zeroes) content of src.
func (d *Disk) content(ctx context.Context, idx uint64, src source) ([]byte, error) {
	switch src.kind {
	case srcMem:
		return src.data, nil
	case srcRef:
		return d.blockData(ctx, src.ref)
	case srcTree:
		ref, err := d.tree.Lookup(ctx, src.head, idx)
		if err != nil {
			return nil, fmt.Errorf("blockd: vdisk %s: block %d: %w", d.label, idx, err)
		}
		return d.blockData(ctx, ref)
	}
	return nil, nil
}

// cachedLocked returns src's content (possibly trimmed; nil for zeroes)
// if it is in memory: the write-back cache, or the block cache with the
// tree path in the node cache. It never reads the store, so it may be
// called with d.mu held. The content is immutable.
func (d *Disk) cachedLocked(idx uint64, src source) ([]byte, bool) {
	ref := src.ref
	switch src.kind {
	case srcZero:
		return nil, true
	case srcMem:
		return src.data, true
	case srcTree:
		r, ok := d.tree.LookupCached(src.head, idx)
		if !ok {
			return nil, false
		}
		ref = r
	}
	if ref.IsZero() || ref == emptyRef {
		return nil, true
	}
	b, ok := d.svc.blocks.Peek(ref)
	if !ok || int64(len(b)) > d.bs { // blockData reports an oversized block
		return nil, false
	}
	return b, true
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
		src   source
		mask  []uint64 // sectors already filled from a partial dirty block
	}
	var misses []miss
	for pos := int64(0); pos < int64(len(p)); {
		abs := off + pos
		idx := uint64(abs >> d.shift)
		inOff := int(abs & (d.bs - 1))
		l := min(d.bs-int64(inOff), int64(len(p))-pos)
		dst := p[pos : pos+l]
		pos += l
		d.mu.Lock()
		b := d.dirty[idx]
		if b != nil && b.complete() {
			copyBlock(dst, b.data, inOff)
			d.mu.Unlock()
			continue
		}
		src := d.belowDirtyLocked(idx)
		if b == nil {
			if data, ok := d.cachedLocked(idx, src); ok {
				d.mu.Unlock()
				copyBlock(dst, data, inOff) // immutable
				continue
			}
		}
		m := miss{idx: idx, inOff: inOff, dst: dst, src: src}
		if b != nil { // partial: take its sectors now
			copy(dst, b.data[inOff:])
			m.mask = slices.Clone(b.mask)
		}
		d.mu.Unlock()
		misses = append(misses, m)
	}
	if len(misses) == 0 {
		d.svc.m.readBytes.Add(float64(len(p)))
		return nil
	}
	err := par.Do(ctx, len(misses), d.svc.cfg.Parallelism, func(ctx context.Context, i int) error {
		m := misses[i]
		data, err := d.content(ctx, m.idx, m.src)
		if err != nil {
			return err
		}
		if m.mask == nil {
			copyBlock(m.dst, data, m.inOff)
			return nil
		}
		// Fill the sectors the partial block lacks.
		for pos := 0; pos < len(m.dst); {
			abs := m.inOff + pos
			s := abs / sector
			end := min((s+1)*sector-m.inOff, len(m.dst))
			if m.mask[s/64]&(1<<(s%64)) == 0 {
				copyBlock(m.dst[pos:end], data, abs)
			}
			pos = end
		}
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
	var srcs []source
	d.mu.Lock()
	for i := uint64(off >> d.shift); int64(i)<<d.shift < off+length; i++ {
		if b := d.dirty[i]; b != nil && b.complete() {
			continue
		}
		if src := d.belowDirtyLocked(i); src.kind == srcRef || src.kind == srcTree {
			idxs = append(idxs, i)
			srcs = append(srcs, src)
		}
	}
	d.mu.Unlock()
	return par.Do(ctx, len(idxs), d.svc.cfg.Parallelism, func(ctx context.Context, i int) error {
		_, err := d.content(ctx, idxs[i], srcs[i])
		return err
	})
}

// --- writes ---

func (d *Disk) writableLocked() error {
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

// notifyLocked wakes everyone waiting for progress.
func (d *Disk) notifyLocked() {
	close(d.space)
	d.space = make(chan struct{})
}

// reserve waits until the write-back cache of the vdisk and the node's
// have room. It fails if the vdisk's stays full because write-back keeps
// failing.
func (d *Disk) reserve(ctx context.Context) error {
	stalled := false
	for {
		d.mu.Lock()
		if err := d.writableLocked(); err != nil {
			d.mu.Unlock()
			return err
		}
		own := d.dirtyBytes+d.inflightBytes >= d.svc.cfg.MaxDirtyBytes
		node := d.svc.nodeDirtyFull()
		if !own && !node {
			d.mu.Unlock()
			return nil
		}
		if stalled && d.jobs == 0 && d.commit == nil && d.wbErr != nil && own {
			err := d.wbErr
			d.mu.Unlock()
			return fmt.Errorf("blockd: vdisk %s: write-back cache full and writing back fails: %w", d.label, err)
		}
		if !stalled {
			d.svc.m.writeStalls.Inc()
			stalled = true
		}
		d.pumpLocked(true)
		ch := d.space
		d.mu.Unlock()
		var nodeCh <-chan struct{}
		done := func() {}
		if node {
			nodeCh, done = d.svc.dirty.wait()
			d.svc.kickWriteback()
			if !d.svc.nodeDirtyFull() { // released before we waited
				done()
				continue
			}
		}
		select {
		case <-ch:
		case <-nodeCh:
		case <-ctx.Done():
			done()
			return ctx.Err()
		}
		done()
	}
}

func (d *Disk) addDirtyLocked(delta int64) {
	d.dirtyBytes += delta
	d.svc.accountDirty(delta)
}

// setLocked replaces the dirty entry of idx with b.
func (d *Disk) setLocked(idx uint64, b *dblock) {
	d.writeSeq++
	b.born = d.writeSeq
	if old, ok := d.dirty[idx]; ok {
		// b carries the durability duty of the writes it replaces.
		b.born = old.born
		d.addDirtyLocked(-old.cost())
		if old.data != nil && !old.busy {
			d.putBuf(old.data)
		}
	}
	d.dirty[idx] = b
	d.fifo = append(d.fifo, fifoEntry{idx, b})
	d.addDirtyLocked(b.cost())
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
	d.captureLocked(jWrite, 0, off, int64(len(p)), p)
	d.pumpLocked(false)
	d.mu.Unlock()
	if fua {
		return d.Flush(ctx)
	}
	return nil
}

// setSectors marks the sectors of [inOff, inOff+n) present in b.
func (d *Disk) setSectors(b *dblock, inOff, n int) {
	for s := inOff / sector; s < (inOff+n)/sector; s++ {
		b.mask[s/64] |= 1 << (s % 64)
	}
	for _, w := range b.mask[:len(b.mask)-1] {
		if w != ^uint64(0) {
			return
		}
	}
	nsec := int(d.bs / sector)
	last := b.mask[len(b.mask)-1]
	if rem := nsec % 64; rem == 0 && last == ^uint64(0) || rem != 0 && last == 1<<rem-1 {
		b.mask = nil
	}
}

// writeBlock writes src at inOff of block idx. keep marks zeroes written
// with NO_HOLE. Sector-aligned writes never read the block's old content;
// an unaligned one does, and with noFetch fails with nbd.ErrNotFast when
// that would need a store read.
func (d *Disk) writeBlock(ctx context.Context, idx uint64, inOff int, src []byte, keep, noFetch bool) error {
	zero := isZero(src)
	full := inOff == 0 && int64(len(src)) == d.bs
	aligned := inOff%sector == 0 && len(src)%sector == 0
	if full && !zero {
		buf := d.getBuf()
		copy(buf, src)
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.writableLocked(); err != nil {
			d.putBuf(buf)
			return err
		}
		d.setLocked(idx, &dblock{data: buf})
		return nil
	}
	if full { // zeroes
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.writableLocked(); err != nil {
			return err
		}
		d.setLocked(idx, &dblock{keep: keep})
		return nil
	}
	if aligned {
		d.mu.Lock()
		defer d.mu.Unlock()
		if err := d.writableLocked(); err != nil {
			return err
		}
		if b := d.dirty[idx]; b != nil {
			if b.data == nil { // a zero block
				if zero {
					b.keep = b.keep || keep
					d.writeSeq++
					return nil
				}
				buf := d.getBuf()
				clear(buf)
				copy(buf[inOff:], src)
				d.setLocked(idx, &dblock{data: buf, keep: b.keep})
				return nil
			}
			copy(b.data[inOff:], src)
			b.keep = b.keep || keep
			if b.mask != nil {
				d.setSectors(b, inOff, len(src))
			}
			d.writeSeq++
			return nil
		}
		below := d.belowDirtyLocked(idx)
		if below.kind == srcZero && zero && !keep {
			d.writeSeq++ // zeroes over zeroes
			return nil
		}
		buf := d.getBuf()
		nb := &dblock{data: buf, keep: keep}
		if base, ok := d.cachedLocked(idx, below); ok {
			copyBlock(buf, base, 0) // complete at once: no read at write-back
		} else {
			nb.mask = make([]uint64, (d.bs/sector+63)/64)
		}
		copy(buf[inOff:], src)
		if nb.mask != nil {
			d.setSectors(nb, inOff, len(src))
			if nb.mask != nil {
				d.prefetchLocked(idx, below)
			}
		}
		d.setLocked(idx, nb)
		return nil
	}
	// Unaligned: read-modify-write now.
	for {
		d.mu.Lock()
		if err := d.writableLocked(); err != nil {
			d.mu.Unlock()
			return err
		}
		if b := d.dirty[idx]; b != nil && b.complete() {
			if b.data == nil {
				buf := d.getBuf()
				clear(buf)
				copy(buf[inOff:], src)
				d.setLocked(idx, &dblock{data: buf, keep: b.keep || keep})
			} else {
				copy(b.data[inOff:], src)
				b.keep = b.keep || keep
				d.writeSeq++
			}
			d.mu.Unlock()
			return nil
		}
		below, gen := d.belowDirtyLocked(idx), d.gen
		var part *dblock
		if b := d.dirty[idx]; b != nil {
			part = b
		}
		base, cached := d.cachedLocked(idx, below)
		if !cached {
			if noFetch {
				d.mu.Unlock()
				return fmt.Errorf("%w: block %d of %s is not cached", nbd.ErrNotFast, idx, d.label)
			}
			d.mu.Unlock()
			var err error
			if base, err = d.content(ctx, idx, below); err != nil {
				return err
			}
			d.mu.Lock()
			if d.gen != gen || d.dirty[idx] != part {
				d.mu.Unlock()
				continue // the block changed meanwhile
			}
			if err := d.writableLocked(); err != nil {
				d.mu.Unlock()
				return err
			}
		}
		if part != nil { // fill the partial block's missing sectors
			d.fillLocked(part, base)
			copy(part.data[inOff:], src)
			part.keep = part.keep || keep
			d.writeSeq++
		} else {
			buf := d.getBuf()
			copyBlock(buf, base, 0)
			copy(buf[inOff:], src)
			d.setLocked(idx, &dblock{data: buf, keep: keep})
		}
		d.mu.Unlock()
		return nil
	}
}

// prefetchLocked starts reading the content under a new partial block into
// the block cache, so that its write-back (often on a FLUSH's critical
// path) finds it there. It gives up when too many prefetches run.
func (d *Disk) prefetchLocked(idx uint64, src source) {
	if src.kind != srcRef && src.kind != srcTree || d.closed {
		return
	}
	select {
	case d.prefetchSem <- struct{}{}:
	default:
		return
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer func() { <-d.prefetchSem }()
		ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
		defer cancel()
		d.content(ctx, idx, src) // errors surface at write-back
	}()
}

// fillLocked completes a partial block with base under its sectors.
func (d *Disk) fillLocked(b *dblock, base []byte) {
	nsec := int(d.bs / sector)
	for s := 0; s < nsec; s++ {
		if !b.has(s) {
			copyBlock(b.data[s*sector:(s+1)*sector], base, s*sector)
		}
	}
	b.mask = nil
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
			if err := d.writableLocked(); err != nil {
				d.mu.Unlock()
				return err
			}
			for ; i < end; i++ {
				d.setLocked(i, &dblock{keep: keep})
			}
			d.pumpLocked(false)
			d.mu.Unlock()
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.writableLocked(); err != nil {
		return err
	}
	inRange := func(i uint64) bool { return i >= from && i < to }
	for i, b := range d.dirty {
		if inRange(i) {
			d.addDirtyLocked(-b.cost())
			if b.data != nil && !b.busy {
				d.putBuf(b.data)
			}
			delete(d.dirty, i)
		}
	}
	for i, b := range d.inflight {
		if inRange(i) {
			b.superseded = true
		}
	}
	for i := range d.cur.refs {
		if inRange(i) {
			delete(d.cur.refs, i) // older than the span
		}
	}
	d.cur.zeros = d.cur.zeros.add(from, to)
	d.writeSeq++
	d.gen++
	return nil
}

// Trim implements nbd.Export: whole blocks in the range become absent;
// the partial blocks at its edges are left as they are (TRIM is advisory).
func (d *Disk) Trim(ctx context.Context, off, length int64, fua bool) error {
	if d.ro {
		return fmt.Errorf("%w: %s is read-only", nbd.ErrReadOnly, d.label)
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
	d.capture(jTrim, 0, off, length, nil)
	if fua {
		return d.Flush(ctx)
	}
	return nil
}

// WriteZeroes implements nbd.Export. Whole blocks become absent (or, with
// NoHole, allocated zero blocks) and sector-aligned edges are recorded in
// memory, all without data writes; only an unaligned edge needs its
// block's old content, so a ZeroFast request fails with nbd.ErrNotFast
// only when such a block is not cached.
func (d *Disk) WriteZeroes(ctx context.Context, off, length int64, flags nbd.ZeroFlags) error {
	if d.ro {
		return fmt.Errorf("%w: %s is read-only", nbd.ErrReadOnly, d.label)
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
	if from >= to {
		from, to = 0, 0
	}
	if err := d.reserve(ctx); err != nil {
		return err
	}
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
	d.capture(jZero, byte(flags&nbd.ZeroNoHole), off, length, nil)
	if flags&nbd.ZeroFUA != 0 {
		return d.Flush(ctx)
	}
	return nil
}

// --- write-back ---

// pumpLocked starts background write-back of the oldest dirty blocks while
// more than WritebackBytes are dirty (or, with force, while the cache is
// full), unless a commit is draining.
func (d *Disk) pumpLocked(force bool) {
	if d.pause || d.fenced != nil || d.closed {
		return
	}
	limit := d.svc.cfg.WritebackBytes
	if d.svc.nodeDirtyHigh() {
		force = true
	}
	for d.jobs < d.svc.cfg.Parallelism && (d.dirtyBytes > limit || force && d.dirtyBytes > 0) {
		if !d.startOldestLocked() {
			break
		}
	}
	if len(d.fifo) > 2*len(d.dirty)+1024 { // drop stale entries
		out := d.fifo[:0]
		for _, e := range d.fifo {
			if d.dirty[e.idx] == e.b {
				out = append(out, e)
			}
		}
		clear(d.fifo[len(out):])
		d.fifo = out
	}
}

// startOldestLocked starts the write-back of the oldest dirty block that
// can start; false if there is none.
func (d *Disk) startOldestLocked() bool {
	var later []fifoEntry
	defer func() { d.fifo = append(d.fifo, later...) }()
	for len(d.fifo) > 0 {
		e := d.fifo[0]
		d.fifo[0] = fifoEntry{}
		d.fifo = d.fifo[1:]
		if d.dirty[e.idx] != e.b || e.b.busy {
			continue
		}
		if d.inflight[e.idx] != nil {
			later = append(later, e) // one write-back per block at a time
			continue
		}
		d.startLocked(e.idx, e.b)
		return true
	}
	return false
}

// startLocked starts writing back dirty block b of idx.
func (d *Disk) startLocked(idx uint64, b *dblock) {
	b.busy = true
	// A block put back after a failed write-back starts afresh.
	b.ref, b.hashed, b.done, b.err, b.superseded, b.owned = chunkstore.Ref{}, false, false, nil, false, false
	d.jobs++
	var src source
	needBase := !b.complete()
	if needBase {
		src = d.belowDirtyLocked(idx)
	}
	d.wg.Add(1)
	go d.writeback(idx, b, needBase, src)
}

// writeback completes b from its base if it is partial, moves it in flight,
// stores it and records its Ref in the current layer.
func (d *Disk) writeback(idx uint64, b *dblock, needBase bool, src source) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
	defer cancel()
	var err error
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		defer func() { <-d.sem }()
	}
	var base []byte
	if err == nil && needBase {
		base, err = d.content(ctx, idx, src)
	}

	d.mu.Lock()
	if d.dirty[idx] != b { // replaced or zeroed meanwhile: nothing to do
		b.busy = false
		if b.data != nil {
			d.putBuf(b.data)
		}
		d.jobs--
		d.notifyLocked()
		d.pumpLocked(false)
		d.mu.Unlock()
		return
	}
	if err != nil {
		b.busy = false
		d.jobs--
		d.fifo = append(d.fifo, fifoEntry{idx, b})
		d.failLocked(fmt.Errorf("blockd: vdisk %s: read block %d to complete it: %w", d.label, idx, err))
		d.mu.Unlock()
		return
	}
	if !b.complete() {
		d.fillLocked(b, base)
	}
	b.busy = false
	d.moveInflightLocked(idx, b)
	d.mu.Unlock()

	// b is complete and no longer written to: name it, then store it.
	ref, data := nameBlock(b)
	d.mu.Lock()
	b.ref, b.hashed = ref, true
	d.notifyLocked()
	d.mu.Unlock()
	err = d.putBlock(ctx, idx, ref, data)
	d.mu.Lock()
	d.storedLocked(idx, b, data, err)
	d.mu.Unlock()
}

// moveInflightLocked moves complete dirty block b of idx in flight: it is
// no longer written to (a newer write makes a new dirty block over it).
func (d *Disk) moveInflightLocked(idx uint64, b *dblock) {
	delete(d.dirty, idx)
	d.dirtyBytes -= b.cost()
	d.inflight[idx] = b
	d.inflightBytes += b.cost()
	d.gen++
}

// nameBlock returns the Ref of a complete block and the bytes to store
// (without trailing zeroes): the zero Ref for zeroes, emptyRef for zeroes
// that stay allocated.
func nameBlock(b *dblock) (chunkstore.Ref, []byte) {
	var data []byte
	if b.data != nil {
		data = trimZeros(b.data)
	}
	switch {
	case len(data) > 0:
		return chunkstore.Sum(data), data
	case b.keep:
		return emptyRef, nil
	}
	return chunkstore.Ref{}, nil
}

// putBlock stores a named block's bytes (nothing for zero blocks).
func (d *Disk) putBlock(ctx context.Context, idx uint64, ref chunkstore.Ref, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	got, err := d.batch.Put(ctx, data)
	switch {
	case err != nil:
		return fmt.Errorf("blockd: vdisk %s: store block %d: %w", d.label, idx, err)
	case got != ref:
		return fmt.Errorf("%w: store named block %d %s, its content hashes to %s", chunkstore.ErrCorrupt, idx, got.Short(), ref.Short())
	}
	d.svc.m.storedBytes.Add(float64(len(data)))
	return nil
}

// storedLocked ends the write-back of in-flight block b: its Ref enters
// the current layer and its content the block cache, or, if the store
// failed, it goes back to the dirty layer.
func (d *Disk) storedLocked(idx uint64, b *dblock, data []byte, err error) {
	b.done, b.err = true, err
	delete(d.inflight, idx)
	d.inflightBytes -= b.cost()
	d.svc.accountDirty(-b.cost())
	d.jobs--
	d.gen++
	switch {
	case err != nil:
		d.restoreLocked(idx, b)
		d.failLocked(err)
		return
	case b.superseded:
	default:
		d.cur.zeros = d.cur.zeros.remove(idx)
		d.cur.refs[idx] = b.ref
		if len(data) > 0 {
			d.svc.blocks.Add(b.ref, data)
		}
		d.svc.m.flushBlocks.Inc()
	}
	d.notifyLocked()
	d.pumpLocked(false)
	if d.commit == nil && (len(d.cur.refs) >= maxPendingRefs || len(d.cur.zeros) >= maxSpans) {
		d.startCommitLocked()
	}
}

// restoreLocked puts back a block whose store failed, under newer writes.
func (d *Disk) restoreLocked(idx uint64, b *dblock) {
	if b.superseded {
		return
	}
	if cur := d.dirty[idx]; cur != nil {
		if cur.complete() || cur.busy {
			return
		}
		// A partial block written after b: b is its base.
		d.addDirtyLocked(-cur.cost())
		d.fillLocked(cur, b.data)
		d.addDirtyLocked(cur.cost())
		return
	}
	d.dirty[idx] = b
	d.fifo = append(d.fifo, fifoEntry{idx, b})
	d.addDirtyLocked(b.cost())
}

// failLocked records a write-back failure and wakes the waiters.
func (d *Disk) failLocked(err error) {
	d.wbErr = err
	d.svc.m.flushErrors.Inc()
	d.log.Error("write-back failed; the data stays in memory and is retried", "err", err)
	d.notifyLocked()
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
	const hole = nbd.ExtentHole | nbd.ExtentZero
	flagsOf := func(b *dblock) nbd.ExtentFlags {
		switch {
		case b.data != nil:
			return 0
		case b.keep:
			return nbd.ExtentZero
		}
		return hole
	}
	refFlags := func(r chunkstore.Ref) nbd.ExtentFlags {
		switch {
		case r.IsZero():
			return hole
		case r == emptyRef:
			return nbd.ExtentZero
		}
		return 0
	}
	// Snapshot the in-memory layers of the range.
	var points []uint64
	dirty := map[uint64]nbd.ExtentFlags{}
	inflight := map[uint64]nbd.ExtentFlags{}
	type lview struct {
		zeros spans
		refs  map[uint64]chunkstore.Ref
	}
	var layers []lview // newest first
	d.mu.Lock()
	head := d.head
	for i, b := range d.dirty {
		if i >= b0 && i < b1 {
			dirty[i] = flagsOf(b)
			points = append(points, i, i+1)
		}
	}
	for i, b := range d.inflight {
		if i >= b0 && i < b1 && !b.superseded {
			inflight[i] = flagsOf(b)
			points = append(points, i, i+1)
		}
	}
	ls := append([]*layer{d.cur}, reversed(d.frozen)...)
	for _, l := range ls {
		v := lview{zeros: spans(l.zeros.overlapping(b0, b1)), refs: map[uint64]chunkstore.Ref{}}
		for i, r := range l.refs {
			if i >= b0 && i < b1 {
				v.refs[i] = r
				points = append(points, i, i+1)
			}
		}
		for _, s := range v.zeros {
			points = append(points, s.from, s.to)
		}
		layers = append(layers, v)
	}
	d.mu.Unlock()

	tr := map[uint64]chunkstore.Ref{}
	errStop := errors.New("stop")
	err := d.tree.Walk(ctx, head, b0, b1, func(i uint64, ref chunkstore.Ref) error {
		if len(tr) >= 2*maxStatusExtents {
			b1 = i // describe up to here
			return errStop
		}
		tr[i] = ref
		points = append(points, i, i+1)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("blockd: vdisk %s: block status: %w", d.label, err)
	}
	state := func(i uint64) nbd.ExtentFlags {
		if f, ok := dirty[i]; ok {
			return f
		}
		if f, ok := inflight[i]; ok {
			return f
		}
		for _, l := range layers {
			if l.zeros.contains(i) {
				return hole
			}
			if r, ok := l.refs[i]; ok {
				return refFlags(r)
			}
		}
		if r, ok := tr[i]; ok {
			return refFlags(r)
		}
		return hole
	}
	points = append(points, b0, b1)
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

func reversed(ls []*layer) []*layer {
	out := slices.Clone(ls)
	slices.Reverse(out)
	return out
}

// --- flush and commit ---

// Flush implements nbd.Export: when it returns nil, every write completed
// before the call survives the loss of this process and of up to m storage
// nodes: it is in the vdisk's journal on m+1 nodes (the commit follows in
// the background), or, without a usable journal, committed as by Sync.
func (d *Disk) Flush(ctx context.Context) error {
	if d.ro {
		return nil
	}
	if ok, err := d.flushJournal(ctx); ok {
		return err
	}
	return d.Sync(ctx)
}

// Sync commits: when it returns nil, every write completed before the call
// is stored in the chunk store and the head naming it is committed in the
// control plane. Concurrent syncs share the work.
func (d *Disk) Sync(ctx context.Context) error {
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
		c := d.commit
		if c == nil {
			c = d.startCommitLocked()
		}
		d.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if c.seq >= target && c.err != nil {
			return c.err
		}
		d.mu.Lock()
	}
}

// startCommitLocked starts a commit of everything written so far.
func (d *Disk) startCommitLocked() *commitRun {
	c := &commitRun{seq: d.writeSeq, count: d.jcount, done: make(chan struct{})}
	d.commit = c
	d.wg.Add(1)
	go d.runCommit(c)
	return c
}

func (d *Disk) runCommit(c *commitRun) {
	defer d.wg.Done()
	start := time.Now()
	err := d.doCommit(c)
	var bse *blockStoreError
	for try := 0; try < 3 && errors.As(err, &bse); try++ {
		// A write-back job that started before this commit failed; its
		// block is back in the cache: try again (the jobs the commit
		// waited for have ended, so a retry meets only its own puts).
		err = d.doCommit(c)
	}
	d.mu.Lock()
	if err == nil {
		d.durableSeq = max(d.durableSeq, c.seq)
		d.svc.m.flushSeconds.Observe(time.Since(start).Seconds())
		d.committedLocked(c)
	} else {
		d.svc.m.flushErrors.Inc()
		if d.fenced == nil {
			d.log.Error("flush failed; the data stays in memory and is retried", "err", err)
		}
	}
	d.commit = nil
	c.err = err
	close(c.done)
	if d.fenced == nil && !d.closed {
		if d.moreCommit {
			d.moreCommit = false
			d.startCommitLocked()
		} else if err == nil && d.jlog != nil && d.durableSeq < d.jlast {
			d.commitSoonLocked() // appends made while this commit ran
		}
	}
	d.notifyLocked()
	d.pumpLocked(false)
	d.mu.Unlock()
}

func (d *Disk) doCommit(c *commitRun) error {
	ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
	defer cancel()
	t0 := time.Now()
	phase := func(name string) {
		now := time.Now()
		d.svc.m.flushPhase.WithLabelValues(name).Observe(now.Sub(t0).Seconds())
		t0 = now
	}
	// 1. Name every block dirtied up to c.seq; no new background
	// write-back meanwhile. The commit takes the complete blocks itself
	// (hashed here, stored below in one round with the tree nodes); partial
	// blocks need their base read, which write-back jobs do.
	var own []ownBlock
	d.mu.Lock()
	d.pause = true
	d.wbErr = nil
	for {
		if d.fenced != nil || d.wbErr != nil {
			err := d.fenced
			if err == nil {
				// A write-back job failed meanwhile; its block is back
				// in the cache.
				err = &blockStoreError{d.wbErr}
			}
			d.abandonLocked(own)
			d.pause = false
			d.mu.Unlock()
			return err
		}
		pending := false
		var fresh []ownBlock
		for i, b := range d.dirty {
			if b.born > c.seq {
				continue
			}
			if b.busy || d.inflight[i] != nil {
				pending = true // being completed, or after the one in flight
				continue
			}
			if b.complete() {
				b.ref, b.hashed, b.done, b.err, b.superseded = chunkstore.Ref{}, false, false, nil, false
				b.owned = true
				d.jobs++
				d.moveInflightLocked(i, b)
				fresh = append(fresh, ownBlock{idx: i, b: b})
				continue
			}
			d.startLocked(i, b)
			pending = true
		}
		if len(fresh) > 0 {
			// Hash outside the lock: in-flight blocks are not written to.
			d.mu.Unlock()
			par.Do(context.Background(), len(fresh), runtime.GOMAXPROCS(0), func(_ context.Context, k int) error {
				fresh[k].ref, fresh[k].data = nameBlock(fresh[k].b)
				return nil
			})
			d.mu.Lock()
			for _, o := range fresh {
				o.b.ref, o.b.hashed = o.ref, true
			}
			own = append(own, fresh...)
			continue // blocks may have become ready meanwhile
		}
		for _, b := range d.inflight {
			if b.born <= c.seq && !b.hashed {
				pending = true
			}
		}
		if !pending {
			break
		}
		ch := d.space
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			d.mu.Lock()
			d.abandonLocked(own)
			d.pause = false
			d.mu.Unlock()
			return fmt.Errorf("blockd: vdisk %s: flush: %w", d.label, ctx.Err())
		}
		d.mu.Lock()
	}
	// 2. Freeze the current layer with the named blocks still being
	// stored; write-back goes on above it.
	var storing []*dblock
	for i, b := range d.inflight {
		if b.born <= c.seq && !b.superseded {
			d.cur.zeros = d.cur.zeros.remove(i)
			d.cur.refs[i] = b.ref
			if !b.owned {
				storing = append(storing, b)
			}
		}
	}
	if !d.cur.empty() {
		d.frozen = append(d.frozen, d.cur)
		d.cur = newLayer()
		d.gen++
	}
	d.pause = false
	layers := slices.Clone(d.frozen)
	head := d.head
	d.pumpLocked(false)
	d.mu.Unlock()
	phase("drain")
	if len(layers) == 0 {
		d.storeOwned(ctx, own, nil)
		return nil
	}
	// 3. Apply the frozen layers to the tree in memory, oldest first.
	var staged *tree.Staged
	{
		b := d.tree.NewBatch(head)
		err := func() error {
			for _, l := range layers {
				for _, s := range l.zeros {
					if err := b.Punch(ctx, s.from, s.to); err != nil {
						return fmt.Errorf("blockd: vdisk %s: punch [%d, %d): %w", d.label, s.from, s.to, err)
					}
				}
				changes := make([]tree.Change, 0, len(l.refs))
				for i, r := range l.refs {
					if len(l.zeros) > 0 && l.zeros.contains(i) {
						continue // older than the span
					}
					changes = append(changes, tree.Change{Index: i, Ref: r})
				}
				slices.SortFunc(changes, func(a, b tree.Change) int { return cmp.Compare(a.Index, b.Index) })
				if err := b.Update(ctx, changes); err != nil {
					return fmt.Errorf("blockd: vdisk %s: update tree: %w", d.label, err)
				}
			}
			var err error
			staged, err = b.Stage(ctx)
			return err
		}()
		if err != nil {
			d.storeOwned(ctx, own, nil) // stored for the next commit
			return err
		}
	}
	root := staged.Root
	// 4. One round of puts: the blocks the commit took and the new tree
	// nodes, in parallel; then the head may name them once the blocks of
	// earlier write-back jobs are stored too.
	if err := d.storeOwned(ctx, own, staged); err != nil {
		return err
	}
	phase("tree")
	d.mu.Lock()
	for {
		var failed error
		waiting := false
		for _, b := range storing {
			if b.err != nil {
				failed = b.err
			}
			waiting = waiting || !b.done
		}
		if failed != nil {
			d.mu.Unlock()
			return &blockStoreError{failed}
		}
		if !waiting {
			break
		}
		ch := d.space
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("blockd: vdisk %s: flush: %w", d.label, ctx.Err())
		}
		d.mu.Lock()
	}
	d.mu.Unlock()
	phase("blocks")
	// 5. Move the head.
	if root != head {
		if err := d.commitHead(ctx, head, root, c.seq); err != nil {
			return err
		}
		phase("head")
	}
	d.mu.Lock()
	d.head = root
	d.frozen = d.frozen[len(layers):]
	d.gen++
	d.mu.Unlock()
	return nil
}

// ownBlock is a block a commit names and stores itself.
type ownBlock struct {
	idx  uint64
	b    *dblock
	ref  chunkstore.Ref
	data []byte
}

// storeOwned puts the commit's own blocks and the staged tree nodes (if
// any) in one round: all through the disk's Batcher at once, so that they
// go out in as few batches as its bounds allow (the erasure store sends
// each node one request per batch, which it appends and syncs once).
// Every own block ends as write-back jobs end (storedLocked). A failed
// block put is a *blockStoreError; a failed node put fails the round.
func (d *Disk) storeOwned(ctx context.Context, own []ownBlock, staged *tree.Staged) error {
	// The round's chunks: own blocks with data (k < len(own)), then nodes.
	type item struct {
		k    int // index into own, or -1 for a node
		ref  chunkstore.Ref
		data []byte
	}
	var items []item
	for k, o := range own {
		if len(o.data) == 0 {
			d.mu.Lock()
			d.storedLocked(o.idx, o.b, o.data, nil)
			d.mu.Unlock()
			continue
		}
		items = append(items, item{k, o.ref, o.data})
	}
	if staged != nil {
		for r, data := range staged.Nodes {
			items = append(items, item{-1, r, data})
		}
	}
	chunks := make([][]byte, len(items))
	for i, it := range items {
		chunks[i] = it.data
	}
	refs, err := chunkstore.PutMany(ctx, d.batch, chunks)
	var be *chunkstore.BatchError
	if err != nil && !errors.As(err, &be) {
		// Nothing of the round may be assumed stored.
		d.mu.Lock()
		d.abandonLocked(own)
		d.mu.Unlock()
		return fmt.Errorf("blockd: vdisk %s: store %d chunks: %w", d.label, len(items), err)
	}
	err = nil
	var blockErr error
	for i, it := range items {
		var perr error
		switch {
		case be != nil && be.Err(i) != nil:
			perr = be.Err(i)
		case refs[i] != it.ref:
			perr = fmt.Errorf("%w: stored chunk %s, its content hashes to %s", chunkstore.ErrCorrupt, it.ref.Short(), refs[i].Short())
		}
		if it.k < 0 {
			if perr != nil {
				err = fmt.Errorf("blockd: vdisk %s: store tree node: %w", d.label, perr)
			} else {
				d.tree.CacheNode(it.ref, it.data)
			}
			continue
		}
		o := own[it.k]
		if perr != nil {
			perr = fmt.Errorf("blockd: vdisk %s: store block %d: %w", d.label, o.idx, perr)
			blockErr = perr
		} else {
			d.svc.m.storedBytes.Add(float64(len(o.data)))
		}
		d.mu.Lock()
		d.storedLocked(o.idx, o.b, o.data, perr)
		d.mu.Unlock()
	}
	// Blocks not stored yet go back to the dirty layer (none, normally:
	// every block of the round was answered above).
	d.mu.Lock()
	d.abandonLocked(own)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if blockErr != nil {
		return &blockStoreError{blockErr}
	}
	return nil
}

// abandonLocked gives the commit's own blocks, not yet stored, back to the
// dirty layer (the commit failed before storing them).
func (d *Disk) abandonLocked(own []ownBlock) {
	for _, o := range own {
		if o.b.done {
			continue
		}
		o.b.done = true
		delete(d.inflight, o.idx)
		d.inflightBytes -= o.b.cost()
		d.svc.accountDirty(-o.b.cost())
		d.jobs--
		d.gen++
		d.restoreLocked(o.idx, o.b)
	}
	if len(own) > 0 {
		d.notifyLocked()
	}
}

// blockStoreError is a commit failed by the write-back of a block (its
// base read or its store write) that started before it; the block is back
// in the cache, so the commit is worth retrying.
type blockStoreError struct{ err error }

func (e *blockStoreError) Error() string {
	return "flush: writing a block back failed: " + e.err.Error()
}
func (e *blockStoreError) Unwrap() error { return e.err }

// commitHead moves the head from old to new in the control plane, fenced by
// the lease epoch. Transient control-plane errors are retried until ctx
// ends; a refusal for a stale epoch fences the Disk.
// seq is the journal mark: the new head holds every write up to it.
func (d *Disk) commitHead(ctx context.Context, old, new chunkstore.Ref, seq uint64) error {
	args := fsm.VDiskHeadArgs{Name: d.name, Epoch: d.epoch, Old: old, New: new, Mark: true, Seq: seq}
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
	if d.fenced == nil {
		d.fenced = fmt.Errorf("%w: vdisk %s (epoch %d): %v; writes fail until it is reattached", ErrLeaseLost, d.label, d.epoch, cause)
		d.svc.m.leaseLost.Inc()
		d.log.Error("READ-WRITE LEASE LOST: the vdisk is read-only on this node; unflushed writes are lost",
			"epoch", d.epoch, "cause", cause, "dirty_blocks", len(d.dirty))
		d.notifyLocked()
	}
	return d.fenced
}

// --- background loops ---

// timerLoop commits what waited WritebackInterval, even without FLUSH.
func (d *Disk) timerLoop() {
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
		if d.commit == nil && d.fenced == nil && !d.closed && d.durableSeq < d.writeSeq {
			d.startCommitLocked()
		}
		d.maybeTrimLocked(true)
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

// close flushes (unless the vdisk is tmp: it is deleted instead), gives
// the lease back and stops the background work. The Service calls it once,
// when the last user detaches.
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
				d.svc.dropJournal(ctx, d.jlog, d.jname)
			}
		} else {
			if err = d.Sync(ctx); err != nil {
				d.log.Error("final commit failed; writes not in the journal are lost", "err", err)
			}
			d.mu.Lock()
			fenced := d.fenced != nil
			d.mu.Unlock()
			if !fenced {
				clean := err == nil
				if clean && d.jlog != nil {
					// Every journal record is in the head now (its mark
					// covers them all); only their space is left to free.
					if terr := d.jlog.Trim(ctx, d.jname, d.epoch, journal.All); terr != nil {
						d.log.Warn("journal trim at detach failed (the head's mark covers it)", "err", terr)
					}
				}
				if _, rerr := cfg.Control.Apply(ctx, fsm.OpLeaseRelease, fsm.LeaseArgs{Name: d.name, Node: cfg.Node, Epoch: d.epoch, Clean: clean}); rerr != nil && !errors.Is(rerr, fsm.ErrStaleEpoch) && !errors.Is(rerr, fsm.ErrNotFound) {
					d.log.Warn("lease release failed; it lapses after its TTL", "err", rerr)
				}
			}
		}
	}
	d.abort()
	return err
}

// abort stops the Disk without committing: what is not committed (or in
// its journal) is lost.
func (d *Disk) abort() {
	d.mu.Lock()
	d.closed = true
	if d.jtimer != nil {
		d.jtimer.Stop()
		d.jtimer = nil
	}
	d.notifyLocked()
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.mu.Lock()
	d.svc.accountDirty(-(d.dirtyBytes + d.inflightBytes))
	d.dirtyBytes, d.inflightBytes = 0, 0
	d.dirty, d.inflight = map[uint64]*dblock{}, map[uint64]*dblock{}
	d.fifo = nil
	d.mu.Unlock()
}
