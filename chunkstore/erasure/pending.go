package erasure

import (
	"context"
	"errors"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/placement"
	"golang.org/x/time/rate"
)

// This file keeps the pending repairs: chunks acknowledged with some
// shards missing (a degraded or partial write), remembered by what they
// need (ref, profile, size, the missing positions and their nodes — not the
// data) until their nodes answer again. See "Healing degraded writes" in
// doc.go.

// pendingPos is one missing position of a chunk and the node that should
// hold it.
type pendingPos struct {
	pos  int
	node string
}

type pendingKey struct {
	ref     chunkstore.Ref
	profile chunkstore.Profile
}

type pendingEntry struct {
	size int
	miss []pendingPos
}

// pendingNode is the backlog of one node.
type pendingNode struct {
	chunks map[pendingKey]struct{}
	// dropped counts degraded chunks not remembered (the list was full)
	// since the node last answered: a heal pass must find them.
	dropped int64
	since   time.Time // when the backlog last became non-empty
	lastErr string
}

// pendingList is the bounded set of pending repairs. Safe for concurrent
// use.
type pendingList struct {
	limit int

	mu       sync.Mutex
	entries  map[pendingKey]*pendingEntry
	nodes    map[string]*pendingNode
	dropped  int64 // chunks not remembered, ever
	repaired int64 // chunks whose missing shards were rebuilt, ever
}

func newPendingList(limit int) *pendingList {
	return &pendingList{limit: limit, entries: map[pendingKey]*pendingEntry{}, nodes: map[string]*pendingNode{}}
}

func (l *pendingList) node(id string) *pendingNode {
	nd := l.nodes[id]
	if nd == nil {
		nd = &pendingNode{chunks: map[pendingKey]struct{}{}}
		l.nodes[id] = nd
	}
	return nd
}

// add remembers that chunk (ref, p) of size bytes lacks the positions in
// miss. It reports false when the list is full and the chunk was not
// remembered (counted as dropped on each of its nodes instead).
func (l *pendingList) add(ref chunkstore.Ref, p chunkstore.Profile, size int, miss []pendingPos) bool {
	if len(miss) == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := pendingKey{ref, p}
	e := l.entries[k]
	if e == nil {
		if len(l.entries) >= l.limit {
			l.dropped++
			var seen []string
			for _, m := range miss {
				if !slices.Contains(seen, m.node) {
					seen = append(seen, m.node)
					l.node(m.node).dropped++
				}
			}
			return false
		}
		e = &pendingEntry{size: size}
		l.entries[k] = e
	}
	now := time.Now()
	for _, m := range miss {
		if slices.Contains(e.miss, m) {
			continue
		}
		e.miss = append(e.miss, m)
		nd := l.node(m.node)
		if len(nd.chunks) == 0 {
			nd.since = now
		}
		nd.chunks[k] = struct{}{}
	}
	return true
}

// pendingJob is the part of a pending repair that one node waits for.
type pendingJob struct {
	key       pendingKey
	size      int
	positions []int
}

// batch returns up to max of node id's pending chunks.
func (l *pendingList) batch(id string, max int) []pendingJob {
	l.mu.Lock()
	defer l.mu.Unlock()
	nd := l.nodes[id]
	if nd == nil {
		return nil
	}
	var out []pendingJob
	for k := range nd.chunks {
		if len(out) == max {
			break
		}
		e := l.entries[k]
		j := pendingJob{key: k, size: e.size}
		for _, m := range e.miss {
			if m.node == id {
				j.positions = append(j.positions, m.pos)
			}
		}
		out = append(out, j)
	}
	return out
}

// done forgets positions of chunk k on node id (rebuilt, found present, or
// no longer this list's business); repaired counts the chunk as rebuilt.
func (l *pendingList) done(id string, k pendingKey, positions []int, repaired bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if repaired {
		l.repaired++
	}
	e := l.entries[k]
	if e == nil {
		return
	}
	e.miss = slices.DeleteFunc(e.miss, func(m pendingPos) bool { return m.node == id && slices.Contains(positions, m.pos) })
	if !slices.ContainsFunc(e.miss, func(m pendingPos) bool { return m.node == id }) {
		if nd := l.nodes[id]; nd != nil {
			delete(nd.chunks, k)
			l.tidy(id)
		}
	}
	if len(e.miss) == 0 {
		delete(l.entries, k)
	}
}

