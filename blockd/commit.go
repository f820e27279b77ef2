package blockd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/zosproject/zos/blockd/internal/par"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/raft"
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
	count uint64 // seq.completed at its start: the completed mutations it covers
	done  chan struct{}
	err   error
	// failed: a write-back job the commit started failed (under d.mu).
	failed error
}

// --- flush and commit ---

// completedLocked counts a mutation whose reply is about to be sent (a
// FLUSH after it covers it) and captures it for the journal.
func (d *Disk) completedLocked(kind, flags byte, off, n int64, data []byte) {
	d.seq.completed++
	d.cl.lastWrite = time.Now()
	d.captureLocked(kind, flags, off, n, data)
	d.wroteLocked()
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
	d.checkLocked()
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
	d.mu.Lock()
	if err == nil {
		d.seq.durable = max(d.seq.durable, c.seq)
		d.log.Debug("committed", "seq", c.seq, "mutations", c.count, "head", d.layers.head.Short(), "took", time.Since(start))
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
	d.checkLocked()
	d.mu.Unlock()
}

// doCommit runs commit c: it names every block dirtied up to c.seq,
// freezes the current layer, applies the frozen layers to the tree in
// memory, stores the new blocks and tree nodes in one round, waits for the
// write-back jobs it counts on (storing a failed one's block itself), and
// moves the head.
func (d *Disk) doCommit(c *commitRun) error {
	ctx, cancel := context.WithTimeout(d.ctx, d.svc.cfg.FlushTimeout)
	defer cancel()
	t0 := time.Now()
	phase := func(name string) {
		now := time.Now()
		d.svc.m.flushPhase.WithLabelValues(name).Observe(now.Sub(t0).Seconds())
		t0 = now
	}
	fz, err := d.freeze(ctx, c)
	if err != nil {
		return err
	}
	defer d.releaseClaims(fz.claimed)
	phase("drain")
	if len(fz.layers) == 0 {
		return d.storeOwned(ctx, fz, nil)
	}
	staged, err := d.stage(ctx, fz)
	if err != nil {
		d.storeOwned(ctx, fz, nil) // stored for the next commit
		return err
	}
	// The blocks the commit took are being stored since freeze hashed
	// them; the new tree nodes join them, and the head may name them once
	// the blocks of the jobs it counts on are stored too.
	if err := d.storeOwned(ctx, fz, staged); err != nil {
		return err
	}
	phase("tree")
	if err := d.awaitClaimed(ctx, fz.claimed); err != nil {
		return err
	}
	phase("blocks")
	if staged.Root != fz.head {
		if err := d.commitHead(ctx, fz.head, staged.Root, c.seq); err != nil {
			return err
		}
		phase("head")
	}
	d.mu.Lock()
	d.layers.head = staged.Root
	d.layers.frozen = d.layers.frozen[len(fz.layers):]
	d.layers.gen++
	d.mu.Unlock()
	return nil
}

// frozen is what a commit froze: the blocks it names and stores itself,
// the in-flight blocks it counts on (their jobs store them), and the
// layers to apply to head.
type frozen struct {
	own     []ownBlock
	claimed []ownBlock
	layers  []*layer
	head    chunkstore.Ref
	rounds  sync.WaitGroup // store rounds of own blocks and nodes in flight
	slots   chan struct{}  // a token per round of own blocks in flight
	err     error          // the first failed round's (under d.mu)
}

// freeze names every block dirtied up to c.seq, with no new background
// write-back meanwhile, then freezes the current layer. The commit takes
// the complete blocks itself (hashed here, stored in its round with the
// tree nodes); partial blocks need their base read, which write-back jobs
// do. A job that started before the commit and fails puts its block back
// in the cache, where the commit takes it; one the commit started fails
// the commit.
func (d *Disk) freeze(ctx context.Context, c *commitRun) (*frozen, error) {
	fz := &frozen{slots: make(chan struct{}, ownRoundsInFlight)}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.wb.pause = true
	defer func() { d.wb.pause = false }()
	fail := func(err error) (*frozen, error) {
		d.mu.Unlock()
		fz.rounds.Wait() // rounds end their blocks themselves
		d.mu.Lock()
		d.abandonLocked(fz.own)
		return nil, err
	}
	for {
		if d.lease.fenced != nil {
			return fail(d.lease.fenced)
		}
		if c.failed != nil {
			return fail(c.failed)
		}
		pending := false
		var fresh, partial []ownBlock
		for i, b := range d.cache.dirty {
			if b.born > c.seq {
				continue
			}
			if b.busy || d.wb.inflight[i] != nil {
				pending = true // being completed, or after the one in flight
				continue
			}
			if b.complete() {
				b.resetInflight()
				b.owned = true
				d.wb.jobs++
				d.moveInflightLocked(i, b)
				fresh = append(fresh, ownBlock{idx: i, b: b})
				continue
			}
			partial = append(partial, ownBlock{idx: i, b: b})
			pending = true
		}
		if len(partial) > 0 {
			// Read their bases in batches, then take them (complete.go).
			d.completeCommitLocked(partial, c)
		}
		if len(fresh) > 0 {
			// Hash outside the lock (in-flight blocks are not written
			// to), a round at a time, and store each round as soon as
			// it is named: the write-back cache starts to drain at once
			// rather than after the whole commit is hashed.
			d.mu.Unlock()
			// The blocks of a stretch are stored as one extent.
			slices.SortFunc(fresh, func(a, b ownBlock) int { return cmp.Compare(a.idx, b.idx) })
			runs := d.ownRuns(fresh)
			per := max(1, int(ownRoundBytes/d.bs))
			for start := 0; start < len(runs); {
				end, nb := start, 0
				for end < len(runs) && (end == start || nb+len(runs[end]) <= per) {
					nb += len(runs[end])
					end++
				}
				group := runs[start:end]
				start = end
				// Name the round only once one of the rounds in flight
				// has room: naming copies its blocks into extent buffers.
				select {
				case fz.slots <- struct{}{}:
				case <-ctx.Done():
					d.mu.Lock()
					fz.own = append(fz.own, fresh...)
					return fail(fmt.Errorf("blockd: vdisk %s: flush: %w", d.label, ctx.Err()))
				}
				items := make([]roundItem, len(group))
				par.Do(context.Background(), len(group), runtime.GOMAXPROCS(0), func(_ context.Context, k int) error {
					items[k] = nameOwnRun(group[k], d.bs)
					return nil
				})
				d.mu.Lock()
				for _, it := range items {
					for _, o := range it.own {
						o.b.ent, o.b.hashed = o.ent, true
					}
				}
				d.mu.Unlock()
				d.startRound(ctx, fz, c, items)
			}
			d.mu.Lock()
			fz.own = append(fz.own, fresh...)
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
			return fail(fmt.Errorf("blockd: vdisk %s: flush: %w", d.label, ctx.Err()))
		}
		d.mu.Lock()
	}
	// Freeze the current layer with the named blocks still being stored;
	// write-back goes on above it.
	for i, b := range d.wb.inflight {
		if b.born <= c.seq && !b.superseded {
			d.layers.cur.zeros = d.layers.cur.zeros.remove(i)
			d.layers.cur.refs[i] = b.ent
			if !b.owned {
				b.claim = c
				fz.claimed = append(fz.claimed, ownBlock{idx: i, b: b})
			}
		}
	}
	if !d.layers.cur.empty() {
		d.layers.frozen = append(d.layers.frozen, d.layers.cur)
		d.layers.cur = newLayer()
		d.layers.gen++
	}
	fz.layers = slices.Clone(d.layers.frozen)
	fz.head = d.layers.head
	d.wb.pause = false
	d.pumpLocked(false)
	return fz, nil
}

// stage applies the frozen layers to the tree in memory, oldest first.
func (d *Disk) stage(ctx context.Context, fz *frozen) (*tree.Staged, error) {
	b := d.tree.NewBatch(fz.head)
	for _, l := range fz.layers {
		for _, s := range l.zeros {
			if err := b.Punch(ctx, s.from, s.to); err != nil {
				return nil, fmt.Errorf("blockd: vdisk %s: punch [%d, %d): %w", d.label, s.from, s.to, err)
			}
		}
		changes := make([]tree.Change, 0, len(l.refs))
		for i, r := range l.refs {
			if len(l.zeros) > 0 && l.zeros.contains(i) {
				continue // older than the span
			}
			changes = append(changes, tree.Change{Index: i, Entry: r})
		}
		slices.SortFunc(changes, func(a, b tree.Change) int { return cmp.Compare(a.Index, b.Index) })
		if err := b.Update(ctx, changes); err != nil {
			return nil, fmt.Errorf("blockd: vdisk %s: update tree: %w", d.label, err)
		}
	}
	return b.Stage(ctx)
}

// awaitClaimed waits for the write-back jobs storing the blocks the commit
// froze. It takes over a job that failed: the commit stores that block
// itself, once; if that fails too, the block goes back to the cache and
// the commit fails.
func (d *Disk) awaitClaimed(ctx context.Context, claimed []ownBlock) error {
	d.mu.Lock()
	for {
		var retry []ownBlock
		waiting := false
		for _, o := range claimed {
			switch b := o.b; {
			case !b.done:
				waiting = true
			case b.err != nil && b.claim != nil:
				retry = append(retry, o)
			}
		}
		if len(retry) > 0 {
			d.mu.Unlock()
			// Each block is taken over when its retry starts: par.Do
			// starts no more after a failure, and a block it never
			// started keeps its failed claim, which releaseClaims
			// gives back to the cache. (Taken over up front, such a
			// block stayed in flight with no job to end it, and every
			// later commit waited for it.)
			err := par.Do(ctx, len(retry), d.svc.cfg.Parallelism, func(ctx context.Context, k int) error {
				o := retry[k]
				d.mu.Lock()
				o.b.claim, o.b.done, o.b.err = nil, false, nil
				d.wb.jobs++
				d.mu.Unlock()
				d.svc.m.flushTakeover.Inc()
				ref, data := nameBlock(o.b)
				var err error
				switch r := o.b.run; {
				case r != nil && o.b.ent.InExtent():
					// The frozen entry names the extent: store it again
					// (once per run of this retry: the store dedups the
					// others, which the Batcher sends in one batch).
					err = d.putChunk(ctx, o.idx, *r)
				case ref != o.b.ent.Ref:
					err = fmt.Errorf("%w: vdisk %s: block %d in flight hashes to %s, not the %s it was named", chunkstore.ErrCorrupt, d.label, o.idx, ref.Short(), o.b.ent.Ref.Short())
				default:
					err = d.putBlock(ctx, o.idx, ref, data)
				}
				d.mu.Lock()
				d.storedLocked(o.idx, o.b, data, err)
				d.mu.Unlock()
				return err
			})
			if err != nil {
				return err
			}
			d.mu.Lock()
			continue
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
	return nil
}

// releaseClaims ends a commit's claims on in-flight blocks: a failed one
// it did not take over (it failed first) goes back to the cache.
func (d *Disk) releaseClaims(claimed []ownBlock) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, o := range claimed {
		b := o.b
		if b.claim == nil {
			continue
		}
		b.claim = nil
		if b.done && b.err != nil && d.wb.inflight[o.idx] == b {
			d.endInflightLocked(o.idx, b, nil, b.err)
		}
	}
}

// ownBlock is a block a commit names and stores itself.
type ownBlock struct {
	idx  uint64
	b    *dblock
	ent  tree.Entry
	data []byte // its trimmed content, once named
}

// roundItem is one chunk of a commit's store round: an own block, the
// run of own blocks of an extent, or a tree node (own == nil).
type roundItem struct {
	own    []ownBlock
	ref    chunkstore.Ref
	data   []byte
	extent bool // data is an extent's buffer (releaseExtent once stored)
}

// ownRuns splits own blocks (ascending) into runs, each stored as one
// chunk: the blocks with data of one aligned stretch of extentBlocks
// blocks (stretchOf), contiguous or not (runLocked packs the same way);
// each zero block alone.
func (d *Disk) ownRuns(own []ownBlock) [][]ownBlock {
	n := d.extentBlocks()
	var runs [][]ownBlock
	var run []ownBlock
	for _, o := range own {
		if o.b.data == nil {
			runs = append(runs, []ownBlock{o})
			continue
		}
		if len(run) > 0 && (n < 2 || stretchOf(o.idx, n) != stretchOf(run[0].idx, n)) {
			runs = append(runs, run)
			run = nil
		}
		run = append(run, o)
	}
	if len(run) > 0 {
		runs = append(runs, run)
	}
	return runs
}

// nameOwnRun names a run of own blocks and returns the chunk that stores
// them (their extent, or the one block's own chunk).
func nameOwnRun(run []ownBlock, bs int64) roundItem {
	blocks := make([]*dblock, len(run))
	for k, o := range run {
		blocks[k] = o.b
	}
	ents, datas, chunk, inExtent := nameRun(blocks, bs)
	for k := range run {
		run[k].ent, run[k].data = ents[k], datas[k]
	}
	return roundItem{own: run, ref: chunk.ref, data: chunk.data, extent: inExtent}
}

// startRound stores a round of a commit's chunks in the background,
// through the disk's Batcher (the erasure store sends each node one
// request per batch, which it appends and syncs once). Each round's
// blocks end (storedLocked: their memory is freed, their Refs enter the
// current layer) as soon as that round is answered, not when the whole
// commit is: a commit that takes a gigabyte of dirty blocks frees the
// write-back cache continuously, so writers waiting for room see a steady
// drain instead of a stall as long as the commit. A failed round records
// its error in fz (and in c, which fails a freeze still running); its
// blocks not stored go back to the cache.
func (d *Disk) startRound(ctx context.Context, fz *frozen, c *commitRun, items []roundItem) {
	var n int64
	for _, it := range items {
		n += int64(len(it.data))
	}
	if m := d.named.Add(n); m > d.maxNamed.Load() {
		d.maxNamed.Store(m) // only commits name, one at a time
	}
	fz.rounds.Go(func() {
		defer func() {
			d.named.Add(-n)
			<-fz.slots
		}()
		if err := d.storeRound(ctx, items); err != nil {
			d.mu.Lock()
			fz.err = cmp.Or(fz.err, err)
			if c != nil && c.failed == nil {
				c.failed = err
			}
			d.notifyLocked()
			d.mu.Unlock()
		}
	})
}

// storeRound puts items and ends their blocks.
func (d *Disk) storeRound(ctx context.Context, items []roundItem) error {
	var chunks [][]byte
	var names []chunkstore.Ref // the blocks' and extents' Refs from naming; tree nodes are hashed by the store
	var stored []roundItem
	for _, it := range items {
		if it.own != nil && len(it.data) == 0 { // zeroes: nothing to store
			d.mu.Lock()
			for _, o := range it.own {
				d.storedLocked(o.idx, o.b, nil, nil)
			}
			d.mu.Unlock()
			continue
		}
		var name chunkstore.Ref
		if it.own != nil {
			name = it.ref // nameOwnRun hashed it.data, which stays as it is until the round ends
		}
		chunks = append(chunks, it.data)
		names = append(names, name)
		stored = append(stored, it)
	}
	if len(chunks) == 0 {
		return nil
	}
	refs, err := d.batch.PutManyNamed(ctx, chunks, names)
	defer func() {
		for _, it := range stored {
			if it.extent {
				releaseExtent(it.data)
			}
		}
	}()
	var be *chunkstore.BatchError
	if err != nil && !errors.As(err, &be) {
		// Nothing of the round may be assumed stored: its blocks go back
		// to the cache.
		var own []ownBlock
		for _, it := range stored {
			own = append(own, it.own...)
		}
		d.mu.Lock()
		d.abandonLocked(own)
		d.mu.Unlock()
		return fmt.Errorf("blockd: vdisk %s: store %d chunks: %w", d.label, len(chunks), err)
	}
	var failed error
	for i, it := range stored {
		var perr error
		switch {
		case be != nil && be.Err(i) != nil:
			perr = be.Err(i)
		case refs[i] != it.ref:
			perr = fmt.Errorf("%w: stored chunk %s, its content hashes to %s", chunkstore.ErrCorrupt, it.ref.Short(), refs[i].Short())
		}
		if it.own == nil {
			if perr != nil {
				failed = cmp.Or(failed, fmt.Errorf("blockd: vdisk %s: store tree node: %w", d.label, perr))
			} else {
				d.tree.CacheNode(it.ref, it.data)
			}
			continue
		}
		if perr != nil {
			perr = fmt.Errorf("blockd: vdisk %s: store block %d: %w", d.label, it.own[0].idx, perr)
			failed = cmp.Or(failed, perr)
		} else {
			d.svc.m.storedBytes.Add(float64(len(it.data)))
		}
		d.mu.Lock()
		for _, o := range it.own {
			d.storedLocked(o.idx, o.b, o.data, perr)
		}
		d.mu.Unlock()
	}
	return failed
}

// storeOwned stores the staged tree nodes (if any) in a last round and
// waits for every round of the commit: its own blocks are then stored or
// back in the cache. It returns the first failure.
func (d *Disk) storeOwned(ctx context.Context, fz *frozen, staged *tree.Staged) error {
	if staged != nil && len(staged.Nodes) > 0 {
		items := make([]roundItem, 0, len(staged.Nodes))
		for r, data := range staged.Nodes {
			items = append(items, roundItem{ref: r, data: data})
		}
		fz.slots <- struct{}{} // rounds in flight end, stored or failed
		d.startRound(ctx, fz, nil, items)
	}
	fz.rounds.Wait()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.abandonLocked(fz.own) // none, normally: every round ended its blocks
	return fz.err
}

// ownRoundBytes bounds the block bytes of one round of a commit's puts
// (the Batcher's default batch size): the unit in which a large commit
// drains the write-back cache.
const ownRoundBytes = 8 << 20

// ownRoundsInFlight bounds the rounds of own blocks a commit has named and
// not yet stored. Naming a round (hashing, laying out its extents) runs
// far faster than the store takes it, so a commit of a gigabyte named
// every round at once and held the gigabyte twice, in the cache and in
// extent buffers, until the store caught up: the heap grew by as much, on
// fresh pages. Four rounds keep the store's pipeline full (32 MiB at 300
// MB/s is 100 ms of puts) and the extent buffers recycled.
const ownRoundsInFlight = 4

// abandonLocked gives the commit's own blocks, not yet stored, back to the
// dirty layer (the commit failed before storing them). A block that is no
// longer the commit's is left alone: a failed round already gave it back
// to the cache, where it may be dirty again, or in flight in a
// write-back job that ends it itself.
func (d *Disk) abandonLocked(own []ownBlock) {
	for _, o := range own {
		if o.b.done || !o.b.owned || d.wb.inflight[o.idx] != o.b {
			continue
		}
		o.b.done = true
		d.wb.jobs--
		d.endInflightLocked(o.idx, o.b, nil, errAbandoned)
	}
}

// errAbandoned ends the own blocks of a commit that failed before storing
// them (they go back to the cache).
var errAbandoned = errors.New("blockd: commit abandoned")

// commitHead moves the head from old to new in the control plane, fenced by
// the lease epoch. Transient control-plane errors are retried until ctx
// ends; a refusal for a stale epoch fences the Disk.
// seq is the journal mark: the new head holds every write up to it.
func (d *Disk) commitHead(ctx context.Context, old, new chunkstore.Ref, seq uint64) (err error) {
	d.mu.Lock()
	first := d.firstWriteLocked()
	d.mu.Unlock()
	args := fsm.VDiskHeadArgs{Name: d.name, Epoch: d.epoch, Old: old, New: new, Mark: true, Seq: seq, FirstWrite: first}
	id := fmt.Sprintf("blockd:head:%s:%d:%d", d.name, d.epoch, d.heads.Add(1))
	defer func() {
		if first != 0 && err == nil {
			d.mu.Lock()
			d.lease.reported = true
			d.mu.Unlock()
		}
	}()
	delay := 20 * time.Millisecond
	for {
		// One request id for every attempt: a retry after a lost answer
		// gets the first attempt's result instead of a conflict.
		err := raft.Exec(raft.WithRequestID(ctx, id), d.svc.cfg.Control, fsm.VDiskHead, args)
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
