// Package chunkstore is zos's content-addressed chunk store: the data plane
// that vdisks and flists share.
//
// A chunk is an immutable byte string of at most MaxChunkSize, named by its
// Ref, the BLAKE3-256 of its content. The interfaces are small and
// consumer-side (Fetcher, Receiver, Statter, Enumerator, Remover, composed
// into Store); every implementation passes chunkstore/storetest:
//
//   - mem: in memory;
//   - disk: a node's local shard store (segment files + pebble index), with
//     a Store view (Chunks);
//   - remote: a client of another node's shard server (chunkstore/shard),
//     with a Store view;
//   - erasure: the cluster store — chunks coded into k+m shards placed by
//     chunkstore/placement over the cluster map.
//
// Batches (batch.go): BatchReceiver is the optional capability of storing
// many chunks in one round (PutMany); the erasure store sends each node one
// request for the whole batch, so that it writes and syncs once. PutMany
// (the function) uses it when a store has it and falls back to concurrent
// Puts; a *BatchError names the chunks of a batch that were not stored.
// NamedBatchReceiver adds PutManyNamed, for callers that hashed their
// chunks already (blockd names every block and extent in its tree before
// storing it): the store takes those Refs instead of hashing the bytes a
// second time. The Batcher passes names through.
//
// Shards (shard.go) are what nodes store: ShardKey (Ref, Profile, Index),
// ShardInfo (sizes, CRC-32C, write time) and the ShardStore interfaces that
// the disk store and the remote client implement; both pass
// chunkstore/shardtest. Around them: blob (data of any size as chunks plus
// manifests), heal (rebuild and rebalance after map changes), scrub
// (bitrot), gc (mark and sweep), journal (the vdisks' write journals,
// passing journal/journaltest) and localcluster (a whole cluster in one
// process, for tests and bench/storebench).
//
// This package and its subpackages, tests included, import nothing of
// raft, node, orchestrator, blockd, flist, cmd or bench (internal/archtest):
// the cluster map comes in as a placement.Map, roots for GC through
// gc.Roots.
package chunkstore
