// Package storebench measures the chunk store end to end, for `zos bench store`
// and docs/benchmarks.md: PUT and GET MB/s through the erasure store on a
// loopback cluster of shard servers (real TCP, real disk stores with fsync),
// each as a ratio to the anchor — in-process reedsolomon encode + BLAKE3 of
// the same chunks on one core, measured in the same run — then two healing
// phases as ratios to PUT: rebuild (one node's disk dies and is replaced by
// an empty one; its shards are rebuilt onto it) and re-encode (a node is
// removed for good; five nodes cannot hold 4+2 one shard per node, so
// every chunk becomes 3+2, see chunkstore/heal). Healers use per-node
// stores that read the node's own shards from its disk, as `zos node`
// does. A garbage collection runs between phases so each pays for its own.
//
// Matrix is the `zos bench store` workload: PUT, GET and degraded GET per
// chunk size, with latency percentiles. Chunks under SmallChunk (vdisk
// blocks, tree nodes) are counted in chunks/s as well as MB/s, anchors
// included (report.Job.OpsUnit): a vdisk past its caches is bound by
// chunk operations, not bytes. For them PUT is also measured the way
// blockd writes back, as PutMany batches of BatchChunks chunks,
// BatchesInFlight at a time (a chunkstore.Batcher's defaults); that
// job's latency is per batch.
//
// Usage:
//
//	res, err := storebench.Store(ctx, storebench.Config{Dir: "/var/tmp/zos-bench", Bytes: 256 << 20})
//	fmt.Print(res)
//
// or `go test -run=^$ -bench=Store -benchtime=1x ./bench/storebench`.
//
// Figures, and what bounds them, are in docs/benchmarks.md.
package storebench
