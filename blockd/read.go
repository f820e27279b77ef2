package blockd

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/zosproject/zos/blockd/internal/par"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/chunkstore"
)

// --- reads ---

// ReadAt implements nbd.Export.
func (d *Disk) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := d.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	type miss struct {
		idx   uint64
		inOff int
		dst   []byte
		src   source
		mask  []uint64 // sectors already filled from a partial dirty block
	}
	var misses []miss
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
		m := miss{idx: idx, inOff: inOff, dst: dst, src: src}
		if b != nil { // partial: take its sectors now
			copy(dst, b.data[inOff:])
			m.mask = slices.Clone(b.mask)
		}
		d.mu.Unlock()
		misses = append(misses, m)
	}
	if len(misses) == 0 {
		d.svc.m.readBytes.Add(float64(len(p)))
		return nil
	}
	err := par.Do(ctx, len(misses), d.svc.cfg.Parallelism, func(ctx context.Context, i int) error {
		m := misses[i]
		data, err := d.content(ctx, m.idx, m.src)
		if err != nil {
			return err
		}
		if m.mask == nil {
			copyBlock(m.dst, data, m.inOff)
			return nil
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
		return nil
	})
	if err != nil {
		d.log.Warn("read failed", "off", off, "len", len(p), "err", err)
		return err
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
	return par.Do(ctx, len(idxs), d.svc.cfg.Parallelism, func(ctx context.Context, i int) error {
		_, err := d.content(ctx, idxs[i], srcs[i])
		return err
	})
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
		refs  map[uint64]chunkstore.Ref
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
		v := lview{zeros: spans(l.zeros.overlapping(b0, b1)), refs: map[uint64]chunkstore.Ref{}}
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
	err := d.tree.Walk(ctx, head, b0, b1, func(i uint64, ref chunkstore.Ref) error {
		if len(tr) >= 2*maxStatusExtents {
			b1 = i // describe up to here
			return errStop
		}
		tr[i] = ref
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
			if r, ok := l.refs[i]; ok {
				return refFlags(r)
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
