package erasure

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
)

// Located is a shard header and the node holding it.
type Located struct {
	Node string
	Info chunkstore.ShardInfo
}

// cursor pages through one node's shard headers.
type cursor struct {
	node  placement.Node
	st    chunkstore.ShardStore
	page  []chunkstore.ShardInfo
	pos   int
	after chunkstore.ShardKey
	done  bool
}

const pageSize = 1024

func (c *cursor) peek(ctx context.Context) (chunkstore.ShardInfo, bool, error) {
	if c.pos < len(c.page) {
		return c.page[c.pos], true, nil
	}
	if c.done {
		return chunkstore.ShardInfo{}, false, nil
	}
	page, err := c.st.EnumerateShards(ctx, c.after, pageSize)
	if err != nil {
		return chunkstore.ShardInfo{}, false, fmt.Errorf("node %s: %w", c.node.ID, err)
	}
	c.page, c.pos = page, 0
	if len(page) < pageSize {
		c.done = true
	}
	if len(page) == 0 {
		return chunkstore.ShardInfo{}, false, nil
	}
	c.after = page[len(page)-1].Key
	return page[0], true, nil
}

// WalkChunks merges the shard listings of nodes and calls fn once per chunk
// Ref greater than after, in Ref order, with every shard of it found. A node
// that cannot be listed stops the walk with its error.
func (s *Store) WalkChunks(ctx context.Context, nodes []placement.Node, after chunkstore.Ref, fn func(ref chunkstore.Ref, shards []Located) error) error {
	start := chunkstore.ShardKey{Ref: after, Profile: chunkstore.Profile{K: 255, M: 255}, Index: 255}
	var cs []*cursor
	for _, n := range nodes {
		st, err := s.cfg.Dialer.Dial(n)
		if err != nil {
			return fmt.Errorf("node %s: %w", n.ID, err)
		}
		cs = append(cs, &cursor{node: n, st: st, after: start})
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var min *chunkstore.Ref
		for _, c := range cs {
			si, ok, err := c.peek(ctx)
			if err != nil {
				return err
			}
			if ok && (min == nil || bytes.Compare(si.Key.Ref[:], min[:]) < 0) {
				r := si.Key.Ref
				min = &r
			}
		}
		if min == nil {
			return nil
		}
		var group []Located
		for _, c := range cs {
			for {
				si, ok, err := c.peek(ctx)
				if err != nil {
					return err
				}
				if !ok || si.Key.Ref != *min {
					break
				}
				group = append(group, Located{Node: c.node.ID, Info: si})
				c.pos++
			}
		}
		if err := fn(*min, group); err != nil {
			return err
		}
	}
}

