package erasure

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// gathering collects the shards (or, for Stat, the shard headers) of one
// chunk, escalating from the data shards' homes to all homes, to the homes
// under previous maps, to asking every up node.
type gathering struct {
	s       *Store
	ref     chunkstore.Ref
	data    bool
	placers []*placement.Placer
	guess   chunkstore.Profile

	mu      sync.Mutex
	got     map[chunkstore.Profile]map[int]found
	asked   map[askKey]bool
	present map[foundKey]bool
	errs    map[string]error // node ID -> transport error
	corrupt int
	// unverified: remote shards are not checksummed on arrival (Fetch
	// verifies the chunk against its Ref, then dropCorrupt on failure).
	unverified bool
	// spared is the data position the first round does not ask, read
	// from the local parity shard instead (firstPositions), or -1.
	spared int
}

type found struct {
	shard   chunkstore.Shard
	node    string
	release func() // recycles shard.Data's buffer, if set
}

// askKey: an index asked of a node, for one profile or (zero) any.
type askKey struct {
	node    string
	profile chunkstore.Profile
	index   uint8
}

type foundKey struct {
	node string
	key  chunkstore.ShardKey
}

func (s *Store) newGathering(ref chunkstore.Ref, data bool) *gathering {
	return s.gatheringWith(ref, data, s.allPlacers(), s.Profile())
}

// gatheringWith is newGathering with the placements and the guessed
// profile given (the same for every chunk of a FetchMany).
func (s *Store) gatheringWith(ref chunkstore.Ref, data bool, placers []*placement.Placer, guess chunkstore.Profile) *gathering {
	return &gathering{
		s:       s,
		ref:     ref,
		data:    data,
		placers: placers,
		guess:   guess,
		got:     map[chunkstore.Profile]map[int]found{},
		asked:   map[askKey]bool{},
		present: map[foundKey]bool{},
		errs:    map[string]error{},
		spared:  -1,
	}
}

// firstPositions returns the positions of profile p a read asks first:
// the k data shards, except that when the local node (Config.Local) holds
// one of the chunk's parity shards and none of its data shards, that
// parity shard takes the place of the last data shard. The chunk then
// costs one remote shard fewer (its bytes are not encrypted, sent,
// received and decrypted in this process) for a reconstruction, which
// costs less than that (doc.go, "Reads").
func (g *gathering) firstPositions(pl *placement.Placer, p chunkstore.Profile) []int {
	first := seq(int(p.K))
	local := g.s.cfg.Local
	if local == "" || p.M == 0 {
		return first
	}
	homes := pl.Place(g.ref, p.N())
	if len(homes) < p.N() {
		return first
	}
	for _, h := range homes[:p.K] {
		if h.ID == local {
			return first
		}
	}
	for j := int(p.K); j < p.N(); j++ {
		if homes[j].ID == local {
			g.spared = int(p.K) - 1
			first[g.spared] = j
			break
		}
	}
	return first
}

func seq(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// run gathers until some profile has at least k shards, returning it.
func (g *gathering) run(ctx context.Context) (chunkstore.Profile, error) {
	cur := g.placers[0]
	p := g.guess
	first := seq(p.N())
	if g.data {
		first = g.firstPositions(cur, p)
	}
	// 1: the data shards' homes (any profile: the chunk may be a tiny
	// replicated one, or from a pool with another profile).
	g.askHomes(ctx, cur, p, first, true)
	q := g.pick(p)
	if g.enough(q) {
		return q, nil
	}
	// 2: every position of the chunk's profile at its current home.
	g.askHomes(ctx, cur, q, g.missing(q), false)
	if q2 := g.pick(p); q2 != q {
		q = q2
		g.askHomes(ctx, cur, q, g.missing(q), false)
	}
	if g.enough(q) {
		return q, nil
	}
	// 3: homes under previous maps.
	for _, old := range g.placers[1:] {
		if err := ctx.Err(); err != nil {
			return q, err
		}
		g.askHomes(ctx, old, q, g.missing(q), false)
		if g.enough(q) {
			return q, nil
		}
	}
	// 4: ask every up node what it has.
	g.locate(ctx, cur)
	q = g.pick(p)
	if g.enough(q) {
		return q, nil
	}
	if err := ctx.Err(); err != nil {
		return q, err
	}
	return q, g.failure(q)
}

func (g *gathering) count(q chunkstore.Profile) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.got[q])
}

