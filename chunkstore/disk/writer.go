package disk

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/zosproject/zos/chunkstore"
)

type opKind int

const (
	opPut opKind = iota
	opDelete
	opQuarantine
	opRelocate
)

// op is one unit of work for the writer goroutine.
type op struct {
	kind   opKind
	shards []chunkstore.Shard    // opPut
	bytes  int64                 // opPut: data bytes
	keys   []chunkstore.ShardKey // opDelete, opQuarantine
	before int64                 // opDelete: only shards written before
	qloc   loc                   // opQuarantine: only if the index still says this
	relocs []reloc               // opRelocate
	done   chan struct{}         // closed when applied (or failed)
	state  atomic.Int32          // opQueued, then opTaken by the writer or opAbandoned by its caller
	err    error
	// results
	deleted int
}

// op states: the writer takes an op, or its cancelled caller abandons it,
// whichever comes first (an abandoned op is never applied).
const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

// take claims o for the writer; false if its caller abandoned it.
func (o *op) take() bool { return o.state.CompareAndSwap(opQueued, opTaken) }

// reloc moves a verified record out of a segment being compacted.
type reloc struct {
	key    chunkstore.ShardKey
	from   loc
	record []byte // header + data
}

// writeLoop is the single writer: it applies ops in groups, one segment
// fsync and one synced index commit per group (group commit). The two are
// pipelined: the committer goroutine commits group N's index batch while
// the writer gathers group N+1, appends it and syncs the segment, so the
// two fsyncs of consecutive groups overlap (the disk serves concurrent
// syncs nearly as fast as one) and a group gathers the requests that came
// in during one fsync, not two. Ordering keeps crash safety: a group's
// index batch is committed after its records are synced and after the
// previous group's commit. A group with anything but puts (deletes,
// quarantines, relocations) waits for the previous commit first, so that
// it sees the index as it is.
func (s *Store) writeLoop() {
	defer close(s.stopped)
	commits := make(chan *group)
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		for g := range commits {
			s.commit(g)
		}
	}()
	var prev *group // handed to the committer, maybe still committing
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.closing:
			close(commits)
			<-committerDone
			s.failPending()
			return
		}
		if !first.take() {
			continue
		}
		group := []*op{first}
		size := first.bytes
		puts := first.kind == opPut
	drain:
		for size < s.cfg.MaxBatchBytes && len(group) < 1024 {
			select {
			case o := <-s.ops:
				if o.take() {
					group = append(group, o)
					size += o.bytes
					puts = puts && o.kind == opPut
				}
			default:
				break drain
			}
		}
		if prev != nil && !puts {
			<-prev.committed
		}
		if g := s.prepare(group, prev); g != nil {
			commits <- g // waits for the previous commit to end
			prev = g
		}
	}
}

func (s *Store) failPending() {
	for {
		select {
		case o := <-s.ops:
			if o.take() {
				o.err = ErrClosed
				close(o.done)
			}
		default:
			return
		}
	}
}

// group is the state of one group commit: the index batch, read-your-writes
// view of it, and accounting deltas applied only if the commit succeeds.
type group struct {
	s       *Store
	ops     []*op
	prev    *group // the group before, maybe still committing: its pending is read-your-writes too
	start   time.Time
	b       *pebble.Batch
	pending map[chunkstore.ShardKey]*loc // nil: deleted in this group
	live    map[uint32]int64
	shards  int64
	bytes   int64
	written int64
	wrote   bool // appended to a segment
	now     int64
	wseg    *segment // the segment s.wbuf's records go to
	woff    int64    // at this offset
	endSeg  uint32   // the active segment once prepared

	committed chan struct{} // closed when the committer is done with it
}

func (g *group) get(k chunkstore.ShardKey) (loc, bool, error) {
	if l, ok := g.pending[k]; ok {
		if l == nil {
			return loc{}, false, nil
		}
		return *l, true, nil
	}
	if g.prev != nil {
		select {
		case <-g.prev.committed:
			g.prev = nil // in the index now
		default:
			// Read only: the committer does not touch pending.
			if l, ok := g.prev.pending[k]; ok {
				if l == nil {
					return loc{}, false, nil
				}
				return *l, true, nil
			}
		}
	}
	if !g.s.filter.mayContain(k) {
		g.s.metrics.filterSkips.Inc()
		return loc{}, false, nil
	}
	l, err := g.s.lookup(k)
	if errors.Is(err, chunkstore.ErrNotFound) {
		return loc{}, false, nil
	}
	return l, err == nil, err
}

func (g *group) set(k chunkstore.ShardKey, l loc) error {
	if err := g.b.Set(indexKey(k), l.encode(), nil); err != nil {
		return err
	}
	g.pending[k] = &l
	g.s.filter.add(k)
	g.s.noteProfile(k.Profile)
	return nil
}

func (g *group) del(k chunkstore.ShardKey, old loc) error {
	if err := g.b.Delete(indexKey(k), nil); err != nil {
		return err
	}
	g.pending[k] = nil
	g.live[old.seg] -= old.recordLen()
	g.shards--
	g.bytes -= int64(old.size)
	return nil
}

