package chunkstore

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// BatchReceiver is an optional capability of a Receiver: storing many
// chunks in one round. Callers detect it with a type assertion (or call
// PutMany, which does). The erasure store implements it by sending each
// node one request for all its shards of the batch, so that the node
// writes and syncs them once; the whole-chunk views of a disk store or a
// remote shard server send one request.
//
// PutMany stores every chunk of chunks with the guarantees of Put
// (durable when it returns nil; data not retained after it returns) and
// returns their Refs, refs[i] for chunks[i]. Duplicates within a batch are
// allowed. An empty batch returns an empty slice and nil. A chunk larger
// than MaxChunkSize fails the whole batch with ErrTooLarge before anything
// is written.
//
// Errors: a *BatchError names the chunks that were not stored (the others
// are durable) and refs is complete; any other error (a cancelled
// context, a bad argument, a transport failure of a store that cannot
// tell chunks apart) means no chunk of the batch may be assumed stored,
// and refs may be nil.
type BatchReceiver interface {
	PutMany(ctx context.Context, chunks [][]byte) ([]Ref, error)
}

// NamedBatchReceiver is a BatchReceiver that can store chunks their caller
// has already named without hashing them again (the erasure store's hash
// is a whole pass over the bytes, and blockd hashes every block and
// extent it writes back to name it in its tree before it stores it).
//
// PutManyNamed is PutMany where names[i], unless it is the zero Ref, is
// chunks[i]'s Ref as the caller computed it with Sum from those very
// bytes, unchanged since: the chunk is stored under it unhashed. A zero
// name is hashed as PutMany does. A wrong name would store bytes under a
// Ref they do not hash to, which every read rejects as corrupt: only a
// caller that hashed the buffer itself and owns it may name it.
type NamedBatchReceiver interface {
	BatchReceiver
	PutManyNamed(ctx context.Context, chunks [][]byte, names []Ref) ([]Ref, error)
}

// PutManyNamed stores chunks through r as PutMany does, passing the
// caller's names (see NamedBatchReceiver) when r can use them; the results
// are the same either way.
func PutManyNamed(ctx context.Context, r Receiver, chunks [][]byte, names []Ref) ([]Ref, error) {
	if err := CheckNames(chunks, names); err != nil {
		return nil, err
	}
	if n, ok := r.(NamedBatchReceiver); ok {
		return n.PutManyNamed(ctx, chunks, names)
	}
	return PutMany(ctx, r, chunks)
}

// CheckNames is what every PutManyNamed checks first: one name per chunk.
func CheckNames(chunks [][]byte, names []Ref) error {
	if len(names) != len(chunks) {
		return fmt.Errorf("chunkstore: PutManyNamed: %d names for %d chunks", len(names), len(chunks))
	}
	return nil
}

// BatchError reports the chunks of a PutMany batch that were not stored
// (every chunk of the batch not listed is durable), or of a FetchMany
// batch that were not read (every chunk not listed was returned). It
// unwraps to the per-chunk errors, so errors.Is(err, ErrUnavailable)
// works.
type BatchError struct {
	// Failed lists the indexes (into the batch) of the chunks not stored,
	// ascending.
	Failed []int
	// Errs[j] is why chunk Failed[j] was not stored (or read).
	Errs []error
	// Fetch is set for the errors of FetchMany: the chunks were not read.
	Fetch bool
}

// batchErrorShown is how many failed chunks Error spells out.
const batchErrorShown = 4

func (e *BatchError) Error() string {
	var b strings.Builder
	verb := "stored"
	if e.Fetch {
		verb = "read"
	}
	fmt.Fprintf(&b, "chunkstore: %d chunks of the batch not %s", len(e.Failed), verb)
	for j, i := range e.Failed {
		if j == batchErrorShown {
			fmt.Fprintf(&b, "; and %d more", len(e.Failed)-j)
			break
		}
		fmt.Fprintf(&b, "; chunk %d: %v", i, e.Errs[j])
	}
	return b.String()
}

// Unwrap returns the per-chunk errors.
func (e *BatchError) Unwrap() []error { return e.Errs }

// Err returns why chunk i of the batch failed, or nil if it did not.
func (e *BatchError) Err(i int) error {
	for j, f := range e.Failed {
		if f == i {
			return e.Errs[j]
		}
	}
	return nil
}

// CheckBatch is what every PutMany checks before writing anything: no
// chunk larger than MaxChunkSize (ErrTooLarge names the first), and ctx
// not done.
func CheckBatch(ctx context.Context, chunks [][]byte) error {
	for i, c := range chunks {
		if len(c) > MaxChunkSize {
			return fmt.Errorf("%w: chunk %d of the batch: %d bytes", ErrTooLarge, i, len(c))
		}
	}
	return ctx.Err()
}

// putManyFallback bounds the concurrent Puts of PutMany over a store
// without the capability.
const putManyFallback = 32

// PutMany stores chunks through r: in one batch if r is a BatchReceiver,
// else with concurrent Puts (at most 32 at a time). The results follow
// BatchReceiver's contract: a *BatchError names the chunks not stored.
func PutMany(ctx context.Context, r Receiver, chunks [][]byte) ([]Ref, error) {
	if b, ok := r.(BatchReceiver); ok {
		return b.PutMany(ctx, chunks)
	}
	if err := CheckBatch(ctx, chunks); err != nil {
		return nil, err
	}
	refs := make([]Ref, len(chunks))
	errs := make([]error, len(chunks))
	sem := make(chan struct{}, putManyFallback)
	var wg sync.WaitGroup
	for i, c := range chunks {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			refs[i], errs[i] = r.Put(ctx, c)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var be BatchError
	for i, err := range errs {
		if err != nil {
			be.Failed = append(be.Failed, i)
			be.Errs = append(be.Errs, err)
			refs[i] = Sum(chunks[i])
		}
	}
	if len(be.Failed) > 0 {
		return refs, &be
	}
	return refs, nil
}
