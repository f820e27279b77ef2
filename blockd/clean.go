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
// the extents of which at most half the blocks are still live there have
// their live blocks read and put back in the dirty layer with their
// content unchanged, so write-back packs them with the stretch's next
// chunk and the old extents lose their last reference (the collector
// frees them once no head or snapshot names them).
//
// When is a trade: cleaning at once costs a burst of random overwrites
// up to one rewritten block per two overwritten (a fifth of the
// throughput of 4 KiB fsync16 writes over a sequentially written disk,
// measured),
// while never cleaning lets a stretch keep every pack ever written to it.
// So a stretch is cleaned at once only when the chunks it names hold more
// than three times its blocks (cleanBudget, looked at only once more than
// twice its blocks were stored in it since it was last looked at: a 4 KiB fsync16 run over a
// 512 MiB disk, which overwrites each 16 KiB block about twice in 10 s,
// stays within it); otherwise it waits until the vdisk has had no write
// for cleanIdle. Under writes that never pause a stretch thus holds at
// most about four times its size (three, plus the chunk that crossed the
// budget); once the vdisk rests, every extent the head names
// is more than half live and the store holds less than twice its live
// data (snapshots aside), as a log-structured store's cleaner at a 50%
// threshold guarantees.
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
	// cleanIdle: stretches within their budget are cleaned once the
	// vdisk has had no write for this long.
	cleanIdle = time.Second
	// cleanBudget: a stretch whose chunks hold more than cleanBudget
	// times its blocks is cleaned at once.
	cleanBudget = 3
)

// cleanState is a Disk's cleaner queue (under d.mu).
type cleanState struct {
	queued map[uint64]bool // stretch first blocks
	order  []uint64
	// later: stretches within their budget, cleaned when the vdisk is
	// idle (a stretch may be in both: queued again after a write-back).
	later map[uint64]bool
	// since: blocks stored per stretch since it was last looked at.
	since     map[uint64]int
	lastWrite time.Time     // the latest completed mutation
	wake      chan struct{} // buffered 1
}

// cleanLaterLocked notes a block stored in the stretch of block idx. A
// stretch can pass its budget only after more than (cleanBudget-1) times
// its blocks were stored in it since it was last looked at: until then
// it waits for the vdisk to rest (later) without being scanned, so
// sustained random writes cost the cleaner nothing but a counter.
func (d *Disk) cleanLaterLocked(idx uint64) {
	n := d.extentBlocks()
	if n < 2 || d.ro || d.cl.wake == nil {
		return
	}
	s := stretchOf(idx, n)
	c, ok := d.cl.since[s]
	if !ok && len(d.cl.since) >= cleanQueue {
		return // looked at after its next write-back
	}
	d.cl.since[s] = c + 1
	if c+1 <= (cleanBudget-1)*n {
		if len(d.cl.later) >= cleanQueue || d.cl.later[s] {
			return
		}
		d.cl.later[s] = true
		if len(d.cl.later) > 1 {
			return // the loop's idle timer runs already
		}
	} else {
		delete(d.cl.since, s)
		if d.cl.queued[s] || len(d.cl.order) >= cleanQueue {
			return
		}
		d.cl.queued[s] = true
		d.cl.order = append(d.cl.order, s)
	}
	select {
	case d.cl.wake <- struct{}{}:
	default:
	}
}

// cleanLoop runs the cleaner until the Disk stops.
func (d *Disk) cleanLoop() {
	defer d.wg.Done()
	for {
		var idle <-chan time.Time
		d.mu.Lock()
		if len(d.cl.later) > 0 {
			idle = time.After(max(time.Until(d.cl.lastWrite.Add(cleanIdle)), cleanPause))
		}
		d.mu.Unlock()
		select {
		case <-d.ctx.Done():
			return
		case <-d.cl.wake:
		case <-idle:
			d.mu.Lock()
			if time.Since(d.cl.lastWrite) >= cleanIdle {
				for s := range d.cl.later {
					delete(d.cl.since, s)
					if !d.cl.queued[s] {
						d.cl.queued[s] = true
						d.cl.order = append(d.cl.order, s)
					}
				}
				clear(d.cl.later)
			}
			d.mu.Unlock()
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
			idle := time.Since(d.cl.lastWrite) >= cleanIdle
			d.mu.Unlock()
			later, err := d.cleanStretch(s, idle)
			if err != nil && d.ctx.Err() == nil {
				d.log.Debug("cleaner: stretch not cleaned", "block", s, "err", err)
			}
			if later {
				d.mu.Lock()
				if len(d.cl.later) < cleanQueue {
					d.cl.later[s] = true
				}
				d.mu.Unlock()
			}
		}
	}
}

// cleanStretch puts back in the dirty layer the live blocks of the
// extents at most half live in the stretch of extentBlocks blocks from
// block s, unless the vdisk is not idle and the stretch is within its
// budget: then it reports later.
func (d *Disk) cleanStretch(s uint64, idle bool) (later bool, err error) {
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
		return false, nil
	}
	_, ents, err := d.resolve(ctx, idxs, srcs)
	if err != nil {
		return false, err
	}
	live := map[chunkstore.Ref][]int{} // extent -> positions naming it
	held := 0                          // blocks of the chunks the stretch names
	for j, e := range ents {
		switch {
		case e.InExtent():
			if live[e.Ext] == nil {
				held += int(e.Blocks)
			}
			live[e.Ext] = append(live[e.Ext], j)
		case fetchable(e.Ref):
			held++
		}
	}
	if !idle && held <= cleanBudget*int(n) {
		return true, nil
	}
	var pick []int
	for _, pos := range live {
		if blocks := int(ents[pos[0]].Blocks); 2*len(pos) <= blocks {
			pick = append(pick, pos...)
		}
	}
	if len(pick) == 0 {
		return false, nil
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
		return false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.writableLocked() != nil {
		return false, nil
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
	return false, nil
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
