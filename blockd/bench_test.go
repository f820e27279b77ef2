package blockd

// Benchmarks that chose the default block size and tree fanout (see
// doc.go). Run with:
//
//	go test -run=^$ -bench=. -benchtime=2x ./blockd/
//
// The store adds a fixed latency per chunk operation (latencyStore) to
// stand for a round trip to an erasure-coded cluster: what matters there is
// the number of chunks, not only the bytes.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/blockd/internal/refcache"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/raft"
)

// latencyStore delays every Put and Fetch and counts what it stores.
type latencyStore struct {
	chunkstore.Store
	delay             time.Duration
	puts, putBytes    atomic.Int64
	fetches, getBytes atomic.Int64
}

func (l *latencyStore) Put(ctx context.Context, b []byte) (chunkstore.Ref, error) {
	if l.delay > 0 {
		time.Sleep(l.delay)
	}
	l.puts.Add(1)
	l.putBytes.Add(int64(len(b)))
	return l.Store.Put(ctx, b)
}

func (l *latencyStore) Fetch(ctx context.Context, r chunkstore.Ref) ([]byte, error) {
	if l.delay > 0 {
		time.Sleep(l.delay)
	}
	b, err := l.Store.Fetch(ctx, r)
	l.fetches.Add(1)
	l.getBytes.Add(int64(len(b)))
	return b, err
}

const benchLatency = 200 * time.Microsecond

func benchDisk(b *testing.B, bs, size int64, mod func(*Config)) (*Disk, *latencyStore, func()) {
	b.Helper()
	st := &latencyStore{Store: mem.New(), delay: benchLatency}
	cfg := Config{Node: "n1", Control: raft.NewLocal("n1"), Logger: slogx.Discard, Registerer: prometheus.NewRegistry(),
		StoreFor: func(string, string) chunkstore.Store { return st }, WritebackInterval: -1}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Create(ctx, CreateOptions{Name: "b", Size: size, BlockSize: bs}, nil, nil); err != nil {
		b.Fatal(err)
	}
	d, rel, err := s.Open(ctx, "b")
	if err != nil {
		b.Fatal(err)
	}
	return d, st, func() { rel(); s.Close() }
}

var benchBlockSizes = []int64{4 << 10, 16 << 10, 32 << 10, 64 << 10, 256 << 10, 1 << 20}

// 4 KiB random writes with a FLUSH every 16 writes (fio --fsync=16), 8
// writers in parallel (QD 8).
func BenchmarkBlockSizeRandWriteFsync16(b *testing.B) {
	for _, bs := range benchBlockSizes {
		b.Run(fmt.Sprintf("bs=%dK", bs>>10), func(b *testing.B) {
			const size = 4 << 30
			d, st, done := benchDisk(b, bs, size, nil)
			defer done()
			ctx := context.Background()
			p := bytes.Repeat([]byte{0x5a}, 4096)
			var ops atomic.Int64
			b.SetBytes(16 * 4096)
			b.ReportAllocs()
			b.ResetTimer()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
				for pb.Next() {
					for k := 0; k < 16; k++ {
						off := rng.Int64N(size/4096) * 4096
						if err := d.WriteAt(ctx, p, off, false); err != nil {
							b.Error(err)
							return
						}
					}
					if err := d.Flush(ctx); err != nil {
						b.Error(err)
						return
					}
					ops.Add(16)
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(ops.Load())/b.Elapsed().Seconds(), "writes/s")
			b.ReportMetric(float64(st.putBytes.Load())/float64(ops.Load()), "stored-B/write")
			b.ReportMetric(float64(st.puts.Load())/float64(ops.Load()), "chunks/write")
		})
	}
}

