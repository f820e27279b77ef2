package blockd

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// Completing partial blocks. A dirty block that the guest wrote only in
// part has to be read from below (its base) and filled in before it can
// be stored. One block at a time that is a read and a lone chunk per
// block: 4 KiB random writes into 16 KiB blocks would cost a round of
// shard requests and a chunk each. Instead a job completes a batch of
// partial blocks with one batched read (contents: one request per node
// for the batch) and the blocks, complete now, join the packed write-back
// of their stretch (runLocked) or the commit that waits for them.

// completeBatch is the most partial blocks one job completes (the blocks
// of a commit are split into jobs of this many, which run in parallel).
const completeBatch = 64

// partialsLocked returns the partial dirty blocks of block idx's aligned
// stretch that a job may complete now (not busy, not behind a write-back
// in flight), b first.
func (d *Disk) partialsLocked(idx uint64, b *dblock) (idxs []uint64, bs []*dblock) {
	idxs, bs = []uint64{idx}, []*dblock{b}
	n := d.extentBlocks()
	if n < 2 {
		return idxs, bs
	}
	ok := func(i uint64, c *dblock) bool {
		return i != idx && c != nil && !c.busy && c.data != nil && !c.complete() && d.wb.inflight[i] == nil
	}
	base := stretchOf(idx, n)
	if len(d.cache.dirty) < n {
		for i, c := range d.cache.dirty {
			if stretchOf(i, n) == base && ok(i, c) {
				idxs, bs = append(idxs, i), append(bs, c)
			}
		}
		return idxs, bs
	}
	for i := base; i < base+uint64(n); i++ {
		if c := d.cache.dirty[i]; ok(i, c) {
			idxs, bs = append(idxs, i), append(bs, c)
		}
	}
	return idxs, bs
}

// completeLocked starts a job that completes the partial dirty blocks bs
// (of indexes idxs): they are busy until it is done. For a commit (c not
// nil) the commit takes them afterwards, and a failure fails it; else the
// job then writes back the first block's stretch as one extent.
func (d *Disk) completeLocked(idxs []uint64, bs []*dblock, c *commitRun) {
	srcs := make([]source, len(idxs))
	for j, b := range bs {
		b.busy = true
		b.resetInflight()
		srcs[j] = d.belowDirtyLocked(idxs[j])
	}
	d.wb.jobs += len(bs) // a job per block, as runs count them
	d.wg.Add(1)
	go d.complete(idxs, bs, srcs, c)
}

// completeCommitLocked completes the partial blocks of a commit in jobs of
// completeBatch, in block order (so a job's blocks share stretches).
func (d *Disk) completeCommitLocked(partial []ownBlock, c *commitRun) {
	slices.SortFunc(partial, func(a, b ownBlock) int { return cmp.Compare(a.idx, b.idx) })
	for len(partial) > 0 {
		n := min(len(partial), completeBatch)
		idxs, bs := make([]uint64, n), make([]*dblock, n)
		for j, o := range partial[:n] {
			idxs[j], bs[j] = o.idx, o.b
		}
		d.completeLocked(idxs, bs, c)
		partial = partial[n:]
	}
}

func (d *Disk) complete(idxs []uint64, bs []*dblock, srcs []source, c *commitRun) {
	defer d.wg.Done()
	ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
	defer cancel()
	var err error
	var bases [][]byte
	select {
	case d.sem <- struct{}{}:
		bases, err = d.contents(ctx, idxs, srcs)
		<-d.sem
	case <-ctx.Done():
		err = ctx.Err()
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	d.wb.jobs -= len(bs)
	first := -1
	for j, b := range bs {
		b.busy = false
		if d.cache.dirty[idxs[j]] != b { // replaced or zeroed meanwhile
			if b.data != nil {
				d.putBuf(b.data)
			}
			continue
		}
		// Queued again: the job took the first block off the queue, and
		// whatever it does not start now is written back later.
		d.cache.fifo = append(d.cache.fifo, fifoEntry{idxs[j], b})
		if err != nil {
			continue
		}
		if !b.complete() {
			d.fillLocked(b, bases[j])
		}
		if first < 0 {
			first = j
		}
	}
	if err != nil {
		err = fmt.Errorf("blockd: vdisk %s: read %d blocks from block %d on to complete them: %w", d.label, len(idxs), idxs[0], err)
		if c != nil && c.failed == nil {
			c.failed = err
		}
		d.failLocked(err)
		return
	}
	if c == nil && first >= 0 && !d.wb.pause && !d.closed && d.lease.fenced == nil {
		d.startRunLocked(d.runLocked(idxs[first], bs[first]))
	}
	d.notifyLocked()
	d.pumpLocked(false)
}
