package erasure

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// This file keeps chunks' failure tolerance when the cluster shrinks: a
// chunk whose k+m shards no longer fit on distinct failure domains is
// re-encoded to a profile that does ("reprofiling").

// ErrOtherProfile: a chunk was asked for in one profile but is stored in
// another (it was re-encoded). Wrapped by RepairPositions.
var ErrOtherProfile = errors.New("erasure: chunk stored in another profile")

// ErrNotSuperseded: DropSuperseded found no other complete, fitting
// profile of the chunk, so nothing was deleted.
var ErrNotSuperseded = errors.New("erasure: no other complete profile of the chunk")

// FitProfile returns the profile a chunk of profile p fits into when the
// cluster has units failure domains (distinct domains of up storage nodes;
// every node is its own domain unless domains are configured): p itself if
// its shards fit one per domain; else the same parity count over the
// domains there are, (units-m)+m; with units <= m, one data shard and
// units-1 parity shards (a copy on every domain). k+0 profiles (no
// redundancy to keep) and clusters of one domain keep p.
//
//	4+2 on 4 nodes -> 2+2    4+2 on 5 -> 3+2    2+1 on 2 -> 1+1
//	4+2 on 2 nodes -> 1+1    8+3 on 3 -> 1+2    2+2 on 4 -> 2+2
func FitProfile(p chunkstore.Profile, units int) chunkstore.Profile {
	if p.M == 0 || units < 2 || p.N() <= units {
		return p
	}
	if units > int(p.M) {
		return chunkstore.Profile{K: uint8(units - int(p.M)), M: p.M}
	}
	return chunkstore.Profile{K: 1, M: uint8(units - 1)}
}

// Fit decides whether chunk ref, stored in profile p, must be re-encoded
// under placement pl to keep its failure tolerance, and to what. The
// chunk's tolerance is how many failure domains its shards' homes can lose
// (placement.Tolerance); the goal is its parity count m, or one less than
// the number of domains if that is smaller. If p falls short of the goal
// and FitProfile's profile does better, Fit returns that profile and true.
// Otherwise (p tolerates enough, or nothing would tolerate more: e.g. 2+2
// over two racks tolerates one rack as 1+1 would) it returns p and false.
// Every node computes the same answer from the same map. Growing the
// cluster never re-encodes: a profile that fits stays.
func Fit(pl *placement.Placer, ref chunkstore.Ref, p chunkstore.Profile) (chunkstore.Profile, bool) {
	if p.M == 0 {
		return p, false
	}
	units := pl.Domains()
	if units < 2 || p.N() <= units {
		return p, false // one shard per domain: tolerates m
	}
	homes := pl.Place(ref, p.N())
	if homes == nil {
		return p, false
	}
	have := placement.Tolerance(homes, int(p.M))
	goal := min(int(p.M), units-1)
	if have >= goal {
		return p, false
	}
	t := FitProfile(p, units)
	if t == p {
		return p, false
	}
	if placement.Tolerance(pl.Place(ref, t.N()), int(t.M)) <= have {
		return p, false
	}
	return t, true
}

// Undersized reports whether chunk ref stored in profile p tolerates fewer
// failures than its parity count allows under the current map (heal
// re-encodes it; see Fit).
func (s *Store) Undersized(ref chunkstore.Ref, p chunkstore.Profile) bool {
	_, need := Fit(s.Placer(), ref, p)
	return need
}

// profileState is what the cluster holds of one profile of a chunk.
type profileState struct {
	profile chunkstore.Profile
	homes   []placement.Node
	atHome  []bool           // position i is on its current home
	holders map[int][]string // position -> nodes holding it
	sizes   map[uint32]int   // chunk sizes claimed by its shards
	shards  int              // shard copies found
	found   map[int]bool     // distinct positions found anywhere
}

