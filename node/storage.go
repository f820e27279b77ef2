package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/gc"
	"github.com/zosproject/zos/chunkstore/heal"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/remote"
	"github.com/zosproject/zos/chunkstore/scrub"
	"github.com/zosproject/zos/chunkstore/shard"
	"github.com/zosproject/zos/flist"
	"github.com/zosproject/zos/orchestrator/client"
	"github.com/zosproject/zos/raft/fsm"
)

// storage is the node's part of the chunk store: its local shard store and
// shard server, the cluster-wide erasure store, and the background healer
// and scrubber, all following the cluster map in Raft.
type storage struct {
	n      *Node
	local  *disk.Store
	jdir   *journal.Dir        // this node's copies of vdisk journals
	jrep   *journal.Replicated // vdisk journals over the cluster
	server *shard.Server
	pool   *remote.Pool
	store  *erasure.Store
	healer *heal.Healer
	scrub  *scrub.Scrubber
	gc     *gc.Collector

	kick chan struct{} // asks the heal loop for a pass
	mu   sync.Mutex
	auto chunkstore.Profile // profile of the automatic default pool
}

// clusterMap turns the Raft cluster map into the placement map.
func clusterMap(st *fsm.State) placement.Map {
	m := placement.Map{Epoch: st.Epoch}
	for _, nd := range st.SortedNodes() {
		state := placement.Up
		switch nd.State {
		case fsm.NodeDown:
			state = placement.Down
		case fsm.NodeRemoved:
			state = placement.Removed
		}
		// Weight follows the offered capacity (in TiB); a node that did
		// not say gets a weight of one.
		w := float64(nd.Capacity) / (1 << 40)
		if w <= 0 {
			w = 1
		}
		m.Nodes = append(m.Nodes, placement.Node{ID: nd.ID, Addr: nd.ShardAddr, Domain: nd.Domain, Weight: w, State: state})
	}
	return m
}

// upNodes counts the nodes new chunks can be spread over.
func upNodes(m placement.Map) int {
	n := 0
	for _, nd := range m.Nodes {
		if nd.State == placement.Up {
			n++
		}
	}
	return n
}

// openStorage opens the local shard store and listens for the shard server.
// The server starts serving in startStorage, once the cluster secret is known.
func (n *Node) openStorage() (*storage, net.Listener, error) {
	local, err := disk.Open(disk.Config{Dir: filepath.Join(n.cfg.Dir, "shards"), Logger: n.cfg.Logger, Registry: n.reg})
	if err != nil {
		return nil, nil, fmt.Errorf("node: shard store: %w", err)
	}
	jdir, err := journal.OpenDir(journal.DirConfig{Dir: filepath.Join(n.cfg.Dir, "journal"), Logger: n.cfg.Logger, Registry: n.reg})
	if err != nil {
		local.Close()
		return nil, nil, fmt.Errorf("node: journal store: %w", err)
	}
	ln, err := net.Listen("tcp", n.cfg.hostPort(n.cfg.ShardPort))
	if err != nil {
		local.Close()
		jdir.Close()
		return nil, nil, fmt.Errorf("node: shard server: %w", err)
	}
	return &storage{n: n, local: local, jdir: jdir, kick: make(chan struct{}, 1)}, ln, nil
}

