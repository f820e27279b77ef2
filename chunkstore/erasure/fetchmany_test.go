package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// getCountingStore counts the shard reads reaching a node (verified or
// not) and keeps the inner store's unverified reads.
type getCountingStore struct {
	chunkstore.ShardStore
	node string
	log  *getLog
}

type getLog struct {
	mu     sync.Mutex
	calls  map[string]int
	ranges map[string]int // GetShardRanges calls
}

func (c getCountingStore) count() {
	c.log.mu.Lock()
	c.log.calls[c.node]++
	c.log.mu.Unlock()
}

func (c getCountingStore) GetShards(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	c.count()
	return c.ShardStore.GetShards(ctx, keys)
}

func (c getCountingStore) GetShardsUnverified(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	c.count()
	if ug, ok := c.ShardStore.(chunkstore.UnverifiedGetter); ok {
		return ug.GetShardsUnverified(ctx, keys)
	}
	return c.ShardStore.GetShards(ctx, keys)
}

// GetShardRanges counts ranged reads apart (and keeps the inner store's).
func (c getCountingStore) GetShardRanges(ctx context.Context, rs []chunkstore.ShardRange) ([]chunkstore.ShardResult, error) {
	c.log.mu.Lock()
	if c.log.ranges == nil {
		c.log.ranges = map[string]int{}
	}
	c.log.ranges[c.node]++
	c.log.mu.Unlock()
	return chunkstore.GetShardRanges(ctx, c.ShardStore, rs)
}

// resetRanges returns the ranged reads per node since the last call.
func (l *getLog) resetRanges() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.ranges
	l.ranges = map[string]int{}
	return out
}

func (l *getLog) reset() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.calls
	l.calls = map[string]int{}
	return out
}

// fetchStore returns an erasure store over c's nodes whose shard reads are
// counted, with its own metrics registry.
func fetchStore(t *testing.T, c *localcluster.Cluster, p chunkstore.Profile) (*erasure.Store, *getLog, *prometheus.Registry) {
	t.Helper()
	log := &getLog{calls: map[string]int{}}
	inner := erasure.PoolDialer(c.Pool, nil)
	reg := prometheus.NewRegistry()
	s, err := erasure.New(erasure.Config{
		Map:     c.Map(),
		Profile: p,
		Dialer: erasure.DialFunc(func(n placement.Node) (chunkstore.ShardStore, error) {
			st, err := inner.Dial(n)
			if err != nil {
				return nil, err
			}
			return getCountingStore{ShardStore: st, node: n.ID, log: log}, nil
		}),
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, log, reg
}

// mixedChunks stores chunks of mixed sizes (tiny replicated ones, empty,
// vdisk blocks, large) and returns them, their Refs in order.
func mixedChunks(t *testing.T, s chunkstore.Store, seed uint64) ([]chunkstore.Ref, [][]byte) {
	t.Helper()
	sizes := []int{0, 1, 100, 4095, 4096, 16 << 10, 16<<10 - 3, 60000, 300000, 1 << 20}
	var chunks [][]byte
	for i := range 40 {
		chunks = append(chunks, storetest.Data(seed+uint64(i), sizes[i%len(sizes)]))
	}
	refs, err := chunkstore.PutMany(ctx(t), s, chunks)
	if err != nil {
		t.Fatal(err)
	}
	return refs, chunks
}

// checkFetchMany reads refs (plus duplicates) with FetchMany and checks
// every chunk against want and against Fetch.
func checkFetchMany(t *testing.T, s *erasure.Store, refs []chunkstore.Ref, want [][]byte) {
	t.Helper()
	refs = append(refs, refs[3], refs[0], refs[3])
	want = append(want, want[3], want[0], want[3])
	got, err := s.FetchMany(ctx(t), refs)
	if err != nil {
		t.Fatalf("FetchMany: %v", err)
	}
	if len(got) != len(refs) {
		t.Fatalf("%d results for %d refs", len(got), len(refs))
	}
	for i, ref := range refs {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("chunk %d (%s, %d bytes): FetchMany returned %d other bytes", i, ref.Short(), len(want[i]), len(got[i]))
		}
		one, err := s.Fetch(ctx(t), ref)
		if err != nil || !bytes.Equal(one, got[i]) {
			t.Fatalf("chunk %d: Fetch disagrees with FetchMany: %v", i, err)
		}
	}
}

// TestFetchManyOneRequestPerNode: a batch of chunks of mixed sizes (tiny
// replicated ones, duplicates) asks each node once and returns exactly
// what Fetch returns.
func TestFetchManyOneRequestPerNode(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		p     chunkstore.Profile
		host  int
	}{{3, chunkstore.Profile{K: 2, M: 1}, 16}, {6, chunkstore.Profile{K: 4, M: 2}, 22}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			c := start(t, localcluster.Config{Nodes: tc.nodes, Profile: tc.p, FirstHost: tc.host})
			s, log, reg := fetchStore(t, c, tc.p)
			refs, want := mixedChunks(t, s, 1)
			log.reset()
			got, err := s.FetchMany(ctx(t), refs)
			if err != nil {
				t.Fatal(err)
			}
			for i := range refs {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("chunk %d: wrong bytes", i)
				}
			}
			for node, n := range log.reset() {
				if n != 1 {
					t.Fatalf("node %s got %d shard reads for one batch, want 1", node, n)
				}
			}
			if f := metric(t, reg, "zos_chunk_fetch_batch_fallbacks_total"); f != 0 {
				t.Fatalf("%v chunks of a healthy batch fell back to Fetch", f)
			}
			if b := metric(t, reg, "zos_chunk_fetch_batches_total"); b != 1 {
				t.Fatalf("%v batches counted, want 1", b)
			}
			checkFetchMany(t, s, refs, want)
		})
	}
}

