package disk_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
)

// BenchmarkPutThroughput: sustained small writes on one store with fsync —
// writers goroutines each putting batch shards of 8 KiB per PutShards
// (what a node gets of 16 KiB chunks coded 2+1), as fast as the store
// takes them; reports shards/s. This is where group commit and the
// pipelining of segment fsync and index commit show.
//
//	go test -run=^$ -bench=PutThroughput -benchtime=4000x ./chunkstore/disk
func BenchmarkPutThroughput(b *testing.B) {
	for _, c := range []struct{ writers, batch int }{{1, 1}, {4, 1}, {32, 1}, {2, 128}, {4, 128}} {
		b.Run(fmt.Sprintf("writers=%d/batch=%d", c.writers, c.batch), func(b *testing.B) {
			s, err := disk.Open(disk.Config{Dir: b.TempDir(), CompactInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			n := b.N * c.batch
			shards := make([]chunkstore.Shard, n)
			for i := range shards {
				shards[i] = shardsOf(uint64(i+1), 16<<10, chunkstore.Profile{K: 2, M: 1})[0]
			}
			b.SetBytes(int64(c.batch) * 8 << 10)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			t0 := time.Now()
			for range c.writers {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						if err := s.PutShards(b.Context(), shards[i*c.batch:(i+1)*c.batch]); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "shards/s")
		})
	}
}
