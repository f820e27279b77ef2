package heal_test

import (
	"bytes"
	"context"
	"errors"
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
)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

func start(t *testing.T, cfg localcluster.Config) *localcluster.Cluster {
	t.Helper()
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

func (h *healers) runAll(t *testing.T) []heal.Progress {
	t.Helper()
	if h.hs == nil {
		h.hs = map[string]*heal.Healer{}
	}
	m := h.c.Map()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out []heal.Progress
	for _, nd := range m.Nodes {
		n := h.c.Node(nd.ID)
		if nd.State != placement.Up || n.Disk == nil {
			continue
		}
		hl := h.hs[nd.ID]
		if hl == nil {
			var err error
			hl, err = heal.New(heal.Config{NodeID: nd.ID, Local: n.Disk, Store: h.c.Store, BatchSize: 64})
			if err != nil {
				t.Fatal(err)
			}
			h.hs[nd.ID] = hl
		}
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
	for round := range 4 {
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
		if last.Healthy == last.Chunks && last.Misplaced == 0 {
			return last
		}
	}
	t.Fatalf("cluster not healthy after 4 heal rounds: %+v", last)
	return last
}

// TestLoseTwoHealReadAgain is the acceptance scenario on 6 servers, 4+2:
// put tens of MiB of random files, kill two servers, every byte reads back;
// remove them (and add two replacement nodes), heal restores full
// redundancy (verified with Inspect and the census), then kill two
// different servers and read everything again.
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
		if st.Healthy != st.Profile.N() || st.Misplaced != 0 {
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

// TestHealWithoutReplacements: with two of six removed and no new node, heal
// puts all six shards of every chunk on the four survivors.
func TestHealWithoutReplacements(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 160, RequestTimeout: 5 * time.Second})
	files := writeFiles(t, c.Store, 4, 2<<20, 50)
	c.Stop(0)
	c.Stop(5)
	c.SetState(c.Nodes[0].ID, placement.Removed)
	c.SetState(c.Nodes[5].ID, placement.Removed)
	healUntilHealthy(t, c)
	readFiles(t, c.Store, files)
	// One more node may die (each holds at most 2 of 6 shards).
	c.Stop(2)
	readFiles(t, c.Store, files)
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
	h := &healers{c: c}
	ps := h.runAll(t)
	var moved, dropped, rebuilt int64
	for _, p := range ps {
		moved += p.Moved
		dropped += p.Dropped
		rebuilt += p.Rebuilt
	}
	after, err := c.Store.Status(ctx(t), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("moved %d dropped %d rebuilt %d; census %+v", moved, dropped, rebuilt, *after.Census)
	if moved == 0 || dropped != moved || rebuilt != 0 {
		t.Fatalf("join: moved %d, dropped %d, rebuilt %d", moved, dropped, rebuilt)
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