// TestFetchManyNodeDown: with a node stopped (the map not told), every
// chunk of a batch still reads, through Fetch's degraded path.
func TestFetchManyNodeDown(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 28, RequestTimeout: 5 * time.Second})
	s, _, reg := fetchStore(t, c, chunkstore.Profile{K: 4, M: 2})
	refs, want := mixedChunks(t, s, 2)
	c.Stop(2)
	checkFetchMany(t, s, refs, want)
	if f := metric(t, reg, "zos_chunk_fetch_batch_fallbacks_total"); f == 0 {
		t.Fatal("no chunk fell back to Fetch with a node down")
	}
}

// TestFetchManyCorruptShard: a data shard corrupted on disk fails its
// chunk's Ref check; the chunk is read again (verified) and repaired.
func TestFetchManyCorruptShard(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 34})
	s, _, reg := fetchStore(t, c, chunkstore.Profile{K: 4, M: 2})
	refs, want := mixedChunks(t, s, 3)
	i := 8 // 300000 bytes: 4+2
	p := s.ProfileFor(len(want[i]))
	homes := s.Placer().Place(refs[i], p.N())
	corruptShard(t, c.Node(homes[1].ID), chunkstore.ShardKey{Ref: refs[i], Profile: p, Index: 1})
	got, err := s.FetchMany(ctx(t), refs)
	if err != nil {
		t.Fatal(err)
	}
	for j := range refs {
		if !bytes.Equal(got[j], want[j]) {
			t.Fatalf("chunk %d: wrong bytes", j)
		}
	}
	if f := metric(t, reg, "zos_chunk_fetch_batch_fallbacks_total"); f != 1 {
		t.Fatalf("%v chunks fell back, want the corrupt one", f)
	}
	waitHealthy(t, s, refs[i])
}

// TestFetchManyBadInput: an empty batch, unknown Refs (not found, each on
// its own) and the zero Ref; a cancelled context.
func TestFetchManyBadInput(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, FirstHost: 16})
	s := c.Store
	got, err := s.FetchMany(ctx(t), nil)
	if err != nil || len(got) != 0 {
		t.Fatalf("empty batch: %v %v", got, err)
	}
	d := storetest.Data(7, 20000)
	ref, err := s.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	unknown := chunkstore.Sum([]byte("never stored"))
	refs := []chunkstore.Ref{unknown, ref, {}, unknown}
	got, err = s.FetchMany(ctx(t), refs)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	if len(be.Failed) != 3 || be.Err(1) != nil || !errors.Is(be.Err(0), chunkstore.ErrNotFound) || !errors.Is(be.Err(2), chunkstore.ErrNotFound) || !errors.Is(be.Err(3), chunkstore.ErrNotFound) {
		t.Fatalf("failed %v: %v", be.Failed, err)
	}
	if !bytes.Equal(got[1], d) || got[0] != nil {
		t.Fatal("the stored chunk was not returned beside the unknown ones")
	}
	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := s.FetchMany(cctx, refs); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// BenchmarkFetchMany reads batches of 64 vdisk blocks (16 KiB, 1 MiB per
// batch) on 3 loopback shard servers (2+1, in-memory disks): FetchMany
// against the same chunks as 64 concurrent Fetches (what a blockd read
// did before FetchMany).
//
//	go test -run=^$ -bench=FetchMany -benchtime=200x ./chunkstore/erasure
func BenchmarkFetchMany(b *testing.B) {
	c, err := localcluster.Start(localcluster.Config{Nodes: 3, Prefix: lo, FirstHost: 16, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const batch, size = 64, 16 << 10
	var batches [][]chunkstore.Ref
	for i := range 32 {
		var chunks [][]byte
		for j := range batch {
			chunks = append(chunks, storetest.Data(uint64(i*batch+j), size))
		}
		refs, err := c.Store.PutMany(context.Background(), chunks)
		if err != nil {
			b.Fatal(err)
		}
		batches = append(batches, refs)
	}
	b.Run("fetch-parallel", func(b *testing.B) {
		b.SetBytes(batch * size)
		b.ReportAllocs()
		for i := range b.N {
			var wg sync.WaitGroup
			for _, ref := range batches[i%len(batches)] {
				wg.Go(func() {
					if _, err := c.Store.Fetch(context.Background(), ref); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
		}
	})
	b.Run("fetchmany", func(b *testing.B) {
		b.SetBytes(batch * size)
		b.ReportAllocs()
		for i := range b.N {
			if _, err := c.Store.FetchMany(context.Background(), batches[i%len(batches)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}