func (g *gathering) enough(q chunkstore.Profile) bool {
	return !q.IsZero() && g.count(q) >= int(q.K)
}

// pick returns the profile with the most shards found (preferring p, then
// ones that are complete), or p if none was found.
func (g *gathering) pick(p chunkstore.Profile) chunkstore.Profile {
	g.mu.Lock()
	defer g.mu.Unlock()
	best, bestScore := p, -1
	for q, m := range g.got {
		score := len(m) * 4
		if len(m) >= int(q.K) {
			score += 1 << 20
		}
		if q == p {
			score += 2
		}
		if score > bestScore {
			best, bestScore = q, score
		}
	}
	return best
}

// missing lists the positions of q not gathered yet.
func (g *gathering) missing(q chunkstore.Profile) []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	for i := range q.N() {
		if _, ok := g.got[q][i]; !ok {
			out = append(out, i)
		}
	}
	return out
}

// askHomes asks the homes (under placer pl) of the given positions of
// profile q; with any set, for that index under any profile.
func (g *gathering) askHomes(ctx context.Context, pl *placement.Placer, q chunkstore.Profile, positions []int, any bool) {
	if len(positions) == 0 || ctx.Err() != nil {
		return
	}
	g.askNodes(ctx, g.planHomes(pl, q, positions, any))
}

// planHomes is askHomes without the asking: it marks the positions asked
// and returns the requests, for the caller to send (FetchMany sends those
// of many chunks together) and hand the answers to record.
func (g *gathering) planHomes(pl *placement.Placer, q chunkstore.Profile, positions []int, any bool) []*nodeReq {
	homes := pl.Place(g.ref, q.N())
	if homes == nil {
		return nil
	}
	var todo []int
	g.mu.Lock()
	for _, i := range positions {
		n := homes[i].ID
		if g.asked[askKey{n, chunkstore.Profile{}, uint8(i)}] || g.asked[askKey{n, q, uint8(i)}] || g.errs[n] != nil {
			continue
		}
		if any {
			g.asked[askKey{n, chunkstore.Profile{}, uint8(i)}] = true
		} else {
			g.asked[askKey{n, q, uint8(i)}] = true
		}
		todo = append(todo, i)
	}
	g.mu.Unlock()
	prof := q
	if any {
		prof = chunkstore.Profile{}
	}
	return groupByNode(homes, todo, func(i int) chunkstore.ShardKey {
		return chunkstore.ShardKey{Ref: g.ref, Profile: prof, Index: uint8(i)}
	})
}

// askNodes runs the requests in parallel and records the answers.
func (g *gathering) askNodes(ctx context.Context, reqs []*nodeReq) {
	var wg sync.WaitGroup
	for _, r := range reqs {
		wg.Go(func() {
			res, err := g.s.askNode(ctx, r.node, r.keys, g.data, g.unverified)
			g.record(r.node.ID, r.keys, res, err)
		})
	}
	wg.Wait()
}

// askNode reads keys from node: their shards (data), without the check on
// arrival when unverified and the node's store allows it, or their
// headers. There is one result per key unless err is set.
func (s *Store) askNode(ctx context.Context, n placement.Node, keys []chunkstore.ShardKey, data, unverified bool) ([]chunkstore.ShardResult, error) {
	st, err := s.cfg.Dialer.Dial(n)
	if err != nil {
		return nil, err
	}
	var res []chunkstore.ShardResult
	if ug, ok := st.(chunkstore.UnverifiedGetter); ok && data && unverified {
		res, err = ug.GetShardsUnverified(ctx, keys)
	} else if data {
		res, err = st.GetShards(ctx, keys)
	} else {
		res, err = st.StatShards(ctx, keys)
	}
	if err == nil && len(res) != len(keys) {
		for _, r := range res {
			release(r)
		}
		res, err = nil, fmt.Errorf("%w: %d results for %d keys", chunkstore.ErrUnavailable, len(res), len(keys))
	}
	return res, err
}

