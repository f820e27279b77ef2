package erasure_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// The benchmarks behind the degraded-write rule (doc.go, "Writes";
// figures in docs/benchmarks.md).

// deadAddr returns an address on 127.0.0.1 where nothing listens: a dial
// is refused at once, as it is for a killed process.
func deadAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type degradedCase struct {
	name  string
	nodes int
	p     chunkstore.Profile
	dead  []int
}

var degradedCases = []degradedCase{
	{"3n-2+1-1dead", 3, chunkstore.Profile{K: 2, M: 1}, []int{2}},
	{"6n-4+2-2dead", 6, chunkstore.Profile{K: 4, M: 2}, []int{1, 4}},
}

// BenchmarkDegradedPut: Put of 1 MiB chunks and PutMany of 32 x 16 KiB
// (blockd's commit round) on loopback shard servers with disk stores that
// fsync, three ways over the same servers, alternating in one run:
//
//   - healthy: every home answers;
//   - quorum: the dead homes refuse connections (their addresses lead
//     nowhere, as a killed process's do) and the write is acknowledged
//     with the quorum of the live homes (WriteQuorum): what Put does;
//   - nextlive: the alternative rule, shards placed on the next live
//     nodes of the ranking, emulated by sending each dead home's shards
//     to a live node's server (every shard written, some nodes hold two).
//
// It reports each mode's p50 and p99 per operation and the p50 ratio to
// healthy.
//
//	go test -run=^$ -bench=DegradedPut -benchtime=100x ./chunkstore/erasure
func BenchmarkDegradedPut(b *testing.B) {
	for _, tc := range degradedCases {
		for _, op := range []string{"put-1MiB", "putmany-32x16KiB"} {
			b.Run(tc.name+"/"+op, func(b *testing.B) { benchDegradedPut(b, tc, op) })
		}
	}
}

