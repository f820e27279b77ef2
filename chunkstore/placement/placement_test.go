package placement

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

func nodes(n int, domains int) []Node {
	out := make([]Node, n)
	for i := range out {
		out[i] = Node{ID: fmt.Sprintf("node-%02d", i), Addr: fmt.Sprintf("127.0.0.%d:9900", i+1), Weight: 1, State: Up}
		if domains > 0 {
			out[i].Domain = fmt.Sprintf("rack-%d", i%domains)
		}
	}
	return out
}

func refs(n int) []chunkstore.Ref {
	out := make([]chunkstore.Ref, n)
	for i := range out {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		out[i] = chunkstore.Sum(b[:])
	}
	return out
}

func mustNew(t *testing.T, m Map) *Placer {
	t.Helper()
	p, err := New(m)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestValidate(t *testing.T) {
	bad := []Map{
		{Nodes: []Node{{ID: "", State: Up}}},
		{Nodes: []Node{{ID: "a", State: Up}, {ID: "a", State: Up}}},
		{Nodes: []Node{{ID: "a", State: Up, Weight: -1}}},
		{Nodes: []Node{{ID: "a", State: Up, Weight: math.NaN()}}},
		{Nodes: []Node{{ID: "a", State: "sleepy"}}},
	}
	for i, m := range bad {
		if _, err := New(m); err == nil {
			t.Errorf("map %d accepted", i)
		}
	}
	p := mustNew(t, Map{})
	if p.Place(chunkstore.Sum(nil), 3) != nil {
		t.Fatal("placement on an empty map")
	}
}

func TestDeterministicAndDistinct(t *testing.T) {
	m := Map{Epoch: 1, Nodes: nodes(8, 0)}
	p1, p2 := mustNew(t, m), mustNew(t, m)
	for _, r := range refs(2000) {
		a, b := p1.PlaceIDs(r, 6), p2.PlaceIDs(r, 6)
		seen := map[string]bool{}
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("two placers disagree on %s", r.Short())
			}
			if seen[a[i]] {
				t.Fatalf("%s: node %s holds two shards with 8 nodes for 6 shards", r.Short(), a[i])
			}
			seen[a[i]] = true
		}
	}
}

func TestOnlyUpNodes(t *testing.T) {
	ns := nodes(8, 0)
	ns[1].State = Down
	ns[4].State = Removed
	ns[6].Weight = 0
	p := mustNew(t, Map{Nodes: ns})
	for _, r := range refs(3000) {
		for _, id := range p.PlaceIDs(r, 5) {
			if id == ns[1].ID || id == ns[4].ID || id == ns[6].ID {
				t.Fatalf("placed on ineligible node %s", id)
			}
		}
	}
}

// TestBalance: equal nodes receive the same share of shards within a few
// percent over 10k refs.
func TestBalance(t *testing.T) {
	for _, tc := range []struct {
		nodes, domains, n int
	}{{6, 0, 6}, {10, 0, 6}, {12, 3, 6}, {20, 0, 3}, {7, 0, 1}} {
		t.Run(fmt.Sprintf("%dnodes_%ddomains_n%d", tc.nodes, tc.domains, tc.n), func(t *testing.T) {
			p := mustNew(t, Map{Nodes: nodes(tc.nodes, tc.domains)})
			count := map[string]int{}
			rs := refs(10000)
			for _, r := range rs {
				for _, id := range p.PlaceIDs(r, tc.n) {
					count[id]++
				}
			}
			mean := float64(len(rs)*tc.n) / float64(tc.nodes)
			worst := 0.0
			for _, c := range count {
				worst = max(worst, math.Abs(float64(c)-mean)/mean)
			}
			t.Logf("worst deviation from the mean %.1f%%", 100*worst)
			if len(count) != tc.nodes || worst > 0.05 {
				t.Fatalf("imbalance: %v (mean %.0f, worst %.1f%%)", count, mean, 100*worst)
			}
			// Each position alone is balanced too (shard 0 is not always
			// on the same few nodes).
			pos0 := map[string]int{}
			for _, r := range rs {
				pos0[p.PlaceIDs(r, tc.n)[0]]++
			}
			m0 := float64(len(rs)) / float64(tc.nodes)
			for id, c := range pos0 {
				if math.Abs(float64(c)-m0)/m0 > 0.12 {
					t.Fatalf("position 0 imbalance on %s: %d vs mean %.0f", id, c, m0)
				}
			}
		})
	}
}

