package blockd

import (
	"context"
	"fmt"
	"slices"

	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/invariants"
)

// wbState is the blocks being written back: named (or being named) and
// stored as chunks by background jobs or by a commit, no longer written to.
type wbState struct {
	inflight map[uint64]*dblock
	bytes    int64 // the cost of the in-flight blocks
	jobs     int   // write-back jobs running (base reads and stores)
	pause    bool  // a commit drains write-back: start no background job
	err      error // last write-back error
}

// --- write-back ---

// stalledJobs: while writers wait for room in the write-back cache, up to
// this many times Config.Parallelism write-back jobs run (figures in
// docs/benchmarks.md, "Write-back parallelism").
const stalledJobs = 4

// pumpLocked starts background write-back of the oldest dirty blocks while
// more than WritebackBytes are dirty (or, with force, while the cache is
// full), unless a commit is draining.
func (d *Disk) pumpLocked(force bool) {
	if d.wb.pause || d.lease.fenced != nil || d.closed {
		return
	}
	limit := d.svc.cfg.WritebackBytes
	if d.svc.nodeDirtyHigh() {
		force = true
	}
	// Parallelism jobs keep the cache below WritebackBytes without taking
	// the CPU from writers; once writers wait for room (force), the store's
	// round trips are the limit and more puts in flight drain it faster.
	jobs := d.svc.cfg.Parallelism
	if force {
		jobs *= stalledJobs
	}
	for d.wb.jobs < jobs && (d.cache.bytes > limit || force && d.cache.bytes > 0) {
		if !d.startOldestLocked() {
			break
		}
	}
	if len(d.cache.fifo) > 2*len(d.cache.dirty)+1024 { // drop stale entries
		out := d.cache.fifo[:0]
		for _, e := range d.cache.fifo {
			if d.cache.dirty[e.idx] == e.b {
				out = append(out, e)
			}
		}
		clear(d.cache.fifo[len(out):])
		d.cache.fifo = out
	}
}

// startOldestLocked starts the write-back of the oldest dirty block that
// can start; false if there is none.
func (d *Disk) startOldestLocked() bool {
	var later []fifoEntry
	defer func() { d.cache.fifo = append(d.cache.fifo, later...) }()
	for len(d.cache.fifo) > 0 {
		e := d.cache.fifo[0]
		d.cache.fifo[0] = fifoEntry{}
		d.cache.fifo = d.cache.fifo[1:]
		if d.cache.dirty[e.idx] != e.b || e.b.busy {
			continue
		}
		if d.wb.inflight[e.idx] != nil {
			later = append(later, e) // one write-back per block at a time
			continue
		}
		if !e.b.complete() {
			// Complete it with the other partial blocks of its stretch,
			// then store the stretch as one extent (complete.go).
			idxs, bs := d.partialsLocked(e.idx, e.b)
			d.completeLocked(idxs, bs, nil)
			return true
		}
		d.startRunLocked(d.runLocked(e.idx, e.b))
		return true
	}
	return false
}

