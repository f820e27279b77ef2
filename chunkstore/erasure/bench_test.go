package erasure_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
			c, err := localcluster.Start(localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, ReplicateBelow: below, Prefix: lo, FirstHost: 120, NoSync: true})
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

// BenchmarkPutBatch: the store round of a vdisk flush — batches of 32
// chunks of 16 KiB on 3 loopback nodes, 2+1, disk stores on the file
// system with fsync — stored by PutMany versus 32 parallel Puts (the
// anchor), alternating in the same run. It reports each mode's per-batch
// latency p50/p99 and the ratio of the p50s (ns/op is one batch of each).
// "commit" is blockd's fsync16 commit round (BenchmarkClusterCommitPuts in
// bench/vdiskbench): 16 blocks of 16 KiB and 16 tree nodes of 8 KiB.
//
//	go test -run=^$ -bench=PutBatch -benchtime=200x ./chunkstore/erasure
func BenchmarkPutBatch(b *testing.B) {
	for _, n := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("16K-x%d", n), func(b *testing.B) { benchPutBatch(b, slices.Repeat([]int{16 << 10}, n)) })
	}
	b.Run("commit", func(b *testing.B) { benchPutBatch(b, slices.Repeat([]int{16 << 10, 8 << 10}, 16)) })
}

func benchPutBatch(b *testing.B, sizes []int) {
	c, err := localcluster.Start(localcluster.Config{Nodes: 3, Dir: b.TempDir(), Prefix: lo, FirstHost: 250})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunks := make([][]byte, len(sizes))
	total := 0
	for i, size := range sizes {
		chunks[i] = make([]byte, size)
		rand.Read(chunks[i])
		total += size
	}
	fresh := func() {
		for _, ch := range chunks {
			rand.Read(ch[:64])
		}
	}
	puts := func() {
		var wg sync.WaitGroup
		for _, ch := range chunks {
			wg.Go(func() {
				if _, err := c.Store.Put(context.Background(), ch); err != nil {
					b.Error(err)
				}
			})
		}
		wg.Wait()
	}
	many := func() {
		if _, err := c.Store.PutMany(context.Background(), chunks); err != nil {
			b.Error(err)
		}
	}
	// Warm the connections.
	fresh()
	puts()
	fresh()
	many()
	var tPuts, tMany []time.Duration
	b.SetBytes(int64(2 * total))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range 2 {
			fresh()
			t0 := time.Now()
			if (i+j)%2 == 0 {
				puts()
				tPuts = append(tPuts, time.Since(t0))
			} else {
				many()
				tMany = append(tMany, time.Since(t0))
			}
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	pP50, pP99 := quantile(tPuts, 0.5), quantile(tPuts, 0.99)
	mP50, mP99 := quantile(tMany, 0.5), quantile(tMany, 0.99)
	b.ReportMetric(ms(pP50), "puts-p50-ms")
	b.ReportMetric(ms(pP99), "puts-p99-ms")
	b.ReportMetric(ms(mP50), "many-p50-ms")
	b.ReportMetric(ms(mP99), "many-p99-ms")
	b.ReportMetric(float64(pP50)/float64(mP50), "speedup-p50")
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
