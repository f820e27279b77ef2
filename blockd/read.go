package blockd

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
)

// --- reads ---

// FillsReads implements nbd.FullReader: ReadAt writes every byte of p
// when it succeeds (copyBlock zeroes past a block's trimmed content, and
// holes and zero blocks read as zeroes through it).
func (*Disk) FillsReads() bool { return true }

// ReadAt implements nbd.Export. Blocks in memory are copied under d.mu;
// the others are resolved together (their tree paths from the node cache,
// else one tree walk over the range) and fetched with one GetMany of the
// block cache, so the misses of a read are one FetchMany of the store.
// Sequential reads start readahead (readahead.go).
func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	d.readahead(off, len(p))
	type miss struct {
		inOff int
		dst   []byte
		mask  []uint64 // sectors already filled from a partial dirty block
	}
	var misses []miss
	var idxs []uint64
	var srcs []source
	for pos := int64(0); pos < int64(len(p)); {
		abs := off + pos
		idx := uint64(abs >> d.shift)
		inOff := int(abs & (d.bs - 1))
		l := min(d.bs-int64(inOff), int64(len(p))-pos)
		dst := p[pos : pos+l]
		pos += l
		d.mu.Lock()
		b := d.cache.dirty[idx]
		if b != nil && b.complete() {
			copyBlock(dst, b.data, inOff)
			d.mu.Unlock()
			continue
		}
		src := d.belowDirtyLocked(idx)
		if b == nil {
			if data, ok := d.cachedLocked(idx, src); ok {
				d.mu.Unlock()
				copyBlock(dst, data, inOff) // immutable
				continue
			}
		}
		m := miss{inOff: inOff, dst: dst}
		if b != nil { // partial: take its sectors now
			copy(dst, b.data[inOff:])
			m.mask = slices.Clone(b.mask)
		}
		d.mu.Unlock()
		misses = append(misses, m)
		idxs = append(idxs, idx)
		srcs = append(srcs, src)
	}
	if len(misses) == 0 {
		d.svc.m.readBytes.Add(float64(len(p)))
		return nil
	}
	contents, err := d.contents(ctx, idxs, srcs)
	if err != nil {
		d.log.Warn("read failed", "off", off, "len", len(p), "err", err)
		return err
	}
	for j, m := range misses {
		data := contents[j]
		if m.mask == nil {
			copyBlock(m.dst, data, m.inOff)
			continue
		}
		// Fill the sectors the partial block lacks.
		for pos := 0; pos < len(m.dst); {
			abs := m.inOff + pos
			s := abs / sector
			end := min((s+1)*sector-m.inOff, len(m.dst))
			if m.mask[s/64]&(1<<(s%64)) == 0 {
				copyBlock(m.dst[pos:end], data, abs)
			}
			pos = end
		}
	}
	d.svc.m.readBytes.Add(float64(len(p)))
	return nil
}

// Cache implements nbd.Cacher: it fetches the blocks of the range into the
// block cache.
func (d *Disk) Cache(ctx context.Context, off, length int64) error {
	if err := d.checkRange(off, length); err != nil {
		return err
	}
	length = min(length, maxCacheHint)
	var idxs []uint64
	var srcs []source
	d.mu.Lock()
	for i := uint64(off >> d.shift); int64(i)<<d.shift < off+length; i++ {
		if b := d.cache.dirty[i]; b != nil && b.complete() {
			continue
		}
		if src := d.belowDirtyLocked(i); src.kind == srcRef || src.kind == srcTree {
			idxs = append(idxs, i)
			srcs = append(srcs, src)
		}
	}
	d.mu.Unlock()
	_, err := d.contents(ctx, idxs, srcs)
	return err
}

// fetchable reports whether ref names a chunk to fetch (not an absent
// block, not the empty chunk of a zero block).
func fetchable(ref chunkstore.Ref) bool { return !ref.IsZero() && ref != emptyRef }

