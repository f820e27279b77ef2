// Package tree is the block tree of a vdisk: a copy-on-write radix tree of
// chunks mapping a block index (uint64) to the Ref of the block's chunk.
// Leaves hold block Refs, interior nodes hold child Refs, and a tree is
// named by its root Ref; the zero Ref is the empty tree.
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
//	root, _ = t.Update(ctx, root, []tree.Change{{Index: 7, Ref: blockRef}})
//	ref, _ := t.Lookup(ctx, root, 7)
//	t.Diff(ctx, oldRoot, root, func(idx uint64, old, new chunkstore.Ref) error { … })
package tree
