package refcache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

func ref(i byte) chunkstore.Ref { return chunkstore.Sum([]byte{i}) }

func TestLRUBound(t *testing.T) {
	c := New(10 * (100 + entryOverhead))
	for i := 0; i < 50; i++ {
		c.Add(ref(byte(i)), make([]byte, 100))
	}
	if c.Len() != 10 {
		t.Fatalf("len %d, want 10", c.Len())
	}
	if _, ok := c.Peek(ref(49)); !ok {
		t.Fatal("most recent entry evicted")
	}
	if _, ok := c.Peek(ref(0)); ok {
		t.Fatal("oldest entry kept")
	}
	// Touching an entry keeps it.
	c.Peek(ref(40))
	for i := 50; i < 59; i++ {
		c.Add(ref(byte(i)), make([]byte, 100))
	}
	if _, ok := c.Peek(ref(40)); !ok {
		t.Fatal("recently used entry evicted")
	}
	if c.Bytes() > 10*(100+entryOverhead) {
		t.Fatalf("bytes %d over bound", c.Bytes())
	}
	c.Add(ref(200), make([]byte, 1<<20)) // larger than the cache: not kept
	if _, ok := c.Peek(ref(200)); ok {
		t.Fatal("oversized entry kept")
	}
}

func TestCoalescing(t *testing.T) {
	c := New(1 << 20)
	var calls atomic.Int32
	release := make(chan struct{})
	fetch := func(ctx context.Context, r chunkstore.Ref) ([]byte, error) {
		calls.Add(1)
		<-release
		return []byte("data"), nil
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := c.Get(context.Background(), ref(1), fetch)
			if err != nil || string(b) != "data" {
				t.Errorf("got %q %v", b, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d fetches, want 1", calls.Load())
	}
	// Errors are not cached.
	boom := errors.New("boom")
	n := 0
	for i := 0; i < 2; i++ {
		_, err := c.Get(context.Background(), ref(2), func(context.Context, chunkstore.Ref) ([]byte, error) { n++; return nil, boom })
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
	}
	if n != 2 {
		t.Fatalf("error cached: %d calls", n)
	}
	// A nil cache fetches every time.
	var nc *Cache
	if b, err := nc.Get(context.Background(), ref(3), func(context.Context, chunkstore.Ref) ([]byte, error) { return []byte("x"), nil }); err != nil || string(b) != "x" {
		t.Fatal(b, err)
	}
}

// TestGetMany: one fetch for the misses only (each distinct Ref once),
// hits from the cache, per-Ref failures reported and not cached,
// duplicates filled.
func TestGetMany(t *testing.T) {
	c := New(1 << 20)
	c.Add(ref(1), []byte("one"))
	var calls [][]chunkstore.Ref
	fetch := func(_ context.Context, refs []chunkstore.Ref) ([][]byte, error) {
		calls = append(calls, refs)
		out := make([][]byte, len(refs))
		be := &chunkstore.BatchError{Fetch: true}
		for i, r := range refs {
			if r == ref(9) {
				be.Failed = append(be.Failed, i)
				be.Errs = append(be.Errs, chunkstore.ErrNotFound)
				continue
			}
			out[i] = r[:4]
		}
		if len(be.Failed) > 0 {
			return out, be
		}
		return out, nil
	}
	refs := []chunkstore.Ref{ref(1), ref(2), ref(9), ref(2), ref(3)}
	vals, err := c.GetMany(context.Background(), refs, fetch)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 1 || be.Failed[0] != 2 || !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("want ref 9 not found, got %v", err)
	}
	if len(calls) != 1 || len(calls[0]) != 3 {
		t.Fatalf("fetch calls %v, want one of refs 2, 9, 3", calls)
	}
	if string(vals[0]) != "one" || vals[2] != nil || string(vals[1]) != string(vals[3]) || len(vals[4]) != 4 {
		t.Fatalf("values %q", vals)
	}
	// Everything but the failed one is cached now.
	calls = nil
	if _, err := c.GetMany(context.Background(), refs[:2], fetch); err != nil || len(calls) != 0 {
		t.Fatalf("cached refs fetched again: %v %v", calls, err)
	}
	if _, err := c.GetMany(context.Background(), nil, fetch); err != nil || len(calls) != 0 {
		t.Fatalf("empty: %v %v", calls, err)
	}
}

// TestGetManyCoalesces: a GetMany waits for a Ref another caller is
// fetching instead of fetching it, and fetches it itself when that fetch
// fails.
func TestGetManyCoalesces(t *testing.T) {
	c := New(1 << 20)
	release := make(chan struct{})
	started := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		c.Get(context.Background(), ref(5), func(context.Context, chunkstore.Ref) ([]byte, error) {
			close(started)
			<-release
			return nil, errors.New("first fetch failed")
		})
	})
	<-started
	var fetched atomic.Int64
	done := make(chan struct{})
	var vals [][]byte
	var err error
	go func() {
		defer close(done)
		vals, err = c.GetMany(context.Background(), []chunkstore.Ref{ref(5), ref(6)}, func(_ context.Context, refs []chunkstore.Ref) ([][]byte, error) {
			fetched.Add(int64(len(refs)))
			out := make([][]byte, len(refs))
			for i := range refs {
				out[i] = []byte("v")
			}
			return out, nil
		})
	}()
	time.Sleep(20 * time.Millisecond)
	if n := fetched.Load(); n != 1 {
		t.Fatalf("GetMany fetched %d refs while ref 5 was in flight, want 1", n)
	}
	close(release)
	<-done
	wg.Wait()
	if err != nil || string(vals[0]) != "v" || string(vals[1]) != "v" || fetched.Load() != 2 {
		t.Fatalf("after the first fetch failed: %q %v (%d fetched)", vals, err, fetched.Load())
	}
}
