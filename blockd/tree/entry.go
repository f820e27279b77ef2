package tree

import (
	"fmt"

	"github.com/zosproject/zos/chunkstore"
)

// Entry is a leaf's value for one block: what the block holds and where
// its bytes are stored.
//
// Ref is the content address of the block (chunkstore.Sum of its bytes);
// it is what Diff compares, what dedup and snapshots share, and what a
// reader verifies the bytes against. A block is stored either as a chunk of
// its own (Ext zero: the chunk is Ref) or inside an extent: one chunk, Ext,
// holding Blocks consecutive blocks of which this one is number Slot, at
// byte offset Slot*blockSize.
type Entry struct {
	Ref    chunkstore.Ref
	Ext    chunkstore.Ref
	Slot   uint16
	Blocks uint16
}

// IsZero reports whether e is the empty entry (no block).
func (e Entry) IsZero() bool { return e.Ref.IsZero() }

// InExtent reports whether the block is stored inside an extent chunk.
func (e Entry) InExtent() bool { return !e.Ext.IsZero() }

// Chunk returns the chunk that holds the block's bytes: the extent, or
// the block's own chunk.
func (e Entry) Chunk() chunkstore.Ref {
	if e.InExtent() {
		return e.Ext
	}
	return e.Ref
}

// check reports why e cannot be stored in a leaf (nil when it can).
func (e Entry) check() error {
	switch {
	case e.Ref.IsZero() && (e.InExtent() || e.Slot != 0 || e.Blocks != 0):
		return fmt.Errorf("%w: extent fields without a block Ref", ErrBadEntry)
	case !e.InExtent() && (e.Slot != 0 || e.Blocks != 0):
		return fmt.Errorf("%w: slot %d of %d without an extent", ErrBadEntry, e.Slot, e.Blocks)
	case e.InExtent() && (e.Blocks == 0 || e.Slot >= e.Blocks):
		return fmt.Errorf("%w: slot %d of an extent of %d blocks", ErrBadEntry, e.Slot, e.Blocks)
	}
	return nil
}
