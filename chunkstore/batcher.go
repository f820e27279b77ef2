package chunkstore

import (
	"cmp"
	"context"
	"errors"
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
// A Batcher is a Receiver (and a NamedBatchReceiver) with Put's guarantees: a nil error means the
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
	name Ref // the caller's Ref of data (PutManyNamed), or zero
	ref  Ref
	err  error
	done chan struct{}
}

var _ NamedBatchReceiver = (*Batcher)(nil)

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
	return b.PutNamed(ctx, data, Ref{})
}

// PutNamed is Put for a chunk the caller has named (name ==
// Sum(data), see NamedBatchReceiver; zero: hash it).
func (b *Batcher) PutNamed(ctx context.Context, data []byte, name Ref) (Ref, error) {
	refs, err := b.PutManyNamed(ctx, [][]byte{data}, []Ref{name})
	var be *BatchError
	if errors.As(err, &be) {
		return Ref{}, be.Errs[0]
	}
	if err != nil {
		return Ref{}, err
	}
	return refs[0], nil
}

// PutMany queues every chunk at once, so that they go out together in as
// few batches as the bounds allow (sharing them with concurrent Puts), and
// waits for all of them: chunkstore.BatchReceiver's contract. ctx is
// checked before anything is queued.
func (b *Batcher) PutMany(ctx context.Context, chunks [][]byte) ([]Ref, error) {
	return b.PutManyNamed(ctx, chunks, make([]Ref, len(chunks)))
}

// PutManyNamed is PutMany for chunks the caller has named
// (NamedBatchReceiver): the names go on to the Batcher's receiver if it
// takes them.
func (b *Batcher) PutManyNamed(ctx context.Context, chunks [][]byte, names []Ref) ([]Ref, error) {
	if err := CheckNames(chunks, names); err != nil {
		return nil, err
	}
	if err := CheckBatch(ctx, chunks); err != nil {
		return nil, err
	}
	ps := make([]*batchPut, len(chunks))
	for i, c := range chunks {
		ps[i] = &batchPut{data: c, name: names[i], done: make(chan struct{})}
	}
	b.mu.Lock()
	b.queue = append(b.queue, ps...)
	for k := 0; k < (len(ps)+b.maxChunks-1)/b.maxChunks && b.running < b.maxBatches; k++ {
		b.running++
		go b.run()
	}
	b.mu.Unlock()
	refs := make([]Ref, len(chunks))
	var be BatchError
	for i, p := range ps {
		<-p.done
		refs[i] = p.ref
		if p.err != nil {
			if refs[i].IsZero() {
				refs[i] = cmp.Or(names[i], Sum(chunks[i]))
			}
			be.Failed = append(be.Failed, i)
			be.Errs = append(be.Errs, p.err)
		}
	}
	if len(be.Failed) > 0 {
		return refs, &be
	}
	return refs, nil
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
	names := make([]Ref, len(batch))
	for i, p := range batch {
		chunks[i], names[i] = p.data, p.name
	}
	refs, err := PutManyNamed(ctx, b.r, chunks, names)
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
