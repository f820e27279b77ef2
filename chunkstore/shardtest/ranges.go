package shardtest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

// testRanges: a ShardRangeGetter returns exactly the bytes of each range
// (at the start, deep inside and at the end of a shard, empty, whole),
// the whole shard's header with them, and a clear error per range for a
// range past its shard, a shard it does not hold and a key with
// wildcards; many ranges in one call come back in order. Stores without
// ranged reads get chunkstore.GetShardRanges' fallback, which must say
// the same.
func testRanges(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	big := Shards(70, 3<<20, chunkstore.Profile{K: 2, M: 1}) // 1.5 MiB shards
	small := Shards(71, 10000, chunkstore.Profile{K: 4, M: 2})
	MustPut(t, s, big...)
	MustPut(t, s, small[:3]...)
	size := uint32(len(big[0].Data))
	rs := []chunkstore.ShardRange{
		{Key: big[0].Key, Off: 0, Len: 4096},
		{Key: big[1].Key, Off: 100, Len: 65536},
		{Key: big[0].Key, Off: 1 << 20, Len: 65536},
		{Key: big[2].Key, Off: size - 10, Len: 10},
		{Key: big[1].Key, Off: 0, Len: size},
		{Key: big[1].Key, Off: size, Len: 0},
		{Key: small[2].Key, Off: 7, Len: 1},
		{Key: big[0].Key, Off: size - 10, Len: 11},                                          // past the end
		{Key: small[4].Key, Off: 0, Len: 1},                                                 // not stored
		{Key: chunkstore.ShardKey{Ref: big[0].Key.Ref, Index: chunkstore.AnyIndex}, Len: 1}, // a query
	}
	want := func(r chunkstore.ShardRange) chunkstore.Shard {
		for _, sh := range append(big, small...) {
			if sh.Key == r.Key {
				return sh
			}
		}
		t.Fatalf("no shard %s", r.Key)
		return chunkstore.Shard{}
	}
	res, err := chunkstore.GetShardRanges(ctx(t), s, rs)
	if err != nil {
		t.Fatal(err)
	}
	defer chunkstore.ReleaseResults(res)
	if len(res) != len(rs) {
		t.Fatalf("%d results for %d ranges", len(res), len(rs))
	}
	for i, r := range rs[:7] {
		w := want(r)
		got := res[i]
		if got.Err != nil {
			t.Fatalf("range %d (%s [%d, +%d)): %v", i, r.Key, r.Off, r.Len, got.Err)
		}
		if got.Shard.ShardInfo.Key != w.Key || got.Shard.Size != w.Size || got.Shard.ChunkSize != w.ChunkSize || got.Shard.Sum != w.Sum {
			t.Fatalf("range %d: header %+v, want %+v", i, got.Shard.ShardInfo, w.ShardInfo)
		}
		if !bytes.Equal(got.Shard.Data, w.Data[r.Off:r.Off+r.Len]) {
			t.Fatalf("range %d (%s [%d, +%d)): wrong bytes", i, r.Key, r.Off, r.Len)
		}
	}
	if !errors.Is(res[7].Err, chunkstore.ErrBadRange) {
		t.Fatalf("range past the shard's end: %v", res[7].Err)
	}
	if !errors.Is(res[8].Err, chunkstore.ErrNotFound) {
		t.Fatalf("range of a shard not stored: %v", res[8].Err)
	}
	if res[9].Err == nil {
		t.Fatal("range of a wildcard key answered")
	}

	// Many in one call (past the client's 1024 a request), in order.
	var many []chunkstore.ShardRange
	for i := range 1500 {
		many = append(many, chunkstore.ShardRange{Key: big[i%3].Key, Off: uint32(i * 997 % (int(size) - 512)), Len: uint32(1 + i%512)})
	}
	res2, err := chunkstore.GetShardRanges(ctx(t), s, many)
	if err != nil {
		t.Fatal(err)
	}
	defer chunkstore.ReleaseResults(res2)
	for i, r := range many {
		if res2[i].Err != nil || !bytes.Equal(res2[i].Shard.Data, big[i%3].Data[r.Off:r.Off+r.Len]) {
			t.Fatalf("range %d of many: %v", i, res2[i].Err)
		}
	}
}
