package erasure_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// BenchmarkSmallChunks decides DefaultReplicateBelow: put and get of small
// chunks coded 4+2 versus replicated 1+2, on 6 loopback shard servers with
// in-memory disks (so the network and per-shard costs show, not fsync).
//
//	go test -run=^$ -bench=SmallChunks -benchtime=2000x ./chunkstore/erasure
func BenchmarkSmallChunks(b *testing.B) {
	for _, size := range []int{1 << 10, 4 << 10, 16 << 10, 64 << 10} {
		for _, mode := range []string{"coded", "replicated"} {
			below := -1
			if mode == "replicated" {
				below = size + 1
			}
			c, err := localcluster.Start(localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, ReplicateBelow: below, FirstHost: 120, NoSync: true})
			if err != nil {
				b.Fatal(err)
			}
			var n atomic.Int64
			var refs []chunkstore.Ref
			b.Run(fmt.Sprintf("put/%dKiB/%s", size>>10, mode), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := c.Store.Put(context.Background(), storetest.Data(uint64(n.Add(1)), size)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			for i := range min(n.Load(), 500) {
				refs = append(refs, chunkstore.Sum(storetest.Data(uint64(i+1), size)))
			}
			var k atomic.Int64
			b.Run(fmt.Sprintf("get/%dKiB/%s", size>>10, mode), func(b *testing.B) {
				b.SetBytes(int64(size))
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if _, err := c.Store.Fetch(context.Background(), refs[int(k.Add(1))%len(refs)]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			c.Close()
		}
	}
}
