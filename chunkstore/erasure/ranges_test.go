package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// rangesOf makes ranges of every chunk: its start, its end, one across
// the boundary of its first two data shards, an empty one and the whole
// chunk; each with the bytes it must read.
func rangesOf(s *erasure.Store, refs []chunkstore.Ref, chunks [][]byte) ([]chunkstore.Range, [][]byte) {
	var rs []chunkstore.Range
	var want [][]byte
	add := func(ref chunkstore.Ref, d []byte, off, n int) {
		rs = append(rs, chunkstore.Range{Ref: ref, Size: len(d), Off: off, Len: n})
		want = append(want, d[off:off+n])
	}
	for i, d := range chunks {
		if len(d) == 0 {
			continue
		}
		ss := chunkstore.ShardSize(len(d), int(s.ProfileFor(len(d)).K))
		add(refs[i], d, 0, min(len(d), 4096))
		add(refs[i], d, len(d)-min(len(d), 100), min(len(d), 100))
		if ss < len(d) {
			add(refs[i], d, ss-min(ss, 3000), min(len(d)-ss+min(ss, 3000), 6000))
		}
		add(refs[i], d, len(d)/2, 0)
		add(refs[i], d, 0, len(d))
	}
	return rs, want
}

func checkRanges(t *testing.T, rs []chunkstore.Range, got, want [][]byte) {
	t.Helper()
	if len(got) != len(rs) {
		t.Fatalf("%d results for %d ranges", len(got), len(rs))
	}
	for i, r := range rs {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("range %d ([%d, +%d) of %s, %d bytes): wrong bytes", i, r.Off, r.Len, r.Ref.Short(), r.Size)
		}
	}
}

// TestFetchRangesOneRequestPerNode: ranges of chunks of mixed sizes (tiny
// replicated ones, ranges across shard boundaries, empty and whole ones)
// are read as parts of shards, one ranged request per node for the call,
// no shard read whole, and come back exactly.
func TestFetchRangesOneRequestPerNode(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		p     chunkstore.Profile
		host  int
	}{{3, chunkstore.Profile{K: 2, M: 1}, 16}, {6, chunkstore.Profile{K: 4, M: 2}, 22}} {
		t.Run(tc.p.String(), func(t *testing.T) {
			c := start(t, localcluster.Config{Nodes: tc.nodes, Profile: tc.p, FirstHost: tc.host})
			s, log, reg := fetchStore(t, c, tc.p)
			refs, chunks := mixedChunks(t, s, 11)
			rs, want := rangesOf(s, refs, chunks)
			log.reset()
			log.resetRanges()
			got, err := s.FetchRanges(ctx(t), rs)
			if err != nil {
				t.Fatal(err)
			}
			checkRanges(t, rs, got, want)
			if n := log.reset(); len(n) != 0 {
				t.Fatalf("shards read whole for ranges: %v", n)
			}
			asked := log.resetRanges()
			if len(asked) != tc.nodes {
				t.Fatalf("ranged reads on %d nodes, want %d: %v", len(asked), tc.nodes, asked)
			}
			for node, n := range asked {
				if n != 1 {
					t.Fatalf("node %s got %d ranged requests for one call, want 1", node, n)
				}
			}
			if f := metric(t, reg, "zos_chunk_range_fallbacks_total"); f != 0 {
				t.Fatalf("%v ranges of a healthy cluster read whole", f)
			}
			total := 0
			for _, r := range rs {
				total += r.Len
			}
			if b := metric(t, reg, "zos_chunk_range_bytes_total"); b != float64(total) {
				t.Fatalf("range bytes %v, want %d", b, total)
			}
			// chunkstore.FetchRanges takes the store's own path.
			got, err = chunkstore.FetchRanges(ctx(t), s, rs)
			if err != nil {
				t.Fatal(err)
			}
			checkRanges(t, rs, got, want)
			if n := log.reset(); len(n) != 0 {
				t.Fatalf("chunkstore.FetchRanges read shards whole: %v", n)
			}
		})
	}
}

// TestFetchRangesNodeDown: with a node stopped (the map not told), every
// range still reads: those with a piece on it whole, degraded.
func TestFetchRangesNodeDown(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 28, RequestTimeout: 5 * time.Second})
	s, _, reg := fetchStore(t, c, chunkstore.Profile{K: 4, M: 2})
	refs, chunks := mixedChunks(t, s, 12)
	rs, want := rangesOf(s, refs, chunks)
	c.Stop(2)
	got, err := s.FetchRanges(ctx(t), rs)
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, rs, got, want)
	if f := metric(t, reg, "zos_chunk_range_fallbacks_total"); f == 0 {
		t.Fatal("no range was read whole with a node down")
	}
}

// TestFetchRangesShardMissing: a data shard gone from its home (deleted
// there) makes the ranges over it read the chunk whole, which rebuilds
// it from parity and repairs it.
func TestFetchRangesShardMissing(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 34})
	s, _, reg := fetchStore(t, c, chunkstore.Profile{K: 4, M: 2})
	d := storetest.Data(13, 1<<20)
	ref, err := s.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	p := s.ProfileFor(len(d))
	homes := s.Placer().Place(ref, p.N())
	k := chunkstore.ShardKey{Ref: ref, Profile: p, Index: 1}
	if n, err := c.Node(homes[1].ID).Disk.DeleteShards(ctx(t), []chunkstore.ShardKey{k}, 0); err != nil || n != 1 {
		t.Fatalf("delete shard: %d %v", n, err)
	}
	ss := chunkstore.ShardSize(len(d), int(p.K))
	rs := []chunkstore.Range{
		{Ref: ref, Size: len(d), Off: 0, Len: 65536},            // shard 0 only
		{Ref: ref, Size: len(d), Off: ss + 1000, Len: 65536},    // shard 1
		{Ref: ref, Size: len(d), Off: 2*ss - 100, Len: 1 << 10}, // shards 1 and 2
	}
	got, err := s.FetchRanges(ctx(t), rs)
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, rs, got, [][]byte{d[:65536], d[ss+1000 : ss+1000+65536], d[2*ss-100 : 2*ss-100+1<<10]})
	if f := metric(t, reg, "zos_chunk_range_fallbacks_total"); f != 2 {
		t.Fatalf("%v ranges read whole, want the 2 over the missing shard", f)
	}
	waitHealthy(t, s, ref)
}