// moveInflightLocked moves complete dirty block b of idx in flight: it is
// no longer written to (a newer write makes a new dirty block over it).
func (d *Disk) moveInflightLocked(idx uint64, b *dblock) {
	delete(d.cache.dirty, idx)
	d.cache.bytes -= b.cost()
	d.wb.inflight[idx] = b
	d.wb.bytes += b.cost()
	d.layers.gen++
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

// putBlock stores a named block's bytes (nothing for zero blocks). ref
// must be Sum(data), hashed by the caller from this buffer, which nothing
// changes until putBlock returns: the store takes the name unhashed
// (chunkstore.NamedBatchReceiver).
func (d *Disk) putBlock(ctx context.Context, idx uint64, ref chunkstore.Ref, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	got, err := d.batch.PutNamed(ctx, data, ref)
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
// failed, it goes back to the dirty layer. A failed block a running commit
// counts on (b.claim) stays in flight instead, for that commit to store
// itself (awaitClaimed).
func (d *Disk) storedLocked(idx uint64, b *dblock, data []byte, err error) {
	b.done, b.err = true, err
	d.wb.jobs--
	if err == nil && len(data) > 0 {
		d.cleanLaterLocked(idx) // its old extent may be mostly dead now
	}
	if err != nil && b.claim != nil {
		// Superseded too: the commit's frozen layer names the block,
		// whatever zeroing came after it.
		d.notifyLocked()
		return
	}
	d.endInflightLocked(idx, b, data, err)
}

// endInflightLocked takes b out of flight once its store ended with err
// (see storedLocked).
func (d *Disk) endInflightLocked(idx uint64, b *dblock, data []byte, err error) {
	if d.wb.inflight[idx] != b {
		// Ended already. Ending it again would count its bytes and job
		// out twice, and could take a newer block of idx out of flight.
		msg := fmt.Sprintf("blockd: vdisk %s: block %d ended twice", d.label, idx)
		if invariants.Enabled {
			brokenPanic(msg)
		}
		d.log.Error("write-back bookkeeping broken; block left as it is", "block", idx)
		return
	}
	delete(d.wb.inflight, idx)
	b.run = nil
	d.wb.bytes -= b.cost()
	d.svc.accountDirty(-b.cost())
	d.layers.gen++
	switch {
	case err != nil:
		d.restoreLocked(idx, b)
		if err != errAbandoned {
			d.failLocked(err)
		} else {
			d.notifyLocked()
		}
		return
	case b.superseded:
	default:
		d.layers.cur.zeros = d.layers.cur.zeros.remove(idx)
		d.layers.cur.refs[idx] = b.ent
		if len(data) > 0 {
			d.svc.blocks.Add(b.ent.Ref, data)
		}
		d.svc.m.flushBlocks.Inc()
	}
	d.notifyLocked()
	d.pumpLocked(false)
	if d.seq.run == nil && (len(d.layers.cur.refs) >= maxPendingRefs || len(d.layers.cur.zeros) >= maxSpans) {
		d.startCommitLocked()
	}
}

// restoreLocked puts back a block whose store failed, under newer writes.
func (d *Disk) restoreLocked(idx uint64, b *dblock) {
	if b.superseded {
		return
	}
	if cur := d.cache.dirty[idx]; cur != nil {
		if cur.complete() || cur.busy {
			return
		}
		// A partial block written after b: b is its base.
		d.addDirtyLocked(-cur.cost())
		d.fillLocked(cur, b.data)
		d.addDirtyLocked(cur.cost())
		return
	}
	d.cache.dirty[idx] = b
	d.cache.fifo = append(d.cache.fifo, fifoEntry{idx, b})
	d.addDirtyLocked(b.cost())
}

// failLocked records a write-back failure and wakes the waiters.
func (d *Disk) failLocked(err error) {
	d.wb.err = err
	d.svc.m.flushErrors.Inc()
	d.log.Error("write-back failed; the data stays in memory and is retried", "err", err)
	d.notifyLocked()
}

// resetInflight clears the in-flight state of a block about to be written
// back (a block put back after a failed write-back starts afresh).
func (b *dblock) resetInflight() {
	b.ent, b.hashed, b.done, b.err, b.superseded, b.owned, b.claim, b.run = tree.Entry{}, false, false, nil, false, false, nil, nil
}

// runLocked returns the complete dirty blocks of block idx's aligned
// stretch (stretchOf: extentBlocks blocks) that can be written back
// together as one extent with b (idx's block, complete): ascending
// indexes idxs and their blocks. They need not be contiguous: the
// extent holds them back to back, each entry naming its slot, so random
// writes that fall in one stretch cost one chunk instead of one each
// (packing; doc.go, "Extents"). A run of one means no extent.
func (d *Disk) runLocked(idx uint64, b *dblock) (idxs []uint64, run []*dblock) {
	n := d.extentBlocks()
	ok := func(i uint64) *dblock {
		c := d.cache.dirty[i]
		if c == nil || c.busy || c.data == nil || !c.complete() || d.wb.inflight[i] != nil {
			return nil
		}
		return c
	}
	if n < 2 || ok(idx) != b {
		return []uint64{idx}, []*dblock{b}
	}
	base := stretchOf(idx, n)
	if len(d.cache.dirty) < n { // fewer dirty blocks than the stretch has
		for i, c := range d.cache.dirty {
			if stretchOf(i, n) == base && ok(i) == c {
				idxs = append(idxs, i)
			}
		}
		slices.Sort(idxs)
	} else {
		for i := base; i < base+uint64(n); i++ {
			if ok(i) != nil {
				idxs = append(idxs, i)
			}
		}
	}
	run = make([]*dblock, len(idxs))
	for j, i := range idxs {
		run[j] = d.cache.dirty[i]
	}
	return idxs, run
}

// startRunLocked starts writing back run, complete dirty blocks of
// indexes idxs, as one extent (a run of one: the block's own chunk): they
// go in flight at once.
func (d *Disk) startRunLocked(idxs []uint64, run []*dblock) {
	for j, b := range run {
		b.resetInflight()
		d.wb.jobs++
		d.moveInflightLocked(idxs[j], b)
	}
	d.wg.Add(1)
	go d.writebackRun(idxs, run)
}

// writebackRun names a run of in-flight blocks, stores them as one chunk
// and records their entries in the current layer.
func (d *Disk) writebackRun(idxs []uint64, run []*dblock) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
	defer cancel()
	var err error
	select {
	case d.sem <- struct{}{}:
		defer func() { <-d.sem }()
	case <-ctx.Done():
		err = ctx.Err()
	}
	var datas [][]byte
	var chunk extentRun
	var inExtent bool
	if err == nil {
		var ents []tree.Entry
		ents, datas, chunk, inExtent = nameRun(run, d.bs)
		d.mu.Lock()
		for j, b := range run {
			b.ent, b.hashed = ents[j], true
			if inExtent {
				b.run = &chunk
			}
		}
		d.notifyLocked()
		d.mu.Unlock()
		err = d.putChunk(ctx, idxs[0], chunk)
	}
	d.mu.Lock()
	for j, b := range run {
		var data []byte
		if datas != nil {
			data = datas[j]
		}
		d.storedLocked(idxs[j], b, data, err)
	}
	d.mu.Unlock()
	if err == nil && inExtent {
		// Stored: no block refers to the extent any more (a failed one
		// stays, for a commit's takeover to store again).
		releaseExtent(chunk.data)
	}
}

// putChunk stores a named chunk (a block's or an extent's, from block idx
// on; nothing for zeroes).
func (d *Disk) putChunk(ctx context.Context, idx uint64, c extentRun) error {
	return d.putBlock(ctx, idx, c.ref, c.data)
}
