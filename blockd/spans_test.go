package blockd

import (
	"math/rand/v2"
	"testing"
)

func TestSpans(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var s spans
		model := map[uint64]bool{}
		for k := 0; k < 20; k++ {
			from := uint64(rng.IntN(200))
			to := from + uint64(rng.IntN(20))
			s = s.add(from, to)
			for i := from; i < to; i++ {
				model[i] = true
			}
		}
		for k := 0; k < 5; k++ { // remove some indices
			i := uint64(rng.IntN(220))
			s = s.remove(i)
			delete(model, i)
		}
		for i := 1; i < len(s); i++ {
			if s[i].from < s[i-1].to || s[i].from >= s[i].to {
				t.Fatalf("spans not disjoint/merged: %v", s)
			}
		}
		for i := uint64(0); i < 250; i++ {
			if s.contains(i) != model[i] {
				t.Fatalf("contains(%d) = %v, want %v; %v", i, s.contains(i), model[i], s)
			}
		}
		from, to := uint64(rng.IntN(250)), uint64(rng.IntN(250))
		n := 0
		for _, sp := range s.overlapping(from, to) {
			if sp.from < from || sp.to > to || sp.from >= sp.to {
				t.Fatalf("bad clip %v for [%d,%d)", sp, from, to)
			}
			n += int(sp.to - sp.from)
		}
		want := 0
		for i := from; i < to; i++ {
			if model[i] {
				want++
			}
		}
		if n != want {
			t.Fatalf("overlapping covers %d, want %d", n, want)
		}
	}
}
