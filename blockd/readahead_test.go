package blockd

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// countingFetches counts the chunks fetched from a store (one by one or in
// batches).
type countingFetches struct {
	chunkstore.Store
	chunks atomic.Int64
	bytes  atomic.Int64
}

func (c *countingFetches) Fetch(ctx context.Context, ref chunkstore.Ref) ([]byte, error) {
	c.chunks.Add(1)
	d, err := c.Store.Fetch(ctx, ref)
	c.bytes.Add(int64(len(d)))
	return d, err
}

func (c *countingFetches) FetchMany(ctx context.Context, refs []chunkstore.Ref) ([][]byte, error) {
	c.chunks.Add(int64(len(refs)))
	ds, err := chunkstore.FetchMany(ctx, c.Store, refs)
	for _, d := range ds {
		c.bytes.Add(int64(len(d)))
	}
	return ds, err
}

// TestReadaheadFetchesExtentsOnce: a sequential read of a vdisk written
// sequentially from an unaligned offset fetches about its own size: its
// extents are aligned (alignedRun) like readahead's pieces, so no extent
// is fetched whole twice (it was 1.58× before).
func TestReadaheadFetchesExtentsOnce(t *testing.T) {
	e := newEnv()
	st := &countingFetches{Store: e.store}
	const size = 64 << 20
	want := writeVDisk(t, e, st, size) // written from block 16 on
	d, _ := coldReader(t, e, st, func(c *Config) { c.BlockCacheBytes = 256 << 20 })
	st.bytes.Store(0)
	readSequentially(t, d, want)
	if got := st.bytes.Load(); got > size*11/10 {
		t.Fatalf("a sequential read of %d MiB fetched %.1f MiB", size>>20, float64(got)/(1<<20))
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// writeVDisk creates vdisk v of size bytes on a Service over st, writes it
// with seeded data (its first 16 blocks left as holes) and commits it; it
// returns the content.
func writeVDisk(t *testing.T, e *env, st chunkstore.Store, size int64) []byte {
	t.Helper()
	return writeVDiskExtents(t, e, st, size, 0)
}

// writeVDiskExtents is writeVDisk with Config.ExtentBytes extentBytes (0:
// the test env's, extents on; negative: one chunk per block, the layout before extents).
func writeVDiskExtents(t *testing.T, e *env, st chunkstore.Store, size int64, extentBytes int64) []byte {
	t.Helper()
	s := e.service(t, "n1", func(c *Config) {
		c.StoreFor = func(string, string) chunkstore.Store { return st }
		if extentBytes != 0 {
			c.ExtentBytes = extentBytes
		}
	})
	mustCreate(t, s, "v", size, 16<<10, "")
	d, rel := mustOpen(t, s, "v")
	want := storetest.Data(1, int(size))
	clear(want[:16*16<<10])
	if err := d.WriteAt(context.Background(), want[16*16<<10:], 16*16<<10, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	rel()
	return want
}

// coldReader opens v:ro on a fresh Service over st (empty caches).
func coldReader(t *testing.T, e *env, st chunkstore.Store, mod func(*Config)) (*Disk, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := e.service(t, "n2", func(c *Config) {
		c.StoreFor = func(string, string) chunkstore.Store { return st }
		c.Registerer = reg
		if mod != nil {
			mod(c)
		}
	})
	d, _ := mustOpen(t, s, "v:ro")
	return d, reg
}

// cluster3 starts a 3-node (2+1) cluster of real shard servers on
// loopback hosts from first on, its erasure store's metrics in reg (if
// set), stopped when t ends.
func cluster3(t *testing.T, first int, reg *prometheus.Registry) *localcluster.Cluster {
	t.Helper()
	c, err := localcluster.Start(localcluster.Config{Nodes: 3, Prefix: lo, FirstHost: first, RequestTimeout: 5 * time.Second, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// readSequentially reads d from start to end in 1 MiB requests (a
// sequential reader for readahead, unlike readAll's one request) and checks each
// against want.
func readSequentially(t *testing.T, d *Disk, want []byte) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < int64(len(want)); off += int64(len(buf)) {
		if err := d.ReadAt(context.Background(), buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
	}
}

// TestReadaheadSequential: sequential reads of a vdisk beyond the caches
// read ahead (the window grows, later reads find their blocks cached) and
// return what was written.
func TestReadaheadSequential(t *testing.T) {
	e := newEnv()
	st := &countingFetches{Store: e.store}
	const size = 48 << 20
	want := writeVDisk(t, e, st, size)
	d, reg := coldReader(t, e, st, func(c *Config) { c.BlockCacheBytes = 256 << 20 })
	st.chunks.Store(0)
	const step = 1 << 20
	buf := make([]byte, step)
	for off := int64(0); off < size; off += step {
		if err := d.ReadAt(context.Background(), buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want[off:off+step]) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
		// A reader that uses what it reads: readahead gets ahead of it
		// even on a loaded machine (the memory store answers at once).
		time.Sleep(2 * time.Millisecond)
	}
	ra := counter(t, reg, "zos_blockd_readahead_bytes_total")
	if ra < size/4 {
		t.Fatalf("%v bytes read ahead of a %d-byte sequential read", ra, size)
	}
	if w := counter(t, reg, "zos_blockd_readahead_windows_total"); w < 4 {
		t.Fatalf("%v readahead windows", w)
	}
	if e := counter(t, reg, "zos_blockd_readahead_errors_total"); e != 0 {
		t.Fatalf("%v readahead errors", e)
	}
	// Each block was fetched about once (readahead and reads coalesce;
	// the window past the end is clipped).
	if n, blocks := st.chunks.Load(), int64(size/(16<<10)-16); n > blocks+blocks/10 {
		t.Fatalf("%d chunks fetched for %d blocks", n, blocks)
	}
	if d.ra.window != 16<<20 {
		t.Fatalf("window %d after a long sequential read, want the 16 MiB default", d.ra.window)
	}
}

// TestReadaheadRandom: random reads do not read ahead, and a random read
// resets the window of a sequential reader.
func TestReadaheadRandom(t *testing.T) {
	e := newEnv()
	st := &countingFetches{Store: e.store}
	const size = 32 << 20
	want := writeVDisk(t, e, st, size)
	d, reg := coldReader(t, e, st, nil)
	buf := make([]byte, 4096)
	for k := range 200 {
		off := int64((k*7919)%size/(1<<20))<<20 + 8192 + int64(k%3)*65536
		if err := d.ReadAt(context.Background(), buf, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, want[off:off+4096]) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
	}
	if ra := counter(t, reg, "zos_blockd_readahead_bytes_total"); ra != 0 {
		t.Fatalf("%v bytes read ahead of random reads", ra)
	}
	// Sequential, then random: the window is gone.
	for off := int64(0); off < 4<<20; off += 4096 {
		if err := d.ReadAt(context.Background(), buf, off); err != nil {
			t.Fatal(err)
		}
	}
	if d.ra.window == 0 {
		t.Fatal("no window after sequential reads")
	}
	if err := d.ReadAt(context.Background(), buf, 20<<20); err != nil {
		t.Fatal(err)
	}
	d.ra.mu.Lock()
	w := d.ra.window
	d.ra.mu.Unlock()
	if w != 0 {
		t.Fatalf("window %d after a random read", w)
	}
}

// TestReadPartlyCached: a read whose blocks are partly in the block cache,
// partly dirty (whole and partial) and partly only in the store fetches
// only the latter, in one batch, and sees the dirty data.
func TestReadPartlyCached(t *testing.T) {
	for _, extents := range []bool{false, true} {
		t.Run(fmt.Sprintf("extents=%v", extents), func(t *testing.T) { testReadPartlyCached(t, extents) })
	}
}

func testReadPartlyCached(t *testing.T, extents bool) {
	e := newEnv()
	st := &countingFetches{Store: e.store}
	const size = 8 << 20
	const bs = 16 << 10
	layout := int64(-1)
	if extents {
		layout = 0
	}
	want := writeVDiskExtents(t, e, st, size, layout)
	reg := prometheus.NewRegistry()
	s := e.service(t, "n2", func(c *Config) {
		c.StoreFor = func(string, string) chunkstore.Store { return st }
		c.Registerer = reg
		c.ReadaheadBytes = -1
	})
	d, _ := mustOpen(t, s, "v")
	ctx := context.Background()
	// Cache blocks 20-29 by reading them.
	if err := d.ReadAt(ctx, make([]byte, 10*bs), 20*bs); err != nil {
		t.Fatal(err)
	}
	// Dirty block 32 whole and one sector of block 40.
	whole := bytes.Repeat([]byte{7}, bs)
	if err := d.WriteAt(ctx, whole, 32*bs, false); err != nil {
		t.Fatal(err)
	}
	copy(want[32*bs:], whole)
	sec := bytes.Repeat([]byte{9}, 512)
	if err := d.WriteAt(ctx, sec, 40*bs+1024, false); err != nil {
		t.Fatal(err)
	}
	copy(want[40*bs+1024:], sec)
	st.chunks.Store(0)
	// Blocks 10-49: 10-15 holes, 16-19 and 30-49 in the store (but 32
	// dirty; 40 partial, its base fetched), 20-29 cached.
	got := make([]byte, 40*bs-1000)
	if err := d.ReadAt(ctx, got, 10*bs+500); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want[10*bs+500:10*bs+500+len(got)]) {
		t.Fatal("wrong bytes")
	}
	// 16-19, 30-31, 33-49: 23 (22 if write-back's prefetch of block
	// 40's base got there first); with extents, the one extent of blocks
	// 16-79 that holds them all (twice if write-back fetched 40's base from
	// it after the counter was reset).
	if n := st.chunks.Load(); extents && n != 1 && n != 2 {
		t.Fatalf("%d chunks fetched, want the one extent of the blocks not in memory", n)
	} else if n := st.chunks.Load(); !extents && n != 23 && n != 22 {
		t.Fatalf("%d chunks fetched, want the 23 not in memory", n)
	}
}

// TestReadClusterNodeDown: a vdisk on a 2+1 cluster reads back whole,
// sequentially (with readahead) and in large random reads, with one of the
// three storage nodes stopped.
func TestReadClusterNodeDown(t *testing.T) {
	c := cluster3(t, 200, nil)
	e := newEnv()
	const size = 16 << 20
	want := writeVDisk(t, e, c.Store, size)
	c.Stop(1)
	d, reg := coldReader(t, e, c.Store, nil)
	readSequentially(t, d, want)
	if ra := counter(t, reg, "zos_blockd_readahead_bytes_total"); ra == 0 {
		t.Fatal("no readahead with a node down")
	}
	d2, _ := coldReader(t, e, c.Store, func(c *Config) { c.Node = "n1"; c.ReadaheadBytes = -1 })
	big := make([]byte, 3<<20+4096)
	for _, off := range []int64{5<<20 + 512, 100 << 10, 12 << 20} {
		if err := d2.ReadAt(context.Background(), big, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(big, want[off:off+int64(len(big))]) {
			t.Fatalf("read at %d: wrong bytes", off)
		}
	}
}

// TestReadaheadFetchesPartialBases: readahead brings in the bases of
// partial dirty blocks (4 KiB written into 16 KiB blocks whose old content
// is only in the store), which a read of them needs; before, it skipped
// every dirty block and the read fetched each base itself.
func TestReadaheadFetchesPartialBases(t *testing.T) {
	e := newEnv()
	st := &countingFetches{Store: e.store}
	const size, bs = 8 << 20, 16 << 10
	want := writeVDisk(t, e, st, size)
	s := e.service(t, "n2", func(c *Config) {
		c.StoreFor = func(string, string) chunkstore.Store { return st }
		c.WritebackInterval = time.Hour // the partial blocks stay dirty
	})
	d, _ := mustOpen(t, s, "v")
	ctx := context.Background()
	small := bytes.Repeat([]byte{0xAB}, 4096)
	var partial []uint64
	for idx := uint64(16); idx < size/bs; idx += 4 {
		if err := d.WriteAt(ctx, small, int64(idx)*bs+4096, false); err != nil {
			t.Fatal(err)
		}
		copy(want[int64(idx)*bs+4096:], small)
		partial = append(partial, idx)
	}
	d.prefetch(0, size)
	d.mu.Lock()
	var missing []uint64
	for _, idx := range partial {
		b := d.cache.dirty[idx]
		if b == nil || b.complete() {
			t.Fatalf("block %d is not a partial dirty block", idx)
		}
		src := d.belowDirtyLocked(idx)
		if _, ok := d.cachedLocked(idx, src); !ok {
			missing = append(missing, idx)
		}
	}
	d.mu.Unlock()
	if len(missing) > 0 {
		t.Fatalf("readahead left the bases of %d of %d partial blocks in the store (%v…)", len(missing), len(partial), missing[0])
	}
	// The read then needs no store round trip, and merges right.
	st.chunks.Store(0)
	got := make([]byte, size)
	if err := d.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read of partial blocks over prefetched bases: wrong bytes")
	}
	if n := st.chunks.Load(); n != 0 {
		t.Fatalf("the read fetched %d chunks after readahead", n)
	}
}
