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