// chunkProfiles lists every shard of ref on every up node (headers only),
// grouped by profile. Nodes that did not answer are returned by ID.
func (s *Store) chunkProfiles(ctx context.Context, ref chunkstore.Ref) (map[chunkstore.Profile]*profileState, []string, error) {
	pl := s.Placer()
	up := pl.Map().Up()
	type answer struct {
		node  string
		infos []chunkstore.ShardInfo
		err   error
	}
	out := make([]answer, len(up))
	var wg sync.WaitGroup
	for i, n := range up {
		wg.Go(func() {
			out[i].node = n.ID
			st, err := s.cfg.Dialer.Dial(n)
			if err == nil {
				var infos []chunkstore.ShardInfo
				infos, err = st.EnumerateShards(ctx, chunkstore.ShardKey{Ref: ref}, 256)
				for _, si := range infos {
					if si.Key.Ref == ref && si.Key.Validate() == nil {
						out[i].infos = append(out[i].infos, si)
					}
				}
			}
			out[i].err = err
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	profiles := map[chunkstore.Profile]*profileState{}
	var unreachable []string
	for _, a := range out {
		if a.err != nil {
			unreachable = append(unreachable, a.node)
			continue
		}
		for _, si := range a.infos {
			q := si.Key.Profile
			ps := profiles[q]
			if ps == nil {
				ps = &profileState{profile: q, homes: pl.Place(ref, q.N()), atHome: make([]bool, q.N()),
					holders: map[int][]string{}, sizes: map[uint32]int{}, found: map[int]bool{}}
				profiles[q] = ps
			}
			i := int(si.Key.Index)
			ps.holders[i] = append(ps.holders[i], a.node)
			ps.found[i] = true
			ps.sizes[si.ChunkSize]++
			ps.shards++
			if ps.homes != nil && ps.homes[i].ID == a.node {
				ps.atHome[i] = true
			}
		}
	}
	sort.Strings(unreachable)
	return profiles, unreachable, nil
}

// settled returns a profile of ref other than except that is complete and
// fits the map, if any: it fits (not Undersized), its shards agree on the
// chunk size, every position is on some up node, and where they are now
// (at their home where one is there) they tolerate as many failures as the
// profile does at its homes. Shards not at home yet are the rebalancer's
// to move; the chunk is fully redundant already.
func (s *Store) settled(ref chunkstore.Ref, profiles map[chunkstore.Profile]*profileState, except chunkstore.Profile) (chunkstore.Profile, bool) {
	keys := make([]chunkstore.Profile, 0, len(profiles))
	for q := range profiles {
		keys = append(keys, q)
	}
	// Deterministic: the lowest profile wins among several.
	slices.SortFunc(keys, func(a, b chunkstore.Profile) int {
		return chunkstore.ShardKey{Profile: a}.Compare(chunkstore.ShardKey{Profile: b})
	})
	m := s.Map()
	for _, q := range keys {
		ps := profiles[q]
		if q == except || ps.homes == nil || len(ps.sizes) != 1 || len(ps.found) != q.N() || s.Undersized(ref, q) {
			continue
		}
		where := make([]placement.Node, q.N())
		for i := range where {
			if ps.atHome[i] {
				where[i] = ps.homes[i]
			} else if n, ok := m.Node(ps.holders[i][0]); ok {
				where[i] = n
			}
		}
		if placement.Tolerance(where, int(q.M)) >= placement.Tolerance(ps.homes, int(q.M)) {
			return q, true
		}
	}
	return chunkstore.Profile{}, false
}

// adoptable returns the lowest profile of ref other than except that fits
// the map and has at least k distinct shards agreeing on the chunk size.
func (s *Store) adoptable(ref chunkstore.Ref, profiles map[chunkstore.Profile]*profileState, except chunkstore.Profile) (chunkstore.Profile, bool) {
	var best chunkstore.Profile
	ok := false
	for q, ps := range profiles {
		if q == except || ps.homes == nil || len(ps.sizes) != 1 || len(ps.found) < int(q.K) || s.Undersized(ref, q) {
			continue
		}
		if !ok || (chunkstore.ShardKey{Profile: q}).Compare(chunkstore.ShardKey{Profile: best}) < 0 {
			best, ok = q, true
		}
	}
	return best, ok
}

// ReprofileResult says what Reprofile did.
type ReprofileResult struct {
	From, To chunkstore.Profile
	// Written are the positions of To written (the others were already
	// at their homes).
	Written []int
	// Bytes of shard data written.
	Bytes int64
	// Deleted is the number of shards of From deleted.
	Deleted int
}

// Reprofile re-encodes chunk ref from profile from to profile to (see Fit):
// it reads the chunk (any k shards of any profile, verified against ref),
// encodes it with to, writes every shard of to that is not already at its
// current home, and only once every shard of to is durable at its home
// deletes the shards of from on every up node. If the chunk is already
// complete in another profile that fits the map (every shard on some up
// node, spread as well as at its homes), nothing is written and from is
// just deleted; if another fitting profile is at least readable, that one
// is completed instead of to (so a crashed or repeated reprofile, or two
// nodes doing the same one, converge on one profile). The Ref does not change; reads find the
// chunk in either profile throughout. An error leaves the shards of from
// in place (retry later); it is idempotent.
func (s *Store) Reprofile(ctx context.Context, ref chunkstore.Ref, from, to chunkstore.Profile) (ReprofileResult, error) {
	res := ReprofileResult{From: from, To: to}
	if err := to.Validate(); err != nil {
		return res, err
	}
	if from == to {
		return res, fmt.Errorf("%w: reprofile %s to itself", chunkstore.ErrBadProfile, from)
	}
	profiles, unreachable, err := s.chunkProfiles(ctx, ref)
	if err != nil {
		return res, err
	}
	if q, ok := s.settled(ref, profiles, from); ok {
		res.To = q
	} else {
		// Another profile that fits and is readable (a re-encoding by
		// another node, seen mid-move) is completed rather than a third
		// one written.
		if q, ok := s.adoptable(ref, profiles, from); ok {
			to, res.To = q, q
		}
		missing := seq(to.N())
		if ps := profiles[to]; ps != nil {
			missing = missing[:0]
			for i, ok := range ps.atHome {
				if !ok {
					missing = append(missing, i)
				}
			}
		}
		if len(missing) > 0 {
			data, err := s.read(ctx, ref, from)
			if err != nil {
				return res, err
			}
			shards, release, err := s.codec.EncodeShared(to, data)
			if err != nil {
				return res, err
			}
			o := s.writeShards(ctx, ref, to, len(data), shards, missing)
			release()
			written, errs := o.written(), o.errs
			res.Written = written
			res.Bytes = int64(len(written)) * int64(chunkstore.ShardSize(len(data), int(to.K)))
			s.m.repairedShards.Add(float64(len(written)))
			if len(written) < len(missing) {
				return res, fmt.Errorf("%w: chunk %s: re-encoding %s to %s: wrote %d of %d shards; keeping %s: %w",
					chunkstore.ErrUnavailable, ref.Short(), from, to, len(written), len(missing), from, errors.Join(errs...))
			}
		}
	}
	if len(unreachable) > 0 {
		// The new profile is durable, but the old one cannot be deleted
		// everywhere now; a later pass finishes.
		return res, fmt.Errorf("%w: chunk %s: %s stored; %s not deleted yet: nodes %v did not answer", chunkstore.ErrUnavailable, ref.Short(), res.To, from, unreachable)
	}
	n, err := s.deleteProfile(ctx, ref, from)
	res.Deleted = n
	return res, err
}

// DropSuperseded deletes the shards of profile p of ref on every up node
// if the chunk is complete in another profile, ordered before p, that fits
// the map (every shard on some up node, spread as well as at its homes). Heal uses it for leftovers of a re-encoded
// chunk (a node that was away during the reprofile comes back with shards
// of the old profile). It returns ErrNotSuperseded (and deletes nothing)
// otherwise.
func (s *Store) DropSuperseded(ctx context.Context, ref chunkstore.Ref, p chunkstore.Profile) (int, error) {
	profiles, unreachable, err := s.chunkProfiles(ctx, ref)
	if err != nil {
		return 0, err
	}
	// Only a profile ordered before p supersedes it, so that two complete
	// profiles are never both dropped by nodes looking at each other. A
	// re-encoding always goes to a profile ordered before the old one (it
	// has fewer data shards, or as many and less parity).
	if q, ok := s.settled(ref, profiles, p); !ok || (chunkstore.ShardKey{Profile: q}).Compare(chunkstore.ShardKey{Profile: p}) >= 0 {
		return 0, fmt.Errorf("%w: chunk %s (%s)", ErrNotSuperseded, ref.Short(), p)
	}
	if len(unreachable) > 0 {
		return 0, fmt.Errorf("%w: chunk %s: nodes %v did not answer", chunkstore.ErrUnavailable, ref.Short(), unreachable)
	}
	return s.deleteProfile(ctx, ref, p)
}

// deleteProfile deletes every shard of ref in profile p on every up node.
func (s *Store) deleteProfile(ctx context.Context, ref chunkstore.Ref, p chunkstore.Profile) (int, error) {
	keys := []chunkstore.ShardKey{{Ref: ref, Profile: p, Index: chunkstore.AnyIndex}}
	var mu sync.Mutex
	var errs []error
	total := 0
	var wg sync.WaitGroup
	for _, n := range s.Map().Up() {
		wg.Go(func() {
			st, err := s.cfg.Dialer.Dial(n)
			k := 0
			if err == nil {
				k, err = st.DeleteShards(ctx, keys, 0)
			}
			mu.Lock()
			defer mu.Unlock()
			total += k
			if err != nil {
				errs = append(errs, fmt.Errorf("node %s: %w", n.ID, err))
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return total, fmt.Errorf("%w: chunk %s: deleting %s: %w", chunkstore.ErrUnavailable, ref.Short(), p, errors.Join(errs...))
	}
	return total, nil
}

// read returns the verified content of ref, gathering shards of any
// profile (guessing p first), without read repair.
func (s *Store) read(ctx context.Context, ref chunkstore.Ref, p chunkstore.Profile) ([]byte, error) {
	g := s.newGathering(ref, true)
	defer g.release()
	g.guess = p
	q, err := g.run(ctx)
	if err != nil {
		return nil, err
	}
	data, _, err := g.decode(q)
	return data, err
}
