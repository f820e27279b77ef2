package disk_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/internal/faultfs"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

func gatherValue(t testing.TB, reg *prometheus.Registry, name string) (value float64, count uint64, sum float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		if h := m.GetHistogram(); h != nil {
			return 0, h.GetSampleCount(), h.GetSampleSum()
		}
		if g := m.GetGauge(); g != nil {
			return g.GetValue(), 0, 0
		}
		return m.GetCounter().GetValue(), 0, 0
	}
	t.Fatalf("no metric %s", name)
	return
}

// TestGroupCommit: write requests that arrive while a group commit is
// syncing all go into the next group — one segment fdatasync and one
// synced index commit for all of them — and each is durable when its
// call returns.
func TestGroupCommit(t *testing.T) {
	fs := faultfs.Wrap(vfs.NewMem())
	reg := prometheus.NewRegistry()
	s, err := disk.Open(disk.Config{Dir: "/store", FS: fs, CompactInterval: -1, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	// The first put's segment sync is held: the writer sits in it.
	gate := make(chan struct{})
	fs.Inject(faultfs.Rule{Op: faultfs.Sync, PathContains: "/seg/", Hold: gate, Times: 1})
	first := shardsOf(1, 16<<10, chunkstore.Profile{K: 2, M: 1})[:1]
	firstDone := make(chan error, 1)
	go func() { firstDone <- s.PutShards(ctx(t), first) }()
	wait.For(t, time.Minute, "the first put to reach its fsync", func() bool { return fs.Hits() == 1 })
	segSyncs, walSyncs := fs.Syncs("/seg/"), fs.Syncs(".log")

	const n = 32
	var batches [n][]chunkstore.Shard
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		batches[i] = shardsOf(uint64(100+i), 16<<10, chunkstore.Profile{K: 2, M: 1})
		wg.Go(func() { errs <- s.PutShards(ctx(t), batches[i]) })
	}
	wait.For(t, time.Minute, "32 puts queued behind the held fsync", func() bool {
		q, _, _ := gatherValue(t, reg, "zos_disk_write_queue")
		return q == n
	})
	close(gate)
	if err := <-firstDone; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := fs.Syncs("/seg/") - segSyncs; got != 2 {
		t.Errorf("%d segment syncs for the first put and 32 queued ones, want 2", got)
	}
	if got := fs.Syncs(".log") - walSyncs; got != 2 {
		t.Errorf("%d index WAL syncs for the first put and 32 queued ones, want 2", got)
	}
	_, groups, ops := gatherValue(t, reg, "zos_disk_commit_ops")
	if groups != 2 || ops != n+1 {
		t.Errorf("%d group commits applied %v requests, want 2 groups of 33", groups, ops)
	}
	for _, b := range append(batches[:], first) {
		for _, sh := range b {
			checkShard(t, s, sh)
		}
	}
}

// BenchmarkGroupCommit: a round of 32 shards of 8 KiB (what one node gets
// from a 2+1 batch of 32 chunks of 16 KiB) stored on a real file system
// with fsync, either as one PutShards (the erasure store's PutMany) or as
// 32 concurrent PutShards of one shard (32 parallel Puts). It reports the
// round's latency p50/p99 and the segment fsyncs and group commits per
// round.
//
//	go test -run=^$ -bench=GroupCommit -benchtime=200x ./chunkstore/disk
func BenchmarkGroupCommit(b *testing.B) {
	for _, mode := range []string{"one-call", "concurrent"} {
		b.Run(mode, func(b *testing.B) {
			fs := faultfs.Wrap(vfs.Default)
			reg := prometheus.NewRegistry()
			s, err := disk.Open(disk.Config{Dir: b.TempDir(), FS: fs, CompactInterval: -1, Registry: reg})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const n = 32
			rounds := make([][]chunkstore.Shard, b.N+1)
			for r := range rounds {
				rounds[r] = make([]chunkstore.Shard, n)
				for i := range n {
					rounds[r][i] = shardsOf(uint64(r*n+i+1), 16<<10, chunkstore.Profile{K: 2, M: 1})[0]
				}
			}
			round := func(r int) {
				shards := rounds[r]
				if mode == "one-call" {
					if err := s.PutShards(b.Context(), shards); err != nil {
						b.Fatal(err)
					}
					return
				}
				var wg sync.WaitGroup
				for i := range shards {
					wg.Go(func() {
						if err := s.PutShards(b.Context(), shards[i:i+1]); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			round(0)
			syncs0 := fs.Syncs(".seg")
			_, groups0, _ := gatherValue(b, reg, "zos_disk_commit_ops")
			lat := make([]time.Duration, 0, b.N)
			b.SetBytes(n * 8 << 10)
			b.ResetTimer()
			for r := range b.N {
				t0 := time.Now()
				round(r + 1)
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			_, groups, _ := gatherValue(b, reg, "zos_disk_commit_ops")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)])/1e6, "p99-ms")
			b.ReportMetric(float64(fs.Syncs(".seg")-syncs0)/float64(b.N), "fsyncs/round")
			b.ReportMetric(float64(groups-groups0)/float64(b.N), "commits/round")
		})
	}
}

// TestGroupWriteBuffer: one PutShards of small and large shards (small
// ones gathered into one write, large ones written directly) across
// several segment rolls, with duplicates, reads back before and after a
// reopen; a failed write of the gathered records acknowledges nothing and
// the store goes on.
func TestGroupWriteBuffer(t *testing.T) {
	fs := faultfs.Wrap(vfs.NewMem())
	cfg := disk.Config{Dir: "/store", FS: fs, SegmentSize: 1 << 20, CompactInterval: -1}
	s, err := disk.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var all []chunkstore.Shard
	for i := range 120 {
		size := 3000 + i*97
		if i%10 == 3 {
			size = 900 << 10 // past writeDirect
		}
		all = append(all, shardsOf(uint64(i+1), size, chunkstore.Profile{K: 1, M: 1})...)
	}
	all = append(all, all[5], all[77]) // duplicates in the same group
	mustPut(t, s, all...)
	for _, sh := range all {
		checkShard(t, s, sh)
	}
	if st := s.Stats(); st.Segments < 5 || st.Shards != 240 {
		t.Fatalf("stats %+v: want 240 shards over several segments", st)
	}
	// The gathered records' write fails: nothing of that call is stored.
	failed := shardsOf(999, 5000, chunkstore.Profile{K: 1, M: 1})
	rm := fs.Inject(faultfs.Rule{Op: faultfs.Write, PathContains: "/seg/", Times: 1})
	if err := s.PutShards(ctx(t), failed); err == nil {
		t.Fatal("put with a failing segment write succeeded")
	}
	rm()
	for _, sh := range failed {
		absent(t, s, sh.Key)
	}
	later := shardsOf(1000, 5000, chunkstore.Profile{K: 1, M: 1})
	mustPut(t, s, later...)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openFS(t, fs)
	for _, sh := range append(all, later...) {
		checkShard(t, s, sh)
	}
	for _, sh := range failed {
		absent(t, s, sh.Key)
	}
}