// tidy drops node id's record once it has nothing left. l.mu is held.
func (l *pendingList) tidy(id string) {
	if nd := l.nodes[id]; nd != nil && len(nd.chunks) == 0 && nd.dropped == 0 {
		delete(l.nodes, id)
	}
}

// forget drops every pending repair of node id and returns how many chunks
// it had (remembered or dropped).
func (l *pendingList) forget(id string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	nd := l.nodes[id]
	if nd == nil {
		return 0
	}
	n := int64(len(nd.chunks)) + nd.dropped
	for k := range nd.chunks {
		e := l.entries[k]
		e.miss = slices.DeleteFunc(e.miss, func(m pendingPos) bool { return m.node == id })
		if len(e.miss) == 0 {
			delete(l.entries, k)
		}
	}
	delete(l.nodes, id)
	return n
}

// answered records that node id answered: it returns the chunks dropped
// for it since it last did, and clears that count.
func (l *pendingList) answered(id string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	nd := l.nodes[id]
	if nd == nil {
		return 0
	}
	d := nd.dropped
	nd.dropped, nd.lastErr = 0, ""
	l.tidy(id)
	return d
}

func (l *pendingList) failed(id string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if nd := l.nodes[id]; nd != nil && err != nil {
		nd.lastErr = err.Error()
	}
}

func (l *pendingList) nodeIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.nodes))
	for id := range l.nodes {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (l *pendingList) has(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	nd := l.nodes[id]
	return nd != nil && len(nd.chunks) > 0
}

func (l *pendingList) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// PendingStatus is the state of a store's pending repairs (part of "zos
// store status").
type PendingStatus struct {
	// Chunks acknowledged with shards missing and not rebuilt yet.
	Chunks int `json:"chunks"`
	// Limit of remembered chunks (Config.PendingLimit).
	Limit int `json:"limit"`
	// Dropped counts degraded chunks not remembered because the list was
	// full, since the store started (heal passes find them).
	Dropped int64 `json:"dropped"`
	// Repaired counts chunks whose missing shards were rebuilt from the
	// list, since the store started.
	Repaired int64 `json:"repaired"`
	// Nodes is the backlog per node that lacks shards.
	Nodes []PendingNode `json:"nodes,omitempty"`
}

// PendingNode is the backlog of one node.
type PendingNode struct {
	Node string `json:"node"`
	// Chunks lacking a shard on the node.
	Chunks int `json:"chunks"`
	// Dropped: more degraded chunks, not remembered; a heal pass is asked
	// for once the node answers.
	Dropped int64 `json:"dropped,omitempty"`
	// Since the backlog became non-empty.
	Since time.Time `json:"since"`
	// LastError of the last attempt to reach the node or repair for it.
	LastError string `json:"lastError,omitempty"`
}

// Pending reports the pending repairs.
func (s *Store) Pending() PendingStatus {
	l := s.pending
	l.mu.Lock()
	defer l.mu.Unlock()
	st := PendingStatus{Chunks: len(l.entries), Limit: l.limit, Dropped: l.dropped, Repaired: l.repaired}
	for id, nd := range l.nodes {
		st.Nodes = append(st.Nodes, PendingNode{Node: id, Chunks: len(nd.chunks), Dropped: nd.dropped, Since: nd.since, LastError: nd.lastErr})
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].Node < st.Nodes[j].Node })
	return st
}

// ForgetPending drops the pending repairs waiting for node id, for when
// the node is out (down long enough that heal rebuilds its shards on the
// others) and no longer worth waiting for. It returns how many chunks
// were dropped.
func (s *Store) ForgetPending(id string) int64 {
	n := s.pending.forget(id)
	if n > 0 {
		s.log.Info("pending repairs for an out node dropped: heal rebuilds its shards elsewhere", "node", id, "chunks", n)
	}
	return n
}

// pendingBatch is how many of a node's chunks one round probes.
const pendingBatch = 512

// pendingLoop retries pending repairs every PendingInterval, and at once
// again while a round made progress and more remain.
func (s *Store) pendingLoop() {
	t := time.NewTimer(s.cfg.PendingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		d := s.cfg.PendingInterval
		if s.retryPending(s.ctx) {
			d = 0
		}
		t.Reset(d)
	}
}

