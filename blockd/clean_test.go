package blockd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/zosproject/zos/blockd/tree"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// Random overwrites of a sequentially written vdisk are packed (the
// blocks of one stretch written back together are one chunk, however
// scattered), and the cleaner keeps every extent the head names more than
// half live, so the store never holds more than twice the live data; the
// content stays exact throughout.
func TestPackingAndCleaner(t *testing.T) {
	const bs = 16 << 10
	const size = 8 << 20
	_, _, s := rangedEnv(t)
	mustCreate(t, s, "x", size, bs, "db")
	d, rel := mustOpen(t, s, "x")
	defer func() { rel() }()
	ctx := context.Background()
	model, rng, write := filledModel(t, d, size, 3)
	nblocks := int(size / bs)
	// headEntries syncs and returns the committed entries.
	headEntries := func() map[uint64]tree.Entry {
		t.Helper()
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return entries(t, s, "x")
	}
	// sparse lists the extents the head names that are at most half live.
	sparse := func(ents map[uint64]tree.Entry) []string {
		live := map[chunkstore.Ref]int{}
		blocks := map[chunkstore.Ref]int{}
		for _, e := range ents {
			if e.InExtent() {
				live[e.Ext]++
				blocks[e.Ext] = int(e.Blocks)
			}
		}
		var out []string
		for r, n := range live {
			if 2*n <= blocks[r] {
				out = append(out, fmt.Sprintf("%s: %d of %d live", r.Short(), n, blocks[r]))
			}
		}
		return out
	}
	for round := range 6 {
		// A fifth of the blocks, at random, each written alone.
		written := map[uint64]bool{}
		for range nblocks / 5 {
			i := uint64(rng.IntN(nblocks))
			written[i] = true
			write(int64(i)*bs, bs)
		}
		ents := headEntries()
		if round == 0 {
			alone := 0
			for i := range written {
				if !ents[i].InExtent() {
					alone++
				}
			}
			if alone > len(written)/4 {
				t.Fatalf("%d of %d blocks written at random are stored alone: not packed", alone, len(written))
			}
		}
		if got := readAll(t, d); !bytes.Equal(got, model) {
			t.Fatalf("round %d: read differs from the model", round)
		}
	}
	var left []string
	wait.For(t, 60*time.Second, "the cleaner to leave no extent at most half live", func() bool {
		left = sparse(headEntries())
		return len(left) == 0
	})
	ents := headEntries()
	stored := map[chunkstore.Ref]int{}
	for _, e := range ents {
		if e.InExtent() {
			stored[e.Ext] = int(e.Blocks)
		} else if fetchable(e.Ref) {
			stored[e.Ref] = 1
		}
	}
	total := 0
	for _, n := range stored {
		total += n
	}
	if total >= 2*len(ents) {
		t.Fatalf("the head names chunks of %d blocks for %d live blocks", total, len(ents))
	}
	if n := testutil.ToFloat64(s.m.cleanedBlocks); n == 0 {
		t.Fatal("the cleaner rewrote no block")
	}
	if got := readAll(t, d); !bytes.Equal(got, model) {
		t.Fatal("read after cleaning differs from the model")
	}
	rel()
	rel = func() {}
	d2, rel2 := mustOpen(t, s, "x")
	defer rel2()
	if got := readAll(t, d2); !bytes.Equal(got, model) {
		t.Fatal("read after reattach differs from the model")
	}
}

// Under writes that never pause, a stretch whose chunks grow past
// cleanBudget times its size is cleaned at once, without waiting for the
// vdisk to rest.
func TestCleanerBudgetUnderSustainedWrites(t *testing.T) {
	const bs = 16 << 10
	const size = 4 << 20
	n := int(DefaultExtentBytes / bs)
	_, _, s := rangedEnv(t)
	mustCreate(t, s, "x", size, bs, "db")
	d, rel := mustOpen(t, s, "x")
	defer rel()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(5, 6))
	block := func() []byte { return randBytes(rng, bs) }
	if err := d.WriteAt(ctx, bytes.Repeat(block(), n), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Keep the vdisk busy: a write to its last stretch every 20 ms.
	stop := make(chan struct{})
	busy := make(chan error, 1)
	go func() {
		p := make([]byte, bs)
		for k := 0; ; k++ {
			select {
			case <-stop:
				busy <- nil
				return
			case <-time.After(20 * time.Millisecond):
			}
			p[0] = byte(k)
			if err := d.WriteAt(ctx, p, size-bs, false); err != nil {
				busy <- err
				return
			}
		}
	}()
	// held is what the chunks the first stretch names hold, in blocks.
	held := func() int {
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		sizes := map[chunkstore.Ref]int{}
		for i, e := range entries(t, s, "x") {
			switch {
			case i >= uint64(n):
			case e.InExtent():
				sizes[e.Ext] = int(e.Blocks)
			case fetchable(e.Ref):
				sizes[e.Ref] = 1
			}
		}
		sum := 0
		for _, b := range sizes {
			sum += b
		}
		return sum
	}
	// Overwrite the first stretch eight blocks at a time, each group a
	// pack of its own, sliding by one block: each pack is left with one
	// live block of eight, eight times the stretch's size in all.
	for k := range n {
		for j := range 8 {
			if err := d.WriteAt(ctx, block(), int64((k+j)%n)*bs, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	limit := (cleanBudget + 1) * n
	wait.For(t, 60*time.Second, "the busy vdisk's stretch to be cleaned", func() bool { return held() <= limit })
	close(stop)
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
}
