package erasure

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// Limits of one PutShards request of a batch: a node's share of a batch
// larger than this is sent as several requests, concurrently (each below
// the remote client's frame limit, so it is one frame; the disk store
// commits concurrent requests together).
const (
	batchPartBytes  = 16 << 20
	batchPartShards = 4096
)

// batchParallelFrom: batches with at least this many bytes are hashed and
// encoded by several goroutines.
const batchParallelFrom = 64 << 10

// PutMany stores chunks in one round (chunkstore.BatchReceiver): every
// chunk is hashed and encoded (in parallel), its profile chosen as Put
// does (tiny chunks replicated, Fit for fewer failure domains), and each
// node receives one PutShards request with all its shards of the batch
// (more only past 16 MiB or 4096 shards), so it appends them and syncs
// once. Each chunk is stored or not on its own, by Put's write quorum
// (WriteQuorum of the homes that answered); chunks with some shards
// missing are remembered as pending repairs. Chunks short of their quorum
// are listed in a *chunkstore.BatchError wrapping chunkstore.ErrUnavailable
// (the others are durable). Duplicates in the batch are written once.
func (s *Store) PutMany(ctx context.Context, chunks [][]byte) ([]chunkstore.Ref, error) {
	return s.putMany(ctx, chunks, nil, s.Profile())
}

// PutManyNamed is PutMany for chunks the caller has named
// (chunkstore.NamedBatchReceiver): a chunk with a name is not hashed
// again.
func (s *Store) PutManyNamed(ctx context.Context, chunks [][]byte, names []chunkstore.Ref) ([]chunkstore.Ref, error) {
	if err := chunkstore.CheckNames(chunks, names); err != nil {
		return nil, err
	}
	return s.putMany(ctx, chunks, names, s.Profile())
}

// PutMany is Store.PutMany writing new chunks with the view's profile.
func (v profileView) PutMany(ctx context.Context, chunks [][]byte) ([]chunkstore.Ref, error) {
	return v.Store.putMany(ctx, chunks, nil, v.p)
}

// PutManyNamed is Store.PutManyNamed writing new chunks with the view's
// profile.
func (v profileView) PutManyNamed(ctx context.Context, chunks [][]byte, names []chunkstore.Ref) ([]chunkstore.Ref, error) {
	if err := chunkstore.CheckNames(chunks, names); err != nil {
		return nil, err
	}
	return v.Store.putMany(ctx, chunks, names, v.p)
}

// batchChunk is one chunk of a batch.
type batchChunk struct {
	ref     chunkstore.Ref
	p       chunkstore.Profile
	shards  [][]byte
	release func()
	first   int // index of the first chunk of the batch with this ref
	// Written under the batch's mu: what became of each shard.
	out writeOutcome
}

// batchItem is one shard of a batch: position pos of chunk.
type batchItem struct{ chunk, pos int }

// batchPart is one PutShards request.
type batchPart struct {
	node  placement.Node
	items []batchItem
	bytes int
}

