package blockd

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// Partial blocks (4 KiB written into 16 KiB blocks) are completed with one
// batched read of their bases, not a read each, and are then stored packed:
// a chunk per stretch, not one per block.
func TestPartialBlocksCompletedTogether(t *testing.T) {
	const bs = 16 << 10
	const size = 4 << 20
	e, rs, d := uncachedDisk(t, size, bs, nil)
	ctx := context.Background()
	model, rng, write := filledModel(t, d, size, 5)
	// 4 KiB into 24 blocks of each of the first two stretches (1 MiB each).
	perStretch := int(DefaultExtentBytes / bs)
	var written []uint64
	for st := range 2 {
		for _, j := range rng.Perm(perStretch)[:24] {
			i := uint64(st*perStretch + j)
			written = append(written, i)
			write(int64(i)*bs+4<<10, 4<<10)
		}
	}
	// Each partial write started a prefetch of its base (into a block
	// cache that keeps nothing here): let them end before counting.
	wait.For(t, time.Minute, "the prefetches of partial blocks to end", func() bool { return !d.prefetching() })
	reads0 := rs.ranges.Load() + e.store.fetches.Load()
	puts0 := e.store.puts.Load()
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	reads := rs.ranges.Load() + e.store.fetches.Load() - reads0
	if reads == 0 || reads > 4 {
		t.Fatalf("completing %d partial blocks of two extents read the store %d times, want one batch (1 to 4 reads)", len(written), reads)
	}
	// Two packs and the tree's nodes, not a chunk per block.
	if puts := e.store.puts.Load() - puts0; puts >= int64(len(written)) {
		t.Fatalf("%d puts for %d partial blocks of two stretches: not packed", puts, len(written))
	}
	ents := entries(t, d.svc, "p")
	packs := map[chunkstore.Ref]bool{}
	for _, i := range written {
		if !ents[i].InExtent() {
			t.Fatalf("block %d, written in part, is stored alone", i)
		}
		packs[ents[i].Ext] = true
	}
	if len(packs) != 2 {
		t.Fatalf("the partial blocks of two stretches are in %d chunks, want 2", len(packs))
	}
	if got := readAll(t, d); !bytes.Equal(got, model) {
		t.Fatal("read differs from the model")
	}
}

// TestPrefetchBatchesBases: the bases that partial writes into uncached
// blocks read ahead of write-back go to the store in batches, a few
// runners at a time, not in a read (and a goroutine) each; what is written
// reads back.
func TestPrefetchBatchesBases(t *testing.T) {
	const bs = 16 << 10
	const size = 4 << 20
	_, rs, d := uncachedDisk(t, size, bs, func(c *Config) { c.WritebackInterval = time.Hour })
	ctx := context.Background()
	model, rng, write := filledModel(t, d, size, 7)
	// Hold every store read until all the bases are asked for, so that
	// those written while the first reads wait queue.
	gate := make(chan struct{})
	openGate := sync.OnceFunc(func() { close(gate) })
	defer openGate() // before the disk closes, which waits for its reads
	hook := func(chunkstore.Ref) error {
		<-gate
		return nil
	}
	rs.fetchHook.Store(&hook)
	rs.batches.Store(0)
	const n = 48
	for _, j := range rng.Perm(size / bs)[:n] {
		write(int64(j)*bs+4<<10, 4<<10)
	}
	d.mu.Lock()
	pending := d.pf.reading + len(d.pf.jobs)
	d.mu.Unlock()
	if pending != n {
		t.Fatalf("%d bases queued or being read after %d partial writes, none answered", pending, n)
	}
	openGate()
	wait.For(t, time.Minute, "the prefetches of partial blocks to end", func() bool { return !d.prefetching() })
	rs.fetchHook.Store(nil)
	// prefetchRunners batches of one, then the rest in batches of up to
	// prefetchBatch: far fewer than a read per base.
	if got := rs.batches.Load(); got < 1 || got > 2*prefetchRunners {
		t.Fatalf("%d partial writes read their bases in %d store reads, want at most %d", n, got, 2*prefetchRunners)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, size)
	if err := d.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("content after partial writes over prefetched bases differs")
	}
}

// uncachedDisk opens vdisk "p" (size bytes of bs blocks) read-write on a
// Service whose block cache keeps nothing, over a counting rangeStore, so
// that every base is read from the store; mod adjusts the Config. The
// disk is released when t ends.
func uncachedDisk(t *testing.T, size, bs int64, mod func(*Config)) (*env, *rangeStore, *Disk) {
	t.Helper()
	e := newEnv()
	rs := &rangeStore{flakyStore: e.store}
	s := e.service(t, "n1", func(c *Config) {
		c.StoreFor = func(pool, typ string) chunkstore.Store { return rs }
		c.BlockCacheBytes = 1
		if mod != nil {
			mod(c)
		}
	})
	mustCreate(t, s, "p", size, bs, "db")
	d, rel := mustOpen(t, s, "p")
	t.Cleanup(rel)
	return e, rs, d
}