func benchDegradedPut(b *testing.B, tc degradedCase, op string) {
	c, err := localcluster.Start(localcluster.Config{Nodes: tc.nodes, Dir: b.TempDir(), Prefix: lo, FirstHost: 190, Profile: tc.p})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	healthy := c.Map()
	dead := healthy
	dead.Nodes = slices.Clone(healthy.Nodes)
	var live []string
	for i, n := range healthy.Nodes {
		if !slices.Contains(tc.dead, i) {
			live = append(live, n.Addr)
		}
	}
	redirect := map[string]string{} // dead node -> a live node's server
	for j, i := range tc.dead {
		dead.Nodes[i].Addr = deadAddr(b)
		redirect[healthy.Nodes[i].ID] = live[j%len(live)]
	}
	inner := erasure.PoolDialer(c.Pool, nil)
	next := erasure.DialFunc(func(n placement.Node) (chunkstore.ShardStore, error) {
		if a, ok := redirect[n.ID]; ok {
			n.Addr = a
		}
		return inner.Dial(n)
	})
	stores := map[string]*erasure.Store{}
	for mode, cfg := range map[string]erasure.Config{
		"healthy":  {Map: healthy, Dialer: inner},
		"quorum":   {Map: dead, Dialer: inner, PendingInterval: time.Hour},
		"nextlive": {Map: healthy, Dialer: next},
	} {
		cfg.Profile = tc.p
		s, err := erasure.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		stores[mode] = s
	}
	var chunks [][]byte
	if op == "put-1MiB" {
		chunks = [][]byte{make([]byte, 1<<20)}
	} else {
		for range 32 {
			chunks = append(chunks, make([]byte, 16<<10))
		}
	}
	run := func(s *erasure.Store) {
		for _, ch := range chunks {
			rand.Read(ch[:64]) // new chunks every time
		}
		var err error
		if len(chunks) == 1 {
			_, err = s.Put(context.Background(), chunks[0])
		} else {
			_, err = s.PutMany(context.Background(), chunks)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	modes := []string{"healthy", "quorum", "nextlive"}
	for _, m := range modes { // warm the connections (and the dead ones' backoff)
		run(stores[m])
	}
	times := map[string][]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		for j := range modes {
			m := modes[(i+j)%len(modes)]
			t0 := time.Now()
			run(stores[m])
			times[m] = append(times[m], time.Since(t0))
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	base := quantile(times["healthy"], 0.5)
	for _, m := range modes {
		p50 := quantile(times[m], 0.5)
		b.ReportMetric(ms(p50), m+"-p50-ms")
		b.ReportMetric(ms(quantile(times[m], 0.99)), m+"-p99-ms")
		if m != "healthy" {
			b.ReportMetric(float64(p50)/float64(base), m+"/healthy")
		}
	}
}

// BenchmarkDegradedRepair: what healing one missing shard costs under each
// rule, per 1 MiB chunk: quorum rebuilds it (RepairPositions: read k
// shards, compute the missing one, write it), nextlive moves the displaced
// copy (read one shard, write it at its home, delete the copy).
//
//	go test -run=^$ -bench=DegradedRepair -benchtime=50x ./chunkstore/erasure
func BenchmarkDegradedRepair(b *testing.B) {
	for _, tc := range degradedCases {
		b.Run(tc.name, func(b *testing.B) {
			c, err := localcluster.Start(localcluster.Config{Nodes: tc.nodes, Dir: b.TempDir(), Prefix: lo, FirstHost: 200, Profile: tc.p})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			s := c.Store
			ctx := context.Background()
			var rebuild, move []time.Duration
			for i := range b.N + 1 {
				d := storetest.Data(uint64(i)+7<<32, 1<<20)
				ref, err := s.Put(ctx, d)
				if err != nil {
					b.Fatal(err)
				}
				homes := s.Placer().Place(ref, tc.p.N())
				key := chunkstore.ShardKey{Ref: ref, Profile: tc.p, Index: 0}
				home := c.Node(homes[0].ID).Disk
				other := c.Node(homes[1].ID).Disk
				// Rebuild: shard 0 gone from its home.
				if _, err := home.DeleteShards(ctx, []chunkstore.ShardKey{key}, 0); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if _, err := s.RepairPositions(ctx, ref, tc.p, []int{0}); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				// Move: shard 0 displaced to another node.
				res, err := home.GetShards(ctx, []chunkstore.ShardKey{key})
				if err != nil || res[0].Err != nil {
					b.Fatal(err, res[0].Err)
				}
				if err := other.PutShards(ctx, []chunkstore.Shard{res[0].Shard}); err != nil {
					b.Fatal(err)
				}
				chunkstore.ReleaseResults(res)
				if _, err := home.DeleteShards(ctx, []chunkstore.ShardKey{key}, 0); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				src, err := s.Dial(homes[1])
				if err != nil {
					b.Fatal(err)
				}
				dst, err := s.Dial(homes[0])
				if err != nil {
					b.Fatal(err)
				}
				res, err = src.GetShards(ctx, []chunkstore.ShardKey{key})
				if err == nil && res[0].Err == nil {
					err = dst.PutShards(ctx, []chunkstore.Shard{res[0].Shard})
				}
				if err == nil {
					_, err = src.DeleteShards(ctx, []chunkstore.ShardKey{key}, 0)
				}
				if err != nil {
					b.Fatal(err)
				}
				chunkstore.ReleaseResults(res)
				if i > 0 { // the first warms the connections
					rebuild = append(rebuild, t1.Sub(t0))
					move = append(move, time.Since(t2))
				}
			}
			ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
			b.ReportMetric(ms(quantile(rebuild, 0.5)), "rebuild-p50-ms")
			b.ReportMetric(ms(quantile(move, 0.5)), "move-p50-ms")
			b.ReportMetric(float64(tc.p.K), "rebuild-read-shards")
			b.ReportMetric(1, "move-read-shards")
		})
	}
}

// BenchmarkDegradedTolerance computes (no timing) how many more node
// losses a chunk written while d of its cluster's nodes are dead (not
// marked down) survives, over 20k chunks with the real placement, for
// the default profile of each cluster size:
//
//   - quorum: the shards of the live homes only (as Put writes them; the
//     chunks already stored on those homes are in the same state);
//   - nextlive: every shard, the dead homes' ones on the next live nodes
//     of their positions' rankings (the placement with the dead nodes
//     excluded; nodes hold two shards when live nodes are too few).
//
// Reported per case: the share of chunks with a dead home, the mean
// tolerance of those under each rule and the share that survive at least
// one more loss; and the share of chunks stored before the failure (all of
// them, in the state quorum leaves new ones in) that survive one more loss.
//
//	go test -run=^$ -bench=DegradedTolerance -benchtime=1x ./chunkstore/erasure
func BenchmarkDegradedTolerance(b *testing.B) {
	for _, n := range []int{3, 4, 5, 6, 7, 8, 12, 16} {
		p := chunkstore.DefaultProfile(n)
		for d := 1; d <= int(p.M); d++ {
			b.Run(fmt.Sprintf("%dn-%s-%ddead", n, p, d), func(b *testing.B) {
				var m placement.Map
				for i := range n {
					m.Nodes = append(m.Nodes, placement.Node{ID: fmt.Sprintf("n%02d", i), Weight: 1, State: placement.Up})
				}
				full, err := placement.New(m)
				if err != nil {
					b.Fatal(err)
				}
				for i := range d {
					m.Nodes[i].State = placement.Down
				}
				rest, err := placement.New(m)
				if err != nil {
					b.Fatal(err)
				}
				const chunks = 20000
				var sumQ, sumN, oneQ, oneN, affected int
				for range b.N {
					sumQ, sumN, oneQ, oneN, affected = 0, 0, 0, 0, 0
					fine := 0
					for c := range chunks {
						ref := chunkstore.Sum(fmt.Appendf(nil, "chunk %d", c))
						homes := full.Place(ref, p.N())
						var live []placement.Node
						for _, h := range homes {
							if h.ID >= fmt.Sprintf("n%02d", d) {
								live = append(live, h)
							}
						}
						if len(live) == len(homes) {
							fine++ // not degraded: tolerates m >= 1
							continue
						}
						affected++
						tq := 0
						if len(live) >= int(p.K) {
							tq = placement.Tolerance(live, len(live)-int(p.K))
						}
						tn := placement.Tolerance(rest.Place(ref, p.N()), int(p.M))
						sumQ += tq
						sumN += tn
						if tq >= 1 {
							oneQ++
							fine++
						}
						if tn >= 1 {
							oneN++
						}
					}
					b.ReportMetric(float64(fine)/chunks, "old-survive1")
				}
				a := float64(max(affected, 1))
				b.ReportMetric(float64(affected)/chunks, "degraded-share")
				b.ReportMetric(float64(sumQ)/a, "quorum-tolerance")
				b.ReportMetric(float64(sumN)/a, "nextlive-tolerance")
				b.ReportMetric(float64(oneQ)/a, "quorum-survive1")
				b.ReportMetric(float64(oneN)/a, "nextlive-survive1")
			})
		}
	}
}
