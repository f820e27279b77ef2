package erasure

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// FetchRanges implements chunkstore.RangeFetcher: parts of chunks, read as
// parts of their data shards. A chunk of Size bytes coded k+m has data
// shards of s = ShardSize(Size, k) bytes, shard j holding the chunk's bytes
// [j*s, (j+1)*s), so a range is read from the shards it overlaps, at their
// current homes: one GetShardRanges request per node for every range of
// the call (more only past fetchPartShards), all nodes at once. The
// profile is the one the store writes a chunk of that size with (the
// store's, or the view's for a WithProfile view; small chunks replicated).
//
// The bytes come unverified (a part of a shard cannot be checked against
// anything): the caller verifies them, as chunkstore.FetchRanges says. A
// range the ranged answers cannot complete (a home down or slow, a shard
// missing or moved, the chunk written under another profile or map) is
// read whole by FetchMany, which escalates to parity and previous homes
// and repairs, and sliced: only chunks FetchMany fails are in the
// *chunkstore.BatchError.
func (s *Store) FetchRanges(ctx context.Context, rs []chunkstore.Range) ([][]byte, error) {
	return s.fetchRanges(ctx, rs, s.Profile())
}

// FetchRanges is Store.FetchRanges with the view's profile.
func (v profileView) FetchRanges(ctx context.Context, rs []chunkstore.Range) ([][]byte, error) {
	return v.Store.fetchRanges(ctx, rs, v.p)
}

// rangePart is one GetShardRanges request of a FetchRanges: parts of
// shards of several ranges, pieces[j] saying where rs[j] goes.
type rangePart struct {
	node   placement.Node
	rs     []chunkstore.ShardRange
	pieces []rangePiece
}

// rangePiece: the bytes of one shard range go to out[rng][dst:].
type rangePiece struct{ rng, dst int }

func (s *Store) fetchRanges(ctx context.Context, rs []chunkstore.Range, base chunkstore.Profile) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([][]byte, len(rs))
	errs := make([]error, len(rs))
	whole := make([]bool, len(rs)) // to be read whole
	if len(rs) == 0 {
		return out, nil
	}
	s.m.rangeBatches.Inc()
	cur := s.Placer()

	// Plan: the pieces of every range, by the node holding their shard.
	var parts []*rangePart
	open := map[string]*rangePart{}
	for i, r := range rs {
		if err := r.Check(); err != nil {
			errs[i] = err
			continue
		}
		q := s.profileFor(base, r.Size)
		homes := cur.Place(r.Ref, q.N())
		if homes == nil {
			whole[i] = true
			continue
		}
		out[i] = make([]byte, r.Len)
		ss := chunkstore.ShardSize(r.Size, int(q.K))
		for j := r.Off / ss; j*ss < r.Off+r.Len; j++ {
			lo, hi := max(r.Off, j*ss), min(r.Off+r.Len, (j+1)*ss)
			n := homes[j]
			p := open[n.ID]
			if p == nil || len(p.rs) >= fetchPartShards {
				p = &rangePart{node: n}
				open[n.ID] = p
				parts = append(parts, p)
			}
			p.rs = append(p.rs, chunkstore.ShardRange{Key: chunkstore.ShardKey{Ref: r.Ref, Profile: q, Index: uint8(j)}, Off: uint32(lo - j*ss), Len: uint32(hi - lo)})
			p.pieces = append(p.pieces, rangePiece{rng: i, dst: lo - r.Off})
		}
	}

	// Ask: one request per part, all in parallel; pieces land in place.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Go(func() {
			res, err := s.askRanges(ctx, p.node, p.rs)
			defer chunkstore.ReleaseResults(res)
			for k, pc := range p.pieces {
				if err == nil {
					r, want := res[k], p.rs[k]
					if r.Err == nil && r.Shard.Key == want.Key && len(r.Shard.Data) == int(want.Len) && int(r.Shard.ChunkSize) == rs[pc.rng].Size {
						copy(out[pc.rng][pc.dst:], r.Shard.Data)
						continue
					}
				}
				mu.Lock()
				whole[pc.rng] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// What the ranged answers did not complete: whole, by FetchMany.
	var refs []chunkstore.Ref
	var at []int
	for i, w := range whole {
		if !w {
			if errs[i] == nil {
				s.m.rangeBytes.Add(float64(rs[i].Len))
			}
			continue
		}
		out[i] = nil
		refs, at = append(refs, rs[i].Ref), append(at, i)
	}
	if len(refs) > 0 {
		s.m.rangeFallbacks.Add(float64(len(refs)))
		data, err := s.FetchMany(ctx, refs)
		var be *chunkstore.BatchError
		if err != nil && !errors.As(err, &be) {
			return nil, err
		}
		if be != nil {
			for k, j := range be.Failed {
				errs[at[j]] = be.Errs[k]
			}
		}
		for j, i := range at {
			r := rs[i]
			switch d := data[j]; {
			case errs[i] != nil:
			case len(d) != r.Size:
				errs[i] = fmt.Errorf("%w: chunk %s is %d bytes, the range says %d", chunkstore.ErrBadRange, r.Ref.Short(), len(d), r.Size)
			default:
				out[i] = make([]byte, r.Len)
				copy(out[i], d[r.Off:r.Off+r.Len])
			}
		}
	}
	return out, chunkstore.FetchErrors(out, errs)
}

// askRanges reads parts of shards from node n (its own ranged reads, or
// whole shards sliced where its store has none).
func (s *Store) askRanges(ctx context.Context, n placement.Node, rs []chunkstore.ShardRange) ([]chunkstore.ShardResult, error) {
	st, err := s.cfg.Dialer.Dial(n)
	if err != nil {
		return nil, err
	}
	res, err := chunkstore.GetShardRanges(ctx, st, rs)
	if err == nil && len(res) != len(rs) {
		chunkstore.ReleaseResults(res)
		res, err = nil, fmt.Errorf("%w: %d results for %d ranges", chunkstore.ErrUnavailable, len(res), len(rs))
	}
	return res, err
}

var _ chunkstore.RangeFetcher = (*Store)(nil)
