package chunkstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
)

// Range names Len bytes at Off of the chunk Ref, whose length is Size.
type Range struct {
	Ref            Ref
	Size, Off, Len int
}

// ErrBadRange: a Range that does not fit its chunk (negative or past
// Size, or a Size no chunk has).
var ErrBadRange = errors.New("chunkstore: bad range")

// Check reports why r cannot be read (nil when it can).
func (r Range) Check() error {
	if r.Ref.IsZero() || r.Size <= 0 || r.Size > MaxChunkSize || r.Off < 0 || r.Len < 0 || r.Off > r.Size-r.Len {
		return fmt.Errorf("%w: [%d, +%d) of a %d-byte chunk %s", ErrBadRange, r.Off, r.Len, r.Size, r.Ref.Short())
	}
	return nil
}

// RangeFetcher is a Fetcher that reads parts of chunks without reading
// them whole. Each range it returns is a buffer of its own, of the range's
// length (callers keep it, as blockd's block cache does, without pinning
// anything larger).
type RangeFetcher interface {
	FetchRanges(ctx context.Context, rs []Range) ([][]byte, error)
}

// FetchRanges returns the bytes of each range. out[i] is nil where range i
// was not read, and the error is then a *BatchError (Fetch set) naming
// those positions, as FetchMany's; any other error is for the whole call.
//
// A part of a chunk cannot be checked against the chunk's Ref: bytes a
// RangeFetcher returns are unverified, and callers verify them (blockd
// hashes each block against its content Ref and reads the chunk whole
// when that fails). Fetchers that are not RangeFetchers read each chunk
// whole, verified, in one FetchMany, and slice it: correct, but paying for
// the whole chunk.
func FetchRanges(ctx context.Context, f Fetcher, rs []Range) ([][]byte, error) {
	var bad []int
	var badErrs []error
	ok := make([]int, 0, len(rs))
	for i, r := range rs {
		if err := r.Check(); err != nil {
			bad, badErrs = append(bad, i), append(badErrs, err)
			continue
		}
		ok = append(ok, i)
	}
	out := make([][]byte, len(rs))
	errs := make([]error, len(rs))
	for j, i := range bad {
		errs[i] = badErrs[j]
	}
	if len(ok) > 0 {
		sub := make([]Range, len(ok))
		for j, i := range ok {
			sub[j] = rs[i]
		}
		got, err := fetchRanges(ctx, f, sub)
		var be *BatchError
		if err != nil && !errors.As(err, &be) {
			return nil, err
		}
		for j, i := range ok {
			out[i] = got[j]
		}
		if be != nil {
			for k, j := range be.Failed {
				out[ok[j]], errs[ok[j]] = nil, be.Errs[k]
			}
		}
	}
	return out, FetchErrors(out, errs)
}

// fetchRanges reads valid ranges.
func fetchRanges(ctx context.Context, f Fetcher, rs []Range) ([][]byte, error) {
	if r, ok := f.(RangeFetcher); ok {
		return r.FetchRanges(ctx, rs)
	}
	refs := make([]Ref, len(rs))
	for i, r := range rs {
		refs[i] = r.Ref
	}
	data, err := FetchMany(ctx, f, refs)
	var be *BatchError
	if err != nil && !errors.As(err, &be) {
		return nil, err
	}
	out := make([][]byte, len(rs))
	errs := make([]error, len(rs))
	if be != nil {
		for k, i := range be.Failed {
			errs[i] = be.Errs[k]
		}
	}
	for i, r := range rs {
		switch d := data[i]; {
		case errs[i] != nil:
		case len(d) != r.Size:
			errs[i] = fmt.Errorf("%w: chunk %s is %d bytes, the range says %d", ErrBadRange, r.Ref.Short(), len(d), r.Size)
		default:
			out[i] = bytes.Clone(d[r.Off : r.Off+r.Len]) // not pinning the whole chunk
		}
	}
	return out, FetchErrors(out, errs)
}

// GetShardRanges reads parts of shards from g: by its own ranged reads
// when it is a ShardRangeGetter, else by reading each shard whole
// (verified) and slicing it. Results are as ShardRangeGetter's: one per
// range, in order, Data the range's bytes, Release set where the store
// pools the buffer.
func GetShardRanges(ctx context.Context, g ShardGetter, rs []ShardRange) ([]ShardResult, error) {
	if rg, ok := g.(ShardRangeGetter); ok {
		return rg.GetShardRanges(ctx, rs)
	}
	res := make([]ShardResult, len(rs))
	var keys []ShardKey
	var at []int
	for i, r := range rs {
		if err := r.Check(); err != nil {
			res[i].Err = err
			continue
		}
		keys, at = append(keys, r.Key), append(at, i)
	}
	got, err := g.GetShards(ctx, keys)
	if err == nil && len(got) != len(keys) {
		ReleaseResults(got)
		err = fmt.Errorf("%w: %d results for %d keys", ErrUnavailable, len(got), len(keys))
	}
	if err != nil {
		return nil, err
	}
	for j, i := range at {
		r, sr := rs[i], got[j]
		if sr.Err == nil && (r.Off > sr.Shard.Size || r.Len > sr.Shard.Size-r.Off || int(sr.Shard.Size) != len(sr.Shard.Data)) {
			sr.Err = fmt.Errorf("%w: [%d, +%d) of the %d-byte shard %s", ErrBadRange, r.Off, r.Len, sr.Shard.Size, r.Key)
		}
		if sr.Err != nil {
			if sr.Release != nil {
				sr.Release()
			}
			res[i].Err = sr.Err
			continue
		}
		sr.Shard.Data = sr.Shard.Data[r.Off : r.Off+r.Len : r.Off+r.Len]
		res[i] = sr
	}
	return res, nil
}
