// Package disk is the local shard store behind every node's shard server:
// log-structured, append-only segment files holding checksummed shard
// records, with a pebble index from shard key to location.
//
// # Design and why
//
// Two designs were benchmarked (BenchmarkEngine in engine_bench_test.go;
// figures in docs/benchmarks.md, "Shard store engine"): segment files with
// a pebble index beat values stored in pebble on writes and reads, and the
// gap grows with volume: pebble writes every value to its WAL, again on
// flush and again on every compaction, while a segment record is written
// once and moved only when its segment is mostly dead. So the store keeps
// the segments.
//
// # Guarantees
//
//   - A PutShards that returns nil is durable: records are appended to the
//     active segment, the segment is fdatasync'ed, then the index batch is
//     committed with pebble's synced WAL. Concurrent writers share one fsync
//     and one index commit (group commit): the writer applies every request
//     queued while the previous group was syncing as one group (up to
//     MaxBatchBytes or 1024 requests), whose small records go to the
//     segment in one pwrite per MiB. The index commit of one group runs
//     while the next group is appended and synced (below). Config.NoSync
//     trades this away.
//   - Every record carries a header CRC-32C and the shard's data CRC-32C; a
//     read verifies both and the index's copy, and never returns corrupt
//     bytes. A corrupt shard is quarantined: dropped from the index (counted
//     in Stats().Corrupt and a metric) so that a repair can write it afresh.
//   - Crash safety: the index is the authority. At Open, everything past the
//     last live record of the newest segment (a torn record, or records whose
//     index commit never happened) is dropped and overwritten by later
//     writes; a write group that fails (I/O error, short write, failed fsync)
//     is acknowledged to no one; after a failed fsync the file is never
//     appended to again. Tested with pebble's crashable in-memory FS
//     (random crashes keeping random unsynced blocks) and an error-injecting
//     FS (internal/faultfs).
//   - PutShards never reads the caller's shard data after it returns: a
//     cancelled ctx abandons a write only if the writer has not taken it
//     yet, else the call waits for it (callers recycle their buffers). Reads
//     come in pooled buffers (ShardResult.Release).
//   - Putting a shard already stored with the same checksum rewrites nothing
//     but refreshes its write time, which garbage collection uses as its
//     grace clock.
//   - Deletes only touch the index; compaction (background, or Compact)
//     copies the live records of sealed segments that are at least
//     CompactRatio dead and deletes the file once no reader holds it.
//
// # Group commit
//
// Concurrent PutShards share commits: 32 concurrent puts of one shard take
// about two commits (the first request's, then the 31 queued behind it);
// BenchmarkGroupCommit measures it (docs/benchmarks.md, "Shard store
// engine") and TestGroupCommit checks the grouping exactly: 32 requests
// queued behind a held fsync are applied by one commit. A group's records
// are written with one pwrite rather than two per record.
//
// A group commit is two fsyncs in a row (the segment's, then the index
// WAL's), and small writes are bound by them, not by CPU or bandwidth:
// the disk serves concurrent syncs of different files nearly as fast as
// one. So the two halves are pipelined: the writer goroutine gathers a
// group, appends its records and syncs the segment, then hands the index
// batch to a committer goroutine and goes on with the next group while
// that one commits. The order keeps the crash rules above: a group's index
// batch is committed only after its own records are synced and after the
// previous group's batch (one committer, in order), so the index never
// names a record that is not durable and an acknowledged write is in the
// synced index. A group reads the previous group's not yet committed
// entries as its own (a put of a key the previous group stored refreshes
// it rather than appending it again); a group with deletes, quarantines or
// relocations first waits for the previous commit, so that it sees the
// index whole. A segment sealed by a group still committing is not
// compacted until that commit is done (its records are not yet counted
// live). BenchmarkPutThroughput measures sustained small writes with the
// pipeline (docs/benchmarks.md, "Shard store engine"). Metrics:
// zos_disk_commit_ops (requests per group commit), zos_disk_write_queue,
// zos_disk_commit_seconds.
//
// # Page cache
//
// The kernel keeps every page a segment write dirties until memory runs
// out, so a store that only appends fills all free memory with page cache.
// On a VM that is the dear part of a write: free memory is handed back to
// the host (virtio-balloon free page reporting), and each first touch of
// such a page costs a host fault. Measured on the 2-core CI machine, 8 GiB
// of 1 MiB writes with an fdatasync every 16 MiB took 30-39 s of kernel
// CPU; telling the kernel to drop each synced range (fadvise DONTNEED)
// took it to 2.5 s, because the pages written next are the ones freed
// moments before. Dropping everything would send every read of recent
// data to the disk, though, where the page cache served it. So the writer
// keeps a window: the newest PageCacheBytes (2 GiB by default) of synced
// segment data stay cached, and as it syncs more it drops the oldest
// (pagecache.go). Reads add pages outside the window as usual and the
// kernel ages them; segment files are opened with readahead off
// (FADV_RANDOM), as every read is one record at a known offset.
// Ceph's BlueStore goes further and bypasses the page cache (O_DIRECT)
// for a cache of its own; blockd's block cache already is that cache
// here, and O_DIRECT would need every group commit padded to the disk's
// sector size.
//
// # Key filter
//
// A put first looks each key up (the same bytes may be stored already),
// and nearly every key is new: a pebble Get of a missing random key cost
// 12-16% of a node's CPU under write load. The writer keeps a scalable
// Bloom filter of every key in the index (rebuilt by Open from the index
// scan it does anyway; about 2 bytes per key) and skips the lookup when
// the filter says the key was never set (filter.go). The index's sstables
// also carry bloom filters, for the lookups that remain. Readers ask the
// same filter (its bits are atomic): a read by Ref and index tries each
// profile the store holds, and the tiny chunks' 1+m profile sorts before
// the pool's, so without it every data shard read of a coded chunk began
// with a missed Get.
//
// Reads ask for one shard index under any profile (a reader does not know
// the profile a chunk was written with). With at most four profiles in
// the store — the usual case: the pool's, 1+m for tiny chunks, k+0 for
// cache data — that is a point lookup per profile in key order, not an
// iterator over the Ref's keys (an iterator costs more than the Gets:
// 14% -> 9% of a node's CPU under uncached vdisk reads).
//
// # Usage
//
//	s, err := disk.Open(disk.Config{Dir: "/var/lib/zos/shards", Registry: reg})
//	defer s.Close()
//	err = s.PutShards(ctx, shards)          // chunkstore.ShardStore
//	res, err := s.GetShards(ctx, keys)
//	chunks := s.Chunks()                    // chunkstore.Store view (1+0 shards)
//
// The file system seam is pebble's vfs.FS (Config.FS), shared by the segment
// files and the index so that a simulated crash hits both consistently.
package disk
