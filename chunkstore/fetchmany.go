package chunkstore

import (
	"context"
	"sync"
)

// ManyFetcher is an optional capability of a Fetcher: reading many chunks
// in one round. Callers detect it with a type assertion (or call
// FetchMany, which does). The erasure store implements it by asking each
// node once for all its shards of the batch, instead of one round of
// shard requests per chunk.
//
// FetchMany returns the content of every chunk of refs with the
// guarantees of Fetch (verified against its Ref; corrupt bytes are never
// returned): data[i] for refs[i]. The slices are owned by the caller;
// duplicates within a batch are allowed and share one slice. An empty
// batch returns an empty slice and nil.
//
// Errors: a *BatchError (with Fetch set) names the chunks that were not
// read, each with Fetch's error (ErrNotFound for a chunk not stored,
// ErrUnavailable, ErrCorrupt), and data is complete for the others; any
// other error (a cancelled context) means no chunk was read, and data may
// be nil.
type ManyFetcher interface {
	FetchMany(ctx context.Context, refs []Ref) ([][]byte, error)
}

// fetchManyFallback bounds the concurrent Fetches of FetchMany over a
// Fetcher without the capability.
const fetchManyFallback = 32

// FetchMany reads refs through f: in one batch if f is a ManyFetcher, else
// with concurrent Fetches (at most 32 at a time, each distinct Ref once).
// The results follow ManyFetcher's contract.
func FetchMany(ctx context.Context, f Fetcher, refs []Ref) ([][]byte, error) {
	if m, ok := f.(ManyFetcher); ok {
		return m.FetchMany(ctx, refs)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data := make([][]byte, len(refs))
	errs := make([]error, len(refs))
	first := make(map[Ref]int, len(refs))
	sem := make(chan struct{}, fetchManyFallback)
	var wg sync.WaitGroup
	for i, ref := range refs {
		if _, ok := first[ref]; ok {
			continue
		}
		first[ref] = i
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			data[i], errs[i] = f.Fetch(ctx, ref)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return data, FetchResults(refs, first, data, errs)
}

// FetchResults completes the results of a FetchMany whose distinct Refs
// were read at the indexes in first (data and errs set there): it copies
// them to the duplicates and returns the *BatchError of the failed
// chunks, or nil.
func FetchResults(refs []Ref, first map[Ref]int, data [][]byte, errs []error) error {
	for i, ref := range refs {
		if f := first[ref]; f != i {
			data[i], errs[i] = data[f], errs[f]
		}
	}
	return FetchErrors(data, errs)
}

// FetchErrors ends a batched read whose item i has data[i] or failed with
// errs[i]: it drops the data of failed items and returns the *BatchError
// (Fetch set) naming them, or nil when none failed.
func FetchErrors(data [][]byte, errs []error) error {
	be := BatchError{Fetch: true}
	for i, err := range errs {
		if err != nil {
			data[i] = nil
			be.Failed = append(be.Failed, i)
			be.Errs = append(be.Errs, err)
		}
	}
	if len(be.Failed) > 0 {
		return &be
	}
	return nil
}
