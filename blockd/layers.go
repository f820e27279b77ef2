package blockd

import (
	"context"
	"fmt"
	"slices"

	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
)

// layerState is what is stored below the write-back cache: the current
// layer, the frozen layers of commits in progress, and the committed head.
type layerState struct {
	head   chunkstore.Ref // committed head
	cur    *layer
	frozen []*layer // oldest first
	gen    uint64   // bumped when the layers below the dirty one change
}

// layer is stored state not yet in the tree: zeroed spans and the Refs of
// written-back blocks (the zero Ref: absent). Within a layer, spans are
// newer than the refs they cover (storing a block takes it out of the
// spans).
type layer struct {
	zeros spans
	refs  map[uint64]tree.Entry
}

func newLayer() *layer { return &layer{refs: map[uint64]tree.Entry{}} }

func (l *layer) empty() bool { return len(l.zeros) == 0 && len(l.refs) == 0 }

// pendingRefs lists the block chunks stored (or being stored) but not yet
// under the committed head.
func (d *Disk) pendingRefs() []chunkstore.Ref {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []chunkstore.Ref
	for _, l := range append([]*layer{d.layers.cur}, d.layers.frozen...) {
		for _, e := range l.refs {
			if fetchable(e.Ref) {
				out = append(out, e.Chunk())
			}
		}
	}
	for _, b := range d.wb.inflight {
		if b.hashed && fetchable(b.ent.Ref) {
			out = append(out, b.ent.Chunk())
		}
	}
	return out
}

// blockData returns the content of the block with entry e (trimmed; nil
// for zeroes) through the block cache.
func (d *Disk) blockData(ctx context.Context, idx uint64, e tree.Entry) ([]byte, error) {
	if !fetchable(e.Ref) {
		return nil, nil
	}
	got, err := d.fetchMany(ctx, []uint64{idx}, []tree.Entry{e}, []int{0})
	if err != nil {
		return nil, err
	}
	return got[0], nil
}

// source is where the content of a block below the dirty layer is.
type source struct {
	kind int // srcZero, srcMem, srcRef, srcTree
	data []byte
	ent  tree.Entry
	head chunkstore.Ref
}

const (
	srcZero = iota
	srcMem
	srcRef
	srcTree
)

// belowDirtyLocked resolves block idx in the layers under the dirty one.
func (d *Disk) belowDirtyLocked(idx uint64) source {
	if b := d.wb.inflight[idx]; b != nil && !b.superseded {
		if b.data == nil {
			return source{kind: srcZero}
		}
		return source{kind: srcMem, data: b.data}
	}
	ls := d.layers.frozen
	for k := len(ls); k >= 0; k-- {
		l := d.layers.cur
		if k < len(ls) {
			l = ls[k]
		}
		if len(l.zeros) > 0 && l.zeros.contains(idx) {
			return source{kind: srcZero}
		}
		if e, ok := l.refs[idx]; ok {
			if !fetchable(e.Ref) {
				return source{kind: srcZero}
			}
			return source{kind: srcRef, ent: e}
		}
	}
	return source{kind: srcTree, head: d.layers.head}
}

// content returns the (possibly trimmed; nil for zeroes) content of src.
func (d *Disk) content(ctx context.Context, idx uint64, src source) ([]byte, error) {
	switch src.kind {
	case srcMem:
		return src.data, nil
	case srcRef:
		return d.blockData(ctx, idx, src.ent)
	case srcTree:
		e, err := d.tree.Lookup(ctx, src.head, idx)
		if err != nil {
			return nil, fmt.Errorf("blockd: vdisk %s: block %d: %w", d.label, idx, err)
		}
		return d.blockData(ctx, idx, e)
	}
	return nil, nil
}

// cachedLocked returns src's content (possibly trimmed; nil for zeroes)
// if it is in memory: the write-back cache, or the block cache with the
// tree path in the node cache. It never reads the store, so it may be
// called with d.mu held. The content is immutable.
func (d *Disk) cachedLocked(idx uint64, src source) ([]byte, bool) {
	ref := src.ent.Ref
	switch src.kind {
	case srcZero:
		return nil, true
	case srcMem:
		return src.data, true
	case srcTree:
		e, ok := d.tree.LookupCached(src.head, idx)
		if !ok {
			return nil, false
		}
		ref = e.Ref
	}
	if !fetchable(ref) {
		return nil, true
	}
	b, ok := d.svc.blocks.Peek(ref)
	if !ok || int64(len(b)) > d.bs { // blockData reports an oversized block
		return nil, false
	}
	return b, true
}

func reversed(ls []*layer) []*layer {
	out := slices.Clone(ls)
	slices.Reverse(out)
	return out
}
