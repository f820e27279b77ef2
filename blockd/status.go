package blockd

import (
	"fmt"
	"os"

	"github.com/zosproject/zos/internal/invariants"
)

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
	pending := len(d.layers.cur.refs)
	for _, l := range d.layers.frozen {
		pending += len(l.refs)
	}
	return Stats{DirtyBlocks: len(d.cache.dirty), InflightBlocks: len(d.wb.inflight), PendingBlocks: pending,
		CacheBytes: d.cache.bytes + d.wb.bytes, Fenced: d.lease.fenced != nil}
}

// checkLocked panics if an invariant of the Disk's parts does not hold. It
// is compiled in only with the invariants build tag (or -race): the model
// tests, the crash tests and `make test` run with it. It costs O(blocks in
// the write-back cache), so it runs where state settles (commits, FLUSH
// answers), not on every write.
func (d *Disk) checkLocked() {
	if !invariants.Enabled {
		return
	}
	if err := d.invariantsLocked(); err != nil {
		brokenPanic(fmt.Sprintf("blockd: vdisk %s: invariant broken: %v", d.label, err))
	}
}

// brokenPanic panics with msg, said on stderr first: the panic unwinds
// with d.mu held, so a test's cleanup (closing the disk) blocks before
// the panic is printed.
func brokenPanic(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	panic(msg)
}

func (d *Disk) invariantsLocked() error {
	// The cache parts: costs add up, dirty and in-flight are distinct
	// blocks, in-flight blocks are complete and no longer written to,
	// and write-back can find every dirty block that is not busy.
	var dirtyCost, inflightCost int64
	busy, running := 0, 0
	for idx, b := range d.wb.inflight {
		inflightCost += b.cost()
		switch {
		case d.cache.dirty[idx] == b:
			return fmt.Errorf("block %d is both dirty and in flight", idx)
		case !b.complete():
			return fmt.Errorf("in-flight block %d is partial", idx)
		case b.busy:
			return fmt.Errorf("in-flight block %d is busy", idx)
		case b.born > d.seq.write:
			return fmt.Errorf("in-flight block %d was born at %d, after the last write seq %d", idx, b.born, d.seq.write)
		}
		if !b.done {
			running++
		}
	}
	queued := make(map[*dblock]bool, len(d.cache.fifo))
	for _, e := range d.cache.fifo {
		queued[e.b] = true
	}
	for idx, b := range d.cache.dirty {
		dirtyCost += b.cost()
		if b.born > d.seq.write {
			return fmt.Errorf("dirty block %d was born at %d, after the last write seq %d", idx, b.born, d.seq.write)
		}
		if b.busy {
			busy++
		} else if !queued[b] {
			return fmt.Errorf("dirty block %d is not queued for write-back", idx)
		}
		if d.ro {
			return fmt.Errorf("read-only disk has dirty block %d", idx)
		}
	}
	if dirtyCost != d.cache.bytes {
		return fmt.Errorf("dirty bytes %d, the dirty blocks cost %d", d.cache.bytes, dirtyCost)
	}
	if inflightCost != d.wb.bytes {
		return fmt.Errorf("in-flight bytes %d, the in-flight blocks cost %d", d.wb.bytes, inflightCost)
	}
	if d.wb.jobs < busy+running {
		return fmt.Errorf("%d write-back jobs, but %d busy dirty and %d in-flight blocks being stored", d.wb.jobs, busy, running)
	}
	if used := d.svc.dirty.used.Load(); used < d.cache.bytes+d.wb.bytes {
		return fmt.Errorf("the node accounts %d write-back bytes, this vdisk alone holds %d", used, d.cache.bytes+d.wb.bytes)
	}
	// The current layer: storing a block takes it out of the spans.
	for idx := range d.layers.cur.refs {
		if d.layers.cur.zeros.contains(idx) {
			return fmt.Errorf("block %d has a stored Ref inside a zeroed span of the same layer", idx)
		}
	}
	// Sequence numbers, and what a FLUSH covers: every mutation counted
	// done is committed or in an appended record, and none that was
	// dropped from the journal is counted done unless committed.
	s, j := d.seq, d.jr
	switch {
	case s.durable > s.write:
		return fmt.Errorf("durable seq %d is past the last write seq %d", s.durable, s.write)
	case s.committed > s.completed:
		return fmt.Errorf("%d mutations committed of %d completed", s.committed, s.completed)
	case j.done > s.completed || j.cut > s.completed || j.drop > s.completed || j.acked > s.completed:
		return fmt.Errorf("journal counts (done %d, cut %d, drop %d, acked %d) past the %d completed mutations", j.done, j.cut, j.drop, j.acked, s.completed)
	case j.done > max(s.committed, j.acked):
		return fmt.Errorf("%d mutations counted durable, but only %d are committed and %d appended", j.done, s.committed, j.acked)
	case j.drop > s.committed && j.done >= j.drop:
		return fmt.Errorf("mutation %d was dropped from the journal and is not committed, but %d are counted durable", j.drop, j.done)
	}
	return nil
}