// TestFetchRangesView: a WithProfile view reads the chunks it wrote (in
// its own profile) by ranges; the store, whose profile differs, still
// reads them right (whole).
func TestFetchRangesView(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 40})
	s, log, reg := fetchStore(t, c, chunkstore.Profile{K: 4, M: 2})
	v, err := s.WithProfile(chunkstore.Profile{K: 2, M: 1})
	if err != nil {
		t.Fatal(err)
	}
	d := storetest.Data(14, 1<<20)
	ref, err := v.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	rs := []chunkstore.Range{{Ref: ref, Size: len(d), Off: 300000, Len: 300000}}
	log.resetRanges()
	got, err := chunkstore.FetchRanges(ctx(t), v, rs)
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, rs, got, [][]byte{d[300000:600000]})
	if f := metric(t, reg, "zos_chunk_range_fallbacks_total"); f != 0 || len(log.resetRanges()) == 0 {
		t.Fatalf("the view's own chunk: %v ranges read whole", f)
	}
	got, err = s.FetchRanges(ctx(t), rs)
	if err != nil {
		t.Fatal(err)
	}
	checkRanges(t, rs, got, [][]byte{d[300000:600000]})
	if f := metric(t, reg, "zos_chunk_range_fallbacks_total"); f != 1 {
		t.Fatalf("a chunk of another profile: %v ranges read whole, want 1", f)
	}
}

// TestFetchRangesBadInput: ranges that do not fit their chunk, unknown
// Refs and a Size other than the chunk's fail each on its own; an empty
// call and a cancelled context.
func TestFetchRangesBadInput(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, FirstHost: 16})
	s := c.Store
	if got, err := s.FetchRanges(ctx(t), nil); err != nil || len(got) != 0 {
		t.Fatalf("empty call: %v %v", got, err)
	}
	d := storetest.Data(15, 200000)
	ref, err := s.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	unknown := chunkstore.Sum([]byte("never stored"))
	rs := []chunkstore.Range{
		{Ref: ref, Size: len(d), Off: 5, Len: 10},
		{Ref: ref, Size: len(d), Off: len(d) - 5, Len: 10}, // past the end
		{Ref: unknown, Size: 200000, Off: 0, Len: 10},
		{Ref: ref, Size: len(d) + 4096, Off: 0, Len: 10}, // not the chunk's size
		{Ref: ref, Size: len(d), Off: -1, Len: 10},
		{Ref: chunkstore.Ref{}, Size: 10, Off: 0, Len: 1},
	}
	got, err := s.FetchRanges(ctx(t), rs)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	if !bytes.Equal(got[0], d[5:15]) || be.Err(0) != nil {
		t.Fatalf("the good range: %v", be.Err(0))
	}
	for i, want := range []error{nil, chunkstore.ErrBadRange, chunkstore.ErrNotFound, chunkstore.ErrBadRange, chunkstore.ErrBadRange, chunkstore.ErrBadRange} {
		if want != nil && (!errors.Is(be.Err(i), want) || got[i] != nil) {
			t.Fatalf("range %d: %v, want %v", i, be.Err(i), want)
		}
	}
	cctx, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := s.FetchRanges(cctx, rs); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// BenchmarkFetchRanges reads batches of 16 random 64 KiB ranges of 1 MiB
// chunks (what blockd asks of a vdisk's extents under random reads) on 3
// loopback shard servers (2+1, in-memory disks): FetchRanges against
// FetchMany of the same chunks whole (what a ranged read cost before).
//
//	go test -run=^$ -bench=FetchRanges -benchtime=200x ./chunkstore/erasure
func BenchmarkFetchRanges(b *testing.B) {
	c, err := localcluster.Start(localcluster.Config{Nodes: 3, Prefix: lo, FirstHost: 16, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	const size, part, batch = 1 << 20, 64 << 10, 16
	var chunks [][]byte
	for i := range 64 {
		chunks = append(chunks, storetest.Data(uint64(i), size))
	}
	refs, err := c.Store.PutMany(context.Background(), chunks)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var batches [][]chunkstore.Range
	for range 32 {
		var rs []chunkstore.Range
		for range batch {
			rs = append(rs, chunkstore.Range{Ref: refs[rng.IntN(len(refs))], Size: size, Off: rng.IntN(size/part) * part, Len: part})
		}
		batches = append(batches, rs)
	}
	b.Run("fetchranges", func(b *testing.B) {
		b.SetBytes(batch * part)
		for i := range b.N {
			if _, err := c.Store.FetchRanges(context.Background(), batches[i%len(batches)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fetchmany-whole", func(b *testing.B) {
		b.SetBytes(batch * part)
		for i := range b.N {
			rs := batches[i%len(batches)]
			refs := make([]chunkstore.Ref, len(rs))
			for j, r := range rs {
				refs[j] = r.Ref
			}
			if _, err := c.Store.FetchMany(context.Background(), refs); err != nil {
				b.Fatal(err)
			}
		}
	})
}
