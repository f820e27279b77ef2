package disk

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

func randomKey(r *rand.Rand) chunkstore.ShardKey {
	var k chunkstore.ShardKey
	for i := range k.Ref {
		k.Ref[i] = byte(r.Uint32())
	}
	k.Profile = chunkstore.Profile{K: 4, M: 2}
	k.Index = uint8(r.IntN(6))
	return k
}

// TestKeyFilter: no added key is ever reported absent, across layer
// growth; fresh keys are rarely reported present.
func TestKeyFilter(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	f := keyFilter{first: 1 << 14}
	n := f.first + f.first/2 // two layers
	keys := make([]chunkstore.ShardKey, n)
	for i := range keys {
		keys[i] = randomKey(r)
		f.add(keys[i])
	}
	if l := len(*f.layers.Load()); l != 2 {
		t.Fatalf("%d layers for %d keys, want 2", l, n)
	}
	for i, k := range keys {
		if !f.mayContain(k) {
			t.Fatalf("key %d added but reported absent", i)
		}
	}
	fp := 0
	const probes = 100000
	for range probes {
		if f.mayContain(randomKey(r)) {
			fp++
		}
	}
	if rate := float64(fp) / probes; rate > 0.03 {
		t.Fatalf("false positive rate %.3f, want < 0.03", rate)
	}
	var empty keyFilter
	if empty.mayContain(keys[0]) {
		t.Fatal("an empty filter reports a key")
	}
}

// TestKeyFilterConcurrentReaders: readers ask while the writer adds, across
// the growth to a second layer, and never miss a key whose add finished
// before they asked (run under -race by make check).
func TestKeyFilterConcurrentReaders(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	f := keyFilter{first: 1 << 14}
	n := 4 * f.first // three layers
	keys := make([]chunkstore.ShardKey, n)
	for i := range keys {
		keys[i] = randomKey(r)
	}
	var added atomic.Int64 // keys[:added] are in f
	var wg sync.WaitGroup
	var missed atomic.Int64
	stop := make(chan struct{})
	for g := range 2 {
		wg.Go(func() {
			rr := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				done := added.Load()
				if done == 0 {
					continue
				}
				if i := rr.Int64N(done); !f.mayContain(keys[i]) {
					missed.Add(1)
				}
			}
		})
	}
	for i, k := range keys {
		f.add(k)
		added.Store(int64(i + 1))
	}
	close(stop)
	wg.Wait()
	if m := missed.Load(); m != 0 {
		t.Fatalf("readers missed %d added keys", m)
	}
	if l := len(*f.layers.Load()); l != 3 {
		t.Fatalf("%d layers, want 3", l)
	}
}