// retryPending runs one round over every node with a backlog, in
// parallel, and reports whether one made progress and has more.
func (s *Store) retryPending(ctx context.Context) bool {
	m := s.Map()
	var more atomic.Bool
	var wg sync.WaitGroup
	for _, id := range s.pending.nodeIDs() {
		n, ok := m.Node(id)
		switch {
		case !ok || n.State == placement.Removed:
			// Removed: its shards are rebuilt elsewhere by heal (the
			// map change starts heal passes).
			s.pending.forget(id)
			continue
		case n.State != placement.Up:
			// Down: wait for it to come back, or to be out
			// (ForgetPending).
			continue
		}
		wg.Go(func() {
			if s.retryNode(ctx, n) {
				more.Store(true)
			}
		})
	}
	wg.Wait()
	return more.Load()
}

// retryNode probes node n with a stat of the shards it lacks; if it
// answers, rebuilds them (RepairPositions, from k other shards) and writes
// them to it. It reports whether it repaired some and more remain.
func (s *Store) retryNode(ctx context.Context, n placement.Node) bool {
	jobs := s.pending.batch(n.ID, pendingBatch)
	var keys []chunkstore.ShardKey
	for _, j := range jobs {
		for _, pos := range j.positions {
			keys = append(keys, chunkstore.ShardKey{Ref: j.key.ref, Profile: j.key.profile, Index: uint8(pos)})
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	st, err := s.cfg.Dialer.Dial(n)
	var res []chunkstore.ShardResult
	if err == nil {
		if len(keys) > 0 {
			res, err = st.StatShards(pctx, keys)
		} else {
			_, err = st.EnumerateShards(pctx, chunkstore.ShardKey{}, 1)
		}
	}
	cancel()
	if err == nil && len(res) != len(keys) {
		err = errors.New("short stat answer")
	}
	if err != nil {
		s.pending.failed(n.ID, err)
		return false // still away
	}
	if d := s.pending.answered(n.ID); d > 0 {
		s.log.Warn("node answers again; degraded chunks not remembered for it (pending list full) are left to heal passes", "node", n.ID, "chunks", d)
		if s.cfg.HealNeeded != nil {
			s.cfg.HealNeeded(n.ID)
		}
	}
	cur := s.Placer()
	var todo []pendingJob
	i := 0
	for _, j := range jobs {
		homes := cur.Place(j.key.ref, j.key.profile.N())
		var need, gone []int
		for _, pos := range j.positions {
			r := res[i]
			i++
			switch {
			case homes == nil || homes[pos].ID != n.ID:
				gone = append(gone, pos) // the map moved it: heal's now
			case r.Err == nil:
				gone = append(gone, pos) // present: repaired by someone
			default:
				need = append(need, pos)
			}
		}
		if len(gone) > 0 {
			s.pending.done(n.ID, j.key, gone, false)
		}
		if len(need) > 0 {
			todo = append(todo, pendingJob{key: j.key, size: j.size, positions: need})
		}
	}
	var progress atomic.Bool
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.cfg.PendingWorkers)
	for _, j := range todo {
		if ctx.Err() != nil {
			break
		}
		cost := chunkstore.ShardSize(j.size, int(j.key.profile.K)) * (int(j.key.profile.K) + len(j.positions))
		if s.pendingRate.Limit() != rate.Inf {
			if err := s.pendingRate.WaitN(ctx, min(cost, s.pendingRate.Burst())); err != nil {
				break
			}
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			_, err := s.RepairPositions(rctx, j.key.ref, j.key.profile, j.positions)
			cancel()
			switch {
			case err == nil:
				s.pending.done(n.ID, j.key, j.positions, true)
				s.m.pendingRepaired.Inc()
				progress.Store(true)
			case ctx.Err() != nil:
			case chunkstore.IsTransient(err):
				s.pending.failed(n.ID, err) // try again next round
			default:
				// Collected, re-encoded or unreadable: heal and scrub
				// own it from here.
				s.pending.done(n.ID, j.key, j.positions, false)
				s.m.pendingAbandoned.Inc()
				s.log.Warn("pending repair abandoned", "chunk", j.key.ref.Short(), "profile", j.key.profile.String(), "node", n.ID, "err", err)
			}
		})
	}
	wg.Wait()
	return progress.Load() && s.pending.has(n.ID)
}
