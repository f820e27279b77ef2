package chunkstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// gatedBatches is a BatchReceiver that records its batch sizes, fails
// chunks starting with 0xff, and holds each batch until released.
type gatedBatches struct {
	mu      sync.Mutex
	sizes   []int
	started chan int
	release chan struct{}
}

func (g *gatedBatches) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	return chunkstore.Ref{}, errors.New("Put called on a BatchReceiver")
}

func (g *gatedBatches) PutMany(ctx context.Context, chunks [][]byte) ([]chunkstore.Ref, error) {
	g.mu.Lock()
	g.sizes = append(g.sizes, len(chunks))
	g.mu.Unlock()
	g.started <- len(chunks)
	<-g.release
	refs := make([]chunkstore.Ref, len(chunks))
	var be chunkstore.BatchError
	for i, c := range chunks {
		refs[i] = chunkstore.Sum(c)
		if len(c) > 0 && c[0] == 0xff {
			be.Failed = append(be.Failed, i)
			be.Errs = append(be.Errs, fmt.Errorf("%w: bad chunk", chunkstore.ErrUnavailable))
		}
	}
	if len(be.Failed) > 0 {
		return refs, &be
	}
	return refs, nil
}

// TestBatcherGroups: a lone Put goes out at once; Puts arriving while
// batches are in flight share the next batch; each Put gets its own Ref
// or error.
func TestBatcherGroups(t *testing.T) {
	g := &gatedBatches{started: make(chan int, 100), release: make(chan struct{})}
	b := chunkstore.NewBatcher(g, chunkstore.BatcherConfig{MaxBatches: 1, MaxChunks: 64})

	type result struct {
		i   int
		ref chunkstore.Ref
		err error
	}
	results := make(chan result, 200)
	put := func(i int, data []byte) {
		go func() {
			ref, err := b.Put(context.Background(), data)
			results <- result{i, ref, err}
		}()
	}
	chunk := func(i int) []byte {
		if i%10 == 9 {
			return []byte{0xff, byte(i)}
		}
		return []byte{byte(i), 1, 2}
	}

	put(0, chunk(0))
	if n := <-g.started; n != 1 {
		t.Fatalf("the first batch has %d chunks, want the lone Put", n)
	}
	// 100 Puts queue behind the held batch.
	for i := 1; i <= 100; i++ {
		put(i, chunk(i))
	}
	wait.Until(t, 30*time.Second, func() error {
		if n := b.Queued(); n < 100 {
			return fmt.Errorf("%d of 100 Puts queued", n)
		}
		return nil
	})
	close(g.release)

	got := map[int]result{}
	for range 101 {
		select {
		case r := <-results:
			got[r.i] = r
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d of 101 Puts returned", len(got))
		}
	}
	for i := 0; i <= 100; i++ {
		r := got[i]
		if i%10 == 9 {
			if !errors.Is(r.err, chunkstore.ErrUnavailable) {
				t.Fatalf("put %d: want its own failure, got %v", i, r.err)
			}
			continue
		}
		if r.err != nil || r.ref != chunkstore.Sum(chunk(i)) {
			t.Fatalf("put %d: %v %v", i, r.ref, r.err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	total := 0
	for _, n := range g.sizes {
		if n > 64 {
			t.Fatalf("a batch of %d chunks; the bound is 64", n)
		}
		total += n
	}
	if total != 101 {
		t.Fatalf("batches %v hold %d chunks, want 101", g.sizes, total)
	}
	// 100 queued Puts in batches of at most 64: exactly two after the
	// lone one.
	if len(g.sizes) != 3 || g.sizes[1] != 64 || g.sizes[2] != 36 {
		t.Fatalf("batches %v, want [1 64 36]", g.sizes)
	}
}

// TestBatcherRefusals: oversize chunks and ended contexts are refused
// before anything is queued; a store without PutMany works through Put.
func TestBatcherRefusals(t *testing.T) {
	r := &failingReceiver{}
	b := chunkstore.NewBatcher(r, chunkstore.BatcherConfig{})
	if _, err := b.Put(context.Background(), make([]byte, chunkstore.MaxChunkSize+1)); !errors.Is(err, chunkstore.ErrTooLarge) {
		t.Fatalf("oversize: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Put(ctx, []byte{2}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
	if r.puts.Load() != 0 {
		t.Fatal("a refused Put reached the store")
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ref, err := b.Put(context.Background(), []byte{byte(i), 9})
			switch {
			case i%2 == 1 && !errors.Is(err, chunkstore.ErrUnavailable):
				t.Errorf("put %d: want its failure, got %v", i, err)
			case i%2 == 0 && (err != nil || ref != chunkstore.Sum([]byte{byte(i), 9})):
				t.Errorf("put %d: %v %v", i, ref, err)
			}
		})
	}
	wg.Wait()
	if r.puts.Load() != 50 {
		t.Fatalf("%d puts reached the store, want 50", r.puts.Load())
	}

	// PutMany: every chunk stored or named in the BatchError.
	var chunks [][]byte
	for i := range 300 {
		chunks = append(chunks, []byte{byte(i), 7})
	}
	refs, err := b.PutMany(context.Background(), chunks)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) || len(be.Failed) != 150 {
		t.Fatalf("PutMany: want the 150 odd chunks failed, got %v", err)
	}
	for i, c := range chunks {
		if refs[i] != chunkstore.Sum(c) {
			t.Fatalf("ref %d is not its chunk's", i)
		}
		if (be.Err(i) != nil) != (i%2 == 1) {
			t.Fatalf("chunk %d: error %v", i, be.Err(i))
		}
	}
	if _, err := b.PutMany(context.Background(), [][]byte{{2}, make([]byte, chunkstore.MaxChunkSize+1)}); !errors.Is(err, chunkstore.ErrTooLarge) {
		t.Fatalf("PutMany with an oversize chunk: %v", err)
	}
}

// namedBatches is a NamedBatchReceiver that records the names it was given
// and takes them as the chunks' Refs.
type namedBatches struct {
	mu    sync.Mutex
	names []chunkstore.Ref
}

func (n *namedBatches) Put(ctx context.Context, data []byte) (chunkstore.Ref, error) {
	return chunkstore.Ref{}, errors.New("Put called on a BatchReceiver")
}

func (n *namedBatches) PutMany(ctx context.Context, chunks [][]byte) ([]chunkstore.Ref, error) {
	return n.PutManyNamed(ctx, chunks, make([]chunkstore.Ref, len(chunks)))
}

func (n *namedBatches) PutManyNamed(ctx context.Context, chunks [][]byte, names []chunkstore.Ref) ([]chunkstore.Ref, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names = append(n.names, names...)
	refs := make([]chunkstore.Ref, len(chunks))
	for i, c := range chunks {
		refs[i] = names[i]
		if refs[i].IsZero() {
			refs[i] = chunkstore.Sum(c)
		}
	}
	return refs, nil
}

// TestBatcherPassesNames: the names of PutNamed and PutManyNamed reach a
// NamedBatchReceiver (unnamed Puts as zero Refs); over a plain
// BatchReceiver the same calls hash as PutMany does.
func TestBatcherPassesNames(t *testing.T) {
	n := &namedBatches{}
	b := chunkstore.NewBatcher(n, chunkstore.BatcherConfig{})
	a, c := []byte("named"), []byte("unnamed")
	name := chunkstore.Sum(a)
	if ref, err := b.PutNamed(context.Background(), a, name); err != nil || ref != name {
		t.Fatalf("PutNamed = %s, %v", ref.Short(), err)
	}
	if ref, err := b.Put(context.Background(), c); err != nil || ref != chunkstore.Sum(c) {
		t.Fatalf("Put = %s, %v", ref.Short(), err)
	}
	if _, err := b.PutManyNamed(context.Background(), [][]byte{a}, nil); err == nil {
		t.Fatal("PutManyNamed with no names for one chunk succeeded")
	}
	n.mu.Lock()
	got := n.names
	n.mu.Unlock()
	if len(got) != 2 || got[0] != name || !got[1].IsZero() {
		t.Fatalf("receiver got names %v, want [%s zero]", got, name.Short())
	}

	g := &gatedBatches{started: make(chan int, 10), release: make(chan struct{})}
	close(g.release)
	plain := chunkstore.NewBatcher(g, chunkstore.BatcherConfig{})
	refs, err := plain.PutManyNamed(context.Background(), [][]byte{a, c}, []chunkstore.Ref{name, {}})
	if err != nil || refs[0] != name || refs[1] != chunkstore.Sum(c) {
		t.Fatalf("PutManyNamed over a plain BatchReceiver = %v, %v", refs, err)
	}
}
