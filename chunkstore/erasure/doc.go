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
// batched request per node). It succeeds when MinDurable shards are durable:
// all of them for k+0, else k+1. Why k+1 and not all: waiting for all would
// make one dead-but-not-yet-marked node fail every write; k would leave an
// acknowledged chunk one failure away from loss. With k+1 an acknowledged
// chunk survives one more failure, the same rule as Ceph's min_size for
// erasure pools. Missing shards of a successful write are queued for repair
// (and heal rebuilds them if the node stays away).
//
// PutMany (chunkstore.BatchReceiver) stores a batch of chunks in one
// round: each chunk is encoded as Put would (in parallel; same profile
// choice, tiny-chunk replication and Fit), then every node gets ONE
// PutShards request with all its shards of the batch (several, sent
// concurrently, only past 16 MiB or 4096 shards per node: each is one
// wire frame), so it appends them all and syncs once. Each chunk succeeds
// or fails on its own by the MinDurable rule; partial ones are queued for
// repair; failed ones are listed in a *chunkstore.BatchError (the others
// are durable). Duplicates in a batch are written once. Measured by
// BenchmarkPutBatch (3 loopback nodes, 2+1, disk stores with fsync on the
// 2-core dev machine shared with other work; PutMany versus the same
// chunks as parallel Puts, alternating in one run; 3 runs, ms per batch):
//
//	                          PutMany p50  p99     parallel Puts p50  p99
//	1 x 16 KiB                1.2-1.6      1.8-4.5   1.2-1.6          1.6-5.0
//	8 x 16 KiB                1.7-2.3      2.9-9.4   3.5-9.0          9.8-22
//	32 x 16 KiB               3.5-4.5      10-17     7.8-22           27-58
//	16 x 16 KiB + 16 x 8 KiB  3.1-4.6      5.7-16    7.6-14           16-57
//
// (the last is blockd's fsync16 commit round: 2.4-3.1x faster at p50).
//
// The data path copies as little as it can: the full data shards of a put
// are slices of the caller's chunk (Codec.EncodeShared; only the padded
// last data shard and the parity are written, into pooled buffers), the
// chunk is hashed while it is encoded, each node's checksums are computed
// by its sender, and shards read are recycled once decoded.
//
// Tiny chunks are replicated (profile 1+m) rather than coded: below
// DefaultReplicateBelow (4 KiB) a put writes m+1 shards instead of k+m and
// is ~2x faster. Measured by BenchmarkSmallChunks, 6 loopback servers, 4+2:
//
//	            put coded  put 1+2   get coded  get 1+2
//	1 KiB        296 us    125 us     194 us    289 us
//	4 KiB        291 us    137 us     101 us    184 us
//	16 KiB       348 us    351 us     134 us    190 us
//	64 KiB       897 us   1309 us     433 us    387 us
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
// Errors: chunkstore.ErrNotFound when no node has any shard of the chunk;
// ErrUnavailable when too few shards were reachable (retry later);
// ErrCorrupt when every node answered and fewer than k valid shards exist.
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
//	s.SetMap(newMap) // when Raft changes the cluster map
package erasure
