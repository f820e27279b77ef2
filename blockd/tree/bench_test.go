package tree

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

// BenchmarkBatch16Random stages batches of 16 random changes to a tree of
// 262,144 blocks (a 4 GiB vdisk of 16 KiB blocks, one commit of the fsync
// every 16 writes job), reporting what a batch allocates:
//
//	go test -run='^$' -bench=Batch16Random -benchmem ./blockd/tree
func BenchmarkBatch16Random(b *testing.B) {
	ctx := context.Background()
	tr, _ := newTree(b, DefaultFanout, true)
	const blocks = 1 << 18
	var full []Change
	for i := range uint64(blocks) {
		full = append(full, Change{Index: i, Entry: Entry{Ref: chunkstore.Sum([]byte{byte(i), byte(i >> 8), byte(i >> 16)})}})
	}
	root, err := tr.Update(ctx, chunkstore.Ref{}, full)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b.ResetTimer()
	for i := range b.N {
		var ch []Change
		for range 16 {
			ch = append(ch, Change{Index: rng.Uint64N(blocks), Entry: Entry{Ref: chunkstore.Sum([]byte{byte(i), byte(i >> 8), 1})}})
		}
		slices.SortFunc(ch, func(a, b Change) int { return int(int64(a.Index) - int64(b.Index)) })
		ch = slices.CompactFunc(ch, func(a, b Change) bool { return a.Index == b.Index })
		bt := tr.NewBatch(root)
		if err := bt.Update(ctx, ch); err != nil {
			b.Fatal(err)
		}
	}
}
