package blockd

import (
	"context"
	"fmt"
	"slices"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/tree"
)

// The dirty layer: blocks written and not yet being written back, in
// memory. Writes, trims and zeroings land here (or, for large zeroed
// ranges, in the current layer's spans).

// cacheState is the dirty layer.
type cacheState struct {
	dirty map[uint64]*dblock
	fifo  []fifoEntry // dirty blocks in creation order (stale entries skipped)
	bytes int64       // the cost of the dirty blocks
	// waiting: writers waiting for room, oldest first (reserve).
	waiting []*waiter
}

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
	// claim: the running commit counts on this block's write-back job:
	// it started the job (a partial block's base read), or froze the
	// block's Ref while a job stores it. A failed store of a claimed block
	// is taken over by that commit (storedLocked, awaitClaimed).
	claim *commitRun
	// superseded: (in flight only) a newer zeroing covers the block; the
	// job's result is dropped.
	superseded bool
	// In flight: ent is the block's tree entry once hashed (a commit can
	// build the tree while the store is still writing the chunk); done
	// and failed tell how the store write ended.
	ent          tree.Entry
	hashed, done bool
	err          error
	// run: (in flight, in an extent) the extent chunk being stored, kept
	// for a commit that takes over a failed store (awaitClaimed).
	run *extentRun
}

func (b *dblock) complete() bool { return b.mask == nil }

func (b *dblock) cost() int64 { return entryCost + int64(cap(b.data)) }

func (b *dblock) has(s int) bool { return b.mask[s/64]&(1<<(s%64)) != 0 }

type fifoEntry struct {
	idx uint64
	b   *dblock
}

// --- writes ---

