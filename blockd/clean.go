package blockd

import (
	"context"
	"slices"
	"time"

	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
)

// The cleaner bounds the space an extent strands. An extent chunk stays
// in the store while any block of the vdisk names it, so overwriting most
// of an extent (or of a pack of random writes, runLocked) keeps all of it.
// After a chunk of a stretch is stored, the cleaner looks at the stretch:
// every extent of which at most half the blocks are still live there has
// its live blocks read and put back in the dirty layer with their content
// unchanged, so write-back packs them with the stretch's next chunk and
// the old extent loses its last reference (the collector frees it once no
// head or snapshot names it). Each extent the head names is then more
// than half live: the store holds under twice the live data of a vdisk
// (snapshots aside), as a log-structured store's cleaner at a 50%
// threshold guarantees, and each rewrite copies at most as many blocks as
// were overwritten before it.
//
// A rewritten block carries no write of the guest: it is not journaled and
// not counted as a completed mutation, and losing it (a crash before its
// commit) loses nothing, since the old entry still names the same content.
// It is put back only if the block is still what the cleaner read (no
// write, trim or commit changed it since), never while writers wait for
// room, and only while the dirty layer is below Config.WritebackBytes.

const (
	// cleanQueue bounds the stretches waiting for the cleaner; beyond it
	// a stretch is looked at again after its next write-back.
	cleanQueue = 4096
	// cleanPause: the cleaner waits this long when the write-back cache
	// has no room for what it would put back.
	cleanPause = 100 * time.Millisecond
)

// cleanState is a Disk's cleaner queue (under d.mu).
type cleanState struct {
	queued map[uint64]bool // stretch first blocks
	order  []uint64
	wake   chan struct{} // buffered 1
}

// cleanLaterLocked queues the stretch of block idx for the cleaner.
func (d *Disk) cleanLaterLocked(idx uint64) {
	n := d.extentBlocks()
	if n < 2 || d.ro || d.cl.wake == nil {
		return
	}
	s := stretchOf(idx, n)
	if d.cl.queued[s] || len(d.cl.order) >= cleanQueue {
		return
	}
	d.cl.queued[s] = true
	d.cl.order = append(d.cl.order, s)
	select {
	case d.cl.wake <- struct{}{}:
	default:
	}
}

// cleanLoop runs the cleaner until the Disk stops.
func (d *Disk) cleanLoop() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.cl.wake:
		}
		for {
			d.mu.Lock()
			if d.closed || d.lease.fenced != nil || len(d.cl.order) == 0 {
				d.mu.Unlock()
				break
			}
			room := len(d.cache.waiting) == 0 && d.cache.bytes < d.svc.cfg.WritebackBytes && !d.svc.nodeDirtyHigh()
			if !room {
				d.mu.Unlock()
				select {
				case <-d.ctx.Done():
					return
				case <-time.After(cleanPause):
				}
				continue
			}
			s := d.cl.order[0]
			d.cl.order = d.cl.order[1:]
			delete(d.cl.queued, s)
			d.mu.Unlock()
			if err := d.cleanStretch(s); err != nil && d.ctx.Err() == nil {
				d.log.Debug("cleaner: stretch not cleaned", "block", s, "err", err)
			}
		}
	}
}

// cleanStretch puts back in the dirty layer the live blocks of the
// extents at most half live in the stretch of extentBlocks blocks from
// block s.
func (d *Disk) cleanStretch(s uint64) error {
	ctx, cancel := context.WithTimeout(d.ctx, raTimeout)
	defer cancel()
	n := uint64(d.extentBlocks())
	var idxs []uint64
	var srcs []source
	d.mu.Lock()
	for i := s; i < s+n && int64(i)<<d.shift < d.size.Load(); i++ {
		if d.cache.dirty[i] != nil || d.wb.inflight[i] != nil {
			continue // being overwritten: not live in its old extent
		}
		if src := d.belowDirtyLocked(i); src.kind == srcRef || src.kind == srcTree {
			idxs = append(idxs, i)
			srcs = append(srcs, src)
		}
	}
	d.mu.Unlock()
	if len(idxs) == 0 {
		return nil
	}
	_, ents, err := d.resolve(ctx, idxs, srcs)
	if err != nil {
		return err
	}
	live := map[chunkstore.Ref][]int{} // extent -> positions naming it
	for j, e := range ents {
		if e.InExtent() {
			live[e.Ext] = append(live[e.Ext], j)
		}
	}
	var pick []int
	for _, pos := range live {
		if blocks := int(ents[pos[0]].Blocks); 2*len(pos) <= blocks {
			pick = append(pick, pos...)
		}
	}
	if len(pick) == 0 {
		return nil
	}
	slices.Sort(pick) // idxs ascending, as contents wants them
	pIdxs := make([]uint64, len(pick))
	pSrcs := make([]source, len(pick))
	pEnts := make([]tree.Entry, len(pick))
	for k, j := range pick {
		pIdxs[k], pSrcs[k], pEnts[k] = idxs[j], srcs[j], ents[j]
	}
	contents, err := d.contents(ctx, pIdxs, pSrcs)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.writableLocked() != nil {
		return nil
	}
	put := 0
	for k, i := range pIdxs {
		if contents[k] == nil || d.cache.dirty[i] != nil || d.wb.inflight[i] != nil || !d.sameEntryLocked(i, pEnts[k]) {
			continue // changed since it was read: nothing to keep
		}
		buf := d.getBuf()
		copyBlock(buf, contents[k], 0)
		d.setLocked(i, &dblock{data: buf})
		put++
	}
	if put > 0 {
		d.svc.m.cleanedBlocks.Add(float64(put))
		d.pumpLocked(false)
	}
	return nil
}

// sameEntryLocked reports whether block idx is still named by e below the
// dirty layer (false when that cannot be told without a store read).
func (d *Disk) sameEntryLocked(idx uint64, e tree.Entry) bool {
	src := d.belowDirtyLocked(idx)
	switch src.kind {
	case srcRef:
		return src.ent == e
	case srcTree:
		got, ok := d.tree.LookupCached(src.head, idx)
		return ok && got == e
	}
	return false
}
