// Package shardtest is the conformance suite every chunkstore.ShardStore
// implementation passes: batched put/get/stat, wildcard keys (any profile,
// any index), enumeration in key order across pages, deletes by age and by
// wildcard, re-puts that refresh the write time without rewriting, refusal
// of corrupt or misshapen shards, large shards, and puts abandoned by their
// context whose buffers the caller scribbles over.
//
// Usage, in an implementation's tests:
//
//	func TestShardConformance(t *testing.T) {
//		shardtest.Run(t, func(t *testing.T, now func() time.Time) chunkstore.ShardStore {
//			return newStore(t, now)
//		})
//	}
//
// newStore is called once per subtest and must return an empty store whose
// shard write times (ShardInfo.Written) come from now; it registers its own
// cleanup with t.Cleanup. Stores that implement chunkstore.ShardStatser are
// also checked against their counters.
package shardtest
