package disk_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
)

// TestReadsSkipAbsentProfiles: a store holding tiny 1+1 chunks and 2+1
// chunks answers a read of a 2+1 data shard by Ref and index (any
// profile) without an index lookup of the 1+1 key it tries first, and
// still finds every shard, also after a reopen rebuilt the filter.
func TestReadsSkipAbsentProfiles(t *testing.T) {
	fs := vfs.NewMem()
	reg := prometheus.NewRegistry()
	s := open(t, disk.Config{FS: fs, Dir: "/d", Registry: reg})
	var coded []chunkstore.Shard
	for i := range 20 {
		mustPut(t, s, shardsOf(uint64(1000+i), 2000, chunkstore.Profile{K: 1, M: 1})...)
		sh := shardsOf(uint64(i), 64<<10, chunkstore.Profile{K: 2, M: 1})
		mustPut(t, s, sh...)
		coded = append(coded, sh...)
	}
	read := func(s *disk.Store) {
		t.Helper()
		for _, sh := range coded {
			q := chunkstore.ShardKey{Ref: sh.Key.Ref, Index: sh.Key.Index}
			res, err := s.GetShards(ctx(t), []chunkstore.ShardKey{q})
			if err != nil || res[0].Err != nil {
				t.Fatalf("get %s: %v / %v", q, err, res[0].Err)
			}
			if res[0].Shard.Key != sh.Key || !bytes.Equal(res[0].Shard.Data, sh.Data) {
				t.Fatalf("get %s: got %s, %d bytes", q, res[0].Shard.Key, len(res[0].Shard.Data))
			}
			res[0].Release()
		}
	}
	skips0, _, _ := gatherValue(t, reg, "zos_disk_filter_skips_total")
	read(s)
	skips, _, _ := gatherValue(t, reg, "zos_disk_filter_skips_total")
	// Indexes 0 and 1 exist under 1+1 too, and 1+1 sorts first: 40 reads
	// each try it first. A filter false positive (under 1 %) costs a skip.
	if got := skips - skips0; got < 35 {
		t.Fatalf("%v lookups skipped for 60 reads, 40 of which try an absent 1+1 key first", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	read(open(t, disk.Config{FS: fs, Dir: "/d", Registry: prometheus.NewRegistry()}))
}

// TestReadsDuringPuts: a shard is readable by any reader as soon as its
// put returned, while the writer keeps adding keys (and filter layers).
func TestReadsDuringPuts(t *testing.T) {
	s := open(t, disk.Config{FS: vfs.NewMem(), Dir: "/d"})
	const n = 300
	all := make([]chunkstore.Shard, 0, 3*n)
	for i := range n {
		all = append(all, shardsOf(uint64(i), 3000, chunkstore.Profile{K: 2, M: 1})...)
	}
	var done atomic.Int64 // all[:done] are stored
	stop := make(chan struct{})
	errs := make(chan error, 2)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := done.Load()
				if d == 0 {
					continue
				}
				sh := all[(int64(i)*7919+int64(w))%d]
				res, err := s.GetShards(context.Background(), []chunkstore.ShardKey{{Ref: sh.Key.Ref, Index: sh.Key.Index}})
				if err == nil {
					err = res[0].Err
				}
				if err == nil && !bytes.Equal(res[0].Shard.Data, sh.Data) {
					err = fmt.Errorf("%s: wrong bytes", sh.Key)
				}
				if err != nil {
					errs <- fmt.Errorf("read of %s after its put: %w", sh.Key, err)
					return
				}
				res[0].Release()
			}
		})
	}
	for i := 0; i < len(all); i += 3 {
		mustPut(t, s, all[i:i+3]...)
		done.Store(int64(i + 3))
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// BenchmarkGetAnyProfile: reads of 2+1 data shards by Ref and index from a
// store that also holds 1+1 chunks (the profile tried first).
func BenchmarkGetAnyProfile(b *testing.B) {
	s, err := disk.Open(disk.Config{Dir: b.TempDir(), CompactInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var coded []chunkstore.ShardKey
	for i := 0; i < 20000; i += 500 {
		var batch []chunkstore.Shard
		for j := i; j < i+500; j++ {
			sh := shardsOf(uint64(j), 4000, chunkstore.Profile{K: 2, M: 1})
			batch = append(batch, sh...)
			batch = append(batch, shardsOf(uint64(1<<20+j), 1000, chunkstore.Profile{K: 1, M: 1})...)
			coded = append(coded, sh[0].Key, sh[1].Key)
		}
		if err := s.PutShards(context.Background(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		k := coded[(i*7919)%len(coded)]
		res, err := s.GetShards(context.Background(), []chunkstore.ShardKey{{Ref: k.Ref, Index: k.Index}})
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res[0].Err)
		}
		res[0].Release()
	}
}
