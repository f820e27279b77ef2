package chunkstore

import (
	"context"
	"fmt"
)

// WholeProfile is the 1+0 profile: the shard is the whole chunk. A shard
// store holding chunks through WholeChunks uses it.
var WholeProfile = Profile{K: 1, M: 0}

// WholeChunks returns a Store that keeps each chunk whole as the single shard
// of profile 1+0 in s: the Store view of a local disk store or of one remote
// shard server. Fetch verifies the shard checksum and the chunk Ref.
func WholeChunks(s ShardStore) Store { return wholeChunks{s} }

type wholeChunks struct{ s ShardStore }

func wholeKey(ref Ref) ShardKey { return ShardKey{Ref: ref, Profile: WholeProfile} }

func (w wholeChunks) Put(ctx context.Context, data []byte) (Ref, error) {
	if len(data) > MaxChunkSize {
		return Ref{}, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	if err := ctx.Err(); err != nil {
		return Ref{}, err
	}
	ref := Sum(data)
	return ref, w.s.PutShards(ctx, []Shard{NewShard(wholeKey(ref), len(data), data)})
}

func (w wholeChunks) Fetch(ctx context.Context, ref Ref) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	res, err := w.s.GetShards(ctx, []ShardKey{wholeKey(ref)})
	if err != nil {
		return nil, err
	}
	if len(res) != 1 {
		return nil, fmt.Errorf("%w: shard store returned %d results for 1 key", ErrUnavailable, len(res))
	}
	if res[0].Err != nil {
		return nil, res[0].Err
	}
	sh := res[0].Shard
	if err := sh.Verify(); err != nil {
		return nil, err
	}
	if got := Sum(sh.Data); got != ref {
		return nil, fmt.Errorf("%w: chunk %s hashes to %s", ErrCorrupt, ref.Short(), got.Short())
	}
	return sh.Data, nil
}

func (w wholeChunks) Stat(ctx context.Context, ref Ref) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	res, err := w.s.StatShards(ctx, []ShardKey{wholeKey(ref)})
	if err != nil {
		return Info{}, err
	}
	if len(res) != 1 {
		return Info{}, fmt.Errorf("%w: shard store returned %d results for 1 key", ErrUnavailable, len(res))
	}
	if res[0].Err != nil {
		return Info{}, res[0].Err
	}
	return Info{Ref: ref, Size: int64(res[0].Shard.ChunkSize)}, nil
}

func (w wholeChunks) Enumerate(ctx context.Context, after Ref, fn func(Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	start := ShardKey{Ref: after, Profile: Profile{K: 255, M: 255}, Index: 255}
	return WalkShards(ctx, w.s, start, 0, func(si ShardInfo) error {
		if si.Key.Profile != WholeProfile || si.Key.Index != 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn(Info{Ref: si.Key.Ref, Size: int64(si.ChunkSize)})
	})
}

func (w wholeChunks) Remove(ctx context.Context, refs ...Ref) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	keys := make([]ShardKey, len(refs))
	for i, r := range refs {
		keys[i] = wholeKey(r)
	}
	_, err := w.s.DeleteShards(ctx, keys, 0)
	return err
}

// PutMany stores the chunks as one PutShards call (chunkstore.BatchReceiver):
// a shard store writes and syncs them together. On error none of them may
// be assumed stored.
func (w wholeChunks) PutMany(ctx context.Context, chunks [][]byte) ([]Ref, error) {
	if err := CheckBatch(ctx, chunks); err != nil {
		return nil, err
	}
	refs := make([]Ref, len(chunks))
	shards := make([]Shard, 0, len(chunks))
	seen := make(map[Ref]bool, len(chunks))
	for i, c := range chunks {
		refs[i] = Sum(c)
		if seen[refs[i]] {
			continue
		}
		seen[refs[i]] = true
		shards = append(shards, NewShard(wholeKey(refs[i]), len(c), c))
	}
	if len(shards) == 0 {
		return refs, nil
	}
	if err := w.s.PutShards(ctx, shards); err != nil {
		return nil, err
	}
	return refs, nil
}
