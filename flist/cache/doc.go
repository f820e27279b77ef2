// Package cache is the node's persistent chunk cache for flist mounts: a
// bounded, content-addressed LRU of objects in one directory, shared by
// every mount on the node, including mounts served by other processes.
//
// Objects are chunks (named by their Ref) and assembled files (the
// concatenation of a file's chunks, named by FileKey, used for FUSE
// passthrough). Layout:
//
//	DIR/lock          flock'ed by writers; its first 8 bytes hold the usage
//	DIR/c/ab/<ref>    a chunk
//	DIR/f/ab/<key>    an assembled file
//	DIR/tmp/          objects being written
//
// Guarantees:
//   - Objects are immutable and appear atomically (written to tmp/, then
//     renamed), so a reader never sees a partial object.
//   - The bytes in DIR (objects and temporaries) never exceed MaxBytes:
//     a writer reserves the size under the lock before writing, evicting
//     least recently used objects down to LowWater×MaxBytes when needed.
//     Recency is the file's mtime, refreshed on use (at most once per
//     TouchInterval per object and process), so it is shared by all
//     processes. Accounting is recomputed from disk at Open and at every
//     eviction, so crashes cannot make it drift for long.
//   - Eviction is safe while objects are in use: an unlinked file stays
//     readable through descriptors already open (passthrough files, the
//     reader's descriptor cache); later opens miss and refetch.
//   - Objects written by another process are verified (BLAKE3 against the
//     Ref for chunks, or the caller's verify function) the first time this
//     process uses them; a corrupt object is deleted and reported as a miss.
//     No fsync is done: a crash can leave garbage only in objects that
//     will fail this check.
//
// Usage:
//
//	c, err := cache.Open(cache.Config{Dir: "/var/cache/zos/chunks", MaxBytes: 10 << 30})
//	n, err := c.ReadAt(cache.ChunkKey(ref), buf, off) // ErrMiss if absent
//	err = c.Put(cache.ChunkKey(ref), verifiedData)
package cache