// start serves shards and builds the cluster store over the current map.
func (s *storage) start(ln net.Listener) error {
	n := s.n
	var secret string
	var m placement.Map
	n.raft.ReadStale(func(st *fsm.State) error {
		secret = st.Secret
		m = clusterMap(st)
		return nil
	})
	if secret == "" {
		return errors.New("node: no cluster secret yet")
	}
	var serverTLS *tls.Config
	if n.pki != nil {
		serverTLS = n.pki.PeerServerConfig()
	}
	srv, err := shard.Serve(ln, shard.Config{TLS: serverTLS, Secret: []byte(secret), Store: s.local, Journal: s.jdir, Logger: n.cfg.Logger, Registry: n.reg})
	if err != nil {
		return fmt.Errorf("node: shard server: %w", err)
	}
	s.server = srv
	s.pool = remote.NewPool(remote.Config{TLS: n.peerTLS(), Secret: []byte(secret), Logger: n.cfg.Logger})
	s.auto = chunkstore.DefaultProfile(upNodes(m))
	st, err := erasure.New(erasure.Config{Map: m, Profile: s.auto, Logger: n.cfg.Logger, Registry: n.reg,
		Dialer: erasure.PoolDialer(s.pool, map[string]chunkstore.ShardStore{n.id: s.local}), Local: n.id,
		HealNeeded: func(string) { go s.kickHealEverywhere() }, PendingRate: n.cfg.HealRate})
	if err != nil {
		return fmt.Errorf("node: cluster store: %w", err)
	}
	s.store = st
	if s.jrep, err = journal.NewReplicated(journal.ReplicatedConfig{Map: st.Map, Logger: n.cfg.Logger,
		Dial: func(nd placement.Node) (journal.Log, error) {
			if nd.ID == n.id {
				return s.jdir, nil
			}
			if nd.Addr == "" {
				return nil, fmt.Errorf("%w: node %s has no shard server address", chunkstore.ErrUnavailable, nd.ID)
			}
			return s.pool.Get(nd.Addr)
		}}); err != nil {
		return fmt.Errorf("node: vdisk journals: %w", err)
	}
	if s.healer, err = heal.New(heal.Config{NodeID: n.id, Local: s.local, Store: st, RateLimit: n.cfg.HealRate,
		Logger: n.cfg.Logger, Registry: n.reg}); err != nil {
		return fmt.Errorf("node: healer: %w", err)
	}
	if s.scrub, err = scrub.New(scrub.Config{NodeID: n.id, Local: s.local, Store: st, Interval: n.cfg.ScrubInterval,
		Logger: n.cfg.Logger, Registry: n.reg}); err != nil {
		return fmt.Errorf("node: scrubber: %w", err)
	}
	if s.gc, err = gc.New(gc.Config{Store: st, Grace: n.cfg.GCGrace, Logger: n.cfg.Logger, Registry: n.reg}); err != nil {
		return fmt.Errorf("node: garbage collector: %w", err)
	}
	s.scrub.Start()
	n.wg.Add(2)
	go func() { defer n.wg.Done(); s.followMap(m.Epoch) }()
	go func() { defer n.wg.Done(); s.healLoop() }()
	s.kickHeal()
	return nil
}

// followMap applies every new cluster map to the store and wakes the healer.
func (s *storage) followMap(epoch uint64) {
	n := s.n
	for {
		ch := n.raft.Changed()
		var m placement.Map
		n.raft.ReadStale(func(st *fsm.State) error {
			if st.Epoch != epoch {
				m = clusterMap(st)
			}
			return nil
		})
		if m.Epoch != 0 && m.Epoch != epoch {
			epoch = m.Epoch
			prev := s.store.Map()
			for _, nd := range m.Nodes {
				if old, ok := prev.Node(nd.ID); nd.State == placement.Up && (!ok || old.State != placement.Up) && nd.Addr != "" {
					// Back (or new): writes placed on it must reach it,
					// not fail fast on the dial backoff of its death.
					s.pool.Retry(nd.Addr)
				}
			}
			if err := s.store.SetMap(m); err != nil {
				n.log.Error("cluster map rejected by the store", "epoch", m.Epoch, "err", err)
			} else {
				p := chunkstore.DefaultProfile(upNodes(m))
				s.mu.Lock()
				changed := p != s.auto
				s.auto = p
				s.mu.Unlock()
				if changed {
					s.store.SetProfile(p)
				}
				n.log.Info("cluster map applied to the store", "epoch", epoch, "up", upNodes(m), "profile", p.String())
				s.kickHeal()
				for _, nd := range m.Nodes {
					if old, ok := prev.Node(nd.ID); ok && old.State == placement.Down && nd.State == placement.Up {
						n.wg.Add(1)
						go func() { defer n.wg.Done(); s.kickWhenReachable(nd) }()
					}
				}
			}
		}
		select {
		case <-n.ctx.Done():
			return
		case <-ch:
		}
	}
}