func (g *gathering) record(node string, keys []chunkstore.ShardKey, res []chunkstore.ShardResult, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.errs[node] = err
		return
	}
	for j, r := range res {
		if r.Err != nil {
			if chunkstore.IsCorruption(r.Err) {
				g.corrupt++
				g.s.m.corruptShards.Inc()
			}
			continue
		}
		k := r.Shard.Key
		if k.Ref != g.ref || !keys[j].Matches(k) || k.Validate() != nil || int(k.Index) >= k.Profile.N() {
			release(r)
			continue
		}
		g.present[foundKey{node: node, key: k}] = true
		m := g.got[k.Profile]
		if m == nil {
			m = map[int]found{}
			g.got[k.Profile] = m
		}
		if _, ok := m[int(k.Index)]; !ok {
			m[int(k.Index)] = found{shard: r.Shard, node: node, release: r.Release}
		} else {
			release(r)
		}
	}
}

// dropCorrupt checksums every shard gathered for q and drops those that
// fail, as missing (so read repair rewrites them at home). It reports
// whether it dropped any.
func (g *gathering) dropCorrupt(q chunkstore.Profile) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	dropped := false
	for i, f := range g.got[q] {
		if err := f.shard.Verify(); err != nil {
			g.s.log.Warn("shard damaged on its way from its node", "node", f.node, "err", err)
			g.corrupt++
			g.s.m.corruptShards.Inc()
			delete(g.present, foundKey{node: f.node, key: f.shard.Key})
			if f.release != nil {
				f.release()
			}
			delete(g.got[q], i)
			dropped = true
		}
	}
	return dropped
}

func release(r chunkstore.ShardResult) {
	if r.Release != nil {
		r.Release()
	}
}

// release recycles the buffers of every shard gathered. Nothing gathered
// may be used afterwards (decode copies what it returns).
func (g *gathering) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, m := range g.got {
		for i, f := range m {
			if f.release != nil {
				f.release()
			}
			f.release, f.shard.Data = nil, nil
			m[i] = f
		}
	}
}

// locate asks every up node which shards of the chunk it holds, then
// fetches (or records) them.
func (g *gathering) locate(ctx context.Context, pl *placement.Placer) {
	var wg sync.WaitGroup
	for _, n := range pl.Map().Up() {
		g.mu.Lock()
		failed := g.errs[n.ID] != nil
		g.mu.Unlock()
		if failed {
			continue
		}
		wg.Go(func() {
			st, err := g.s.cfg.Dialer.Dial(n)
			var infos []chunkstore.ShardInfo
			if err == nil {
				infos, err = st.EnumerateShards(ctx, chunkstore.ShardKey{Ref: g.ref}, 256)
			}
			if err != nil {
				g.record(n.ID, nil, nil, err)
				return
			}
			var keys []chunkstore.ShardKey
			var res []chunkstore.ShardResult
			g.mu.Lock()
			for _, si := range infos {
				if si.Key.Ref != g.ref {
					break
				}
				if _, ok := g.got[si.Key.Profile][int(si.Key.Index)]; ok {
					continue
				}
				keys = append(keys, si.Key)
				res = append(res, chunkstore.ShardResult{Shard: chunkstore.Shard{ShardInfo: si}})
			}
			g.mu.Unlock()
			if len(keys) == 0 {
				return
			}
			if g.data {
				res, err = st.GetShards(ctx, keys)
				if err == nil && len(res) != len(keys) {
					err = fmt.Errorf("%w: %d results for %d keys", chunkstore.ErrUnavailable, len(res), len(keys))
				}
			}
			g.record(n.ID, keys, res, err)
		})
	}
	wg.Wait()
}

