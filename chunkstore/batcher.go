package chunkstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Batcher turns concurrent Puts into batched ones (group commit): a Put
// joins the queue; while fewer than MaxBatches batches are in flight, a
// batch takes everything queued (up to MaxChunks chunks and MaxBytes
// bytes) and stores it with one PutMany. The first Put of an idle Batcher
// goes out alone at once, so a lone writer pays no delay; the Puts that
// arrive while it is in flight share the next round. Over the erasure
// store that is one request, one append and one fsync per node per batch
// instead of per chunk.
//
// A Batcher is a Receiver with Put's guarantees: a nil error means the
// chunk is durable, and the data is not retained after Put returns — so
// Put waits for its batch even when ctx ends (a batch is bounded by
// Timeout). Its zero value is not usable; use NewBatcher.
type Batcher struct {
	r          Receiver
	maxChunks  int
	maxBytes   int
	maxBatches int
	timeout    time.Duration

	mu      sync.Mutex
	queue   []*batchPut
	running int
}

// BatcherConfig sets a Batcher's bounds; zero fields take the defaults.
type BatcherConfig struct {
	MaxChunks  int           // chunks per batch (default 256)
	MaxBytes   int           // bytes per batch (default 8 MiB; one chunk may exceed it)
	MaxBatches int           // batches in flight (default 4)
	Timeout    time.Duration // bound on one batch (default 1 minute)
}

type batchPut struct {
	data []byte
	ref  Ref
	err  error
	done chan struct{}
}

// NewBatcher returns a Batcher storing through r (PutMany if r is a
// BatchReceiver, else concurrent Puts).
func NewBatcher(r Receiver, cfg BatcherConfig) *Batcher {
	b := &Batcher{r: r, maxChunks: cfg.MaxChunks, maxBytes: cfg.MaxBytes, maxBatches: cfg.MaxBatches, timeout: cfg.Timeout}
	if b.maxChunks <= 0 {
		b.maxChunks = 256
	}
	if b.maxBytes <= 0 {
		b.maxBytes = 8 << 20
	}
	if b.maxBatches <= 0 {
		b.maxBatches = 4
	}
	if b.timeout <= 0 {
		b.timeout = time.Minute
	}
	return b
}

// Put stores data in the next batch and returns its Ref once the batch is
// done. ctx is checked before the chunk is queued.
func (b *Batcher) Put(ctx context.Context, data []byte) (Ref, error) {
	if err := ctx.Err(); err != nil {
		return Ref{}, err
	}
	if len(data) > MaxChunkSize {
		return Ref{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	p := &batchPut{data: data, done: make(chan struct{})}
	b.mu.Lock()
	b.queue = append(b.queue, p)
	if b.running < b.maxBatches {
		b.running++
		go b.run()
	}
	b.mu.Unlock()
	<-p.done
	return p.ref, p.err
}

// Queued returns how many Puts wait for a batch.
func (b *Batcher) Queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// run stores batches until the queue is empty.
func (b *Batcher) run() {
	for {
		b.mu.Lock()
		n, size := 0, 0
		for n < len(b.queue) && n < b.maxChunks && (n == 0 || size+len(b.queue[n].data) <= b.maxBytes) {
			size += len(b.queue[n].data)
			n++
		}
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		if len(b.queue) == 0 {
			b.queue = nil
		}
		b.mu.Unlock()
		b.store(batch)
	}
}

func (b *Batcher) store(batch []*batchPut) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	chunks := make([][]byte, len(batch))
	for i, p := range batch {
		chunks[i] = p.data
	}
	refs, err := PutMany(ctx, b.r, chunks)
	var be *BatchError
	errors.As(err, &be)
	for i, p := range batch {
		switch {
		case be != nil:
			p.ref, p.err = refs[i], be.Err(i)
		case err != nil:
			p.err = err
		default:
			p.ref = refs[i]
		}
		close(p.done)
	}
}
