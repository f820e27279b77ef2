// Package tree is the block tree of a vdisk: a copy-on-write radix tree of
// chunks mapping a block index (uint64) to an Entry: the block's content
// Ref and where its bytes are (a chunk of its own, or a slot of an extent
// chunk holding several consecutive blocks). Leaves hold entries, interior
// nodes hold child Refs, and a tree is named by its root Ref; the zero Ref
// is the empty tree.
//
// Guarantees:
//
//   - Canonical: a node stores a presence bitmap and only its present
//     Refs, empty nodes are never stored, and the root has the smallest
//     height that covers the largest present index. The same map always
//     gives the same root, so equal subtrees have equal Refs: Diff skips
//     them without reading them, and snapshots and clones dedup for free.
//   - Copy-on-write: Update, Punch and Truncate write only the nodes on
//     changed paths (path copying) and never modify an existing tree, so
//     every older root stays valid.
//   - Content first: an entry's Ref is the Sum of the block's bytes
//     wherever they are stored, so Diff, dedup and readers' verification
//     work on contents; an extent is only a location (Refs reports it as
//     the chunk to keep, Diff ignores blocks that merely moved).
//   - Versioned: leaves without extent entries keep format 1, byte for
//     byte the encoding trees had before extents (TestFormat1Unchanged), so
//     existing vdisks read unchanged and share subtrees with new writes;
//     only leaves with extent entries use format 2 (see node.go).
//   - Verified: nodes come from the chunk store (which checks their Ref)
//     and are validated (format, fanout, level) before use; a chunk that is
//     not a node of this tree is ErrBadNode, never a panic.
//
// Node fetches and puts of one operation run in parallel (Config.
// Parallelism); a refcache.Cache holds validated nodes across operations
// and trees.
//
// Usage:
//
//	t, _ := tree.New(store, tree.Config{Cache: cache})
//	root, _ = t.Update(ctx, root, []tree.Change{{Index: 7, Entry: tree.Entry{Ref: blockRef}}})
//	e, _ := t.Lookup(ctx, root, 7) // e.Ref, e.Chunk()
//	t.Diff(ctx, oldRoot, root, func(idx uint64, old, new chunkstore.Ref) error { … })
package tree
