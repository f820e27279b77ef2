// Package storetest is the conformance suite every chunkstore.Store
// implementation passes: put/fetch/stat/enumerate/remove, deduplication,
// not-found, oversize and empty chunks, concurrency and context cancellation.
//
// Stores that implement chunkstore.BatchReceiver also run RunBatch (Run
// calls it; over other stores it checks chunkstore.PutMany's fallback).
//
// Usage, in an implementation's tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) chunkstore.Store { return newStore(t) })
//	}
//
// newStore is called once per subtest and must return an empty store; it
// registers its own cleanup with t.Cleanup.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) chunkstore.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s chunkstore.Store)
	}{
		{"PutFetch", testPutFetch},
		{"EmptyChunk", testEmpty},
		{"Dedup", testDedup},
		{"NotFound", testNotFound},
		{"TooLarge", testTooLarge},
		{"Stat", testStat},
		{"Enumerate", testEnumerate},
		{"EnumerateStop", testEnumerateStop},
		{"Remove", testRemove},
		{"Concurrent", testConcurrent},
		{"Cancelled", testCancelled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
	t.Run("Batch", func(t *testing.T) { RunBatch(t, newStore) })
}

// Data returns n deterministic pseudo-random bytes derived from seed.
func Data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		b[i], b[i+1], b[i+2], b[i+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
		b[i+4], b[i+5], b[i+6], b[i+7] = byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56)
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func put(t *testing.T, s chunkstore.Store, data []byte) chunkstore.Ref {
	t.Helper()
	ref, err := s.Put(ctxT(t), data)
	if err != nil {
		t.Fatalf("Put(%d bytes): %v", len(data), err)
	}
	if want := chunkstore.Sum(data); ref != want {
		t.Fatalf("Put returned ref %s, want BLAKE3 %s", ref, want)
	}
	return ref
}

func fetchEq(t *testing.T, s chunkstore.Store, ref chunkstore.Ref, want []byte) {
	t.Helper()
	got, err := s.Fetch(ctxT(t), ref)
	if err != nil {
		t.Fatalf("Fetch(%s): %v", ref.Short(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Fetch(%s) returned %d bytes differing from the %d put", ref.Short(), len(got), len(want))
	}
}

func testPutFetch(t *testing.T, s chunkstore.Store) {
	sizes := []int{1, 7, 4096, 65536 + 3, 1<<20 + 5, chunkstore.MaxChunkSize}
	refs := make([]chunkstore.Ref, len(sizes))
	for i, n := range sizes {
		refs[i] = put(t, s, Data(uint64(i+1), n))
	}
	for i, n := range sizes {
		fetchEq(t, s, refs[i], Data(uint64(i+1), n))
	}
	// The caller owns the returned slice: changing it changes nothing stored.
	got, err := s.Fetch(ctxT(t), refs[2])
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i] ^= 0xff
	}
	fetchEq(t, s, refs[2], Data(3, sizes[2]))
	// Put does not retain data.
	d := Data(99, 5000)
	ref := put(t, s, d)
	clear(d)
	fetchEq(t, s, ref, Data(99, 5000))
}

func testEmpty(t *testing.T, s chunkstore.Store) {
	ref := put(t, s, nil)
	got, err := s.Fetch(ctxT(t), ref)
	if err != nil {
		t.Fatalf("Fetch(empty): %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("Fetch(empty) = %d bytes", len(got))
	}
	info, err := s.Stat(ctxT(t), ref)
	if err != nil {
		t.Fatalf("Stat(empty): %v", err)
	}
	if info.Size != 0 || info.Ref != ref {
		t.Fatalf("Stat(empty) = %+v", info)
	}
}

func testDedup(t *testing.T, s chunkstore.Store) {
	d := Data(7, 100000)
	r1 := put(t, s, d)
	r2 := put(t, s, slices.Clone(d))
	if r1 != r2 {
		t.Fatalf("same bytes gave refs %s and %s", r1, r2)
	}
	var n int
	if err := s.Enumerate(ctxT(t), chunkstore.Ref{}, func(i chunkstore.Info) error {
		n++
		if i.Ref != r1 {
			t.Errorf("unexpected chunk %s", i.Ref)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("store holds %d chunks after putting the same bytes twice, want 1", n)
	}
	fetchEq(t, s, r1, d)
}

func testNotFound(t *testing.T, s chunkstore.Store) {
	put(t, s, Data(1, 100))
	missing := chunkstore.Sum([]byte("never stored"))
	if _, err := s.Fetch(ctxT(t), missing); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("Fetch(missing) error = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(ctxT(t), missing); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("Stat(missing) error = %v, want ErrNotFound", err)
	}
	if err := s.Remove(ctxT(t), missing); err != nil {
		t.Fatalf("Remove(missing) = %v, want nil", err)
	}
}

func testTooLarge(t *testing.T, s chunkstore.Store) {
	d := make([]byte, chunkstore.MaxChunkSize+1)
	if _, err := s.Put(ctxT(t), d); !errors.Is(err, chunkstore.ErrTooLarge) {
		t.Fatalf("Put(4 MiB + 1) error = %v, want ErrTooLarge", err)
	}
	n := 0
	if err := s.Enumerate(ctxT(t), chunkstore.Ref{}, func(chunkstore.Info) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("a rejected put left %d chunks", n)
	}
}

func testStat(t *testing.T, s chunkstore.Store) {
	for i, n := range []int{1, 1000, 333333} {
		ref := put(t, s, Data(uint64(100+i), n))
		info, err := s.Stat(ctxT(t), ref)
		if err != nil {
			t.Fatalf("Stat: %v", err)
		}
		if info.Ref != ref || info.Size != int64(n) {
			t.Fatalf("Stat = %+v, want ref %s size %d", info, ref.Short(), n)
		}
	}
}

func putMany(t *testing.T, s chunkstore.Store, n int, seed uint64) []chunkstore.Ref {
	t.Helper()
	refs := make([]chunkstore.Ref, n)
	for i := range refs {
		refs[i] = put(t, s, Data(seed+uint64(i), 100+i*37))
	}
	slices.SortFunc(refs, func(a, b chunkstore.Ref) int { return bytes.Compare(a[:], b[:]) })
	return refs
}

func enumerate(t *testing.T, s chunkstore.Store, after chunkstore.Ref) []chunkstore.Info {
	t.Helper()
	var out []chunkstore.Info
	if err := s.Enumerate(ctxT(t), after, func(i chunkstore.Info) error {
		out = append(out, i)
		return nil
	}); err != nil {
		t.Fatalf("Enumerate: %v", err)
	}
	return out
}

func testEnumerate(t *testing.T, s chunkstore.Store) {
	const n = 40
	refs := putMany(t, s, n, 1000)
	sizes := map[chunkstore.Ref]int64{}
	for i := range n {
		sizes[chunkstore.Sum(Data(1000+uint64(i), 100+i*37))] = int64(100 + i*37)
	}
	all := enumerate(t, s, chunkstore.Ref{})
	if len(all) != n {
		t.Fatalf("Enumerate listed %d chunks, want %d", len(all), n)
	}
	for i, info := range all {
		if info.Ref != refs[i] {
			t.Fatalf("Enumerate[%d] = %s, want %s (ascending order)", i, info.Ref.Short(), refs[i].Short())
		}
		if info.Size != sizes[info.Ref] {
			t.Fatalf("Enumerate[%d] size %d, want %d", i, info.Size, sizes[info.Ref])
		}
	}
	for _, k := range []int{0, 1, n / 2, n - 2, n - 1} {
		got := enumerate(t, s, refs[k])
		if len(got) != n-k-1 {
			t.Fatalf("Enumerate(after #%d) listed %d chunks, want %d", k, len(got), n-k-1)
		}
		if len(got) > 0 && got[0].Ref != refs[k+1] {
			t.Fatalf("Enumerate(after #%d) starts at %s, want %s", k, got[0].Ref.Short(), refs[k+1].Short())
		}
	}
	// after need not be stored: a ref just above refs[10] starts at refs[11].
	between := refs[10]
	between[chunkstore.RefSize-1]++
	if between != refs[11] {
		got := enumerate(t, s, between)
		if len(got) != n-11 || got[0].Ref != refs[11] {
			t.Fatalf("Enumerate(after unstored ref) listed %d from %v", len(got), got)
		}
	}
}

func testEnumerateStop(t *testing.T, s chunkstore.Store) {
	putMany(t, s, 10, 2000)
	stop := errors.New("stop here")
	n := 0
	err := s.Enumerate(ctxT(t), chunkstore.Ref{}, func(chunkstore.Info) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Enumerate returned %v, want the callback's error", err)
	}
	if n != 3 {
		t.Fatalf("callback ran %d times after returning an error at 3", n)
	}
}

func testRemove(t *testing.T, s chunkstore.Store) {
	refs := putMany(t, s, 12, 3000)
	if err := s.Remove(ctxT(t), refs[0], refs[5], refs[11]); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	for i, r := range refs {
		_, err := s.Fetch(ctxT(t), r)
		_, serr := s.Stat(ctxT(t), r)
		removed := i == 0 || i == 5 || i == 11
		if removed && (!errors.Is(err, chunkstore.ErrNotFound) || !errors.Is(serr, chunkstore.ErrNotFound)) {
			t.Fatalf("removed chunk %d: Fetch %v, Stat %v; want ErrNotFound", i, err, serr)
		}
		if !removed && (err != nil || serr != nil) {
			t.Fatalf("kept chunk %d: Fetch %v, Stat %v", i, err, serr)
		}
	}
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != 9 {
		t.Fatalf("after removing 3 of 12, Enumerate lists %d", len(got))
	}
	// Removing again, and removing nothing, is fine.
	if err := s.Remove(ctxT(t), refs[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	// A removed chunk can be put again.
	d := Data(3000, 100)
	r := put(t, s, d)
	fetchEq(t, s, r, d)
}

func testConcurrent(t *testing.T, s chunkstore.Store) {
	const workers, per = 8, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				// Half the chunks are shared between workers (dedup races).
				seed := uint64(5000 + w*per + i)
				if i%2 == 0 {
					seed = uint64(9000 + i)
				}
				d := Data(seed, 1000+int(seed%4000)*10)
				ref, err := s.Put(ctxT(t), d)
				if err != nil {
					errs <- fmt.Errorf("worker %d put: %w", w, err)
					return
				}
				got, err := s.Fetch(ctxT(t), ref)
				if err != nil || !bytes.Equal(got, d) {
					errs <- fmt.Errorf("worker %d fetch %s: %v (equal=%v)", w, ref.Short(), err, bytes.Equal(got, d))
					return
				}
				if _, err := s.Stat(ctxT(t), ref); err != nil {
					errs <- fmt.Errorf("worker %d stat: %w", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := workers*per/2 + per/2
	if got := enumerate(t, s, chunkstore.Ref{}); len(got) != want {
		t.Fatalf("Enumerate after concurrent puts lists %d, want %d", len(got), want)
	}
}

func testCancelled(t *testing.T, s chunkstore.Store) {
	ref := put(t, s, Data(1, 1000))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context returned %v, want context.Canceled", op, err)
		}
	}
	_, err := s.Put(ctx, Data(2, 1000))
	check("Put", err)
	_, err = s.Fetch(ctx, ref)
	check("Fetch", err)
	_, err = s.Stat(ctx, ref)
	check("Stat", err)
	check("Enumerate", s.Enumerate(ctx, chunkstore.Ref{}, func(chunkstore.Info) error { return nil }))
	check("Remove", s.Remove(ctx, ref))
	// The cancelled calls changed nothing.
	fetchEq(t, s, ref, Data(1, 1000))
	if _, err := s.Stat(ctxT(t), chunkstore.Sum(Data(2, 1000))); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Errorf("a Put with a cancelled context stored its chunk (Stat: %v)", err)
	}
}
