package disk

import (
	"math/rand/v2"
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
	var f keyFilter
	n := filterFirst + filterFirst/2 // two layers
	keys := make([]chunkstore.ShardKey, n)
	for i := range keys {
		keys[i] = randomKey(r)
		f.add(keys[i])
	}
	if len(f.layers) != 2 {
		t.Fatalf("%d layers for %d keys, want 2", len(f.layers), n)
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