// contents returns the (possibly trimmed; nil for zeroes) content of
// blocks idxs (ascending) whose sources are srcs, like content for each,
// with the Refs resolved together and the blocks fetched with one
// GetMany.
func (d *Disk) contents(ctx context.Context, idxs []uint64, srcs []source) ([][]byte, error) {
	out, ents, err := d.resolve(ctx, idxs, srcs)
	if err != nil {
		return nil, err
	}
	var need []int
	for j, e := range ents {
		if fetchable(e.Ref) {
			need = append(need, j)
		}
	}
	got, err := d.fetchMany(ctx, idxs, ents, need)
	if err != nil {
		return nil, err
	}
	for k, j := range need {
		out[j] = got[k]
	}
	return out, nil
}

// resolve returns the content of the blocks in memory (mem[j], for srcMem
// sources) and the entries of the others (zero: absent): those of the
// layers as they are, those of the tree from the node cache, else from one
// walk per head over the range of the blocks not cached.
func (d *Disk) resolve(ctx context.Context, idxs []uint64, srcs []source) (mem [][]byte, refs []tree.Entry, err error) {
	mem = make([][]byte, len(idxs))
	refs = make([]tree.Entry, len(idxs))
	walks := map[chunkstore.Ref]map[uint64][]int{} // head -> idx -> positions
	for j, src := range srcs {
		switch src.kind {
		case srcMem:
			mem[j] = src.data
		case srcRef:
			refs[j] = src.ent
		case srcTree:
			if r, ok := d.tree.LookupCached(src.head, idxs[j]); ok {
				refs[j] = r
				continue
			}
			w := walks[src.head]
			if w == nil {
				w = map[uint64][]int{}
				walks[src.head] = w
			}
			w[idxs[j]] = append(w[idxs[j]], j)
		}
	}
	for head, w := range walks {
		lo, hi := uint64(1<<64-1), uint64(0)
		for i := range w {
			lo, hi = min(lo, i), max(hi, i+1)
		}
		err := d.tree.Walk(ctx, head, lo, hi, func(i uint64, e tree.Entry) error {
			for _, j := range w[i] {
				refs[j] = e
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("blockd: vdisk %s: blocks %d-%d: %w", d.label, lo, hi-1, err)
		}
	}
	return mem, refs, nil
}

// fetchMany returns the blocks with entries ents[j] for j in need (got[k]
// for need[k]) through the block cache (by content Ref): one GetMany,
// whose misses are one round of the store (readEntries).
func (d *Disk) fetchMany(ctx context.Context, idxs []uint64, ents []tree.Entry, need []int) ([][]byte, error) {
	if len(need) == 0 {
		return nil, nil
	}
	want := make([]chunkstore.Ref, len(need))
	where := make(map[chunkstore.Ref]tree.Entry, len(need))
	for k, j := range need {
		want[k] = ents[j].Ref
		where[want[k]] = ents[j]
	}
	got, err := d.svc.blocks.GetMany(ctx, want, func(ctx context.Context, refs []chunkstore.Ref) ([][]byte, error) {
		es := make([]tree.Entry, len(refs))
		for i, r := range refs {
			es[i] = where[r]
		}
		return readEntries(ctx, d.store, d.bs, es)
	})
	var be *chunkstore.BatchError
	if errors.As(err, &be) {
		k := be.Failed[0]
		more := ""
		if n := len(be.Failed) - 1; n > 0 {
			more = fmt.Sprintf(" (and %d more blocks)", n)
		}
		return nil, fmt.Errorf("blockd: vdisk %s: read block %d (%s)%s: %w", d.label, idxs[need[k]], want[k].Short(), more, be.Errs[0])
	}
	if err != nil {
		return nil, fmt.Errorf("blockd: vdisk %s: read blocks: %w", d.label, err)
	}
	for k, b := range got {
		if int64(len(b)) > d.bs {
			return nil, fmt.Errorf("%w: block %s of vdisk %s is %d bytes, more than the block size %d", ErrCorruptBlock, want[k].Short(), d.label, len(b), d.bs)
		}
	}
	return got, nil
}

// --- block status ---

// BlockStatus implements nbd.Export from the tree and the write-back cache:
// absent blocks are holes that read as zeroes, allocated zero blocks read
// as zeroes, everything else is data. The cost is proportional to the
// allocated blocks in the range, not to its length.
func (d *Disk) BlockStatus(ctx context.Context, off, length int64) ([]nbd.Extent, error) {
	if err := d.checkRange(off, length); err != nil {
		return nil, err
	}
	if length == 0 {
		return nil, nil
	}
	b0 := uint64(off >> d.shift)
	b1 := uint64((off + length + d.bs - 1) >> d.shift)
	if b1-b0 > maxStatusBlocks {
		b1 = b0 + maxStatusBlocks
	}
	const hole = nbd.ExtentHole | nbd.ExtentZero
	flagsOf := func(b *dblock) nbd.ExtentFlags {
		switch {
		case b.data != nil:
			return 0
		case b.keep:
			return nbd.ExtentZero
		}
		return hole
	}
	refFlags := func(r chunkstore.Ref) nbd.ExtentFlags {
		switch {
		case r.IsZero():
			return hole
		case r == emptyRef:
			return nbd.ExtentZero
		}
		return 0
	}
	// Snapshot the in-memory layers of the range.
	var points []uint64
	dirty := map[uint64]nbd.ExtentFlags{}
	inflight := map[uint64]nbd.ExtentFlags{}
	type lview struct {
		zeros spans
		refs  map[uint64]tree.Entry
	}
	var layers []lview // newest first
	d.mu.Lock()
	head := d.layers.head
	for i, b := range d.cache.dirty {
		if i >= b0 && i < b1 {
			dirty[i] = flagsOf(b)
			points = append(points, i, i+1)
		}
	}
	for i, b := range d.wb.inflight {
		if i >= b0 && i < b1 && !b.superseded {
			inflight[i] = flagsOf(b)
			points = append(points, i, i+1)
		}
	}
	ls := append([]*layer{d.layers.cur}, reversed(d.layers.frozen)...)
	for _, l := range ls {
		v := lview{zeros: spans(l.zeros.overlapping(b0, b1)), refs: map[uint64]tree.Entry{}}
		for i, r := range l.refs {
			if i >= b0 && i < b1 {
				v.refs[i] = r
				points = append(points, i, i+1)
			}
		}
		for _, s := range v.zeros {
			points = append(points, s.from, s.to)
		}
		layers = append(layers, v)
	}
	d.mu.Unlock()

	tr := map[uint64]chunkstore.Ref{}
	errStop := errors.New("stop")
	err := d.tree.Walk(ctx, head, b0, b1, func(i uint64, e tree.Entry) error {
		if len(tr) >= 2*maxStatusExtents {
			b1 = i // describe up to here
			return errStop
		}
		tr[i] = e.Ref
		points = append(points, i, i+1)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, fmt.Errorf("blockd: vdisk %s: block status: %w", d.label, err)
	}
	state := func(i uint64) nbd.ExtentFlags {
		if f, ok := dirty[i]; ok {
			return f
		}
		if f, ok := inflight[i]; ok {
			return f
		}
		for _, l := range layers {
			if l.zeros.contains(i) {
				return hole
			}
			if e, ok := l.refs[i]; ok {
				return refFlags(e.Ref)
			}
		}
		if r, ok := tr[i]; ok {
			return refFlags(r)
		}
		return hole
	}
	points = append(points, b0, b1)
	slices.Sort(points)
	points = slices.Compact(points)

	var out []nbd.Extent
	end := min(off+length, int64(b1)<<d.shift)
	pos := off
	for k := 0; k+1 < len(points) && pos < end && len(out) < maxStatusExtents; k++ {
		p, q := points[k], points[k+1]
		if p < b0 || p >= b1 {
			continue
		}
		f := state(p)
		runEnd := min(int64(q)<<d.shift, end)
		if runEnd <= pos {
			continue
		}
		n := runEnd - pos
		if k := len(out); k > 0 && out[k-1].Flags == f {
			out[k-1].Length += n
		} else {
			out = append(out, nbd.Extent{Length: n, Flags: f})
		}
		pos = runEnd
	}
	return out, nil
}
