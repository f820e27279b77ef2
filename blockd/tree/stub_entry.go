package tree

import (
	"context"

	"github.com/zosproject/zos/chunkstore"
)

// STUB: replaced by the treev2 branch.
type Entry struct {
	Ref          chunkstore.Ref
	Ext          chunkstore.Ref
	Slot, Blocks uint16
}

func (e Entry) IsZero() bool { return e.Ref.IsZero() }
func (e Entry) Chunk() chunkstore.Ref {
	if !e.Ext.IsZero() {
		return e.Ext
	}
	return e.Ref
}
func (e Entry) InExtent() bool { return !e.Ext.IsZero() }

func (t *Tree) Lookup(ctx context.Context, root chunkstore.Ref, idx uint64) (Entry, error) {
	r, err := t.lookupRef(ctx, root, idx)
	return Entry{Ref: r}, err
}
func (t *Tree) LookupCached(root chunkstore.Ref, idx uint64) (Entry, bool) {
	r, ok := t.lookupCachedRef(root, idx)
	return Entry{Ref: r}, ok
}
func (t *Tree) Walk(ctx context.Context, root chunkstore.Ref, from, to uint64, fn func(idx uint64, e Entry) error) error {
	return t.walkRef(ctx, root, from, to, func(i uint64, r chunkstore.Ref) error { return fn(i, Entry{Ref: r}) })
}
