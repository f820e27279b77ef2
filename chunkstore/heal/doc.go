// Package heal restores full redundancy after the cluster map changes.
// Every node runs a Healer over its own shards: when a node is marked down
// or removed, the survivors rebuild the shards they are now responsible
// for, and re-encode chunks whose profile no longer fits the smaller
// cluster; when a node joins (or comes back), shards move to their new
// homes and the old copies are deleted only once the chunk is complete at
// its new homes.
//
// # A pass
//
// Run walks the local shards in key order, chunk by chunk, in batches. For
// each batch it computes every chunk's homes under the current map and asks
// each home, in one batched stat per node, whether it has its shard. Then,
// per chunk and profile held locally, in parallel:
//
//   - if the profile no longer fits the cluster (below), the chunk is
//     re-encoded, and nothing else is done for the old profile;
//   - a local shard whose home is another node is pushed there if the home
//     lacks it, and deleted here once every shard of the chunk is at its
//     home (move). Deleting it as soon as its own home has it is not safe:
//     a new home may hold another shard of the chunk until that one moves
//     on (2+1 homes n1 n2 n3 becoming n4 n2 n1: n3's shard reaches n1
//     before n1's reaches n4), and a copy dropped then leaves one node
//     with two of the three shards, so losing it loses the chunk. Ceph
//     keeps a PG's old OSDs serving until backfill completes for the same
//     reason. A copy kept this way (Progress.Kept) is dropped by a later
//     pass, which node asks for 10 s later;
//   - positions missing at their home are rebuilt — read k shards from
//     wherever they are (the node's own from its disk), verify the chunk
//     against its Ref by hashing the data shards in place, compute only the
//     missing shards (erasure.Codec.Rebuild), write them — by exactly one
//     node: the home of the lowest position that is present at its home
//     (every holder sees the same stats, so the work is split over all
//     survivors and each missing shard is rebuilt once).
//
// # Re-encoding when the cluster shrinks
//
// A k+m chunk survives m failures only while its k+m shards sit in k+m
// different failure domains (nodes, unless domains are configured). After
// two of six nodes are removed, a 4+2 chunk's six shards share four nodes;
// two of them hold two shards each, and losing that pair loses the chunk.
// Rebuilding in place cannot fix that, so heal re-encodes: when a chunk's
// tolerance (placement.Tolerance of its homes) is below its parity count
// m, and below the number of domains minus one, the chunk's leader (as for
// rebuilds) re-encodes it with erasure.Fit's profile, which keeps m and
// sets k' = domains - m: 4+2 on 4 nodes becomes 2+2, on 5 nodes 3+2; 2+1
// on 2 nodes becomes 1+1. With no more domains than m, the most that is
// possible is a copy per domain (4+2 on 2 nodes becomes 1+1; the parity
// drop is logged and counted in Progress.ReducedParity), unless the chunk
// already tolerates as much (2+2 on two nodes survives one node, like 1+1:
// kept, counted in Progress.Unfit). A single domain, and k+0 chunks, keep
// their profile. Growing the cluster never re-encodes: chunks keep their
// profile and are only moved (rebalanced).
//
// The re-encoding (erasure.Store.Reprofile) reads the chunk from any k
// shards, verifies it against its Ref (which never changes), writes every
// shard of the new profile to its home, and only when all of them are
// durable deletes the old profile's shards on every up node. Reads find
// the chunk throughout (they accept any profile). It is idempotent and
// resumable: after a crash at any step, the next pass sees the old profile
// still undersized and finishes the job; a new profile already complete is
// not written again. A node that was away during a re-encoding comes back
// with shards of the old profile; heal deletes them once the new profile
// is complete (erasure.Store.DropSuperseded) instead of rebuilding the old
// one. Garbage collection works on Refs, so every profile of a chunk is
// that chunk. New writes already use the fitting profile (erasure.Store
// fits it at Put), so only chunks written before the cluster shrank are
// re-encoded. A node marked down counts as gone: re-encoding starts as soon
// as the map says so, like rebuilding.
//
// # Progress, limits, resumption
//
// Progress (shards and bytes examined of the local total, shards rebuilt and
// moved, chunks re-encoded, rate, ETA) is available from Progress and as
// Prometheus metrics. Work is rate limited (Config.RateLimit, shard bytes
// read and written per second). A pass checkpoints its position in the
// local store every batch; a pass interrupted (process stop, ctx) resumes
// there if the map epoch is unchanged, and starts over otherwise.
//
// # Usage
//
//	h, err := heal.New(heal.Config{NodeID: self, Local: diskStore, Store: erasureStore, RateLimit: 200 << 20, Registry: reg})
//	res, err := h.Run(ctx) // after every map change, and periodically
//	p := h.Progress()      // for zos store status
package heal