// Enumerate lists the chunks stored on the up nodes, in Ref order (merging
// every node's shard listing).
func (s *Store) Enumerate(ctx context.Context, after chunkstore.Ref, fn func(chunkstore.Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.WalkChunks(ctx, s.Map().Up(), after, func(ref chunkstore.Ref, shards []Located) error {
		p := majorityProfile(shards)
		for _, l := range shards {
			if l.Info.Key.Profile == p {
				return fn(chunkstore.Info{Ref: ref, Size: int64(l.Info.ChunkSize)})
			}
		}
		return nil
	})
}

func majorityProfile(shards []Located) chunkstore.Profile {
	idx := map[chunkstore.Profile]map[uint8]bool{}
	var best chunkstore.Profile
	bestN := -1
	for _, l := range shards {
		p := l.Info.Key.Profile
		if idx[p] == nil {
			idx[p] = map[uint8]bool{}
		}
		idx[p][l.Info.Key.Index] = true
		score := len(idx[p])
		if len(idx[p]) >= int(p.K) {
			score += 1 << 20
		}
		if score > bestN {
			best, bestN = p, score
		}
	}
	return best
}

// ShardState is where one shard of a chunk is and whether it is healthy.
type ShardState struct {
	Index int `json:"index"`
	// Home is the node that should hold the shard under the current map.
	Home string `json:"home"`
	// Healthy: present at Home and its bytes verified.
	Healthy bool `json:"healthy"`
	// Locations are every node holding a copy (verified or not).
	Locations []string `json:"locations,omitempty"`
	// Error explains an unhealthy shard.
	Error string `json:"error,omitempty"`
}

// ChunkStatus is the answer to "zos store stat REF".
type ChunkStatus struct {
	Ref       chunkstore.Ref     `json:"ref"`
	Profile   chunkstore.Profile `json:"-"`
	Coding    string             `json:"profile"`
	Size      int64              `json:"size"`
	Shards    []ShardState       `json:"shards"`
	Healthy   int                `json:"healthy"`   // shards healthy at home
	Readable  bool               `json:"readable"`  // at least k distinct shards exist
	Degraded  bool               `json:"degraded"`  // fewer than k+m healthy at home, or undersized
	Misplaced int                `json:"misplaced"` // copies away from their home
	// Tolerance is how many failure domains (nodes, unless domains are
	// configured) the shards' homes can lose with the chunk still readable.
	Tolerance int `json:"tolerance"`
	// Undersized: the cluster has too few failure domains for the profile,
	// so the chunk tolerates fewer failures than its parity count; heal
	// re-encodes it to Target.
	Undersized bool   `json:"undersized,omitempty"`
	Target     string `json:"target,omitempty"`
	// Others lists shards of the chunk in other profiles (left by a
	// re-encoding in progress), as "k+m: n shards".
	Others []string `json:"others,omitempty"`
	// Unreachable lists up nodes that did not answer.
	Unreachable []string `json:"unreachable,omitempty"`
}

// Inspect reports where each shard of ref is and whether it is healthy
// (present at its home and verified by reading it). It asks every up node.
func (s *Store) Inspect(ctx context.Context, ref chunkstore.Ref) (ChunkStatus, error) {
	cur := s.Placer()
	type nodeShards struct {
		node  placement.Node
		infos []chunkstore.ShardInfo
		res   []chunkstore.ShardResult
		err   error
	}
	up := cur.Map().Up()
	out := make([]nodeShards, len(up))
	var wg sync.WaitGroup
	for i, n := range up {
		wg.Go(func() {
			out[i].node = n
			st, err := s.cfg.Dialer.Dial(n)
			if err == nil {
				var infos []chunkstore.ShardInfo
				infos, err = st.EnumerateShards(ctx, chunkstore.ShardKey{Ref: ref}, 256)
				for _, si := range infos {
					if si.Key.Ref == ref {
						out[i].infos = append(out[i].infos, si)
					}
				}
			}
			if err == nil && len(out[i].infos) > 0 {
				keys := make([]chunkstore.ShardKey, len(out[i].infos))
				for j, si := range out[i].infos {
					keys[j] = si.Key
				}
				out[i].res, err = st.GetShards(ctx, keys)
				chunkstore.ReleaseResults(out[i].res) // only the verdicts are used
			}
			out[i].err = err
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return ChunkStatus{}, err
	}
	var all []Located
	st := ChunkStatus{Ref: ref}
	for _, o := range out {
		if o.err != nil {
			st.Unreachable = append(st.Unreachable, o.node.ID)
			continue
		}
		for _, si := range o.infos {
			all = append(all, Located{Node: o.node.ID, Info: si})
		}
	}
	if len(all) == 0 {
		if len(st.Unreachable) > 0 {
			return st, fmt.Errorf("%w: chunk %s: no shard found and nodes %v did not answer", chunkstore.ErrUnavailable, ref.Short(), st.Unreachable)
		}
		return st, fmt.Errorf("%w: chunk %s", chunkstore.ErrNotFound, ref)
	}
	q := majorityProfile(all)
	st.Profile, st.Coding = q, q.String()
	homes := cur.Place(ref, q.N())
	st.Shards = make([]ShardState, q.N())
	distinct := map[int]bool{}
	for i := range st.Shards {
		st.Shards[i] = ShardState{Index: i}
		if homes != nil {
			st.Shards[i].Home = homes[i].ID
		}
	}
	for _, o := range out {
		for j, si := range o.infos {
			if si.Key.Profile != q {
				continue
			}
			i := int(si.Key.Index)
			ss := &st.Shards[i]
			ss.Locations = append(ss.Locations, o.node.ID)
			st.Size = int64(si.ChunkSize)
			var rerr error
			if j < len(o.res) {
				rerr = o.res[j].Err
			}
			if rerr == nil {
				distinct[i] = true
			}
			if o.node.ID == ss.Home {
				if rerr == nil {
					ss.Healthy = true
				} else {
					ss.Error = rerr.Error()
				}
			} else {
				st.Misplaced++
			}
		}
	}
	for i := range st.Shards {
		ss := &st.Shards[i]
		sort.Strings(ss.Locations)
		if ss.Healthy {
			st.Healthy++
			ss.Error = ""
		} else if ss.Error == "" {
			ss.Error = "missing at its home"
		}
	}
	st.Readable = len(distinct) >= int(q.K)
	if homes != nil {
		st.Tolerance = placement.Tolerance(homes, int(q.M))
	}
	if t, need := Fit(cur, ref, q); need {
		st.Undersized, st.Target = true, t.String()
	}
	st.Degraded = st.Healthy < q.N() || st.Undersized
	others := map[chunkstore.Profile]int{}
	for _, l := range all {
		if l.Info.Key.Profile != q {
			others[l.Info.Key.Profile]++
		}
	}
	for p, n := range others {
		st.Others = append(st.Others, fmt.Sprintf("%s: %d shards", p, n))
	}
	sort.Strings(st.Others)
	return st, nil
}

// NodeStatus is one node's part of Status.
type NodeStatus struct {
	ID        string                     `json:"id"`
	Addr      string                     `json:"addr"`
	Domain    string                     `json:"domain,omitempty"`
	State     placement.State            `json:"state"`
	Reachable bool                       `json:"reachable"`
	Error     string                     `json:"error,omitempty"`
	Stats     chunkstore.ShardStoreStats `json:"stats"`
}

// Census is the result of walking every shard of the cluster.
type Census struct {
	Chunks     int64 `json:"chunks"`
	Bytes      int64 `json:"bytes"`      // logical chunk bytes
	Healthy    int64 `json:"healthy"`    // every shard at its home, profile fits
	Degraded   int64 `json:"degraded"`   // readable, but some shard not at its home, or undersized
	Unreadable int64 `json:"unreadable"` // fewer than k distinct shards found
	Misplaced  int64 `json:"misplaced"`  // shard copies away from their home
	Undersized int64 `json:"undersized"` // profile no longer fits the cluster (counted in Degraded)
	Stale      int64 `json:"stale"`      // shards of a chunk's other profiles (re-encoding leftovers)
}

// Status is the answer to "zos store status".
type Status struct {
	Epoch   uint64       `json:"epoch"`
	Profile string       `json:"profile"`
	Nodes   []NodeStatus `json:"nodes"`
	Shards  int64        `json:"shards"`     // sum over reachable nodes
	Bytes   int64        `json:"shardBytes"` // shard data bytes, sum over reachable nodes
	Census  *Census      `json:"census,omitempty"`
}

// Status gathers every node's counters; with census it also walks every
// shard of the cluster (one listing per node, no data read) to count
// healthy, degraded and unreadable chunks.
func (s *Store) Status(ctx context.Context, census bool) (Status, error) {
	m := s.Map()
	st := Status{Epoch: m.Epoch, Profile: s.Profile().String(), Nodes: make([]NodeStatus, len(m.Nodes))}
	var wg sync.WaitGroup
	for i, n := range m.Nodes {
		st.Nodes[i] = NodeStatus{ID: n.ID, Addr: n.Addr, Domain: n.Domain, State: n.State}
		if n.State == placement.Removed {
			continue
		}
		wg.Go(func() {
			ns := &st.Nodes[i]
			store, err := s.cfg.Dialer.Dial(n)
			if err == nil {
				if sts, ok := store.(chunkstore.ShardStatser); ok {
					ns.Stats, err = sts.ShardStats(ctx)
				} else {
					_, err = store.EnumerateShards(ctx, chunkstore.ShardKey{}, 1)
				}
			}
			if err != nil {
				ns.Error = err.Error()
				return
			}
			ns.Reachable = true
		})
	}
	wg.Wait()
	for _, ns := range st.Nodes {
		st.Shards += ns.Stats.Shards
		st.Bytes += ns.Stats.Bytes
	}
	if !census {
		return st, nil
	}
	var nodes []placement.Node
	for i, n := range m.Nodes {
		if n.State == placement.Up && st.Nodes[i].Reachable {
			nodes = append(nodes, n)
		}
	}
	cur := s.Placer()
	c := &Census{}
	err := s.WalkChunks(ctx, nodes, chunkstore.Ref{}, func(ref chunkstore.Ref, shards []Located) error {
		q := majorityProfile(shards)
		homes := cur.Place(ref, q.N())
		distinct := map[uint8]bool{}
		atHome := map[uint8]bool{}
		var size int64
		for _, l := range shards {
			if l.Info.Key.Profile != q {
				c.Stale++
				continue
			}
			size = int64(l.Info.ChunkSize)
			distinct[l.Info.Key.Index] = true
			if homes != nil && homes[l.Info.Key.Index].ID == l.Node {
				atHome[l.Info.Key.Index] = true
			} else {
				c.Misplaced++
			}
		}
		c.Chunks++
		c.Bytes += size
		_, undersized := Fit(cur, ref, q)
		if undersized {
			c.Undersized++
		}
		switch {
		case len(distinct) < int(q.K):
			c.Unreadable++
		case len(atHome) == q.N() && !undersized:
			c.Healthy++
		default:
			c.Degraded++
		}
		return nil
	})
	st.Census = c
	return st, err
}