// TestWeights: shares follow weights. For one shard per chunk the share is
// exactly proportional (within sampling noise); for several shards per
// chunk the one-shard-per-node cap pulls heavy nodes slightly toward the
// mean, so the bound is looser.
func TestWeights(t *testing.T) {
	ns := nodes(8, 0)
	ws := []float64{1, 1, 1, 1, 2, 2, 3, 1.5}
	total := 0.0
	for i := range ns {
		ns[i].Weight = ws[i]
		total += ws[i]
	}
	p := mustNew(t, Map{Nodes: ns})
	rs := refs(20000)
	for _, tc := range []struct {
		n   int
		tol float64
	}{{1, 0.05}, {3, 0.15}} {
		count := map[string]int{}
		for _, r := range rs {
			for _, id := range p.PlaceIDs(r, tc.n) {
				count[id]++
			}
		}
		worst := 0.0
		for i, nd := range ns {
			want := float64(len(rs)*tc.n) * ws[i] / total
			worst = max(worst, math.Abs(float64(count[nd.ID])-want)/want)
		}
		t.Logf("n=%d: worst deviation from the weighted share %.1f%%", tc.n, 100*worst)
		if worst > tc.tol {
			t.Fatalf("n=%d: shares %v do not follow weights %v (worst %.1f%%)", tc.n, count, ws, 100*worst)
		}
	}
}

// movement counts shard positions whose node differs between two maps.
func movement(a, b *Placer, rs []chunkstore.Ref, n int) (moved int) {
	for _, r := range rs {
		x, y := a.PlaceIDs(r, n), b.PlaceIDs(r, n)
		for i := range x {
			if x[i] != y[i] {
				moved++
			}
		}
	}
	return moved
}

// TestMinimalMovement: when a node leaves, only the shards it held move
// (plus a little); when a node joins, about the shards it takes move.
func TestMinimalMovement(t *testing.T) {
	rs := refs(10000)
	for _, tc := range []struct {
		nodes, domains, n int
		leaveBound        float64
		joinBound         float64
	}{
		{10, 0, 6, 1.25, 1.35},
		{16, 4, 6, 1.40, 1.65},
		{7, 0, 6, 1.40, 1.65},
	} {
		t.Run(fmt.Sprintf("%dnodes_%ddomains_n%d", tc.nodes, tc.domains, tc.n), func(t *testing.T) {
			ns := nodes(tc.nodes, tc.domains)
			before := mustNew(t, Map{Nodes: ns})

			// Leave: node 3 goes down.
			left := append([]Node(nil), ns...)
			left[3].State = Down
			after := mustNew(t, Map{Nodes: left})
			minimal := 0
			for _, r := range rs {
				for _, id := range before.PlaceIDs(r, tc.n) {
					if id == ns[3].ID {
						minimal++
					}
				}
			}
			moved := movement(before, after, rs, tc.n)
			naive := naiveMovement(Map{Nodes: ns}, Map{Nodes: left}, rs, tc.n)
			t.Logf("leave: moved %d shards, minimal %d (%.2fx); shard i on the i-th node of one ranking would move %d (%.2fx)",
				moved, minimal, float64(moved)/float64(minimal), naive, float64(naive)/float64(minimal))
			if float64(moved) > tc.leaveBound*float64(minimal) || moved > naive/2 {
				t.Fatalf("leave moved %d shards, minimal is %d", moved, minimal)
			}

			// Join: a new node arrives.
			joined := append(append([]Node(nil), ns...), Node{ID: "node-new", Weight: 1, State: Up, Domain: ns[0].Domain})
			grown := mustNew(t, Map{Nodes: joined})
			minimal = 0
			for _, r := range rs {
				for _, id := range grown.PlaceIDs(r, tc.n) {
					if id == "node-new" {
						minimal++
					}
				}
			}
			moved = movement(before, grown, rs, tc.n)
			t.Logf("join: moved %d shards, minimal %d (%.2fx)", moved, minimal, float64(moved)/float64(minimal))
			if float64(moved) > tc.joinBound*float64(minimal) {
				t.Fatalf("join moved %d shards, minimal is %d", moved, minimal)
			}
		})
	}
}

// naiveMovement is the movement of the simple scheme the package does not
// use: one rendezvous ranking per chunk, shard i on its i-th up node.
func naiveMovement(a, b Map, rs []chunkstore.Ref, n int) int {
	rank := func(m Map, r chunkstore.Ref) []string {
		p, _ := New(m)
		type c struct {
			id string
			s  float64
		}
		var cs []c
		seed := binary.LittleEndian.Uint64(r[:8]) ^ binary.LittleEndian.Uint64(r[8:16])
		for j, nd := range p.nodes {
			if p.eligible[j] {
				cs = append(cs, c{nd.ID, p.score(seed, 0, j)})
			}
		}
		slices.SortFunc(cs, func(x, y c) int { return cmp.Compare(y.s, x.s) })
		var ids []string
		for _, x := range cs[:n] {
			ids = append(ids, x.id)
		}
		return ids
	}
	moved := 0
	for _, r := range rs {
		x, y := rank(a, r), rank(b, r)
		for i := range x {
			if x[i] != y[i] {
				moved++
			}
		}
	}
	return moved
}

