package heal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/heal"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/heal")

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

func start(t *testing.T, cfg localcluster.Config) *localcluster.Cluster {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = lo
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.NoSync = true
	c, err := localcluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// writeFiles stores random files as blobs and returns ref -> content.
func writeFiles(t *testing.T, s chunkstore.Store, n, size int, seed uint64) map[chunkstore.Ref][]byte {
	t.Helper()
	out := map[chunkstore.Ref][]byte{}
	for i := range n {
		d := storetest.Data(seed+uint64(i), size+i*77777)
		ref, err := blob.Write(ctx(t), s, bytes.NewReader(d), nil)
		if err != nil {
			t.Fatalf("write file %d: %v", i, err)
		}
		out[ref] = d
	}
	return out
}

func readFiles(t *testing.T, s chunkstore.Store, files map[chunkstore.Ref][]byte) {
	t.Helper()
	for ref, want := range files {
		r, err := blob.Open(ctx(t), s, ref)
		if err != nil {
			t.Fatalf("open %s: %v", ref.Short(), err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("read %s: %v", ref.Short(), err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read %s: bytes differ", ref.Short())
		}
	}
}

// healers makes one healer per node of the cluster.
type healers struct {
	c  *localcluster.Cluster
	hs map[string]*heal.Healer
}

// healer returns node id's healer, made on first use.
func (h *healers) healer(t *testing.T, id string) *heal.Healer {
	t.Helper()
	if h.hs == nil {
		h.hs = map[string]*heal.Healer{}
	}
	hl := h.hs[id]
	if hl == nil {
		var err error
		hl, err = heal.New(heal.Config{NodeID: id, Local: h.c.Node(id).Disk, Store: h.c.Store, BatchSize: 64})
		if err != nil {
			t.Fatal(err)
		}
		h.hs[id] = hl
	}
	return hl
}

func (h *healers) runAll(t *testing.T) []heal.Progress {
	t.Helper()
	m := h.c.Map()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out []heal.Progress
	for _, nd := range m.Nodes {
		n := h.c.Node(nd.ID)
		if nd.State != placement.Up || n.Disk == nil {
			continue
		}
		hl := h.healer(t, nd.ID)
		wg.Go(func() {
			p, err := hl.Run(ctx(t))
			if err != nil {
				t.Errorf("heal on %s: %v", nd.ID, err)
			}
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

// healUntilHealthy runs heal passes on every up node until the census
// says every chunk has every shard at its home.
func healUntilHealthy(t *testing.T, c *localcluster.Cluster) erasure.Census {
	t.Helper()
	h := &healers{c: c}
	var last erasure.Census
	for round := range 5 {
		ps := h.runAll(t)
		var rebuilt, moved, dropped, failed int64
		for _, p := range ps {
			rebuilt += p.Rebuilt
			moved += p.Moved
			dropped += p.Dropped
			failed += p.Failed
			if p.ShardsDone != p.ShardsTotal && p.ShardsTotal > 0 {
				// Totals are taken at the start; moves change them.
				t.Logf("pass examined %d of %d shards", p.ShardsDone, p.ShardsTotal)
			}
		}
		st, err := c.Store.Status(ctx(t), true)
		if err != nil {
			t.Fatal(err)
		}
		last = *st.Census
		t.Logf("heal round %d: rebuilt %d moved %d dropped %d failed %d; census %+v", round, rebuilt, moved, dropped, failed, last)
		if last.Healthy == last.Chunks && last.Misplaced == 0 && last.Stale == 0 {
			return last
		}
	}
	t.Fatalf("cluster not healthy after 5 heal rounds: %+v", last)
	return last
}

// TestLoseTwoHealReadAgain is the acceptance scenario on 6 servers, 4+2,
// with replacements: put tens of MiB of random files, kill two servers,
// every byte reads back; remove them and add two replacement nodes (six
// nodes again, so 4+2 still fits and nothing is re-encoded: heal rebuilds
// the lost shards on the new nodes), heal restores full redundancy
// (verified with Inspect and the census), then kill two different servers
// and read everything again. TestShrinkReprofile is the same without
// replacements.
func TestLoseTwoHealReadAgain(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 150, RequestTimeout: 5 * time.Second})
	files := writeFiles(t, c.Store, 8, 3<<20, 1) // ~26 MiB
	c.Stop(1)
	c.Stop(4)
	readFiles(t, c.Store, files)

	for _, i := range []int{1, 4} {
		if err := c.SetState(c.Nodes[i].ID, placement.Removed); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := c.AddNode(); err != nil {
			t.Fatal(err)
		}
	}
	census := healUntilHealthy(t, c)
	if census.Unreadable != 0 || census.Chunks == 0 {
		t.Fatalf("census after heal: %+v", census)
	}
	// Every chunk: all shards healthy at their homes, on 6 distinct nodes.
	err := c.Store.Enumerate(ctx(t), chunkstore.Ref{}, func(info chunkstore.Info) error {
		st, err := c.Store.Inspect(ctx(t), info.Ref)
		if err != nil {
			return err
		}
		if st.Healthy != st.Profile.N() || st.Misplaced != 0 || st.Degraded || (st.Profile.N() != 6 && st.Profile.N() != 3) {
			t.Errorf("chunk %s after heal: %+v", info.Ref.Short(), st)
		}
		homes := map[string]bool{}
		for _, s := range st.Shards {
			homes[s.Home] = true
		}
		if len(homes) != st.Profile.N() {
			t.Errorf("chunk %s: %d shards on %d nodes", info.Ref.Short(), st.Profile.N(), len(homes))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Two different servers die; everything still reads.
	c.Stop(0)
	c.Stop(2)
	readFiles(t, c.Store, files)
}

// TestShrinkReprofile is the acceptance scenario without replacements, on
// 6 servers, 4+2: put tens of MiB, stop two servers, every byte reads
// back; remove them: six shards no longer fit on four nodes (some node
// would hold two, so two more failures could lose a chunk), so heal
// re-encodes every chunk to 2+2 (same parity, k = 4 survivors - 2). Then
// two different servers stop and everything still reads.
func TestShrinkReprofile(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 160, RequestTimeout: 5 * time.Second})
	files := writeFiles(t, c.Store, 8, 3<<20, 50) // ~26 MiB
	before, err := c.Store.Status(ctx(t), true)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(0)
	c.Stop(5)
	readFiles(t, c.Store, files)
	for _, i := range []int{0, 5} {
		if err := c.SetState(c.Nodes[i].ID, placement.Removed); err != nil {
			t.Fatal(err)
		}
	}
	// Before healing, the census calls every coded chunk undersized.
	st, err := c.Store.Status(ctx(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Census.Undersized == 0 || st.Census.Healthy != 0 {
		t.Fatalf("census after removing 2 of 6: %+v", *st.Census)
	}
	census := healUntilHealthy(t, c)
	if census.Chunks != before.Census.Chunks || census.Unreadable != 0 || census.Undersized != 0 || census.Stale != 0 {
		t.Fatalf("census after heal: %+v (before: %+v)", census, *before.Census)
	}
	// Every chunk: healthy at its new profile, each shard on its own node,
	// tolerating two failures; no shard of the old profile left.
	reprofiled := 0
	err = c.Store.Enumerate(ctx(t), chunkstore.Ref{}, func(info chunkstore.Info) error {
		st, err := c.Store.Inspect(ctx(t), info.Ref)
		if err != nil {
			return err
		}
		want := "2+2"
		if info.Size < erasure.DefaultReplicateBelow {
			want = "1+2"
		}
		if st.Coding != want || st.Healthy != st.Profile.N() || st.Degraded || st.Undersized || st.Misplaced != 0 || len(st.Others) != 0 || st.Tolerance != 2 {
			t.Errorf("chunk %s after heal: %+v", info.Ref.Short(), st)
		}
		if want == "2+2" {
			reprofiled++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if reprofiled == 0 {
		t.Fatal("no coded chunk found")
	}
	readFiles(t, c.Store, files)
	// Two different servers die; everything still reads.
	c.Stop(1)
	c.Stop(3)
	readFiles(t, c.Store, files)
}

// TestReprofileCrashStates: a re-encoding interrupted at any step (new
// profile partly written, written but old not deleted, old partly deleted)
// loses nothing: reads work in every state, and heal converges to the new
// profile only.
func TestReprofileCrashStates(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 190, RequestTimeout: 5 * time.Second})
	want := map[chunkstore.Ref][]byte{}
	var refs []chunkstore.Ref
	for i := range 12 {
		d := storetest.Data(uint64(300+i), 200000+i*1000)
		ref, err := c.Store.Put(ctx(t), d)
		if err != nil {
			t.Fatal(err)
		}
		want[ref] = d
		refs = append(refs, ref)
	}
	old := chunkstore.Profile{K: 4, M: 2}
	c.Stop(2)
	c.Stop(3)
	c.SetState(c.Nodes[2].ID, placement.Removed)
	c.SetState(c.Nodes[3].ID, placement.Removed)
	newp := chunkstore.Profile{K: 2, M: 2}
	for _, ref := range refs {
		if to, need := erasure.Fit(c.Store.Placer(), ref, old); !need || to != newp {
			t.Fatalf("chunk %s: Fit gives %s, %v; want 2+2", ref.Short(), to, need)
		}
	}
	view, err := c.Store.WithProfile(newp)
	if err != nil {
		t.Fatal(err)
	}
	deleteAtHome := func(ref chunkstore.Ref, p chunkstore.Profile, idx ...int) {
		t.Helper()
		homes := c.Store.Placer().Place(ref, p.N())
		for _, i := range idx {
			n := c.Node(homes[i].ID)
			if _, err := n.Disk.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: ref, Profile: p, Index: uint8(i)}}, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, ref := range refs {
		switch i % 4 {
		case 0: // not started
		case 1: // crashed after writing the new profile, before deleting
			if _, err := view.Put(ctx(t), want[ref]); err != nil {
				t.Fatal(err)
			}
		case 2: // crashed while writing the new profile
			if _, err := view.Put(ctx(t), want[ref]); err != nil {
				t.Fatal(err)
			}
			deleteAtHome(ref, newp, 1, 3)
		case 3: // crashed while deleting the old profile
			if _, err := view.Put(ctx(t), want[ref]); err != nil {
				t.Fatal(err)
			}
			for _, n := range c.Nodes {
				if n.Disk != nil {
					n.Disk.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: ref, Profile: old, Index: 0}, {Ref: ref, Profile: old, Index: 4}}, 0)
				}
			}
		}
	}
	// Reads work in every state, from a store that knows nothing of the
	// old map too.
	fresh, err := erasure.New(erasure.Config{Map: c.Map(), Dialer: erasure.PoolDialer(c.Pool, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	for _, s := range []*erasure.Store{c.Store, fresh} {
		for _, ref := range refs {
			got, err := s.Fetch(ctx(t), ref)
			if err != nil || !bytes.Equal(got, want[ref]) {
				t.Fatalf("fetch %s mid-reprofile: %v", ref.Short(), err)
			}
		}
	}
	// A heal pass interrupted after its first checkpoint resumes.
	n0 := c.Nodes[0]
	cctx, cancel := context.WithCancel(context.Background())
	h, err := heal.New(heal.Config{NodeID: n0.ID, Local: &interrupting{Store: n0.Disk, after: 1, cancel: cancel}, Store: c.Store, BatchSize: 2, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Run(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted pass: %v", err)
	}
	p, err := h.Run(ctx(t))
	if err != nil || !p.Resumed {
		t.Fatalf("resumed pass: %+v, %v", p, err)
	}
	census := healUntilHealthy(t, c)
	if census.Chunks != int64(len(refs)) || census.Stale != 0 || census.Undersized != 0 {
		t.Fatalf("census: %+v", census)
	}
	for _, ref := range refs {
		st, err := c.Store.Inspect(ctx(t), ref)
		if err != nil || st.Profile != newp || st.Healthy != 4 || st.Degraded || len(st.Others) != 0 {
			t.Fatalf("chunk %s: %+v %v", ref.Short(), st, err)
		}
		got, err := c.Store.Fetch(ctx(t), ref)
		if err != nil || !bytes.Equal(got, want[ref]) {
			t.Fatalf("fetch %s after reprofile: %v", ref.Short(), err)
		}
	}
}

// TestReprofileStaleShardsOnReturn: a node away during the re-encoding
// comes back with shards of the old profile; heal deletes them (the new
// profile is complete) rather than rebuilding the old profile.
func TestReprofileStaleShardsOnReturn(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 200, RequestTimeout: 5 * time.Second})
	files := writeFiles(t, c.Store, 2, 1<<20, 400)
	c.Stop(4)
	c.Stop(5)
	c.SetState(c.Nodes[4].ID, placement.Down)
	c.SetState(c.Nodes[5].ID, placement.Removed)
	healUntilHealthy(t, c)
	// Node 4 returns with its 4+2 shards: five nodes up, chunks stay 2+2
	// (five domains fit four shards) and its leftovers go.
	if err := c.Restart(4); err != nil {
		t.Fatal(err)
	}
	c.SetState(c.Nodes[4].ID, placement.Up)
	waitReachable(t, c, 4)
	st, err := c.Store.Status(ctx(t), true)
	if err != nil {
		t.Fatal(err)
	}
	if st.Census.Stale == 0 {
		t.Fatalf("returning node brought no old shards: %+v", *st.Census)
	}
	census := healUntilHealthy(t, c)
	if census.Stale != 0 {
		t.Fatalf("stale shards left: %+v", census)
	}
	err = c.Store.Enumerate(ctx(t), chunkstore.Ref{}, func(info chunkstore.Info) error {
		st, err := c.Store.Inspect(ctx(t), info.Ref)
		if err == nil && st.Profile.N() != 4 && st.Profile.N() != 3 {
			t.Errorf("chunk %s is %s after the node returned", info.Ref.Short(), st.Coding)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	readFiles(t, c.Store, files)
}

// TestReprofileSmallClusters: when there are no more failure domains than
// parity shards, heal keeps what is possible. 2+2 left on two nodes
// already survives one node (two shards each) as well as 1+1 would: it is
// kept and reported as unfit. 4+2 on two nodes (three shards each) survives
// nothing: it becomes 1+1, which survives one, with its parity count
// reduced and reported.
func TestReprofileSmallClusters(t *testing.T) {
	t.Run("2+2 kept", func(t *testing.T) {
		c := start(t, localcluster.Config{Nodes: 4, Profile: chunkstore.Profile{K: 2, M: 2}, FirstHost: 210, RequestTimeout: 5 * time.Second})
		files := writeFiles(t, c.Store, 2, 1<<20, 500)
		c.Stop(0)
		c.Stop(1)
		c.SetState(c.Nodes[0].ID, placement.Removed)
		c.SetState(c.Nodes[1].ID, placement.Removed)
		healUntilHealthy(t, c)
		h := &healers{c: c}
		var unfit, reprofiled int64
		for _, p := range h.runAll(t) {
			unfit += p.Unfit
			reprofiled += p.Reprofiled
		}
		if unfit == 0 || reprofiled != 0 {
			t.Fatalf("unfit %d, reprofiled %d", unfit, reprofiled)
		}
		err := c.Store.Enumerate(ctx(t), chunkstore.Ref{}, func(info chunkstore.Info) error {
			st, err := c.Store.Inspect(ctx(t), info.Ref)
			if err == nil && (st.Profile.N() != 4 || st.Tolerance != 1 || st.Undersized) {
				t.Errorf("chunk %s: %+v", info.Ref.Short(), st)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Stop(2)
		readFiles(t, c.Store, files)
	})
	t.Run("4+2 to 1+1", func(t *testing.T) {
		c := start(t, localcluster.Config{Nodes: 2, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 215, RequestTimeout: 5 * time.Second})
		// Shards as an older writer (or a forced pool profile) left them:
		// 4+2 on two nodes, three shards each.
		p := chunkstore.Profile{K: 4, M: 2}
		want := map[chunkstore.Ref][]byte{}
		for i := range 6 {
			d := storetest.Data(uint64(600+i), 300000)
			ref := chunkstore.Sum(d)
			want[ref] = d
			shards, err := c.Store.Codec().Encode(p, d)
			if err != nil {
				t.Fatal(err)
			}
			for j, home := range c.Store.Placer().Place(ref, p.N()) {
				sh := chunkstore.NewShard(chunkstore.ShardKey{Ref: ref, Profile: p, Index: uint8(j)}, len(d), shards[j])
				if err := c.Node(home.ID).Disk.PutShards(ctx(t), []chunkstore.Shard{sh}); err != nil {
					t.Fatal(err)
				}
			}
		}
		h := &healers{c: c}
		var reduced int64
		for _, p := range h.runAll(t) {
			reduced += p.ReducedParity
		}
		if reduced != int64(len(want)) {
			t.Fatalf("%d chunks reported with reduced parity, want %d", reduced, len(want))
		}
		for ref := range want {
			st, err := c.Store.Inspect(ctx(t), ref)
			if err != nil || st.Coding != "1+1" || st.Tolerance != 1 || st.Degraded || len(st.Others) != 0 {
				t.Fatalf("chunk %s: %+v %v", ref.Short(), st, err)
			}
		}
		c.Stop(0)
		for ref, d := range want {
			got, err := c.Store.Fetch(ctx(t), ref)
			if err != nil || !bytes.Equal(got, d) {
				t.Fatalf("fetch %s with one of two nodes: %v", ref.Short(), err)
			}
		}
	})
}

// waitReachable waits until node i answers (its client may be backing off
// after failed dials while it was away).
func waitReachable(t *testing.T, c *localcluster.Cluster, i int) {
	t.Helper()
	wait.Until(t, time.Minute, func() error {
		cl, err := c.Pool.Get(c.Nodes[i].Addr)
		if err == nil {
			err = cl.Ping(ctx(t))
		}
		if err != nil {
			return fmt.Errorf("node %d not reachable: %w", i, err)
		}
		return nil
	})
}

// TestRebalanceOnJoin: nodes join; shards move to their new homes and the
// old copies are deleted; nothing is rebuilt.
func TestRebalanceOnJoin(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 4, Profile: chunkstore.Profile{K: 2, M: 2}, FirstHost: 170})
	files := writeFiles(t, c.Store, 4, 2<<20, 100)
	before, err := c.Store.Status(ctx(t), true)
	if err != nil {
		t.Fatal(err)
	}
	c.AddNode()
	c.AddNode()
	// Passes until every chunk is at its new homes: a copy is dropped
	// only once its chunk is complete there (TestMovesKeepRedundancy),
	// which can take a second pass.
	h := &healers{c: c}
	var ps []heal.Progress
	var moved, dropped, rebuilt int64
	var after erasure.Status
	for range 4 {
		round := h.runAll(t)
		ps = append(ps, round...)
		for _, p := range round {
			moved += p.Moved
			dropped += p.Dropped
			rebuilt += p.Rebuilt
		}
		if after, err = c.Store.Status(ctx(t), true); err != nil {
			t.Fatal(err)
		}
		if after.Census.Misplaced == 0 {
			break
		}
	}
	t.Logf("moved %d dropped %d rebuilt %d; census %+v", moved, dropped, rebuilt, *after.Census)
	if moved == 0 || dropped != moved || rebuilt != 0 {
		t.Fatalf("join: moved %d, dropped %d, rebuilt %d", moved, dropped, rebuilt)
	}
	// Growing does not re-encode: chunks keep their 2+2 (or 1+2).
	for _, p := range ps {
		if p.Reprofiled != 0 || p.Superseded != 0 {
			t.Fatalf("join re-encoded chunks: %+v", p)
		}
	}
	err = c.Store.Enumerate(ctx(t), chunkstore.Ref{}, func(info chunkstore.Info) error {
		st, err := c.Store.Inspect(ctx(t), info.Ref)
		if err == nil && (st.Profile.M != 2 || st.Profile.K > 2 || st.Degraded) {
			t.Errorf("chunk %s after join: %+v", info.Ref.Short(), st)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if after.Census.Healthy != after.Census.Chunks || after.Census.Misplaced != 0 {
		t.Fatalf("after rebalance: %+v", *after.Census)
	}
	if after.Shards != before.Shards {
		t.Fatalf("shard count changed from %d to %d (old copies kept or lost)", before.Shards, after.Shards)
	}
	var onNew int64
	for _, n := range after.Nodes[4:] {
		onNew += n.Stats.Shards
	}
	if onNew == 0 {
		t.Fatal("new nodes got no shards")
	}
	readFiles(t, c.Store, files)
}

// TestResumeAndProgress: a pass cancelled midway resumes from its
// checkpoint; progress and metrics report the work.
func TestResumeAndProgress(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 180, RequestTimeout: 5 * time.Second})
	writeFiles(t, c.Store, 40, 300000, 200)
	c.Stop(3)
	c.SetState(c.Nodes[3].ID, placement.Removed)
	n := c.Nodes[0]
	reg := prometheus.NewRegistry()
	cctx, cancel := context.WithCancel(context.Background())
	// The pass is interrupted right after its second checkpoint.
	local := &interrupting{Store: n.Disk, after: 2, cancel: cancel}
	h, err := heal.New(heal.Config{NodeID: n.ID, Local: local, Store: c.Store, BatchSize: 4, Workers: 1, RateLimit: 64 << 20, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	p, err := h.Run(cctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pass: %v (%+v)", err, p)
	}
	first := p.Chunks
	if first != 8 {
		t.Fatalf("interrupted pass healed %d chunks, want 8 (two batches)", first)
	}
	p, err = h.Run(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !p.Resumed || p.Chunks+first < 30 || p.Chunks > 40-8 {
		t.Fatalf("second pass: %+v", p)
	}
	if p.Running || p.ETA != 0 || p.Rate <= 0 {
		t.Fatalf("finished progress: %+v", p)
	}
	// A third pass starts from the beginning.
	p, _ = h.Run(ctx(t))
	if p.Resumed {
		t.Fatal("a completed pass left a checkpoint")
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
	}
	for _, name := range []string{"zos_heal_shards_done", "zos_heal_eta_seconds", "zos_heal_rebuilt_shards_total"} {
		if !seen[name] {
			t.Errorf("metric %s not exported", name)
		}
	}
	// The rest of the cluster heals the remainder.
	healUntilHealthy(t, c)
}

// interrupting cancels a context after a number of checkpoints.
type interrupting struct {
	*disk.Store
	after  int
	n      int
	cancel func()
}

func (i *interrupting) SetMeta(name string, v []byte) error {
	err := i.Store.SetMeta(name, v)
	if i.n++; i.n == i.after {
		i.cancel()
	}
	return err
}

func TestConfig(t *testing.T) {
	if _, err := heal.New(heal.Config{}); !errors.Is(err, heal.ErrConfig) {
		t.Fatal(err)
	}
}