// matching lists the concrete keys (with their locations) that a possibly
// wildcard key matches, as seen by this group.
func (g *group) matching(q chunkstore.ShardKey) ([]chunkstore.ShardKey, []loc, error) {
	if !q.IsQuery() {
		l, ok, err := g.get(q)
		if err != nil || !ok {
			return nil, nil, err
		}
		return []chunkstore.ShardKey{q}, []loc{l}, nil
	}
	var keys []chunkstore.ShardKey
	var locs []loc
	seen := map[chunkstore.ShardKey]bool{}
	err := g.s.scanRef(q.Ref, func(k chunkstore.ShardKey, l loc) bool {
		if !q.Matches(k) {
			return true
		}
		seen[k] = true
		if p, ok := g.pending[k]; ok {
			if p == nil {
				return true
			}
			l = *p
		}
		keys = append(keys, k)
		locs = append(locs, l)
		return true
	})
	for k, p := range g.pending {
		if p != nil && !seen[k] && q.Matches(k) {
			keys = append(keys, k)
			locs = append(locs, *p)
		}
	}
	return keys, locs, err
}

// Records of a group are gathered in the writer's buffer and written with
// one pwrite per writeBufSize (a batch of 32 small shards is one system
// call, not 64); records of at least writeDirect bytes are written from
// the caller's buffer. The buffer is flushed before a segment is synced or
// rolled.
const (
	writeBufSize = 1 << 20
	writeDirect  = 256 << 10
)

// append writes one record to the active segment, rolling it first if it
// is full, and returns its location. The bytes may stay in the write
// buffer until flush.
func (g *group) append(si chunkstore.ShardInfo, data, record []byte) (loc, error) {
	s := g.s
	n := int64(recHeaderLen) + int64(si.Size)
	seg := s.active
	if s.rollNext || (seg.size.Load()+n > s.cfg.SegmentSize && seg.size.Load() > segHeaderLen) {
		if err := s.roll(g); err != nil {
			return loc{}, err
		}
		seg = s.active
	}
	off := seg.size.Load()
	if n >= writeDirect {
		if err := g.flush(); err != nil {
			return loc{}, err
		}
		if record == nil {
			hdr := make([]byte, recHeaderLen)
			recordHeader(hdr, si)
			if err := writeFull(seg, hdr, off); err != nil {
				return loc{}, err
			}
			if err := writeFull(seg, data, off+recHeaderLen); err != nil {
				return loc{}, err
			}
		} else if err := writeFull(seg, record, off); err != nil {
			return loc{}, err
		}
	} else {
		if len(s.wbuf) > 0 && (int64(len(s.wbuf))+n > writeBufSize || g.wseg != seg || g.woff+int64(len(s.wbuf)) != off) {
			if err := g.flush(); err != nil {
				return loc{}, err
			}
		}
		if len(s.wbuf) == 0 {
			g.wseg, g.woff = seg, off
		}
		if record == nil {
			at := len(s.wbuf)
			s.wbuf = append(s.wbuf, make([]byte, recHeaderLen)...)
			recordHeader(s.wbuf[at:], si)
			s.wbuf = append(s.wbuf, data...)
		} else {
			s.wbuf = append(s.wbuf, record...)
		}
	}
	seg.size.Store(off + n)
	g.wrote = true
	g.written += n
	l := loc{seg: seg.id, off: off, size: si.Size, chunk: si.ChunkSize, sum: si.Sum, written: si.Written}
	g.live[seg.id] += n
	return l, nil
}

// flush writes the buffered records. The buffer is emptied whatever the
// outcome (a failed group is acknowledged to no one).
func (g *group) flush() error {
	s := g.s
	if len(s.wbuf) == 0 {
		return nil
	}
	err := writeFull(g.wseg, s.wbuf, g.woff)
	s.wbuf = s.wbuf[:0]
	return err
}

func writeFull(seg *segment, b []byte, off int64) error {
	if len(b) == 0 {
		return nil
	}
	n, err := seg.f.WriteAt(b, off)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("%w: write segment %d: %v", ErrIO, seg.id, err)
	}
	return nil
}

// roll seals the active segment (syncing what this group wrote to it) and
// starts a new one.
func (s *Store) roll(g *group) error {
	if err := g.flush(); err != nil {
		return err
	}
	old := s.active
	if g.wrote && !s.cfg.NoSync && !s.rollNext {
		if err := old.f.SyncData(); err != nil {
			s.rollNext = true
			return fmt.Errorf("%w: sync segment %d: %v", ErrIO, old.id, err)
		}
		s.synced(old)
	}
	seg, err := s.createSegment(old.id + 1)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.segs[seg.id] = seg
	s.active = seg
	s.mu.Unlock()
	s.rollNext = false
	// The sealed segment may now be all dead; the compactor will see it.
	return nil
}