// names, if not nil, are the callers' Refs of chunks (zero: hash it).
func (s *Store) putMany(ctx context.Context, chunks [][]byte, names []chunkstore.Ref, base chunkstore.Profile) ([]chunkstore.Ref, error) {
	if err := chunkstore.CheckBatch(ctx, chunks); err != nil {
		return nil, err
	}
	refs := make([]chunkstore.Ref, len(chunks))
	if len(chunks) == 0 {
		return refs, nil
	}
	pl := s.Placer()
	bc := make([]batchChunk, len(chunks))
	defer func() {
		for i := range bc {
			if bc[i].release != nil {
				bc[i].release()
			}
		}
	}()
	if err := s.encodeBatch(pl, base, chunks, names, bc); err != nil {
		return nil, err
	}

	// Group the shards of the distinct chunks by home node.
	var parts []*batchPart
	open := map[string]*batchPart{}
	seen := make(map[chunkstore.Ref]int, len(chunks))
	for i := range bc {
		c := &bc[i]
		refs[i] = c.ref
		if f, ok := seen[c.ref]; ok {
			c.first = f
			c.release() // the first copy is written
			c.release, c.shards = nil, nil
			continue
		}
		seen[c.ref] = i
		c.first = i
		homes := pl.Place(c.ref, c.p.N())
		c.out = writeOutcome{homes: homes, fates: make([]fate, c.p.N())}
		if homes == nil {
			c.out.errs = append(c.out.errs, fmt.Errorf("%w: no storage node is up", chunkstore.ErrUnavailable))
			continue
		}
		for pos, n := range homes {
			size := len(c.shards[pos])
			bp := open[n.ID]
			if bp == nil || len(bp.items) >= batchPartShards || bp.bytes+size > batchPartBytes {
				bp = &batchPart{node: n}
				open[n.ID] = bp
				parts = append(parts, bp)
			}
			bp.items = append(bp.items, batchItem{chunk: i, pos: pos})
			bp.bytes += size
		}
	}

	// One request per part, all in parallel. Every write has returned when
	// Wait does (shard stores never read the data after their PutShards
	// returns), so the encode buffers are free again after it.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, bp := range parts {
		wg.Go(func() {
			// Checksums here: each node's are computed while others send.
			shards := make([]chunkstore.Shard, len(bp.items))
			for j, it := range bp.items {
				c := &bc[it.chunk]
				key := chunkstore.ShardKey{Ref: c.ref, Profile: c.p, Index: uint8(it.pos)}
				shards[j] = chunkstore.NewShard(key, len(chunks[it.chunk]), c.shards[it.pos])
			}
			err := s.putNode(ctx, bp.node, shards)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				err = fmt.Errorf("node %s: %w", bp.node.ID, err)
			}
			f := fateOf(err)
			last := -1
			for _, it := range bp.items {
				c := &bc[it.chunk]
				c.out.fates[it.pos] = f
				if err != nil && it.chunk != last { // one error per chunk and part
					c.out.errs = append(c.out.errs, err)
				}
				last = it.chunk
			}
		})
	}
	wg.Wait()

	s.m.putBatches.Inc()
	s.m.puts.Add(float64(len(chunks)))
	for _, d := range chunks {
		s.m.putBytes.Add(float64(len(d)))
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Each distinct chunk is settled once (a duplicate shares its
	// original's verdict).
	var be chunkstore.BatchError
	verdict := make([]error, len(bc))
	for i := range bc {
		c := &bc[i]
		if c.first == i {
			verdict[i] = s.settle(c.ref, c.p, len(chunks[i]), c.out)
		}
		if err := verdict[c.first]; err != nil {
			if c.first != i {
				s.m.putErrors.Inc() // settle counted the original
			}
			be.Failed = append(be.Failed, i)
			be.Errs = append(be.Errs, err)
		}
	}
	if len(be.Failed) > 0 {
		return refs, &be
	}
	return refs, nil
}

// encodeBatch hashes and encodes every chunk of a batch into bc, with as
// many goroutines as there are CPUs for batches worth it.
func (s *Store) encodeBatch(pl *placement.Placer, base chunkstore.Profile, chunks [][]byte, names []chunkstore.Ref, bc []batchChunk) error {
	total := 0
	for _, d := range chunks {
		total += len(d)
	}
	workers := 1
	if total >= batchParallelFrom {
		workers = min(runtime.GOMAXPROCS(0), len(chunks))
	}
	var next atomic.Int64
	var failed atomic.Pointer[error]
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(chunks) || failed.Load() != nil {
				return
			}
			var name chunkstore.Ref
			if names != nil {
				name = names[i]
			}
			if err := s.encodeOne(pl, base, chunks[i], name, &bc[i]); err != nil {
				failed.CompareAndSwap(nil, &err)
				return
			}
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return nil
}

// encodeOne is Put's encoding of one chunk: its profile (replicated if
// tiny, what Fit says if the cluster has fewer failure domains than
// shards), its Ref (name, unless zero) and its shards.
func (s *Store) encodeOne(pl *placement.Placer, base chunkstore.Profile, data []byte, name chunkstore.Ref, c *batchChunk) error {
	p := s.profileFor(base, len(data))
	ref, shards, release, err := s.hashAndEncode(p, data, name)
	if err != nil {
		return err
	}
	if t, need := Fit(pl, ref, p); need {
		release()
		p = t
		if shards, release, err = s.codec.EncodeShared(p, data); err != nil {
			return err
		}
	}
	c.ref, c.p, c.shards, c.release = ref, p, shards, release
	return nil
}

var (
	_ chunkstore.NamedBatchReceiver = (*Store)(nil)
	_ chunkstore.NamedBatchReceiver = profileView{}
)
