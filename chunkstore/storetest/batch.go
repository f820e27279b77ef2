package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

// RunBatch runs the batch tests: chunkstore.PutMany (the store's own
// PutMany if it is a chunkstore.BatchReceiver, else the fallback) stores
// every chunk with its Ref, deduplicates within and across batches, takes
// empty batches and empty chunks, rejects a batch with an oversize chunk
// before writing anything, honours a cancelled context and runs
// concurrently.
func RunBatch(t *testing.T, newStore func(t *testing.T) chunkstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s chunkstore.Store)
	}{
		{"PutFetch", testBatchPutFetch},
		{"Empty", testBatchEmpty},
		{"Duplicates", testBatchDuplicates},
		{"TooLarge", testBatchTooLarge},
		{"Cancelled", testBatchCancelled},
		{"Concurrent", testBatchConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func putBatch(t *testing.T, s chunkstore.Store, chunks [][]byte) []chunkstore.Ref {
	t.Helper()
	refs, err := chunkstore.PutMany(ctxT(t), s, chunks)
	if err != nil {
		t.Fatalf("PutMany(%d chunks): %v", len(chunks), err)
	}
	if len(refs) != len(chunks) {
		t.Fatalf("PutMany(%d chunks) returned %d refs", len(chunks), len(refs))
	}
	for i, c := range chunks {
		if want := chunkstore.Sum(c); refs[i] != want {
			t.Fatalf("PutMany: chunk %d has ref %s, want BLAKE3 %s", i, refs[i].Short(), want.Short())
		}
	}
	return refs
}

func testBatchPutFetch(t *testing.T, s chunkstore.Store) {
	sizes := []int{1, 0, 1000, 4096, 16 << 10, 16 << 10, 65536 + 3, 1<<20 + 5, chunkstore.MaxChunkSize}
	for i := range 40 {
		sizes = append(sizes, 100+i*997)
	}
	chunks := make([][]byte, len(sizes))
	for i, n := range sizes {
		chunks[i] = Data(uint64(2000+i), n)
	}
	refs := putBatch(t, s, chunks)
	// PutMany does not retain the data.
	for _, c := range chunks {
		clear(c)
	}
	for i, n := range sizes {
		fetchEq(t, s, refs[i], Data(uint64(2000+i), n))
		info, err := s.Stat(ctxT(t), refs[i])
		if err != nil || info.Size != int64(n) {
			t.Fatalf("Stat(chunk %d) = %+v, %v; want size %d", i, info, err, n)
		}
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != len(sizes) {
		t.Fatalf("Enumerate after a batch of %d lists %d", len(sizes), len(got))
	}
	// A second batch of the same chunks stores nothing new.
	for i, n := range sizes {
		chunks[i] = Data(uint64(2000+i), n)
	}
	if again := putBatch(t, s, chunks); !slices.Equal(again, refs) {
		t.Fatal("the same batch twice gave different refs")
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != len(sizes) {
		t.Fatalf("Enumerate after the batch twice lists %d, want %d", len(got), len(sizes))
	}
}

func testBatchEmpty(t *testing.T, s chunkstore.Store) {
	for _, b := range [][][]byte{nil, {}} {
		refs, err := chunkstore.PutMany(ctxT(t), s, b)
		if err != nil || len(refs) != 0 {
			t.Fatalf("PutMany(empty batch) = %d refs, %v", len(refs), err)
		}
	}
	// A batch of only empty chunks.
	refs := putBatch(t, s, [][]byte{nil, {}})
	if refs[0] != refs[1] {
		t.Fatal("two empty chunks, two refs")
	}
	fetchEq(t, s, refs[0], nil)
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != 1 {
		t.Fatalf("Enumerate lists %d chunks after a batch of empty chunks", len(got))
	}
}

func testBatchDuplicates(t *testing.T, s chunkstore.Store) {
	a, b := Data(31, 20000), Data(32, 300)
	chunks := [][]byte{a, b, bytes.Clone(a), a, bytes.Clone(b), Data(33, 70000), a}
	refs := putBatch(t, s, chunks)
	if refs[0] != refs[2] || refs[0] != refs[3] || refs[0] != refs[6] || refs[1] != refs[4] {
		t.Fatalf("equal chunks got different refs: %v", refs)
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != 3 {
		t.Fatalf("a batch of 3 distinct chunks (7 with duplicates) left %d chunks", len(got))
	}
	fetchEq(t, s, refs[0], a)
	fetchEq(t, s, refs[1], b)
	fetchEq(t, s, refs[5], Data(33, 70000))
	// Chunks already stored by Put, in a batch.
	c := Data(34, 5000)
	r := put(t, s, c)
	if got := putBatch(t, s, [][]byte{c, Data(35, 5000)}); got[0] != r {
		t.Fatal("a chunk stored by Put got another ref in a batch")
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != 5 {
		t.Fatalf("Enumerate lists %d chunks, want 5", len(got))
	}
}

func testBatchTooLarge(t *testing.T, s chunkstore.Store) {
	chunks := [][]byte{Data(41, 1000), make([]byte, chunkstore.MaxChunkSize+1), Data(42, 1000)}
	_, err := chunkstore.PutMany(ctxT(t), s, chunks)
	if !errors.Is(err, chunkstore.ErrTooLarge) {
		t.Fatalf("PutMany with a 4 MiB + 1 chunk: error %v, want ErrTooLarge", err)
	}
	var be *chunkstore.BatchError
	if errors.As(err, &be) {
		t.Fatalf("an oversize chunk must fail the batch before writing, got a BatchError: %v", err)
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != 0 {
		t.Fatalf("a rejected batch left %d chunks", len(got))
	}
}

func testBatchCancelled(t *testing.T, s chunkstore.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := chunkstore.PutMany(ctx, s, [][]byte{Data(51, 1000), Data(52, 100000)})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("PutMany with a cancelled context: %v, want context.Canceled", err)
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != 0 {
		t.Fatalf("a cancelled batch stored %d chunks", len(got))
	}
}

func testBatchConcurrent(t *testing.T, s chunkstore.Store) {
	const workers, batches, per = 4, 3, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for b := range batches {
				chunks := make([][]byte, per)
				for i := range chunks {
					// Half shared between workers (dedup races).
					seed := uint64(7000 + (w*batches+b)*per + i)
					if i%2 == 0 {
						seed = uint64(8000 + b*per + i)
					}
					chunks[i] = Data(seed, 500+int(seed%50)*400)
				}
				refs, err := chunkstore.PutMany(ctxT(t), s, chunks)
				if err != nil {
					errs <- fmt.Errorf("worker %d batch %d: %w", w, b, err)
					return
				}
				for i, c := range chunks {
					got, err := s.Fetch(ctxT(t), refs[i])
					if err != nil || !bytes.Equal(got, c) {
						errs <- fmt.Errorf("worker %d fetch %s: %v (equal=%v)", w, refs[i].Short(), err, bytes.Equal(got, c))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := workers*batches*per/2 + batches*per/2
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != want {
		t.Fatalf("Enumerate after concurrent batches lists %d, want %d", len(got), want)
	}
}