// TestDomains: shards spread over failure domains as evenly as possible.
func TestDomains(t *testing.T) {
	// 3 racks of 3: a 4+2 chunk puts exactly 2 shards in each rack.
	p := mustNew(t, Map{Nodes: nodes(9, 3)})
	for _, r := range refs(3000) {
		per := map[string]int{}
		for _, nd := range p.Place(r, 6) {
			per[nd.Domain]++
		}
		for d, c := range per {
			if c != 2 {
				t.Fatalf("%s: rack %s holds %d shards of 6: %v", r.Short(), d, c, per)
			}
		}
	}
	// Unequal racks: 1 node in rack A, 5 in rack B, 2+1: A gets at most one.
	ns := nodes(6, 0)
	for i := range ns {
		ns[i].Domain = "B"
	}
	ns[0].Domain = "A"
	p = mustNew(t, Map{Nodes: ns})
	gotA := 0
	for _, r := range refs(3000) {
		per := map[string]int{}
		for _, nd := range p.Place(r, 3) {
			per[nd.Domain]++
		}
		if per["A"] > 1 {
			t.Fatalf("rack A with one node holds %d shards", per["A"])
		}
		if per["A"] != 1 {
			t.Fatalf("a 3-shard chunk skipped the second rack: %v", per)
		}
		gotA += per["A"]
	}
	_ = gotA
}

// TestFewerNodesThanShards: 4+2 on 4 nodes uses every node, at most 2 each.
func TestFewerNodesThanShards(t *testing.T) {
	p := mustNew(t, Map{Nodes: nodes(4, 0)})
	for _, r := range refs(2000) {
		per := map[string]int{}
		for _, id := range p.PlaceIDs(r, 6) {
			per[id]++
		}
		if len(per) != 4 {
			t.Fatalf("6 shards over 4 nodes used %d nodes", len(per))
		}
		for id, c := range per {
			if c > 2 {
				t.Fatalf("node %s holds %d shards", id, c)
			}
		}
	}
}

func BenchmarkPlace(b *testing.B) {
	p, _ := New(Map{Nodes: nodes(12, 3)})
	rs := refs(1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.PlaceIndex(rs[i%len(rs)], 6)
	}
}

func TestDomainsAndTolerance(t *testing.T) {
	p := mustNew(t, Map{Nodes: nodes(6, 0)})
	if got := p.Domains(); got != 6 {
		t.Fatalf("6 nodes without domains: %d domains", got)
	}
	r := refs(1)[0]
	if got := Tolerance(p.Place(r, 6), 2); got != 2 {
		t.Fatalf("4+2 on 6 nodes tolerates %d, want 2", got)
	}
	// Two of six removed: 6 shards on 4 nodes, some node holds two.
	m := Map{Nodes: nodes(6, 0)}
	m.Nodes[1].State = Removed
	m.Nodes[4].State = Down
	p = mustNew(t, m)
	if got := p.Domains(); got != 4 {
		t.Fatalf("4 up nodes: %d domains", got)
	}
	if got := Tolerance(p.Place(r, 6), 2); got != 1 {
		t.Fatalf("4+2 on 4 nodes tolerates %d, want 1", got)
	}
	if got := Tolerance(p.Place(r, 4), 2); got != 2 {
		t.Fatalf("2+2 on 4 nodes tolerates %d, want 2", got)
	}
	// Six nodes in three racks: racks are the failure unit.
	p = mustNew(t, Map{Nodes: nodes(6, 3)})
	if got := p.Domains(); got != 3 {
		t.Fatalf("3 racks: %d domains", got)
	}
	if got := Tolerance(p.Place(r, 6), 2); got != 1 {
		t.Fatalf("4+2 over 3 racks tolerates %d racks, want 1", got)
	}
	if got := Tolerance(p.Place(r, 3), 2); got != 2 {
		t.Fatalf("1+2 over 3 racks tolerates %d racks, want 2", got)
	}
	if got := Tolerance(nil, 2); got != 0 {
		t.Fatalf("no homes: %d", got)
	}
}