// 1 MiB sequential writes, a FLUSH every 64 MiB.
func BenchmarkBlockSizeSeqWrite1M(b *testing.B) {
	for _, bs := range benchBlockSizes {
		b.Run(fmt.Sprintf("bs=%dK", bs>>10), func(b *testing.B) {
			const size = 8 << 30
			d, st, done := benchDisk(b, bs, size, nil)
			defer done()
			ctx := context.Background()
			p := make([]byte, 1<<20)
			for i := range p {
				p[i] = byte(i * 7)
			}
			b.SetBytes(int64(len(p)))
			b.ResetTimer()
			off := int64(0)
			for i := 0; i < b.N; i++ {
				p[0], p[1] = byte(i), byte(i>>8) // distinct content
				if err := d.WriteAt(ctx, p, off%size, false); err != nil {
					b.Fatal(err)
				}
				off += int64(len(p))
				if i%64 == 63 {
					if err := d.Flush(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := d.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(st.puts.Load())/float64(b.N), "chunks/MiB")
		})
	}
}

// 4 KiB random reads of written data with a cold cache: each read fetches
// its whole block.
func BenchmarkBlockSizeRandRead4kCold(b *testing.B) {
	for _, bs := range benchBlockSizes {
		b.Run(fmt.Sprintf("bs=%dK", bs>>10), func(b *testing.B) {
			const size = 256 << 20
			d, st, done := benchDisk(b, bs, size, func(c *Config) { c.BlockCacheBytes = -1 })
			defer done()
			ctx := context.Background()
			p := make([]byte, 1<<20)
			rng := rand.New(rand.NewPCG(3, 3))
			for off := int64(0); off < size; off += int64(len(p)) {
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
				if err := d.WriteAt(ctx, p, off, false); err != nil {
					b.Fatal(err)
				}
			}
			if err := d.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			st.getBytes.Store(0)
			b.SetBytes(4096)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
				buf := make([]byte, 4096)
				for pb.Next() {
					if err := d.ReadAt(ctx, buf, rng.Int64N(size/4096)*4096); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(st.getBytes.Load())/float64(b.N), "fetched-B/read")
		})
	}
}

// Tree fanout: cost of one flush's tree update (16 random blocks in a tree
// of 4M blocks: 256 GiB at 64 KiB) and of a cold lookup.
func BenchmarkTreeFanout(b *testing.B) {
	for _, fanout := range []int{64, 128, 256, 512, 1024} {
		b.Run(fmt.Sprintf("fanout=%d", fanout), func(b *testing.B) {
			const n = 4 << 20
			st := &latencyStore{Store: mem.New()}
			tr, err := tree.New(st, tree.Config{Fanout: fanout, Cache: refcache.New(512 << 20)})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			var root chunkstore.Ref
			batch := make([]tree.Change, 0, 1<<16)
			for i := uint64(0); i < n; i++ {
				var r chunkstore.Ref
				r[0], r[1], r[2], r[3] = byte(i), byte(i>>8), byte(i>>16), 1
				batch = append(batch, tree.Change{Index: i, Entry: tree.Entry{Ref: r}})
				if len(batch) == cap(batch) {
					if root, err = tr.Update(ctx, root, batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
			}
			lvl, _ := tr.Level(ctx, root)
			st.putBytes.Store(0)
			st.puts.Store(0)
			rng := rand.New(rand.NewPCG(1, 1))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ch := make([]tree.Change, 16)
				for k := range ch {
					ch[k].Index = uint64(rng.IntN(n))
					ch[k].Ref[5], ch[k].Ref[6] = byte(i), 2
				}
				ch = sortChanges(ch)
				if root, err = tr.Update(ctx, root, ch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(st.putBytes.Load())/float64(b.N), "node-B/flush")
			b.ReportMetric(float64(st.puts.Load())/float64(b.N), "nodes/flush")
			b.ReportMetric(float64(lvl+1), "levels")
		})
	}
}

func sortChanges(ch []tree.Change) []tree.Change {
	for i := 1; i < len(ch); i++ {
		for j := i; j > 0 && ch[j].Index < ch[j-1].Index; j-- {
			ch[j], ch[j-1] = ch[j-1], ch[j]
		}
	}
	out := ch[:0]
	for i, c := range ch {
		if i == 0 || c.Index != ch[i-1].Index {
			out = append(out, c)
		}
	}
	return out
}
