package erasure_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// askCounter counts the shard keys each node is asked to read.
type askCounter struct {
	mu   sync.Mutex
	keys map[string]int
}

func (a *askCounter) add(node string, n int) {
	a.mu.Lock()
	a.keys[node] += n
	a.mu.Unlock()
}

func (a *askCounter) get(node string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keys[node]
}

type countingShards struct {
	chunkstore.ShardStore
	node string
	a    *askCounter
}

func (c countingShards) GetShards(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	c.a.add(c.node, len(keys))
	return c.ShardStore.GetShards(ctx, keys)
}

func (c countingShards) GetShardsUnverified(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	c.a.add(c.node, len(keys))
	if ug, ok := c.ShardStore.(chunkstore.UnverifiedGetter); ok {
		return ug.GetShardsUnverified(ctx, keys)
	}
	return c.ShardStore.GetShards(ctx, keys)
}

// TestReadsPreferLocalShards: with Config.Local, a 2+1 chunk whose
// parity shard is on the local node is read from it and one remote data
// shard (the other rebuilt), so every chunk costs one remote shard; the
// planned rebuild is neither a degraded read nor a reason for read
// repair. A local parity shard that is gone falls back to the data shard
// it stood in for, and is repaired.
func TestReadsPreferLocalShards(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, FirstHost: 10})
	local := c.Nodes[0]
	a := &askCounter{keys: map[string]int{}}
	reg := prometheus.NewRegistry()
	s, err := erasure.New(erasure.Config{Map: c.Map(), Registry: reg, Local: local.ID,
		Dialer: erasure.DialFunc(func(n placement.Node) (chunkstore.ShardStore, error) {
			if n.ID == local.ID {
				return countingShards{ShardStore: local.Disk, node: n.ID, a: a}, nil
			}
			st, err := c.Pool.Get(n.Addr)
			if err != nil {
				return nil, err
			}
			return countingShards{ShardStore: st, node: n.ID, a: a}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	var chunks [][]byte
	for i := range 48 {
		chunks = append(chunks, storetest.Data(uint64(700+i), 16<<10+i*20011))
	}
	refs, err := s.PutMany(ctx(t), chunks)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Profile()
	if p != (chunkstore.Profile{K: 2, M: 1}) {
		t.Fatalf("profile %s, want 2+1", p)
	}
	parityLocal := 0
	for _, ref := range refs {
		if s.Placer().PlaceIDs(ref, p.N())[2] == local.ID {
			parityLocal++
		}
	}
	if parityLocal == 0 || parityLocal == len(refs) {
		t.Fatalf("%d of %d chunks have their parity shard on the local node: no mix to test", parityLocal, len(refs))
	}

	remote := func() int { return a.get(c.Nodes[1].ID) + a.get(c.Nodes[2].ID) }
	check := func(what string, got [][]byte) {
		t.Helper()
		for i := range refs {
			if !bytes.Equal(got[i], chunks[i]) {
				t.Fatalf("%s: chunk %d differs", what, i)
			}
		}
	}
	// One by one (Fetch), then as one batch (FetchMany): one remote shard
	// per chunk either way (the local node holds a shard of every chunk).
	got := make([][]byte, len(refs))
	for i, ref := range refs {
		if got[i], err = s.Fetch(ctx(t), ref); err != nil {
			t.Fatal(err)
		}
	}
	check("Fetch", got)
	if n := remote(); n != len(refs) {
		t.Errorf("Fetch of %d chunks asked the remote nodes for %d shards, want %d", len(refs), n, len(refs))
	}
	before := remote()
	if got, err = s.FetchMany(ctx(t), refs); err != nil {
		t.Fatal(err)
	}
	check("FetchMany", got)
	if n := remote() - before; n != len(refs) {
		t.Errorf("FetchMany of %d chunks asked the remote nodes for %d shards, want %d", len(refs), n, len(refs))
	}
	for _, name := range []string{"zos_chunk_degraded_reads_total", "zos_chunk_read_repairs_total", "zos_chunk_fetch_batch_fallbacks_total"} {
		if v := metric(t, reg, name); v != 0 {
			t.Errorf("%s = %v after reads of healthy chunks", name, v)
		}
	}

	// The local parity shard of one chunk is lost: the read asks the data
	// shard it stood in for, and repairs the parity shard.
	var lost chunkstore.Ref
	var want []byte
	for i, ref := range refs {
		if s.Placer().PlaceIDs(ref, p.N())[2] == local.ID {
			lost, want = ref, chunks[i]
			break
		}
	}
	if _, err := local.Disk.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: lost, Profile: p, Index: 2}}, 0); err != nil {
		t.Fatal(err)
	}
	if d, err := s.Fetch(ctx(t), lost); err != nil || !bytes.Equal(d, want) {
		t.Fatalf("fetch without the local parity shard: %v", err)
	}
	waitHealthy(t, s, lost)
	if v := metric(t, reg, "zos_chunk_degraded_reads_total"); v != 0 {
		t.Errorf("a read of both data shards counted as degraded (%v)", v)
	}
}
