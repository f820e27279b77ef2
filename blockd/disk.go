package blockd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/raft"
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
//
// The state under mu is split into parts, each kept in its own file with
// the methods that change it: the dirty blocks (cache.go), the blocks
// being written back (writeback.go), the layers and the committed head
// (layers.go), the sequence numbers and commits (commit.go), the lease
// (lease.go) and the journal capture (journal.go). status.go checks their
// invariants (checkLocked) and reports them.
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

	size  atomic.Int64
	heads atomic.Uint64 // head commits proposed: with the epoch, their request ids
	// named is the bytes of the rounds commits have named and the store
	// has not answered (ownRoundsInFlight bounds it); maxNamed the most.
	named, maxNamed atomic.Int64

	ctx    context.Context // cancelled when the disk is closed
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // bounds concurrent store operations of write-back
	bufs   chan []byte   // free block buffers

	mu     sync.Mutex
	pf     prefetchState // bases of partial blocks being read ahead of write-back
	cache  cacheState    // dirty blocks
	wb     wbState       // blocks being written back
	layers layerState    // stored, uncommitted layers and the committed head
	seq    seqState      // mutation counts and sequence numbers, commits
	lease  leaseState    // the read-write lease
	jr     journalState  // the write journal's capture and appends
	ra     raState       // readahead (its own lock; readahead.go)
	cl     cleanState    // the cleaner queue (under mu; clean.go)
	closed bool
	space  chan struct{} // closed (and replaced) on progress: memory freed, job done
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
		batch: chunkstore.NewBatcher(p.store, chunkstore.BatcherConfig{Timeout: svc.cfg.FlushTimeout}),
		log:   svc.log.With("vdisk", p.label),
		sem:   make(chan struct{}, stalledJobs*svc.cfg.Parallelism),
		bufs:  make(chan []byte, 64),
		space: make(chan struct{}),
	}
	d.cache.dirty = map[uint64]*dblock{}
	d.wb.inflight = map[uint64]*dblock{}
	d.layers.head, d.layers.cur = p.head, newLayer()
	d.lease.until = p.leaseUntil
	d.size.Store(p.size)
	if !d.ro {
		d.cl.queued, d.cl.later, d.cl.since, d.cl.wake = map[uint64]bool{}, map[uint64]bool{}, map[uint64]int{}, make(chan struct{}, 1)
		d.wg.Add(3)
		go d.renewLoop()
		go d.timerLoop()
		go d.cleanLoop()
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
	return d.layers.head
}

// Epoch returns the lease epoch of a read-write Disk (0 when read-only).
func (d *Disk) Epoch() uint64 { return d.epoch }

func (d *Disk) setSize(n int64) { d.size.Store(n) }

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
			err = raft.Exec(ctx, cfg.Control, fsm.VDiskDelete, fsm.VDiskDeleteArgs{Name: d.name, Epoch: d.epoch})
			if err != nil {
				d.log.Error("could not delete tmp vdisk on detach", "err", err)
			} else {
				d.log.Info("tmp vdisk deleted on detach")
				d.svc.dropJournal(ctx, d.jr.log, d.jr.name)
			}
		} else {
			if err = d.Sync(ctx); err != nil {
				d.log.Error("final commit failed; writes not in the journal are lost", "err", err)
			}
			d.mu.Lock()
			fenced := d.lease.fenced != nil
			d.mu.Unlock()
			if !fenced {
				clean := err == nil
				if clean && d.jr.log != nil {
					// Every journal record is in the head now (its mark
					// covers them all); only their space is left to free.
					if terr := d.jr.log.Trim(ctx, d.jr.name, d.epoch, journal.All); terr != nil {
						d.log.Warn("journal trim at detach failed (the head's mark covers it)", "err", terr)
					}
				}
				if rerr := raft.Exec(ctx, cfg.Control, fsm.LeaseRelease, fsm.LeaseArgs{Name: d.name, Node: cfg.Node, Epoch: d.epoch, Clean: clean}); rerr != nil && !errors.Is(rerr, fsm.ErrStaleEpoch) && !errors.Is(rerr, fsm.ErrNotFound) {
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
	if d.jr.timer != nil {
		d.jr.timer.Stop()
		d.jr.timer = nil
	}
	d.notifyLocked()
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
	d.ra.stop()
	d.mu.Lock()
	d.svc.accountDirty(-(d.cache.bytes + d.wb.bytes))
	d.cache.bytes, d.wb.bytes = 0, 0
	d.cache.dirty, d.wb.inflight = map[uint64]*dblock{}, map[uint64]*dblock{}
	d.cache.fifo = nil
	d.mu.Unlock()
}
