package chunkstore_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
)

// TestFetchRanges: over a store without ranged reads, FetchRanges returns
// exactly the bytes of each range (slices of the verified whole chunk),
// and reports bad ranges, missing chunks and wrong sizes for those
// positions only.
func TestFetchRanges(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	rng := rand.New(rand.NewPCG(1, 2))
	var chunks [][]byte
	var refs []chunkstore.Ref
	for _, n := range []int{1, 4096, 65537, 1 << 20} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		r, err := s.Put(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		chunks, refs = append(chunks, b), append(refs, r)
	}
	var rs []chunkstore.Range
	for range 200 {
		k := rng.IntN(len(chunks))
		size := len(chunks[k])
		off := rng.IntN(size + 1)
		rs = append(rs, chunkstore.Range{Ref: refs[k], Size: size, Off: off, Len: rng.IntN(size - off + 1)})
	}
	missing := chunkstore.Sum([]byte("never stored"))
	bad := map[int]error{
		3:  chunkstore.ErrBadRange, // past the end
		7:  chunkstore.ErrBadRange, // negative offset
		11: chunkstore.ErrNotFound, // not stored
		19: chunkstore.ErrBadRange, // wrong size
		23: chunkstore.ErrBadRange, // zero ref
	}
	rs[3] = chunkstore.Range{Ref: refs[1], Size: 4096, Off: 4000, Len: 97}
	rs[7] = chunkstore.Range{Ref: refs[1], Size: 4096, Off: -1, Len: 2}
	rs[11] = chunkstore.Range{Ref: missing, Size: 10, Off: 0, Len: 10}
	rs[19] = chunkstore.Range{Ref: refs[1], Size: 4097, Off: 0, Len: 1}
	rs[23] = chunkstore.Range{Size: 10, Len: 1}
	got, err := chunkstore.FetchRanges(ctx, s, rs)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) || !be.Fetch {
		t.Fatalf("err %v, want a *BatchError", err)
	}
	var failed []int
	for i := range bad {
		failed = append(failed, i)
	}
	slices.Sort(failed)
	if !slices.Equal(be.Failed, failed) {
		t.Fatalf("failed %v, want %v", be.Failed, failed)
	}
	for j, i := range be.Failed {
		if !errors.Is(be.Errs[j], bad[i]) || got[i] != nil {
			t.Fatalf("range %d: %v (data %v), want %v", i, be.Errs[j], got[i] != nil, bad[i])
		}
	}
	for i, r := range rs {
		if bad[i] != nil {
			continue
		}
		k := slices.Index(refs, r.Ref)
		if want := chunks[k][r.Off : r.Off+r.Len]; !bytes.Equal(got[i], want) || len(got[i]) != r.Len {
			t.Fatalf("range %d [%d, +%d) of chunk %d: wrong bytes", i, r.Off, r.Len, k)
		}
	}
	// No failure, no error.
	if _, err := chunkstore.FetchRanges(ctx, s, rs[:3]); err != nil {
		t.Fatal(err)
	}
}
