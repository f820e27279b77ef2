package chunkstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

// failingReceiver fails the Put of chunks whose first byte is odd.
type failingReceiver struct{ puts atomic.Int64 }

func (f *failingReceiver) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	f.puts.Add(1)
	if len(data) > 0 && data[0]%2 == 1 {
		return chunkstore.Ref{}, fmt.Errorf("%w: chunk starting with %d", chunkstore.ErrUnavailable, data[0])
	}
	return chunkstore.Sum(data), nil
}

// TestPutManyFallback: over a Receiver without PutMany, chunkstore.PutMany
// puts each chunk and reports exactly the failed ones in a BatchError.
func TestPutManyFallback(t *testing.T) {
	var chunks [][]byte
	for i := range 100 {
		chunks = append(chunks, []byte{byte(i), 1, 2, 3})
	}
	r := &failingReceiver{}
	refs, err := chunkstore.PutMany(context.Background(), r, chunks)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	var want []int
	for i := 1; i < 100; i += 2 {
		want = append(want, i)
	}
	if !slices.Equal(be.Failed, want) || len(be.Errs) != len(want) {
		t.Fatalf("failed %v, want the odd chunks", be.Failed)
	}
	if !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatal("BatchError does not unwrap to the chunks' errors")
	}
	if be.Err(4) != nil || be.Err(5) == nil {
		t.Fatal("Err(i) disagrees with Failed")
	}
	if r.puts.Load() != 100 {
		t.Fatalf("%d puts for 100 chunks", r.puts.Load())
	}
	for i, c := range chunks {
		if refs[i] != chunkstore.Sum(c) {
			t.Fatalf("ref %d is not the chunk's", i)
		}
	}
	if msg := err.Error(); !strings.Contains(msg, "50 chunks") || !strings.Contains(msg, "chunk 7:") || strings.Contains(msg, "chunk 9:") || !strings.Contains(msg, "46 more") {
		t.Fatalf("error message %q: want the count, the first 4 failures and how many more", msg)
	}

	// All good: nil error.
	refs, err = chunkstore.PutMany(context.Background(), r, [][]byte{{2}, {4}, {2}})
	if err != nil || len(refs) != 3 || refs[0] != refs[2] {
		t.Fatalf("PutMany of good chunks: %v %v", refs, err)
	}
	// Oversize: nothing is put.
	before := r.puts.Load()
	if _, err := chunkstore.PutMany(context.Background(), r, [][]byte{{2}, make([]byte, chunkstore.MaxChunkSize+1)}); !errors.Is(err, chunkstore.ErrTooLarge) {
		t.Fatalf("oversize chunk: %v", err)
	}
	if r.puts.Load() != before {
		t.Fatal("a batch with an oversize chunk was partly put")
	}
}