func (s *storage) kickHeal() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// kickWhenReachable asks for a heal pass once node nd, just marked up
// again, answers this node's shard client (within a minute). The pass the
// map change started may have run before: the client backs off dialing a
// dead node for a few seconds, and a pass that cannot ask a home skips its
// chunks (shards written to the others meanwhile would wait for the
// periodic pass to move to it).
func (s *storage) kickWhenReachable(nd placement.Node) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-s.n.ctx.Done():
			return
		case <-time.After(time.Second):
		}
		ctx, cancel := context.WithTimeout(s.n.ctx, 5*time.Second)
		st, err := s.store.Dial(nd)
		if err == nil {
			_, err = st.EnumerateShards(ctx, chunkstore.ShardKey{}, 1)
		}
		cancel()
		if err == nil {
			s.n.log.Info("node marked up again answers: heal pass", "node", nd.ID)
			s.kickHeal()
			return
		}
	}
}

// kickHealEverywhere asks every node for a heal pass: degraded chunks this
// node wrote but could not remember (its pending list was full) have
// shards on any of them, and each node's pass covers the chunks it holds.
func (s *storage) kickHealEverywhere() {
	ctx, cancel := context.WithTimeout(s.n.ctx, 30*time.Second)
	defer cancel()
	var failed []string
	for _, v := range s.fanout(ctx, func() any { s.kickHeal(); return LocalStatus{Node: s.n.id} }, func(c *client.Client) (any, error) {
		return LocalStatus{}, c.HealLocal(ctx)
	}) {
		if ls := v.(LocalStatus); ls.Error != "" {
			failed = append(failed, ls.Node+": "+ls.Error)
		}
	}
	s.n.log.Info("heal passes asked of every node: degraded writes were not all remembered", "failed", failed)
}

// healLoop runs a heal pass after every map change (debounced) and
// periodically, so shards this node is responsible for are rebuilt and
// moved to their homes.
func (s *storage) healLoop() {
	n := s.n
	t := time.NewTicker(n.cfg.HealInterval)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-s.kick:
			// Let a burst of map changes settle.
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(time.Second):
			}
		case <-t.C:
		}
		if wait := s.untilOut(); wait > 0 {
			// A node is down but not yet out: it may come back, and
			// rebuilding or re-encoding its data now would be churn.
			// Reads reconstruct meanwhile; heal once it is out.
			n.log.Info("heal postponed: a node is down but not out yet", "for", wait.Round(time.Second))
			s.kickAfter(wait)
			continue
		}
		// Every down node is out now: heal rebuilds its shards on the
		// others, so the store stops waiting for it to repair degraded
		// writes.
		for _, id := range s.downNodes() {
			s.store.ForgetPending(id)
		}
		p, err := s.healer.Run(n.ctx)
		if err != nil && n.ctx.Err() == nil {
			n.log.Warn("heal pass failed", "err", err)
			continue
		}
		if p.Rebuilt+p.Moved+p.Dropped+p.Kept+p.Failed+p.Reprofiled+p.Superseded > 0 {
			n.log.Info("heal pass done", "epoch", p.Epoch, "chunks", p.Chunks, "rebuilt", p.Rebuilt,
				"moved", p.Moved, "dropped", p.Dropped, "kept", p.Kept, "reprofiled", p.Reprofiled, "superseded", p.Superseded, "failed", p.Failed)
		}
		if p.Failed > 0 || p.Kept > 0 {
			// Some chunks could not be healed yet (a peer unreachable), or
			// old copies wait for their chunk's other moves: try again
			// soon rather than at the next period.
			s.kickAfter(10 * time.Second)
		}
	}
}

// untilOut returns how long until every down node has been down for
// OutAfter (0 when none is merely down).
func (s *storage) untilOut() time.Duration {
	var wait time.Duration
	now := time.Now()
	s.n.raft.ReadStale(func(st *fsm.State) error {
		for _, nd := range st.Nodes {
			if nd.State != fsm.NodeDown {
				continue
			}
			if w := time.Unix(0, nd.Changed).Add(s.n.cfg.OutAfter).Sub(now); w > wait {
				wait = w
			}
		}
		return nil
	})
	return wait
}

