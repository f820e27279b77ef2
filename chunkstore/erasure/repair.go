package erasure

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
)

// repairJob rewrites shards of one chunk to their current homes (read
// repair: the chunk was just read, so its data is at hand).
type repairJob struct {
	ref       chunkstore.Ref
	profile   chunkstore.Profile
	chunkSize int
	data      []byte // the verified chunk
	positions []int  // to write; nil: whatever is missing at home
}

func (s *Store) queueRepair(j repairJob) {
	select {
	case s.repairs <- j:
		s.m.repairsQueued.Inc()
	default:
		s.m.repairsDropped.Inc()
	}
}

func (s *Store) repairLoop() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case j := <-s.repairs:
			ctx, cancel := context.WithTimeout(s.ctx, 2*time.Minute)
			if err := s.runRepair(ctx, j); err != nil && s.ctx.Err() == nil {
				s.log.Warn("read repair failed; heal or scrub will retry", "chunk", j.ref.Short(), "err", err)
			}
			cancel()
		}
	}
}

func (s *Store) runRepair(ctx context.Context, j repairJob) error {
	shards, release, err := s.codec.EncodeShared(j.profile, j.data)
	if err != nil {
		return err
	}
	defer release()
	positions := j.positions
	if positions == nil {
		miss, err := s.missingAtHomes(ctx, j.ref, j.profile)
		if err != nil {
			return err
		}
		positions = miss
	}
	if len(positions) == 0 {
		return nil
	}
	o := s.writeShards(ctx, j.ref, j.profile, j.chunkSize, shards, positions)
	s.m.repairedShards.Add(float64(len(o.written())))
	if len(o.written()) < len(positions) {
		return errors.Join(o.errs...)
	}
	return nil
}

// missingAtHomes stats every shard of ref under profile p at its current
// home and returns the positions not there. Positions whose home is
// unreachable are not reported (they cannot be written either).
func (s *Store) missingAtHomes(ctx context.Context, ref chunkstore.Ref, p chunkstore.Profile) ([]int, error) {
	homes := s.Placer().Place(ref, p.N())
	if homes == nil {
		return nil, fmt.Errorf("%w: no storage node is up", chunkstore.ErrUnavailable)
	}
	reqs := groupByNode(homes, seq(p.N()), func(i int) chunkstore.ShardKey {
		return chunkstore.ShardKey{Ref: ref, Profile: p, Index: uint8(i)}
	})
	var mu sync.Mutex
	var missing []int
	var errs []error
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() {
			st, err := s.cfg.Dialer.Dial(r.node)
			var res []chunkstore.ShardResult
			if err == nil {
				res, err = st.StatShards(ctx, r.keys)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil || len(res) != len(r.keys) {
				errs = append(errs, fmt.Errorf("node %s: %v", r.node.ID, err))
				return
			}
			for j, x := range res {
				if x.Err != nil {
					missing = append(missing, r.positions[j])
				}
			}
		})
	}
	wg.Wait()
	slices.Sort(missing)
	if len(errs) == len(reqs) {
		return nil, fmt.Errorf("%w: %w", chunkstore.ErrUnavailable, errors.Join(errs...))
	}
	return missing, nil
}

// RepairResult says what Repair did.
type RepairResult struct {
	Profile chunkstore.Profile
	// Missing are the positions that were not at their home.
	Missing []int
	// Written are the positions rebuilt and stored at their home.
	Written []int
	// Bytes of shard data written.
	Bytes int64
}

// Repair makes every shard of ref present at its current home: it checks
// the homes, and if any lacks its shard it reads k shards from wherever they
// are (homes, previous homes, any node), verifies the chunk against ref,
// re-encodes and writes the missing shards. hint is the chunk's profile if
// known (zero: discover it). A healthy chunk costs one stat per home.
func (s *Store) Repair(ctx context.Context, ref chunkstore.Ref, hint chunkstore.Profile) (RepairResult, error) {
	q := hint
	if q.IsZero() {
		g := s.newGathering(ref, false)
		var err error
		if q, err = g.run(ctx); err != nil {
			return RepairResult{}, err
		}
	}
	missing, err := s.missingAtHomes(ctx, ref, q)
	if err != nil {
		return RepairResult{Profile: q}, err
	}
	return s.RepairPositions(ctx, ref, q, missing)
}

// RepairPositions rebuilds the given positions of ref (profile q) from k
// other shards and writes them to their current homes, without first
// checking the homes (the caller knows they are missing).
func (s *Store) RepairPositions(ctx context.Context, ref chunkstore.Ref, q chunkstore.Profile, positions []int) (RepairResult, error) {
	res := RepairResult{Profile: q, Missing: positions}
	if len(positions) == 0 {
		return res, nil
	}
	g := s.newGathering(ref, true)
	defer g.release()
	g.guess = q
	got, err := g.run(ctx)
	if err != nil {
		return res, err
	}
	if got != q {
		return res, fmt.Errorf("%w: %w: chunk %s: asked to repair %s shards but found %s", ErrOtherProfile, chunkstore.ErrCorrupt, ref.Short(), q, got)
	}
	// Compute just the missing shards from the gathered ones, verifying
	// the chunk without assembling it; decode and re-encode if that
	// cannot be done.
	size, gathered := g.shards(q)
	shards, release, err := s.codec.Rebuild(q, size, gathered, ref, positions)
	if errors.Is(err, errNoShortcut) {
		var data []byte
		if data, _, err = g.decode(q); err == nil {
			shards, release, err = s.codec.EncodeShared(q, data)
		}
	}
	if err != nil {
		return res, err
	}
	defer release()
	o := s.writeShards(ctx, ref, q, size, shards, positions)
	written, errs := o.written(), o.errs
	res.Written = written
	res.Bytes = int64(len(written)) * int64(chunkstore.ShardSize(size, int(q.K)))
	s.m.repairedShards.Add(float64(len(written)))
	if len(written) < len(positions) {
		return res, fmt.Errorf("%w: chunk %s: wrote %d of %d missing shards: %w", chunkstore.ErrUnavailable, ref.Short(), len(written), len(positions), errors.Join(errs...))
	}
	return res, nil
}
