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
// # Engine and guarantees
//
// A vdisk opened read-write on a node (Service.Open, one shared Disk per
// vdisk whatever the number of NBD connections) holds the vdisk's lease,
// renewed in the background. The Disk keeps layers, newest first:
//
//   - dirty blocks in memory. A sector-aligned write into a block whose
//     content is in memory (dirty, being written back, or in the block
//     cache with its tree path in the node cache) completes the block at
//     once; into a block that is not, it records only its sectors (a
//     partial block) and never waits for the block's old content; that
//     content is prefetched and merged when the block is written back.
//     Only unaligned writes into uncached blocks read the block first.
//     TRIM and WRITE_ZEROES of whole blocks record zero blocks or, for
//     large ranges, a zeroed span.
//   - blocks being written back: background write-back stores the oldest
//     dirty blocks as chunks as soon as Config.WritebackBytes are dirty
//     (or the write-back memory of the whole node passes half of
//     Config.NodeDirtyBytes), Config.Parallelism at a time, so writers only
//     wait when Config.MaxDirtyBytes of the vdisk or NodeDirtyBytes of the
//     node are in memory (then every vdisk of the node writes back; writes
//     fail with an error, EIO to NBD clients, if writing back keeps
//     failing).
//   - the pending layer: zeroed spans and the Refs of stored blocks, not
//     yet in the tree; and frozen pending layers of commits in progress.
//   - the committed tree at the head.
//
// A commit (FLUSH, FUA, every Config.WritebackInterval, or when the pending
// layer grows large) names every block dirtied before it (it hashes the
// complete ones itself; partial ones are completed from their base by
// write-back jobs), freezes the pending layer and applies it to the tree
// in memory (tree.Batch; path copying: only the nodes on changed paths are
// new). A node's Ref is the hash of its content, so the whole new tree is
// known before anything is stored: the blocks and the new nodes go to the
// store in one parallel round of puts. Once they and the blocks of earlier
// write-back jobs are stored, the commit moves the head through the
// control plane as a compare-and-swap carrying the lease epoch. A node
// that lost its lease (paused, partitioned, taken over) can never move the
// head again: its flushes fail, it turns read-only and logs loudly. A
// failed store write puts its block back in memory; the next commit
// retries it.
//
// # Write journal
//
// A FLUSH (or FUA) does not wait for that commit: every completed write,
// trim and zeroing is also captured (offset, length, bytes), and a FLUSH
// appends what was captured since the last one as one record to the
// vdisk's journal (chunkstore/journal) on m+1 storage nodes of its pool
// (k+m), answering once all of them have it on disk. The commit follows in
// the background (after 50 ms, or at once when 4 MiB were appended), and
// moves the head's journal mark in Raft (VDisk.JournalEpoch/JournalSeq) to
// say which records the head now holds; covered records are trimmed. So an
// answered FLUSH survives kill -9 of the serving process and the loss of
// up to m storage nodes, as before, at the cost of one replicated append
// instead of a store round plus a Raft commit: what Ceph RBD and Longhorn
// pay per flush.
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
// which the NBD protocol leaves undefined anyway.
//
// Operations that read the head (snapshot, clone of the current head,
// export, diff, shrink) commit a vdisk attached read-write on this node
// first; these and read-only attaches replay the journal of a vdisk whose
// writer failed with writes only there (VDisk.Journaled, lease lapsed) by
// attaching it for a moment. One attached on another node is read at its last
// commit, which follows each FLUSH within about 50 ms. Rollback discards
// the journal (the mark moves past every epoch so far); a deleted vdisk's
// journal is dropped, and is named by the vdisk's creation time so that a
// vdisk created again under the same name never sees it.
//
// The journal is skipped, and a FLUSH commits as before, when it would not
// pay or cannot be trusted: more than 16 MiB written since the last FLUSH
// (bulk writes: the commit path stores them at the store's rate anyway),
// more than 32 MiB appended and not yet committed, for 10 s after an
// append failed (a journal node may be down and not yet marked so), and
// for cache vdisks (not redundant, so no journal).
//
// Read-only opens (NAME:ro, the head at open time, and NAME@SNAP) take no
// lease and share one Disk per head. Reads look at the write-back cache,
// then the committed tree; a node-wide LRU of clean blocks and one of tree
// nodes (both keyed by Ref, so clones share their origin's cache) spare
// the store. A block is verified once, when the store returns it (the
// store checks it against its Ref); reads of cached blocks then copy from
// memory with no store round trip, goroutine or allocation, and blocks
// written back stay in the clean cache. Block status comes from the tree: absent blocks are
// hole+zero, blocks zeroed with NO_HOLE are allocated zero (the empty
// chunk), the rest is data.
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
// # Performance
//
// `zos bench nbd --runtime 5s --size S` (3 in-process nodes, 16 KiB
// blocks; zos over qemu-nbd on a raw file in the same run; three runs per
// size on the final code; docs/benchmarks.md has the whole table):
//
//	                        256 MiB (fits the caches)  2 GiB (does not)
//	4k randrw QD32          2.27-2.52x                 0.39-0.47x
//	1M seq read             1.61-1.81x                 0.20-0.22x
//	1M seq write            1.22-1.73x                 0.05-0.08x (alone: 110-122 MiB/s)
//	4k randwrite fsync=16   0.58-0.82x (alone 0.77x)   0.23-0.38x
//
// Beyond the caches every block is a chunk-store round trip, and the
// store's rate for 16 KiB chunks (about 9k writes and 15k reads a second
// on two cores, CPU-bound) is the limit. Write-back puts go through a
// chunkstore.Batcher, so the puts queued while a batch is in flight share
// the next one (one request and one fsync per node per batch).
//
// Synced writes: before the journal, a FLUSH waited for the commit's
// store round (blocks and tree nodes through the Batcher, one request and
// one fsync per storage node per batch; mean 7.6 ms under fsync16) and the
// head through Raft (about 1 ms): 0.29-0.52x qemu-nbd. With the journal a
// FLUSH is one append of the writes since the last one (about 100 KiB
// under fsync16) to 2 nodes of the 3 (zos_blockd_journal_append_seconds:
// p50 <= 1.6 ms), many FLUSHes share one append, and one commit follows
// many FLUSHes: 0.58-0.82x in the runs above.
//
// # Block size (measured on the cluster)
//
// `zos bench nbd --runtime 5s --size 268435456 --block-size B`: fio's nbd
// engine against a vdisk on 3 in-process nodes (real shard servers with
// fsync, 2+1 erasure coding, Raft heads), zos over qemu-nbd on a raw file
// in the same run, two runs per size on 2 shared cores (noisy: read the
// ranges, not the digits):
//
//	block size             16K         32K         64K         128K
//	4k randrw QD32         2.28-2.50x  2.18-2.50x  2.15-2.37x  1.96-2.39x
//	1M seq read            1.38-2.25x  1.50-1.76x  1.78-1.89x  1.93-2.18x
//	1M seq write           1.15-1.51x  1.35-1.46x  1.29-1.53x  1.40-1.71x
//	4k randwrite fsync=16  0.14-0.16x  0.13-0.14x  0.11x       0.07-0.08x
//	  alone, IOPS, 5 runs  2069        1871        1425                    (median)
//	                       1452-2413   1007-2111   1016-1500               (range)
//
// The same jobs on a 2 GiB export, twice the write-back cache, so writes
// are bound by the chunk store (one run; MiB/s and IOPS):
//
//	block size             16K         32K         64K
//	1M seq write           94          151         198
//	4k randrw QD32         11792       6512        3285
//	4k randwrite fsync=16  767         739         611   (after the seq write's backlog)
//
// The worst ratio is always the synced random writes: a FLUSH stores
// every block written since the last one, whole, and the chunk store's
// round of puts costs per chunk and per byte, so a 4 KiB synced write
// costs a 16 KiB chunk instead of 64 KiB. 16 KiB (DefaultBlockSize) gives
// the best worst case in both regimes (and 3.6x the random IOPS of 64 KiB
// when the working set exceeds the caches: a 4 KiB write dirties, and a 4
// KiB read fetches, a quarter of the bytes). Its costs: sequential writes
// that overflow the write-back cache go at half the rate of 64 KiB (a
// chunk per 16 KiB, and the store's rate is per chunk), four times the
// chunks, and a tree of 2 GiB per TiB (0.2%). vdisks written mostly
// sequentially (boot images, backups) can pick 64 KiB at create time.
//
// The tree fanout trades node bytes written per flush against depth (one
// store round trip per level on a cold lookup). A flush of 16 random blocks
// into a tree of 4M blocks (64 GiB at 16 KiB), measured in bench_test.go
// over an in-memory store:
//
//	fanout               64      128     256     512     1024
//	levels               4       4       3       3       3
//	nodes written        43      35      31      27      21
//	node bytes written   87K     138K    251K    434K    656K
//
// 256 (DefaultFanout, 8 KiB full nodes) keeps a 1 TiB vdisk at 3 levels
// and writes fewer chunks per flush than smaller fanouts, for node bytes of
// about a quarter of the data bytes of such a flush.
package blockd