// prepare applies ops to the active segment and syncs it: the first half
// of a group commit, run by the writer. It returns the group to commit,
// or nil when it failed (its ops are then answered with the error). prev
// is the group before it, whose index batch may still be committing.
func (s *Store) prepare(ops []*op, prev *group) *group {
	g := &group{
		s:         s,
		ops:       ops,
		prev:      prev,
		start:     time.Now(),
		b:         s.db.NewBatch(),
		pending:   map[chunkstore.ShardKey]*loc{},
		live:      map[uint32]int64{},
		now:       s.cfg.Now().UnixNano(),
		committed: make(chan struct{}),
	}
	startSeg, startOff := s.active, s.active.size.Load()
	var err error
	for _, o := range ops {
		if err = s.applyOne(g, o); err != nil {
			break
		}
	}
	if err == nil {
		err = g.flush()
	} else {
		s.wbuf = s.wbuf[:0] // the group fails: nothing of it is written
	}
	if err == nil && g.wrote && !s.cfg.NoSync {
		if serr := s.active.f.SyncData(); serr != nil {
			// After a failed fsync the file's unsynced state is unknown;
			// never append to it again.
			s.rollNext = true
			err = fmt.Errorf("%w: sync segment %d: %v", ErrIO, s.active.id, serr)
		} else {
			s.synced(s.active)
		}
	}
	g.prev = nil // the committer needs no more of it
	g.endSeg = s.active.id
	if err != nil {
		// Nothing of the group is acknowledged. Appends to the segment that
		// was active at the start are overwritten by later writes; a
		// segment rolled to during the group restarts empty.
		if s.active == startSeg {
			startSeg.size.Store(startOff)
		} else {
			s.active.size.Store(segHeaderLen)
		}
		g.b.Close()
		g.fail(err)
		return nil
	}
	return g
}

// fail answers every op of g with err.
func (g *group) fail(err error) {
	s := g.s
	s.log.Error("write group failed", "ops", len(g.ops), "err", err)
	s.metrics.writeErrors.Inc()
	for _, o := range g.ops {
		o.err = err
		close(o.done)
	}
}

// commit commits g's index batch (synced) and acknowledges its ops: the
// second half of a group commit, run by the committer in group order. A
// failed commit leaves its records in the segment, synced but unindexed
// (dead bytes; the next group may already be appended behind them).
func (s *Store) commit(g *group) {
	defer close(g.committed)
	defer g.b.Close()
	if !g.b.Empty() {
		opt := pebble.Sync
		if s.cfg.NoSync {
			opt = pebble.NoSync
		}
		if err := g.b.Commit(opt); err != nil {
			g.fail(fmt.Errorf("%w: index commit: %v", ErrIO, err))
			return
		}
	}
	s.mu.RLock()
	for id, d := range g.live {
		if seg := s.segs[id]; seg != nil {
			seg.live.Add(d)
		}
	}
	s.mu.RUnlock()
	if g.endSeg > s.settled.Load() {
		s.settled.Store(g.endSeg)
	}
	s.shards.Add(g.shards)
	s.dataBytes.Add(g.bytes)
	s.written.Add(g.written)
	s.metrics.writtenBytes.Add(float64(g.written))
	s.metrics.commit.Observe(time.Since(g.start).Seconds())
	s.metrics.commitOps.Observe(float64(len(g.ops)))
	for _, o := range g.ops {
		close(o.done)
	}
}

func (s *Store) applyOne(g *group, o *op) error {
	switch o.kind {
	case opPut:
		for _, sh := range o.shards {
			old, ok, err := g.get(sh.Key)
			if err != nil {
				return err
			}
			if ok && old.sum == sh.Sum && old.size == sh.Size && old.chunk == sh.ChunkSize {
				// Same bytes already stored: refresh the write time only.
				old.written = g.now
				if err := g.set(sh.Key, old); err != nil {
					return err
				}
				continue
			}
			si := sh.ShardInfo
			si.Written = g.now
			l, err := g.append(si, sh.Data, nil)
			if err != nil {
				return err
			}
			if ok {
				g.live[old.seg] -= old.recordLen()
				g.bytes -= int64(old.size)
				g.shards--
			}
			if err := g.set(sh.Key, l); err != nil {
				return err
			}
			g.shards++
			g.bytes += int64(sh.Size)
		}
	case opDelete:
		for _, q := range o.keys {
			keys, locs, err := g.matching(q)
			if err != nil {
				return err
			}
			for i, k := range keys {
				if o.before != 0 && locs[i].written >= o.before {
					continue
				}
				if err := g.del(k, locs[i]); err != nil {
					return err
				}
				o.deleted++
			}
		}
	case opQuarantine:
		k := o.keys[0]
		cur, ok, err := g.get(k)
		if err != nil || !ok || cur.seg != o.qloc.seg || cur.off != o.qloc.off {
			return err
		}
		return g.del(k, cur)
	case opRelocate:
		for _, r := range o.relocs {
			cur, ok, err := g.get(r.key)
			if err != nil {
				return err
			}
			if !ok || cur.seg != r.from.seg || cur.off != r.from.off {
				continue // deleted or rewritten meanwhile
			}
			si := cur.info(r.key)
			l, err := g.append(si, nil, r.record)
			if err != nil {
				return err
			}
			g.live[cur.seg] -= cur.recordLen()
			if err := g.set(r.key, l); err != nil {
				return err
			}
		}
	}
	return nil
}
