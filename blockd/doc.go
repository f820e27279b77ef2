// Package blockd serves vdisks: virtual block devices whose content lives in
// the chunk store as a tree of chunks and whose root (the head) lives in
// Raft. It is the successor of 0-Disk.
//
// # Model
//
// A vdisk of size S and block size B is a map block index -> chunk Ref kept
// as a copy-on-write tree (package blockd/tree): leaves hold block Refs,
// interior nodes hold child Refs, the root Ref is the vdisk's head in the
// control plane (raft/fsm VDisk.Head). Absent blocks (never written,
// trimmed, or zeroed) cost nothing and read as zeroes; identical blocks are
// one chunk (dedup across vdisks for free); a block is stored without its
// trailing zero bytes. The tree encoding is canonical, so equal content has
// an equal root whatever its history. Hence:
//
//   - snapshot = record the head (O(1)); clone = a new vdisk whose head is a
//     snapshot's (O(1), copy-on-write); rollback = move the head back;
//   - diff of two versions walks both trees and skips equal subtrees
//     (Service.Diff: changed byte ranges, for incremental backups);
//   - export walks the tree (holes as zeroes without store reads), import
//     builds one (zero blocks skipped).
//
// # Engine
//
// A vdisk opened read-write on a node (Service.Open, one shared Disk per
// vdisk whatever the number of NBD connections) holds the vdisk's lease,
// renewed in the background. The Disk's state is split into parts, one
// file each, under one mutex:
//
//   - the dirty blocks (cache.go). A sector-aligned write into a block
//     whose content is in memory (dirty, being written back, or in the
//     block cache with its tree path in the node cache) completes the
//     block at once; into a block that is not, it records only its
//     sectors (a partial block) and never waits for the block's old
//     content, which is prefetched (queued, and read by a few runners in
//     batched store reads, not a read and a goroutine per write) and
//     merged at write-back. Only
//     unaligned writes into uncached blocks read the block first. TRIM
//     and WRITE_ZEROES of whole blocks record zero blocks or, for large
//     ranges, a zeroed span.
//   - write-back (writeback.go): background jobs store the oldest dirty
//     blocks as chunks as soon as Config.WritebackBytes are dirty (or the
//     write-back memory of the whole node passes half of
//     Config.NodeDirtyBytes), Config.Parallelism at a time, so writers
//     only wait when Config.MaxDirtyBytes of the vdisk or NodeDirtyBytes
//     of the node are in memory (then every vdisk of the node writes
//     back; writes fail with an error, EIO to NBD clients, if writing back
//     keeps failing). A failed store puts its block back in memory.
//     Partial blocks are completed together (complete.go): a job takes
//     the partial blocks of one stretch (a commit: up to 64 of them at a
//     time), reads their bases in one batched read, and stores the
//     stretch packed, so random 4 KiB writes into 16 KiB blocks cost a
//     read and a chunk per stretch written back, not per block.
//     Writers that wait are let in first come, first served, so a
//     request waits for the bytes queued ahead of it to drain, not for
//     the luck of the race for freed room.
//   - the layers (layers.go): zeroed spans and the Refs of stored blocks
//     not yet in the tree, frozen layers of commits in progress, and the
//     committed tree at the head.
//   - sequence numbers and commits (commit.go), the lease (lease.go), the
//     journal capture (journal.go), reads (read.go).
//
// # Durability: what a FLUSH covers
//
// Every mutation takes write sequence numbers as it changes the cache, and
// every completed one (its reply about to be sent) is counted. A FLUSH (or
// FUA) covers the mutations counted before it, and is answered only once
// each of them is durable in one of two ways:
//
//   - committed: a commit started after it (so it covers its sequence
//     numbers) stored its blocks and tree nodes and moved the head in
//     Raft; or
//   - journaled: it is in a record appended to the vdisk's journal on m+1
//     storage nodes, and nothing completed before it is missing from the
//     journal (below).
//
// If neither can be reached (the chunk store refuses, the journal and the
// commit both fail) the FLUSH fails (EIO to NBD clients, logged with the
// reason); the data stays in the cache and a later FLUSH can still
// succeed. checkLocked (status.go) asserts this rule and the parts'
// invariants in builds with the invariants tag, which the model, crash and
// end-to-end tests use.
//
// A commit (FLUSH without a usable journal, the journal's follow-up,
// every Config.WritebackInterval, or when the pending layer grows large)
// names every block dirtied before it (it hashes the complete ones itself;
// partial ones are completed from their bases by jobs it starts, and
// then taken as complete ones), freezes the current layer and applies the frozen layers to the
// tree in memory (tree.Batch; path copying). A node's Ref is the hash of
// its content, so the whole new tree is known before anything is stored:
// the commit's blocks go to the store as it hashes them, in rounds of 8
// MiB through the disk's Batcher (with the Refs it computed, which the
// store takes rather than hashing every byte again:
// chunkstore.NamedBatchReceiver), and the new nodes follow in the last
// round, at most four rounds ahead of the store (ownRoundsInFlight: named
// rounds copy their blocks into extent buffers, and a commit that named
// a gigabyte at once held it twice). Each round frees its blocks' memory
// as soon as it is answered, so a commit that takes a full write-back cache (a gigabyte) drains it
// steadily rather than holding every writer until its last put. It
// waits for the write-back jobs it counts on (blocks in flight when it
// froze), and takes over one that fails: it stores that block itself,
// once, rather than failing the FLUSH for a job that started before it
// (also when a zeroing covered the block meanwhile: the frozen layer
// names it). A block a failed round of the commit gave back to the cache
// is the cache's again: the commit never ends it a second time, even if
// a write-back job has taken it since.
// If a takeover fails, the commit fails, and every failed block it did
// not get to goes back to the cache for the next FLUSH.
// Then it moves the head as a compare-and-swap carrying the lease epoch. A
// node that lost its lease (paused, partitioned, taken over) can never
// move the head again: its flushes fail, it turns read-only and logs
// loudly.
//
// # Write journal
//
// Every completed write, trim and zeroing is also captured (offset,
// length, bytes), and a FLUSH appends what was captured since the last
// one as one record to the vdisk's journal (chunkstore/journal) on m+1
// storage nodes of its pool (k+m), answering once all of them have it on
// disk. The commit follows in the background (after 50 ms, or at once when
// 4 MiB were appended) and moves the head's journal mark in Raft
// (VDisk.JournalEpoch/JournalSeq) to say which records the head holds;
// covered records are trimmed. So an answered FLUSH survives kill -9 of
// the serving process and the loss of up to m storage nodes, at the cost
// of one replicated append instead of a store round plus a Raft commit:
// what Ceph RBD and Longhorn pay per flush.
//
// The journal is skipped, and a FLUSH commits, when it would not pay or
// cannot be trusted: more than 16 MiB captured since the last FLUSH (bulk
// writes: the commit stores them at the store's rate anyway), more than
// 32 MiB appended and not yet committed, for 10 s after an append failed
// (a journal node may be down and not yet marked so), and for cache
// vdisks (not redundant, so no journal). A mutation the capture dropped
// (or whose append failed) keeps every later FLUSH on the commit path
// until a commit covers it: the journal never answers for less than
// everything the FLUSH covers.
//
// Takeover: a node attaching the vdisk read-write reads the journal from
// every storage node that answers (all but m must), which seals it with
// the new lease epoch on each of them, so the old writer can no longer get
// an append acknowledged by all m+1 nodes (it also stops answering from
// the journal once its lease is past). It replays, oldest first, the
// records of older epochs after the head's mark, commits, and marks at
// least (its epoch, 0), so no older record is ever replayed again. Replay
// is idempotent: a record the head already holds rewrites the same bytes.
// Concurrent overlapping writes are replayed in the order they completed,
// which the NBD protocol leaves undefined anyway. The control plane
// records the takeover (fsm.Takeover: the failed writer, its last lease
// renewal, the new lease) and the new writer's first write; vdisk info
// and zos_blockd_takeover_seconds report the time between them.
//
// # Reading the head from any node
//
// Operations that read the head (snapshot, clone of the current head,
// export, diff, shrink, NAME:ro attaches) first make it hold every write
// acknowledged so far, on any node (Service.settle): a vdisk attached
// read-write on this node is committed; one attached on another node is
// committed there (Config.Peers: the node's POST
// /internal/v1/vdisks/NAME/sync); one whose writer failed is attached
// here for a moment, which replays its journal. A holder that cannot be
// reached is waited for until its lease lapses (then its journal is
// replayed); one that stays unreachable with a live lease makes the
// operation fail with a clear error rather than read a head that may lack
// acknowledged writes. Rollback discards the journal (the mark moves past
// every epoch so far); a deleted vdisk's journal is dropped, and is named
// by the vdisk's creation time so that a vdisk created again under the
// same name never sees it.
//
// Read-only opens (NAME:ro, the head at open time, and NAME@SNAP) take no
// lease and share one Disk per head.
//
// # Reads
//
// Reads look at the write-back cache (dirty blocks, with the sectors of
// partial ones taken first and the rest from their base), then the layers,
// then the committed tree; a node-wide LRU of clean blocks and one of tree
// nodes (both keyed by Ref, so clones share their origin's cache) spare
// the store. A block is verified once, when the store returns it (the
// store checks it against its Ref); reads of cached blocks then copy from
// memory with no store round trip, goroutine or allocation, and blocks
// written back stay in the clean cache. The blocks a read misses are
// resolved together (tree paths from the node cache, else one tree walk
// over the range) and fetched with one GetMany of the block cache, which
// coalesces with fetches in flight and passes the rest to the store as
// one chunkstore.FetchMany: on the erasure store one shard request per
// node for the whole read instead of one round per 16 KiB block.
//
// Readahead (readahead.go), after Linux's on-demand readahead: a read
// that starts where one of the last four reads ended, or inside what was
// read ahead, is sequential, and the blocks after it are fetched into the
// block cache in the background with FetchMany, in pieces of up to 2 MiB,
// four at a time per vdisk. The window starts at 256 KiB (or twice the
// read), is renewed when the reader is within half of it of its end and
// doubles each time up to Config.ReadaheadBytes (16 MiB; at most 1/8 of
// the block cache); any other read resets it. Dirty blocks, blocks in
// memory and cached blocks are skipped. Readahead never holds the disk's
// lock while fetching and never fails a read: a read of a block being
// read ahead waits for that fetch and fetches the block itself if it
// failed; readahead's own errors are counted
// (zos_blockd_readahead_errors_total) and logged at debug level.
//
// # Extents
//
// Write-back stores the complete dirty blocks of one aligned stretch of
// Config.ExtentBytes (DefaultExtentBytes = 1 MiB) as ONE chunk, the
// blocks back to back, zero padded to the block size, whether they are
// contiguous (a sequential run) or scattered (random writes that fell in
// the stretch: a pack); a commit does the same with the blocks it takes. Each block's leaf entry (tree.Entry) keeps its content Ref — the
// Ref it would have as a chunk of its own, so Diff, the block cache and
// clones see the same identity whatever the layout — and names its place:
// block Slot of extent Ext of Blocks blocks. Large I/O then costs per
// byte, not per block: one chunk to hash, code, frame and index per run,
// one shard per node to read back. Random writes cost per stretch
// written back, not per block: a write-back cache of 512 MiB of random
// 4 KiB blocks over a 4 GiB disk holds about 32 blocks per stretch, one
// chunk instead of 32 (the store's rate for small chunks, about 9k per
// second on the benchmark machine, was the bound of random writes). A
// block alone in its stretch is still a chunk of its own, and dedups as
// before.
//
// Reads of extent blocks (extent.go, readEntries): when a read (or
// readahead) wants at least a quarter of an extent, the extent is fetched
// whole with the read's other chunks (one FetchMany, verified against its
// Ref); otherwise only the wanted blocks are read, as byte ranges of the
// extent (chunkstore.FetchRanges: on the erasure store one request per
// node for the batch, of just the bytes, from the data shard that holds
// them). A range cannot be checked against the chunk's Ref, so each block
// read this way is hashed and compared with its content Ref; a range that
// fails or does not match is read again with the whole extent, through
// Fetch's degraded reads and repair. A random 4 KiB read of a disk written
// sequentially is thus one request of 16 KiB, not a 1 MiB fetch. The
// blocks of an extent fetched whole for at least three quarters of them
// (a sequential read, also over stretches random writes have partly
// superseded) are slices of the fetched chunk, not copies, each reaching
// to the next wanted block so that the block cache counts the unwanted
// bytes between (sharedExtentShare); fewer are copied out, so that a
// cached block does not keep a mostly unwanted megabyte alive.
//
// An overwrite of part of an extent gives the overwritten blocks new
// entries and leaves the others pointing into the old extent, which stays
// in the store (GC marks every Ext a tree names) while any block names
// it. Packing random writes would let that grow without bound (a pack
// lives until the last of its scattered blocks is overwritten), so the
// cleaner (clean.go) rewrites, unchanged, the live blocks of every extent
// of a stretch that is at most half live: at once when the stretch's
// chunks hold more than three times its size, else once the vdisk has
// rested a second. The head then names only extents more than half live,
// and a vdisk holds less than twice its live data in the store (snapshots
// aside; a clone's rewrite copies blocks it shares with its origin, as a
// Ceph clone copies up the object it first writes to).
// A leaf with any extent entry is stored in the tree's format 2; leaves
// of blocks stored alone keep format 1, byte for byte, so vdisks written
// before extents read unchanged and dedup with new trees of small writes.
// With Config.ExtentBytes below two blocks every block is its own chunk.
//
// Block status comes from the tree:
// absent blocks are hole+zero, blocks zeroed with NO_HOLE are allocated
// zero (the empty chunk), the rest is data.
//
// vdisk types follow 0-Disk: boot (from an image or snapshot; a clone
// defaults to it), db (persistent; the default), cache (stored through the
// pool's non-redundant profile: Config.StoreFor chooses the store by pool
// and type), tmp (deleted when its last read-write connection detaches).
// Cache and non-cache vdisks cannot be cloned into each other because
// their chunks live in different stores.
//
// # Usage
//
//	svc, _ := blockd.New(blockd.Config{Node: id, Control: raftServer, StoreFor: storeFor, Registerer: reg})
//	defer svc.Close()
//	srv, _ := nbd.New(nbd.Config{Exports: svc.Exports()}) // NAME, NAME:ro, NAME@SNAP
//	go srv.Serve(ctx, ln)
//	blockd.RegisterHTTP(mux, svc) // /api/v1/vdisks…
//
// # Memory
//
// A node holds at most Config.NodeDirtyBytes of write-back data (each
// vdisk at most MaxDirtyBytes), BlockCacheBytes of clean blocks and
// NodeCacheBytes of tree nodes, plus the buffers of requests in flight;
// by default 4 GiB, 1 GiB, 1 GiB and 256 MiB, capped at 1/4, 1/8, 1/8 and
// 1/32 of the memory the process may use (RAM, or its cgroup's limit).
// The write-back cache plays the page cache's part under qemu-nbd: a
// vdisk whose hot set fits in it absorbs rewrites without store round
// trips until a FLUSH or the WritebackInterval commit, and that commit
// pays for them, storing every dirty block at the chunk store's rate.
//
// # Block size and fanout
//
// DefaultBlockSize is 16 KiB and DefaultFanout 256, chosen from the
// measurements in docs/benchmarks.md ("vdisk block size" and "tree
// fanout"). The worst case is synced random writes: a FLUSH that commits
// stores every block written since the last one, whole, and the chunk
// store costs per chunk and per byte, so a 4 KiB synced write costs a 16
// KiB chunk rather than a 64 KiB one; 16 KiB also gives the most random
// IOPS once the working set exceeds the caches (a 4 KiB write dirties, and
// a 4 KiB read fetches, a quarter of the bytes of 64 KiB). Its costs:
// sequential writes that overflow the write-back cache pay per chunk, four
// times the chunks of 64 KiB, and a tree of 2 GiB per TiB (0.2%). vdisks
// written mostly sequentially (boot images, backups) can pick 64 KiB at
// create time. With extents, sequential data is stored in 1 MiB chunks
// whatever the block size, and the block size is the unit of random
// I/O: a 4 KiB write into a 16 KiB block is a read-modify-write of the
// block at write-back (the bases of a stretch's partial blocks read in
// one batch, complete.go), so vdisks that live on random 4 KiB I/O
// (databases) do better with 4 KiB blocks (more than twice the random
// IOPS beyond the caches, and fewer synced writes' bytes), at the price
// of per-block work on sequential reads, which within the caches makes
// them slower (docs/benchmarks.md, "Extents and ranged shard reads" and
// "Beyond the caches"). A fanout of 256 (8 KiB full nodes) keeps a 1 TiB vdisk at 3
// levels and writes fewer tree chunks per flush than smaller fanouts.
package blockd
