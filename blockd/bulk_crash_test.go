package blockd

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Bulk sequential writes larger than the write-back cache, 16 in flight
// (fio's iodepth 16), a FLUSH every 16 MiB and at the end: after the
// writer crashes every byte reads back on another node.
func TestBulkConcurrentFlushCrash(t *testing.T) {
	for _, cache := range []int64{8 << 20, 48 << 20} {
		t.Run(fmt.Sprint(cache>>20, "MiB-cache"), func(t *testing.T) {
			e := newEnv().withJournal(t)
			s1 := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = cache; c.WritebackInterval = 5 * time.Second })
			ctx := context.Background()
			const size = 128 << 20
			mustCreate(t, s1, "bc", size, 16384, "db")
			d, _ := mustOpen(t, s1, "bc")
			e.store.putDelay.Store(int64(100 * time.Microsecond))
			const total, req = 64 << 20, 1 << 20
			base := int64(18874368)
			want := make([]byte, total)
			for i := range want {
				want[i] = byte(i>>12) ^ byte(i)
			}
			sem := make(chan struct{}, 16)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var werr error
			for o := int64(0); o < total; o += req {
				sem <- struct{}{}
				wg.Add(1)
				go func(o int64) {
					defer wg.Done()
					defer func() { <-sem }()
					if err := d.WriteAt(ctx, want[o:o+req], base+o, false); err != nil {
						mu.Lock()
						werr = err
						mu.Unlock()
					}
				}(o)
				if (o/req)%16 == 15 {
					wg.Wait()
					if err := d.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				}
			}
			wg.Wait()
			if werr != nil {
				t.Fatal(werr)
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			crash(t, e, d, "n1")
			e.store.putDelay.Store(0)
			d2, _ := mustOpen(t, e.service(t, "n2", nil), "bc")
			got := make([]byte, total)
			if err := d2.ReadAt(ctx, got, base); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				i := firstDiff(got, want)
				t.Fatalf("after the crash the flushed data differs at offset %d (+%d into the write)", base+int64(i), i)
			}
		})
	}
}
