package blockd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/zosproject/zos/blockd/internal/par"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/raft/fsm"
)

// seqState orders mutations and says which are durable. Every mutation
// takes write sequence numbers as it changes the cache (a block's born);
// every completed one (its reply about to be sent) is counted, in
// completion order: a FLUSH covers the mutations counted before it. A
// commit started at (write, completed) covers both.
type seqState struct {
	write     uint64     // last write sequence number
	durable   uint64     // every mutation up to this write seq is committed
	completed uint64     // mutations completed
	committed uint64     // completed mutations covered by the committed head
	run       *commitRun // the commit in progress
	more      bool       // a commit is wanted once the running one ends
}

// commitRun is one commit in progress: it makes durable every mutation with
// a sequence number up to seq.
type commitRun struct {
	seq   uint64
	count uint64 // jcount at its start: the completed mutations it covers
	done  chan struct{}
	err   error
}

// --- flush and commit ---

// completedLocked counts a mutation whose reply is about to be sent (a
// FLUSH after it covers it) and captures it for the journal.
func (d *Disk) completedLocked(kind, flags byte, off, n int64, data []byte) {
	d.seq.completed++
	d.captureLocked(kind, flags, off, n, data)
}

func (d *Disk) completed(kind, flags byte, off, n int64, data []byte) {
	d.mu.Lock()
	d.completedLocked(kind, flags, off, n, data)
	d.mu.Unlock()
}

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
	target := d.seq.write
	for {
		if d.lease.fenced != nil {
			err := d.lease.fenced
			d.mu.Unlock()
			return err
		}
		if d.seq.durable >= target {
			d.mu.Unlock()
			return nil
		}
		c := d.seq.run
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
	c := &commitRun{seq: d.seq.write, count: d.seq.completed, done: make(chan struct{})}
	d.seq.run = c
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
		d.seq.durable = max(d.seq.durable, c.seq)
		d.svc.m.flushSeconds.Observe(time.Since(start).Seconds())
		d.committedLocked(c)
	} else {
		d.svc.m.flushErrors.Inc()
		if d.lease.fenced == nil {
			d.log.Error("flush failed; the data stays in memory and is retried", "err", err)
		}
	}
	d.seq.run = nil
	c.err = err
	close(c.done)
	if d.lease.fenced == nil && !d.closed {
		if d.seq.more {
			d.seq.more = false
			d.startCommitLocked()
		} else if err == nil && d.jr.log != nil && d.seq.durable < d.jr.last {
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
	d.wb.pause = true
	d.wb.err = nil
	for {
		if d.lease.fenced != nil || d.wb.err != nil {
			err := d.lease.fenced
			if err == nil {
				// A write-back job failed meanwhile; its block is back
				// in the cache.
				err = &blockStoreError{d.wb.err}
			}
			d.abandonLocked(own)
			d.wb.pause = false
			d.mu.Unlock()
			return err
		}
		pending := false
		var fresh []ownBlock
		for i, b := range d.cache.dirty {
			if b.born > c.seq {
				continue
			}
			if b.busy || d.wb.inflight[i] != nil {
				pending = true // being completed, or after the one in flight
				continue
			}
			if b.complete() {
				b.ref, b.hashed, b.done, b.err, b.superseded = chunkstore.Ref{}, false, false, nil, false
				b.owned = true
				d.wb.jobs++
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
		for _, b := range d.wb.inflight {
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
			d.wb.pause = false
			d.mu.Unlock()
			return fmt.Errorf("blockd: vdisk %s: flush: %w", d.label, ctx.Err())
		}
		d.mu.Lock()
	}
	// 2. Freeze the current layer with the named blocks still being
	// stored; write-back goes on above it.
	var storing []*dblock
	for i, b := range d.wb.inflight {
		if b.born <= c.seq && !b.superseded {
			d.layers.cur.zeros = d.layers.cur.zeros.remove(i)
			d.layers.cur.refs[i] = b.ref
			if !b.owned {
				storing = append(storing, b)
			}
		}
	}
	if !d.layers.cur.empty() {
		d.layers.frozen = append(d.layers.frozen, d.layers.cur)
		d.layers.cur = newLayer()
		d.layers.gen++
	}
	d.wb.pause = false
	layers := slices.Clone(d.layers.frozen)
	head := d.layers.head
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
	d.layers.head = root
	d.layers.frozen = d.layers.frozen[len(layers):]
	d.layers.gen++
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
		delete(d.wb.inflight, o.idx)
		d.wb.bytes -= o.b.cost()
		d.svc.accountDirty(-o.b.cost())
		d.wb.jobs--
		d.layers.gen++
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
		if d.seq.run == nil && d.lease.fenced == nil && !d.closed && d.seq.durable < d.seq.write {
			d.startCommitLocked()
		}
		d.maybeTrimLocked(true)
		d.mu.Unlock()
	}
}
