package blockd

import (
	"context"
	"sync"
	"time"
)

// Readahead, after Linux's on-demand readahead: a read that starts where
// one of the last few reads ended, or inside the region read ahead, is
// sequential. The first one opens a window (256 KiB, or twice the read)
// past its end; each time a sequential reader gets within half a window of
// the end of what was read ahead, the next window is scheduled and the
// window doubles, up to Config.ReadaheadBytes (capped at 1/8 of the block
// cache). Any other read resets it. Background workers (raWorkers per
// vdisk, each fetching pieces of at most raPieceMax with one FetchMany)
// bring the blocks of the window into the block cache; a foreground read
// of a block being read ahead waits for that fetch rather than fetching it
// again, and fetches it itself if it fails. Readahead never holds d.mu
// while fetching and never fails a read: its errors are counted and
// logged at debug level.
const (
	raStreams  = 4         // read ends remembered
	raInitial  = 256 << 10 // first window
	raPieceMin = 256 << 10 // bytes per FetchMany of a worker
	raPieceMax = 2 << 20
	raWorkers  = 4 // per vdisk: at most raWorkers*raPieceMax in flight
	raTimeout  = 30 * time.Second
)

// raState is a Disk's readahead. Its mutex is its own (never d.mu): the
// trigger runs at the start of every read.
type raState struct {
	mu      sync.Mutex
	ends    [raStreams]int64 // ends of the latest reads
	next    int              // slot of ends written next
	window  int64            // current window; 0: not sequential
	start   int64            // region read ahead: [start, end)
	end     int64
	pos     int64 // the workers' next byte
	workers int
	stopped bool
	wg      sync.WaitGroup
}

// raMax is the largest readahead window; <= 0 disables readahead.
func (d *Disk) raMax() int64 {
	cfg := &d.svc.cfg
	return min(cfg.ReadaheadBytes, cfg.BlockCacheBytes/8)
}

// readahead records a read of n bytes at off and, if it is sequential,
// schedules what follows it. It never blocks on the store.
func (d *Disk) readahead(off int64, n int) {
	maxW := d.raMax()
	if maxW <= 0 || n <= 0 {
		return
	}
	end := off + int64(n)
	r := &d.ra
	r.mu.Lock()
	defer r.mu.Unlock()
	seq := off >= r.start && off < r.end
	for _, e := range r.ends {
		seq = seq || (e > 0 && e == off)
	}
	r.ends[r.next] = end
	r.next = (r.next + 1) % raStreams
	if !seq || r.stopped {
		r.window, r.start, r.end, r.pos = 0, 0, 0, 0 // workers stop
		return
	}
	if r.window == 0 {
		r.window = min(max(raInitial, 2*int64(n)), maxW)
		r.start, r.end, r.pos = off, end, end
	}
	if r.end-end > r.window/2 {
		return // enough ahead
	}
	if r.end > end { // the reader is inside what was read ahead: grow
		r.window = min(2*r.window, maxW)
	}
	from := max(r.end, end)
	to := min(d.stretchEnd(end+r.window), d.size.Load())
	if to <= from {
		return
	}
	d.svc.m.readaheadWindows.Inc()
	r.pos = max(r.pos, end) // skip what the reader overtook
	r.end = to
	for r.workers < raWorkers && r.pos < r.end {
		r.workers++
		r.wg.Add(1)
		go d.raWorker()
	}
}

// raWorker fetches pieces of the region read ahead until it is done or
// reset.
func (d *Disk) raWorker() {
	r := &d.ra
	defer r.wg.Done()
	for {
		r.mu.Lock()
		if r.stopped || r.pos >= r.end || d.ctx.Err() != nil {
			r.workers--
			r.mu.Unlock()
			return
		}
		piece := min(max(r.window/4, raPieceMin), raPieceMax)
		from := r.pos
		to := min(d.stretchEnd(from+piece), r.end)
		r.pos = to
		r.mu.Unlock()
		d.prefetch(from, to)
	}
}

// stretchEnd rounds off up to the end of its aligned stretch of extent
// blocks: windows and pieces end on stretch boundaries, so that the blocks
// of a packed extent (which all lie in one stretch) are wanted by one
// piece, which reads the extent once rather than a range of it per piece.
func (d *Disk) stretchEnd(off int64) int64 {
	x := int64(d.extentBlocks()) << d.shift
	if x <= d.bs {
		return off
	}
	return (off + x - 1) / x * x
}

// prefetch brings the blocks of [from, to) that are only in the store into
// the block cache: complete dirty blocks, blocks in memory and cached
// blocks are skipped. The base of a partial dirty block (random writes of
// less than a block) is fetched: a read of the block needs it as much as
// one of a clean block does, and so does its write-back.
func (d *Disk) prefetch(from, to int64) {
	ctx, cancel := context.WithTimeout(d.ctx, raTimeout)
	defer cancel()
	var idxs []uint64
	var srcs []source
	d.mu.Lock()
	for i := uint64(from >> d.shift); int64(i)<<d.shift < to; i++ {
		if b := d.cache.dirty[i]; b != nil && (b.complete() || b.busy) {
			continue
		}
		if src := d.belowDirtyLocked(i); src.kind == srcRef || src.kind == srcTree {
			idxs = append(idxs, i)
			srcs = append(srcs, src)
		}
	}
	d.mu.Unlock()
	if len(idxs) == 0 {
		return
	}
	_, refs, err := d.resolve(ctx, idxs, srcs)
	if err == nil {
		var need []int
		for j, e := range refs {
			if fetchable(e.Ref) && !d.svc.blocks.Contains(e.Ref) {
				need = append(need, j)
			}
		}
		var got [][]byte
		got, err = d.fetchMany(ctx, idxs, refs, need)
		for _, b := range got {
			d.svc.m.readaheadBytes.Add(float64(len(b)))
		}
	}
	if err != nil && d.ctx.Err() == nil {
		d.svc.m.readaheadErrors.Inc()
		d.log.Debug("readahead failed", "from", from, "to", to, "err", err)
	}
}

// stop ends readahead and waits for its workers (after d.ctx is
// cancelled, so their fetches end soon).
func (r *raState) stop() {
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
}