func (g *gathering) failure(q chunkstore.Profile) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	total := 0
	for _, m := range g.got {
		total += len(m)
	}
	var nodes []string
	for n := range g.errs {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	var errs []error
	for _, n := range nodes {
		errs = append(errs, fmt.Errorf("node %s: %w", n, g.errs[n]))
	}
	switch {
	case total == 0 && g.corrupt == 0 && len(nodes) == 0:
		return fmt.Errorf("%w: chunk %s", chunkstore.ErrNotFound, g.ref)
	case len(nodes) > 0:
		return fmt.Errorf("%w: chunk %s: found %d of %d shards (%s), need %d; unreachable: %s: %w",
			chunkstore.ErrUnavailable, g.ref.Short(), len(g.got[q]), q.N(), q, q.K, strings.Join(nodes, ", "), errors.Join(errs...))
	case total == 0:
		return fmt.Errorf("%w: chunk %s: every shard found failed verification", chunkstore.ErrCorrupt, g.ref.Short())
	}
	return fmt.Errorf("%w: chunk %s: only %d of %d shards (%s) survive, need %d", chunkstore.ErrCorrupt, g.ref.Short(), len(g.got[q]), q.N(), q, q.K)
}

func (g *gathering) chunkSize(q chunkstore.Profile) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	// The size most shards agree on.
	votes := map[uint32]int{}
	best, bestN := uint32(0), 0
	for _, f := range g.got[q] {
		votes[f.shard.ChunkSize]++
		if votes[f.shard.ChunkSize] > bestN {
			best, bestN = f.shard.ChunkSize, votes[f.shard.ChunkSize]
		}
	}
	return int(best)
}

// shards returns the chunk size most shards of q agree on and the
// gathered shards of q with that size, indexed by position.
func (g *gathering) shards(q chunkstore.Profile) (int, [][]byte) {
	size := g.chunkSize(q)
	g.mu.Lock()
	defer g.mu.Unlock()
	shards := make([][]byte, q.N())
	for i, f := range g.got[q] {
		if int(f.shard.ChunkSize) == size {
			shards[i] = f.shard.Data
		}
	}
	return size, shards
}

// decode joins the gathered shards of q and verifies the Ref. degraded
// reports whether a reconstruction was needed other than that of the data
// shard the read chose to rebuild from a local parity shard (spared).
func (g *gathering) decode(q chunkstore.Profile) (data []byte, degraded bool, err error) {
	size, shards := g.shards(q)
	for i := range int(q.K) {
		if shards[i] == nil && (i != g.spared || q != g.guess) {
			degraded = true
		}
	}
	data, err = g.s.codec.Decode(q, size, shards)
	if err != nil {
		return nil, degraded, err
	}
	if got := chunkstore.Sum(data); got != g.ref {
		return nil, degraded, fmt.Errorf("%w: chunk %s decoded from shards %s hashes to %s", chunkstore.ErrCorrupt, g.ref.Short(), q, got.Short())
	}
	return data, degraded, nil
}

// missingAtHome lists the positions of q that were asked of their current
// home and not found there (missing, corrupt, or the node failed).
func (g *gathering) missingAtHome(q chunkstore.Profile) []int {
	homes := g.placers[0].Place(g.ref, q.N())
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []int
	for i, h := range homes {
		asked := g.asked[askKey{h.ID, chunkstore.Profile{}, uint8(i)}] || g.asked[askKey{h.ID, q, uint8(i)}]
		if !asked || g.errs[h.ID] != nil {
			continue
		}
		if !g.present[foundKey{node: h.ID, key: chunkstore.ShardKey{Ref: g.ref, Profile: q, Index: uint8(i)}}] {
			out = append(out, i)
		}
	}
	return out
}