// downNodes lists the nodes the map says are down.
func (s *storage) downNodes() []string {
	var out []string
	s.n.raft.ReadStale(func(st *fsm.State) error {
		for _, nd := range st.SortedNodes() {
			if nd.State == fsm.NodeDown {
				out = append(out, nd.ID)
			}
		}
		return nil
	})
	return out
}

// kickAfter asks for a heal pass after d (unless the node stops).
func (s *storage) kickAfter(d time.Duration) {
	t := time.AfterFunc(d, s.kickHeal)
	context.AfterFunc(s.n.ctx, func() { t.Stop() })
}

// storeFor returns the store new chunks of a pool (and vdisk type) are
// written to: the pool's profile, the automatic one for "auto" pools, and
// no redundancy (k+0) for cache data.
func (s *storage) storeFor(pool, typ string) chunkstore.Store {
	prof := s.profileOf(pool, typ)
	if prof == s.store.Profile() {
		return s.store
	}
	v, err := s.store.WithProfile(prof)
	if err != nil {
		s.n.log.Error("bad pool profile; using the default", "pool", pool, "profile", prof.String(), "err", err)
		return s.store
	}
	return v
}

// profileOf is the erasure profile of vdisks of a pool and type.
func (s *storage) profileOf(pool, typ string) chunkstore.Profile {
	var p *fsm.Pool
	s.n.raft.ReadStale(func(st *fsm.State) error {
		if x := st.Pools[pool]; x != nil {
			c := *x
			p = &c
		}
		return nil
	})
	s.mu.Lock()
	prof := s.auto
	s.mu.Unlock()
	if p != nil && p.K > 0 {
		prof = chunkstore.Profile{K: uint8(p.K), M: uint8(p.M)}
	}
	if typ == fsm.VDiskCache {
		prof.M = 0
	}
	return prof
}

// journalFor returns the write journal of vdisks of a pool and type: m+1
// copies for a pool coded k+m, so that a flushed write survives what the
// pool's chunks survive; none for cache vdisks (not redundant anyway).
func (s *storage) journalFor(pool, typ string) journal.Log {
	if typ == fsm.VDiskCache || s.jrep == nil {
		return nil
	}
	return s.jrep.WithCopies(int(s.profileOf(pool, typ).M) + 1)
}

// collect runs a garbage collection from every root in Raft: vdisk heads and
// snapshots (through blockd), registered flists, and pinned blobs.
func (s *storage) collect(ctx context.Context, dryRun bool) (gc.Result, error) {
	n := s.n
	var flists, pins []chunkstore.Ref
	if err := n.raft.Read(ctx, func(st *fsm.State) error {
		for _, f := range st.Flists {
			flists = append(flists, f.Ref)
		}
		for r := range st.Pins {
			pins = append(pins, r)
		}
		return nil
	}); err != nil {
		return gc.Result{}, err
	}
	vdisks := n.blockd.GCRoots()
	flistRoots := gc.RootsFunc(func(ctx context.Context, f chunkstore.Fetcher, mark func(chunkstore.Ref)) error {
		for _, ref := range flists {
			if err := flist.MarkStored(ctx, f, ref, mark); err != nil {
				return err
			}
		}
		return nil
	})
	if dryRun {
		return gc.Collect(ctx, gc.Config{Store: s.store, Grace: n.cfg.GCGrace, DryRun: true, Logger: n.cfg.Logger}, vdisks, flistRoots, gc.Blobs(pins))
	}
	return s.gc.Run(ctx, vdisks, flistRoots, gc.Blobs(pins))
}

func (s *storage) close() error {
	var errs []error
	if s.scrub != nil {
		errs = append(errs, s.scrub.Close())
	}
	if s.healer != nil {
		errs = append(errs, s.healer.Close())
	}
	if s.gc != nil {
		errs = append(errs, s.gc.Close())
	}
	if s.server != nil {
		errs = append(errs, s.server.Close())
	}
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.pool != nil {
		errs = append(errs, s.pool.Close())
	}
	errs = append(errs, s.local.Close(), s.jdir.Close())
	return errors.Join(errs...)
}
