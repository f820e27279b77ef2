package erasure_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// BenchmarkSmallOps measures small-chunk operations per second on the
// vdisks' cluster: 3 loopback nodes, the default profile (2+1), disk stores
// on the file system with fsync. put: Puts from 32 goroutines; putmany:
// PutMany batches of 128 chunks, 2 in flight (blockd's write-back); get:
// Fetches from 32 goroutines. Each reports chunks/s.
//
//	go test -run=^$ -bench=SmallOps -benchtime=4000x ./chunkstore/erasure
func BenchmarkSmallOps(b *testing.B) {
	for _, size := range []int{16 << 10, 64 << 10} {
		c, err := localcluster.Start(localcluster.Config{Nodes: 3, Dir: b.TempDir(), Prefix: lo, FirstHost: 230})
		if err != nil {
			b.Fatal(err)
		}
		var seq atomic.Uint64
		var refs []chunkstore.Ref
		var mu sync.Mutex
		b.Run(fmt.Sprintf("put/%dKiB", size>>10), func(b *testing.B) {
			runOps(b, size, 32, 1, func(n int) error {
				d := storetest.Data(seq.Add(1), size)
				ref, err := c.Store.Put(context.Background(), d)
				mu.Lock()
				refs = append(refs, ref)
				mu.Unlock()
				return err
			})
		})
		b.Run(fmt.Sprintf("putmany128/%dKiB", size>>10), func(b *testing.B) {
			runOps(b, size, 2, 128, func(n int) error {
				chunks := make([][]byte, n)
				for i := range chunks {
					chunks[i] = storetest.Data(seq.Add(1), size)
				}
				_, err := c.Store.PutMany(context.Background(), chunks)
				return err
			})
		})
		var k atomic.Int64
		b.Run(fmt.Sprintf("get/%dKiB", size>>10), func(b *testing.B) {
			for len(refs) < 1000 { // run alone: chunks to read
				ref, err := c.Store.Put(context.Background(), storetest.Data(seq.Add(1), size))
				if err != nil {
					b.Fatal(err)
				}
				refs = append(refs, ref)
			}
			b.ResetTimer()
			runOps(b, size, 32, 1, func(int) error {
				_, err := c.Store.Fetch(context.Background(), refs[int(k.Add(1))%len(refs)])
				return err
			})
		})
		c.Close()
	}
}

// runOps runs b.N chunk operations as calls of fn(batch) from workers
// goroutines and reports chunks/s.
func runOps(b *testing.B, size, workers, batch int, fn func(n int) error) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	var left atomic.Int64
	left.Store(int64(b.N))
	var wg sync.WaitGroup
	t0 := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				n := min(int64(batch), left.Add(-int64(batch))+int64(batch))
				if n <= 0 {
					return
				}
				if err := fn(int(n)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "chunks/s")
}
