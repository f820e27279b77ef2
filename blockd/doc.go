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
//   - dirty blocks in memory. A sector-aligned write into a block that is
//     not in memory records only its sectors (a partial block) and never
//     waits for the block's old content; that content is prefetched and
//     merged when the block is written back. Only unaligned writes read
//     the block first. TRIM and WRITE_ZEROES of whole blocks record zero
//     blocks or, for large ranges, a zeroed span.
//   - blocks being written back: background write-back stores the oldest
//     dirty blocks as chunks as soon as Config.WritebackBytes are dirty,
//     Config.Parallelism at a time, so writers only wait when
//     Config.MaxDirtyBytes are in memory (and fail with an error, EIO to
//     NBD clients, if writing back keeps failing).
//   - the pending layer: zeroed spans and the Refs of stored blocks, not
//     yet in the tree; and frozen pending layers of commits in progress.
//   - the committed tree at the head.
//
// A commit (FLUSH, FUA, every Config.WritebackInterval, or when the pending
// layer grows large) writes back every block dirtied before it, freezes the
// pending layer, applies it to the tree (path copying: only the nodes on
// changed paths are written, while the last block writes finish), and moves
// the head through the control plane as a compare-and-swap carrying the
// lease epoch; only then is the FLUSH answered. So an answered FLUSH
// survives the loss of the serving process, and a node that lost its lease
// (paused, partitioned, taken over) can never move the head again: its
// flushes fail, it turns read-only and logs loudly. A failed store write
// puts its block back in memory; the next commit retries it.
//
// Read-only opens (NAME:ro, the head at open time, and NAME@SNAP) take no
// lease and share one Disk per head. Reads look at the write-back cache,
// then the committed tree; a node-wide LRU of clean blocks and one of tree
// nodes (both keyed by Ref, so clones share their origin's cache) spare
// the store. Block status comes from the tree: absent blocks are
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
// # Block size and fanout (from BenchmarkBlockSize* and BenchmarkTreeFanout)
//
// Measured in bench_test.go over an in-memory store that adds 200 µs to
// every chunk Put and Fetch, standing for a round trip to an erasure-coded
// cluster (on 2 shared cores, figures are noisy; compare within a column):
//
//	block size            4K      16K     32K     64K     256K    1M
//	1M seq write MB/s     134     494     668     953     902     316
//	  chunks per MiB      257     64      32      16      4       1
//	4k randwrite+fsync16  8981    7683    7648    7594    5133    811   writes/s
//	  stored bytes/write  6.0K    11.4K   20.7K   38.9K   160K    668K
//	4k cold read fetches  4K      16K     32K     64K     256K    1M    (same latency)
//	tree bytes per TiB    8 GiB   2 GiB   1 GiB   512 MiB 128 MiB 32 MiB
//
// Sequential throughput is bound by the number of chunks (each is a store
// round trip and, on a cluster, an erasure-coded stripe); random synced
// writes are bound by the flush's two round trips (blocks, then tree
// nodes), so their rate hardly depends on the block size up to 64 KiB
// while the bytes stored per write grow with it. 64 KiB (DefaultBlockSize)
// gives the best sequential throughput, the same synced random write rate
// as 4–32 KiB, and a tree of 0.05% of the data; workloads dominated by
// small synced random writes (databases) can pick 16 KiB at create time.
//
// The tree fanout trades node bytes written per flush against depth (one
// store round trip per level on a cold lookup). A flush of 16 random blocks
// into a tree of 4M blocks (256 GiB at 64 KiB):
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
