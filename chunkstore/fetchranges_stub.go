package chunkstore

import "context"

// STUB: replaced by the ranges branch.
type Range struct {
	Ref            Ref
	Size, Off, Len int
}

type RangeFetcher interface {
	FetchRanges(ctx context.Context, rs []Range) ([][]byte, error)
}

func FetchRanges(ctx context.Context, f Fetcher, rs []Range) ([][]byte, error) {
	if r, ok := f.(RangeFetcher); ok {
		return r.FetchRanges(ctx, rs)
	}
	refs := make([]Ref, len(rs))
	for i, r := range rs {
		refs[i] = r.Ref
	}
	data, err := FetchMany(ctx, f, refs)
	if data == nil {
		return nil, err
	}
	out := make([][]byte, len(rs))
	for i, r := range rs {
		if d := data[i]; d != nil && r.Off+r.Len <= len(d) {
			out[i] = d[r.Off : r.Off+r.Len : r.Off+r.Len]
		}
	}
	return out, err
}