func (d *Disk) writableLocked() error {
	switch {
	case d.ro:
		return fmt.Errorf("%w: %s is read-only", nbd.ErrReadOnly, d.label)
	case d.closed:
		return fmt.Errorf("%w: vdisk %s", ErrClosed, d.label)
	case d.lease.fenced != nil:
		return d.lease.fenced
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
// failing. Writers that have to wait are let in first come, first served
// (d.cache.waiting): when write-back frees room, the oldest waiter goes
// first, so no request waits for more than the bytes queued ahead of it
// take to drain (without the queue, a request could lose the race for
// freed room again and again: seconds of tail latency under a steady
// stream of writes).
func (d *Disk) reserve(ctx context.Context) error {
	stalled := false
	var me *waiter
	d.mu.Lock()
	defer func() {
		if me != nil {
			d.cache.waiting = slices.DeleteFunc(d.cache.waiting, func(w *waiter) bool { return w == me })
			d.notifyLocked() // the next waiter may be first now
		}
		d.mu.Unlock()
	}()
	for {
		if err := d.writableLocked(); err != nil {
			return err
		}
		own := d.cache.bytes+d.wb.bytes >= d.svc.cfg.MaxDirtyBytes
		node := d.svc.nodeDirtyFull()
		first := len(d.cache.waiting) == 0 || d.cache.waiting[0] == me
		if !own && !node && first {
			return nil
		}
		if stalled && d.wb.jobs == 0 && d.seq.run == nil && d.wb.err != nil && own {
			return fmt.Errorf("blockd: vdisk %s: write-back cache full and writing back fails: %w", d.label, d.wb.err)
		}
		if !stalled {
			d.svc.m.writeStalls.Inc()
			stalled = true
		}
		if me == nil {
			me = &waiter{}
			d.cache.waiting = append(d.cache.waiting, me)
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
				d.mu.Lock()
				continue
			}
		}
		select {
		case <-ch:
		case <-nodeCh:
		case <-ctx.Done():
			done()
			d.mu.Lock()
			return ctx.Err()
		}
		done()
		d.mu.Lock()
	}
}

// waiter is a writer waiting for room in the write-back cache.
type waiter struct{ _ byte } // not zero-sized: distinct waiters have distinct addresses

func (d *Disk) addDirtyLocked(delta int64) {
	d.cache.bytes += delta
	d.svc.accountDirty(delta)
}

// setLocked replaces the dirty entry of idx with b.
func (d *Disk) setLocked(idx uint64, b *dblock) {
	d.seq.write++
	b.born = d.seq.write
	if old, ok := d.cache.dirty[idx]; ok {
		// b carries the durability duty of the writes it replaces.
		b.born = old.born
		d.addDirtyLocked(-old.cost())
		if old.data != nil && !old.busy {
			d.putBuf(old.data)
		}
	}
	d.cache.dirty[idx] = b
	d.cache.fifo = append(d.cache.fifo, fifoEntry{idx, b})
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
	d.completedLocked(jWrite, 0, off, int64(len(p)), p)
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
		if b := d.cache.dirty[idx]; b != nil {
			if b.data == nil { // a zero block
				if zero {
					b.keep = b.keep || keep
					d.seq.write++
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
			d.seq.write++
			return nil
		}
		below := d.belowDirtyLocked(idx)
		if below.kind == srcZero && zero && !keep {
			d.seq.write++ // zeroes over zeroes
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
		if b := d.cache.dirty[idx]; b != nil && b.complete() {
			if b.data == nil {
				buf := d.getBuf()
				clear(buf)
				copy(buf[inOff:], src)
				d.setLocked(idx, &dblock{data: buf, keep: b.keep || keep})
			} else {
				copy(b.data[inOff:], src)
				b.keep = b.keep || keep
				d.seq.write++
			}
			d.mu.Unlock()
			return nil
		}
		below, gen := d.belowDirtyLocked(idx), d.layers.gen
		var part *dblock
		if b := d.cache.dirty[idx]; b != nil {
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
			if d.layers.gen != gen || d.cache.dirty[idx] != part || part != nil && part.complete() {
				// The block changed meanwhile (a partial one may have
				// been completed: by its write-back job or by writes
				// filling its other sectors).
				d.mu.Unlock()
				continue
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
			d.seq.write++
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

// prefetchState is the reads of partial blocks' bases started ahead of
// their write-back: queued, and read by at most prefetchRunners goroutines
// in batches of up to prefetchBatch (one batched store read each, as a
// read of the blocks would be), at most Config.Parallelism bases queued or
// being read.
type prefetchState struct {
	jobs    []prefetchJob
	reading int // bases taken by runners, not yet read
	runners int
}

type prefetchJob struct {
	idx uint64
	src source
}

const (
	prefetchRunners = 4
	prefetchBatch   = 64
)

// prefetchLocked starts reading the base of block idx (src, not in
// memory) into the block cache, so that the write-back of the partial
// block just written over it (often on a FLUSH's critical path) finds it
// there; a full queue drops it (write-back reads it then).
func (d *Disk) prefetchLocked(idx uint64, src source) {
	if src.kind != srcRef && src.kind != srcTree || d.closed {
		return
	}
	if len(d.pf.jobs)+d.pf.reading >= d.svc.cfg.Parallelism {
		return
	}
	d.pf.jobs = append(d.pf.jobs, prefetchJob{idx, src})
	if d.pf.runners < prefetchRunners {
		d.pf.runners++
		d.wg.Add(1)
		go d.prefetchRun()
	}
}

// prefetchRun reads queued bases a batch at a time until none is left;
// errors surface at write-back, which reads what is missing itself.
func (d *Disk) prefetchRun() {
	defer d.wg.Done()
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.pf.jobs) > 0 && d.ctx.Err() == nil {
		n := min(len(d.pf.jobs), prefetchBatch)
		idxs, srcs := make([]uint64, n), make([]source, n)
		for j, pj := range d.pf.jobs[:n] {
			idxs[j], srcs[j] = pj.idx, pj.src
		}
		clear(d.pf.jobs[:n])
		d.pf.jobs = d.pf.jobs[n:]
		if len(d.pf.jobs) == 0 {
			d.pf.jobs = nil
		}
		d.pf.reading += n
		d.mu.Unlock()
		ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
		d.contents(ctx, idxs, srcs)
		cancel()
		d.mu.Lock()
		d.pf.reading -= n
	}
	d.pf.jobs = nil // closing: write-back reads what is left
	d.pf.runners--
}

// prefetching reports whether bases are queued or being read.
func (d *Disk) prefetching() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pf.runners > 0
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
	for i, b := range d.cache.dirty {
		if inRange(i) {
			d.addDirtyLocked(-b.cost())
			if b.data != nil && !b.busy {
				d.putBuf(b.data)
			}
			delete(d.cache.dirty, i)
		}
	}
	for i, b := range d.wb.inflight {
		if inRange(i) {
			b.superseded = true
		}
	}
	for i := range d.layers.cur.refs {
		if inRange(i) {
			delete(d.layers.cur.refs, i) // older than the span
		}
	}
	d.layers.cur.zeros = d.layers.cur.zeros.add(from, to)
	d.seq.write++
	d.layers.gen++
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
	d.completed(jTrim, 0, off, length, nil)
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
	d.completed(jZero, byte(flags&nbd.ZeroNoHole), off, length, nil)
	if flags&nbd.ZeroFUA != 0 {
		return d.Flush(ctx)
	}
	return nil
}
