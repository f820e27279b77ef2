// Package erasure is the cluster chunk store: a chunkstore.Store that
// splits each chunk into k data + m parity shards (klauspost/reedsolomon,
// one cached encoder per profile) and keeps shard i on the i-th home that
// chunkstore/placement computes for the chunk's Ref over the cluster map.
// Nodes are reached through a Dialer (remote shard clients, or the local
// disk store for the node itself).
//
// # Writes
//
// Put encodes the chunk and writes every shard to its home in parallel (one
// batched request per node). It succeeds when its write quorum of shards
// is durable (WriteQuorum; MinDurable is the quorum with every home live):
//
//   - k+0 profiles: all of them (nothing to lose, nothing to rebuild from);
//   - else k+1 when at least k+1 of the chunk's homes are live: an
//     acknowledged chunk survives one more failure, the same rule as
//     Ceph's min_size for erasure pools; waiting for all would let one
//     dead-but-not-yet-marked node fail every write;
//   - else k (never fewer): with m homes dead but not yet marked down, the
//     chunk is written degraded rather than refused, so vdisks stay
//     attachable and writable (3 nodes 2+1 with one dead: 2 shards; 6
//     nodes 4+2 with two dead: 4 shards). Ceph blocks I/O below min_size
//     instead; zos takes MinIO's write quorum (the data shards) there,
//     because refusing would stop every vdisk until the node is marked
//     down, and the chunk is as redundant as the data already stored on
//     those homes (below). Fewer than k live homes is
//     chunkstore.ErrUnavailable naming the unreachable nodes; nothing is
//     acknowledged (shards already written are garbage to collect).
//
// "Live" is decided per write, from what it observed: a home whose write
// failed with a transport error (chunkstore.ErrUnavailable: refused, no
// answer within the request timeout) is not live; a home that answered
// with an error (disk full, a closed store, corruption) is live and its
// missing shard counts against the quorum, so a refusing node never lowers
// it. Homes come from the map's up nodes only, so a node the map marks down
// is no home at all: once the leader marks a dead node down (after
// --dead-after), new chunks are placed in full on the others and the
// degraded case ends. A degraded write is counted
// (zos_chunk_degraded_puts_total) and logged at most once a minute.
//
// Why quorum k, and not the alternative of writing the dead homes' shards
// to the next live nodes of their rankings (a sloppy quorum with hinted
// handoff): measured by BenchmarkDegradedTolerance, BenchmarkDegradedPut
// and BenchmarkDegradedRepair (figures and commands in docs/benchmarks.md).
//
//   - Failure tolerance. A quorum-k chunk is exactly as redundant as the
//     chunks already stored on the same homes (they lost the same shards),
//     and it is only so during the detection window. Next-live placement
//     does better for the window's writes only when there are live nodes
//     left beyond the homes or shards can double up: with 3 nodes 2+1 and
//     one dead, a third shard can only double on a survivor, and the chunk
//     still does not survive losing that survivor (tolerance 0 either way);
//     with 6 nodes 4+2 and two dead, 6 shards on 4 nodes survive one more
//     loss where 4 shards survive none — but so do none of the chunks
//     already stored, since every 4+2 chunk has a home on every one of
//     the six nodes. Over the default profiles of 3 to 16 nodes with up to
//     m dead, the share of existing chunks that survive one more loss is
//     that of quorum-k writes (an existing chunk with a dead home is in
//     the very state a quorum-k write leaves a new one in): the cluster's
//     exposure during the window is set by the data it already holds, and
//     next-live would only shrink how much of the window's new data a
//     further loss takes with it.
//   - Cost. A degraded quorum-k write stores fewer shards and is faster
//     than a healthy one; next-live writes them all (some doubled on one
//     node) and is as slow as a healthy write or slower. A displaced shard
//     sits where no read looks first (reads ask the homes, then homes
//     under older maps, then every node), would have to be tracked,
//     moved home and deleted, and counts as misplaced until then. The
//     quorum rule adds nothing beside what already exists: reads
//     reconstruct from the live homes as for any degraded chunk, and the
//     missing shards are rebuilt at their homes by the same path heal and
//     scrub use (RepairPositions). Rebuilding reads k shards where moving
//     would read one; that is what keeps this simple, and heal pays it
//     anyway for every older chunk the dead node held.
//
// # Healing degraded writes
//
// An acknowledged chunk with shards missing (degraded, or partial because
// a home refused) is remembered in the store's pending repairs: its ref,
// profile, size and missing positions with their nodes — not its data. A
// background loop (every Config.PendingInterval) stats each such node for
// the shards it lacks; once the node answers (restarted before the map
// noticed, i.e. without any map change, or marked up again), the shards
// still missing are rebuilt from k others with RepairPositions and written
// to it (Config.PendingWorkers at a time, at most Config.PendingRate bytes
// per second: node passes heal's --heal-rate); shards found present (heal or a rewrite got there first), and
// positions whose home the map moved, are dropped (heal passes run after
// every map change). Pending repairs of a node marked down wait for it;
// those of a removed node are dropped, and ForgetPending drops those of a
// node that is out (node calls it when heal rebuilds the out node's
// shards elsewhere). Chunks that are gone, re-encoded or unreadable are
// abandoned to heal and scrub. The list is bounded (Config.PendingLimit):
// past it a chunk is not remembered but counted against its nodes, and
// once such a node answers Config.HealNeeded asks for heal passes, which
// find every shard missing at its home. Pending is what "zos store status"
// shows; zos_chunk_pending_repairs and zos_chunk_pending_*_total count
// them. The list lives in memory: a writer that restarts forgets it, and
// the periodic heal pass catches what it held.
//
// PutMany (chunkstore.BatchReceiver) stores a batch of chunks in one
// round: each chunk is encoded as Put would (in parallel; same profile
// choice, tiny-chunk replication and Fit), then every node gets ONE
// PutShards request with all its shards of the batch (several, sent
// concurrently, only past 16 MiB or 4096 shards per node: each is one
// wire frame), so it appends them all and syncs once. Each chunk succeeds
// or fails on its own by Put's write quorum; partial ones become pending
// repairs; failed ones are listed in a *chunkstore.BatchError (the others
// are durable). Duplicates in a batch are written once. BenchmarkPutBatch
// compares PutMany with the same chunks as parallel Puts (docs/benchmarks.md,
// "Erasure coding: batches and small chunks").
//
// The data path copies as little as it can: the full data shards of a put
// are slices of the caller's chunk (Codec.EncodeShared; only the padded
// last data shard and the parity are written, into pooled buffers), the
// chunk is hashed while it is encoded (not at all when the caller named
// it: PutManyNamed), each node's checksums are computed by its sender,
// shards read are recycled once decoded, and a decoded chunk's buffer is
// filled without being zeroed first.
//
// Tiny chunks are replicated (profile 1+m) rather than coded: below
// DefaultReplicateBelow (4 KiB) a put writes m+1 shards instead of k+m and
// is faster (BenchmarkSmallChunks; docs/benchmarks.md, "Erasure coding:
// batches and small chunks").
//
// Replication stops paying at 16 KiB while it costs 3x space instead of 1.5x
// (2.3x vs 3.4x for 1 KiB once per-shard metadata is counted), so only
// chunks under 4 KiB (tree nodes, manifests, small files) are replicated.
//
// # Reads
//
// Fetch asks the homes of the k data shards (for any profile, which also
// finds replicated and foreign-profile chunks); when all answer it just
// concatenates them, no decode. Otherwise it asks the parity homes and
// reconstructs from any k, then the homes under previous maps (SetMap keeps
// a history, so shards not yet moved by the rebalancer are found), then
// every up node. Every shard is checked against its CRC by the node and
// again on arrival, and the decoded chunk against its Ref: corrupt bytes are
// never returned. Shards found missing or corrupt at their home are
// rewritten in the background (read repair).
//
// Local shards first. With Config.Local set (the node whose shard store
// the Dialer returns in this process, as a node's own disk store is), a
// chunk whose parity shard is local and whose data shards are all remote
// is read, by Fetch and FetchMany alike, from the local parity shard and
// k-1 remote data shards; the data shard left out is rebuilt straight into
// the chunk's buffer. A remote shard costs this process its bytes twice
// over loopback or the network (encrypted by the node's TLS, sent,
// received, decrypted here; on a node the server side is another node's
// CPU, on a one-host dev cluster it is ours too), a rebuilt one a single
// Galois-field pass over the k shards read; on three nodes with 2+1 a
// third of the chunks have their parity shard on any given node, so its
// reads ask 25% fewer remote shards. The rebuild is planned, not a
// failure: it counts neither as a degraded read nor as a shard missing
// at home. If the local parity shard is missing, the read asks the data
// shard it stood in for (and read repair rewrites the parity shard).
// Ranged reads (FetchRanges, below) read data shards only.
//
// Errors: chunkstore.ErrNotFound when no node has any shard of the chunk;
// ErrUnavailable when too few shards were reachable (retry later);
// ErrCorrupt when every node answered and fewer than k valid shards exist.
//
// FetchMany (chunkstore.ManyFetcher) reads a batch of chunks in one round:
// Fetch's first step for every distinct chunk at once, the data shards'
// homes asked with ONE GetShards request per node for all its shards of
// the batch (several, concurrently, only past 1024 shards), not
// checksummed on arrival. Each chunk is decoded and verified against its
// Ref (in parallel); one that the batched answers cannot complete (a node
// down or timing out, a shard missing or corrupt, a chunk under another
// map) is read again by Fetch alone, with its escalation, verification
// and read repair, so a batch returns exactly what Fetch would for each
// chunk. Chunks that fail are listed in a *chunkstore.BatchError with
// Fetch's errors. blockd reads the blocks a request misses, and its
// readahead, this way (zos_chunk_fetch_batches_total,
// zos_chunk_fetch_batch_fallbacks_total).
//
// FetchRanges (chunkstore.RangeFetcher) reads parts of chunks without
// reading them whole: data shard j of a chunk coded k+m holds its bytes
// [j*s, (j+1)*s), s = ShardSize(size, k), so a range is read as parts of
// the data shards it overlaps, with ONE GetShardRanges request per node
// for the call (the shard protocol's GetRng; the disk store preads just
// those bytes after checking the record's header). The profile is the one
// the store writes a chunk of that size with. A part of a shard cannot be
// checked against anything, so the bytes are unverified and callers
// verify them (blockd hashes each block against its Ref); a range the
// ranged answers cannot complete is read whole by FetchMany and sliced,
// with its escalation and repair (zos_chunk_range_batches_total,
// zos_chunk_range_bytes_total, zos_chunk_range_fallbacks_total). Why not
// a ranged read with parity reconstruction: a range that misses a data
// shard is rare (a node down), and then the whole chunk is what repair
// needs anyway.
//
// # Fewer failure domains than shards
//
// A k+m chunk survives m failures only with its shards in k+m different
// failure domains (nodes, unless domains are configured). Fit says, per
// chunk and map, whether a chunk's profile still fits and what it must be
// re-encoded to: the same m over the domains there are (4+2 on four nodes
// -> 2+2), or a copy per domain when there are no more domains than m.
// Put writes new chunks with that profile directly; heal re-encodes old
// ones with Reprofile (new profile written and durable, then the old one
// deleted; see chunkstore/heal); DropSuperseded deletes leftovers of an old
// profile. Read repair skips chunks due for re-encoding.
//
// # Maintenance
//
// Repair / RepairPositions rebuild missing shards (used by heal and scrub)
// from any k others without assembling the chunk: it is verified by hashing
// the data shards in place, and only the missing shards are computed
// (Codec.Rebuild). WalkChunks merges every node's shard listing. Inspect
// reports where each shard of a chunk is, whether it is healthy, how many
// failures it tolerates and whether it is undersized (its profile no
// longer fits; counted as degraded) ("zos store stat"). Status gathers
// per-node counters and optionally a census of healthy, degraded,
// undersized and unreadable chunks and stale shards ("zos store status").
//
// # Usage
//
//	pool := remote.NewPool(remote.Config{Secret: secret})
//	s, err := erasure.New(erasure.Config{Map: m, Dialer: erasure.PoolDialer(pool, map[string]chunkstore.ShardStore{selfID: localDisk})})
//	ref, err := s.Put(ctx, data)
//	refs, err := s.PutMany(ctx, chunks) // or chunkstore.PutMany(ctx, anyStore, chunks)
//	data, err := s.Fetch(ctx, ref)
//	datas, err := s.FetchMany(ctx, refs) // or chunkstore.FetchMany(ctx, anyStore, refs)
//	s.SetMap(newMap) // when Raft changes the cluster map
package erasure
