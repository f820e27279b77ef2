package erasure

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// fetchPartShards bounds the keys of one GetShards request of a FetchMany
// (the remote client sends at most 1024 keys per frame, one frame after
// the other; a node's larger share is sent as several requests,
// concurrently). Answers stream one shard per frame, so the bound is on
// requests, not memory: the caller's batch bounds that.
const fetchPartShards = 1024

// fetchManyFallback bounds the concurrent single-chunk Fetches of the
// chunks of a batch that the batched answers could not complete.
const fetchManyFallback = 16

// FetchMany reads chunks in one round (chunkstore.ManyFetcher): the data
// shards of every distinct chunk are asked of their current homes as
// Fetch's first step does, grouped so that each node receives one
// GetShards request for all its shards of the batch (more only past 1024
// shards), without checksumming them on arrival. Each chunk is then
// decoded and verified against its Ref. A chunk the batched answers cannot
// complete (a node down or slow to answer, a shard missing or corrupt, a
// chunk written under another map) is read again by Fetch alone, which
// escalates to parity, previous homes and every node, and repairs: a
// batch returns exactly what Fetch of each chunk would. Chunks Fetch
// fails are listed in a *chunkstore.BatchError with Fetch's errors.
func (s *Store) FetchMany(ctx context.Context, refs []chunkstore.Ref) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	data := make([][]byte, len(refs))
	if len(refs) == 0 {
		return data, nil
	}
	if len(refs) == 1 { // Fetch's own round, without the batch's bookkeeping
		var err error
		if data[0], err = s.Fetch(ctx, refs[0]); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return data, &chunkstore.BatchError{Failed: []int{0}, Errs: []error{err}, Fetch: true}
		}
		return data, nil
	}
	s.m.fetchBatches.Inc()
	placers := s.allPlacers()
	guess := s.Profile()
	cur := placers[0]
	first := make(map[chunkstore.Ref]int, len(refs))
	var chunks []int // index of each distinct chunk in refs
	gs := make([]*gathering, len(refs))
	defer func() {
		for _, g := range gs {
			if g != nil {
				g.release()
			}
		}
	}()

	// Plan: the data shards' homes of every distinct chunk, by node.
	var parts []*fetchPart
	open := map[string]*fetchPart{}
	for i, ref := range refs {
		if _, ok := first[ref]; ok {
			continue
		}
		first[ref] = i
		chunks = append(chunks, i)
		g := s.gatheringWith(ref, true, placers, guess)
		g.unverified = true
		gs[i] = g
		for _, r := range g.planHomes(cur, guess, g.firstPositions(cur, guess), true) {
			fp := open[r.node.ID]
			if fp == nil || len(fp.keys)+len(r.keys) > fetchPartShards {
				fp = &fetchPart{node: r.node}
				open[r.node.ID] = fp
				parts = append(parts, fp)
			}
			fp.spans = append(fp.spans, fetchSpan{chunk: i, from: len(fp.keys), to: len(fp.keys) + len(r.keys)})
			fp.keys = append(fp.keys, r.keys...)
		}
	}

	// Ask: one request per part, all in parallel; each chunk's gathering
	// records its share of the answers.
	var wg sync.WaitGroup
	for _, fp := range parts {
		wg.Go(func() {
			res, err := s.askNode(ctx, fp.node, fp.keys, true, true)
			for _, sp := range fp.spans {
				var r []chunkstore.ShardResult
				if err == nil {
					r = res[sp.from:sp.to]
				}
				gs[sp.chunk].record(fp.node.ID, fp.keys[sp.from:sp.to], r, err)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Decode and verify, on every CPU; what fails goes to Fetch.
	errs := make([]error, len(refs))
	var again []int
	var mu sync.Mutex
	var next atomic.Int64
	work := func() {
		for {
			j := int(next.Add(1)) - 1
			if j >= len(chunks) {
				return
			}
			i := chunks[j]
			if d, ok := s.decodeFetched(gs[i], guess); ok {
				data[i] = d
				continue
			}
			mu.Lock()
			again = append(again, i)
			mu.Unlock()
		}
	}
	workers := min(runtime.GOMAXPROCS(0), max(1, len(chunks)/8))
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()

	if len(again) > 0 {
		s.m.fetchFallbacks.Add(float64(len(again)))
		sem := make(chan struct{}, fetchManyFallback)
		for _, i := range again {
			gs[i].release() // Fetch gathers afresh
			gs[i] = nil
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				data[i], errs[i] = s.Fetch(ctx, refs[i])
			})
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	return data, chunkstore.FetchResults(refs, first, data, errs)
}

// fetchPart is one GetShards request of a FetchMany: keys of several
// chunks, spans[j] naming the keys of one chunk.
type fetchPart struct {
	node  placement.Node
	keys  []chunkstore.ShardKey
	spans []fetchSpan
}

type fetchSpan struct{ chunk, from, to int }

// decodeFetched is Fetch's end for a chunk whose shards were gathered by a
// batch: the chunk if enough shards came and it matches its Ref (counted
// as a fetch; read repair queued for shards missing at home), else false.
func (s *Store) decodeFetched(g *gathering, guess chunkstore.Profile) ([]byte, bool) {
	q := g.pick(guess)
	if !g.enough(q) {
		return nil, false
	}
	data, degraded, err := g.decode(q)
	if err != nil {
		return nil, false
	}
	s.m.fetches.Inc()
	if degraded {
		s.m.degraded.Inc()
	}
	if miss := g.missingAtHome(q); len(miss) > 0 && !s.Undersized(g.ref, q) {
		s.queueRepair(repairJob{ref: g.ref, profile: q, chunkSize: len(data), data: data, positions: miss})
	}
	s.m.fetchBytes.Add(float64(len(data)))
	return data, true
}

var _ chunkstore.ManyFetcher = (*Store)(nil)
