package chunkstore_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
)

// TestFetchManyFallback: over a Fetcher without FetchMany,
// chunkstore.FetchMany fetches each distinct chunk and reports exactly the
// missing ones in a BatchError.
func TestFetchManyFallback(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	var refs []chunkstore.Ref
	var want [][]byte
	for i := range 50 {
		d := []byte(strings.Repeat("x", i))
		ref, err := s.Put(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		refs, want = append(refs, ref), append(want, d)
	}
	missing := chunkstore.Sum([]byte("missing"))
	refs = append(refs, missing, refs[7], missing)
	want = append(want, nil, want[7], nil)
	got, err := chunkstore.FetchMany(ctx, s, refs)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 2 || be.Failed[0] != 50 || be.Failed[1] != 52 {
		t.Fatalf("want a BatchError for chunks 50 and 52, got %v", err)
	}
	if !errors.Is(err, chunkstore.ErrNotFound) || !strings.Contains(err.Error(), "2 chunks of the batch not read") {
		t.Fatalf("error %q", err)
	}
	for i := range refs {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("chunk %d: wrong bytes", i)
		}
	}
	if got, err := chunkstore.FetchMany(ctx, s, nil); err != nil || len(got) != 0 {
		t.Fatalf("empty batch: %v %v", got, err)
	}
}
