package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// countingStore counts the PutShards calls reaching a node.
type countingStore struct {
	chunkstore.ShardStore
	node string
	log  *putLog
}

type putLog struct {
	mu    sync.Mutex
	calls map[string][]int // node -> shards per call
}

func (c countingStore) PutShards(ctx context.Context, shards []chunkstore.Shard) error {
	c.log.mu.Lock()
	c.log.calls[c.node] = append(c.log.calls[c.node], len(shards))
	c.log.mu.Unlock()
	return c.ShardStore.PutShards(ctx, shards)
}

func (l *putLog) reset() map[string][]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.calls
	l.calls = map[string][]int{}
	return out
}

// batchStore returns an erasure store over c's nodes whose PutShards calls
// are logged and whose metrics go to a registry.
func batchStore(t *testing.T, c *localcluster.Cluster, p chunkstore.Profile) (*erasure.Store, *putLog, *prometheus.Registry) {
	t.Helper()
	log := &putLog{calls: map[string][]int{}}
	inner := erasure.PoolDialer(c.Pool, nil)
	reg := prometheus.NewRegistry()
	s, err := erasure.New(erasure.Config{
		Map:     c.Map(),
		Profile: p,
		Dialer: erasure.DialFunc(func(n placement.Node) (chunkstore.ShardStore, error) {
			st, err := inner.Dial(n)
			if err != nil {
				return nil, err
			}
			return countingStore{ShardStore: st, node: n.ID, log: log}, nil
		}),
		Registry: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, log, reg
}

func batchOf(seed uint64, n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = storetest.Data(seed+uint64(i), size)
	}
	return out
}

func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestPutManyOneRequestPerNode: a batch sends each node one PutShards with
// all its shards (several only past the part limits), and every chunk
// reads back.
func TestPutManyOneRequestPerNode(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, FirstHost: 220})
	s, log, reg := batchStore(t, c, chunkstore.Profile{K: 2, M: 1})

	chunks := batchOf(1, 32, 16<<10)
	chunks = append(chunks, chunks[3], bytes.Clone(chunks[7])) // duplicates: written once
	refs, err := s.PutMany(ctx(t), chunks)
	if err != nil {
		t.Fatal(err)
	}
	calls := log.reset()
	if len(calls) != 3 {
		t.Fatalf("batch reached %d nodes, want 3: %v", len(calls), calls)
	}
	for node, per := range calls {
		if !slices.Equal(per, []int{32}) {
			t.Errorf("node %s got PutShards calls of %v shards, want one of 32", node, per)
		}
	}
	for i, d := range chunks {
		got, err := c.Store.Fetch(ctx(t), refs[i])
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if got := metric(t, reg, "zos_chunk_puts_total"); got != 34 {
		t.Errorf("zos_chunk_puts_total = %v, want 34", got)
	}
	if got := metric(t, reg, "zos_chunk_put_batches_total"); got != 1 {
		t.Errorf("zos_chunk_put_batches_total = %v, want 1", got)
	}

	// 12 chunks of 4 MiB: each node holds 12 shards of 2 MiB, sent as
	// parts of at most 16 MiB (8 shards + 4).
	big := batchOf(100, 12, chunkstore.MaxChunkSize)
	refs, err = s.PutMany(ctx(t), big)
	if err != nil {
		t.Fatal(err)
	}
	for node, per := range log.reset() {
		slices.Sort(per)
		if !slices.Equal(per, []int{4, 8}) {
			t.Errorf("node %s got PutShards calls of %v shards, want 8 and 4", node, per)
		}
	}
	for i, d := range big {
		got, err := c.Store.Fetch(ctx(t), refs[i])
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("big chunk %d: %v", i, err)
		}
	}
}

// TestPutManyNodeDown: with one of six nodes dead but still up in the map,
// a 4+2 batch succeeds (5 shards >= k+1), each chunk missing its shard on
// the dead node and remembered as a pending repair; with three dead, 3
// live homes are fewer than k and every chunk fails.
func TestPutManyNodeDown(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 226})
	s, _, reg := batchStore(t, c, chunkstore.Profile{K: 4, M: 2})
	c.Stop(1)
	chunks := batchOf(200, 20, 50<<10)
	refs, err := s.PutMany(ctx(t), chunks)
	if err != nil {
		t.Fatalf("batch with one node of six down: %v", err)
	}
	for i, d := range chunks {
		got, err := s.Fetch(ctx(t), refs[i])
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("chunk %d: %v", i, err)
		}
		st, err := s.Inspect(ctx(t), refs[i])
		if err != nil {
			t.Fatal(err)
		}
		if st.Healthy != 5 {
			t.Fatalf("chunk %d has %d healthy shards, want 5 (one home down)", i, st.Healthy)
		}
	}
	if got := metric(t, reg, "zos_chunk_partial_puts_total"); got != 20 {
		t.Errorf("zos_chunk_partial_puts_total = %v, want 20", got)
	}
	if p := s.Pending(); p.Chunks != 20 || len(p.Nodes) != 1 || p.Nodes[0].Node != c.Nodes[1].ID {
		t.Errorf("pending %+v, want 20 chunks for %s", p, c.Nodes[1].ID)
	}
	c.Stop(4)
	c.Stop(5)
	chunks = batchOf(300, 5, 50<<10)
	refs, err = s.PutMany(ctx(t), chunks)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) || !slices.Equal(be.Failed, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("batch with three nodes of six down: %v, want all 5 chunks failed", err)
	}
	if !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("failure is not ErrUnavailable: %v", err)
	}
	if len(refs) != 5 || refs[2] != chunkstore.Sum(chunks[2]) {
		t.Fatal("a failed batch must still return every ref")
	}
}

// TestPutManyPartialFailure: 2+1 on six nodes with two dead: exactly the
// chunks with both dead nodes among their homes (one live home, fewer
// than k) fail, the BatchError names them, and the others are stored.
func TestPutManyPartialFailure(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 235})
	s, _, reg := batchStore(t, c, chunkstore.Profile{K: 2, M: 1})
	dead := []string{c.Nodes[3].ID, c.Nodes[5].ID}
	c.Stop(3)
	c.Stop(5)
	chunks := batchOf(400, 60, 20<<10)
	chunks = append(chunks, chunks[0]) // a duplicate shares its original's fate
	refs, err := s.PutMany(ctx(t), chunks)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) {
		t.Fatalf("want a BatchError, got %v", err)
	}
	var want []int
	for i := range chunks {
		homes := s.Placer().PlaceIDs(refs[i], 3)
		if slices.Contains(homes, dead[0]) && slices.Contains(homes, dead[1]) {
			want = append(want, i)
		}
	}
	if len(want) == 0 || len(want) == len(chunks) {
		t.Fatalf("placement put %d of %d chunks on both dead nodes; the test needs some of each", len(want), len(chunks))
	}
	if !slices.Equal(be.Failed, want) {
		t.Fatalf("failed chunks %v, want those homed on both %v: %v", be.Failed, dead, want)
	}
	for i, d := range chunks {
		if e := be.Err(i); e != nil {
			if !errors.Is(e, chunkstore.ErrUnavailable) {
				t.Fatalf("chunk %d failed with %v, want ErrUnavailable", i, e)
			}
			continue
		}
		got, err := s.Fetch(ctx(t), refs[i])
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("chunk %d (not in the error) does not read back: %v", i, err)
		}
	}
	if got := metric(t, reg, "zos_chunk_put_errors_total"); got != float64(len(want)) {
		t.Errorf("zos_chunk_put_errors_total = %v, want %d", got, len(want))
	}
	// After a restart the failed chunks go in.
	if err := c.Restart(3); err != nil {
		t.Fatal(err)
	}
	var retry [][]byte
	for _, i := range be.Failed {
		retry = append(retry, chunks[i])
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err = s.PutMany(ctx(t), retry); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // the client's dial backoff
	}
	if err != nil {
		t.Fatalf("retry after a node came back: %v", err)
	}
}

// TestPutManyCancelled: a batch stuck on a node that never answers
// returns context.Canceled as soon as its context ends.
func TestPutManyCancelled(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, FirstHost: 241, RequestTimeout: 10 * time.Minute})
	addr := c.Nodes[1].Addr
	c.Stop(1)
	hang := hangingListener(t, addr)
	defer hang()
	cctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Store.PutMany(cctx, batchOf(500, 8, 16<<10))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("batch returned while a node hangs: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled batch returned %v, want context.Canceled", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("a cancelled batch did not return")
	}
}

// TestPutManyProfiles: a batch chooses each chunk's profile as Put does:
// the view's profile, replication for tiny chunks, Fit's profile when the
// cluster has fewer nodes than shards.
func TestPutManyProfiles(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 4, Profile: chunkstore.Profile{K: 2, M: 1}, FirstHost: 245})
	v, err := c.Store.WithProfile(chunkstore.Profile{K: 4, M: 2})
	if err != nil {
		t.Fatal(err)
	}
	chunks := [][]byte{storetest.Data(1, 100<<10), storetest.Data(2, 1000), storetest.Data(3, 0)}
	refs, err := chunkstore.PutMany(ctx(t), v, chunks)
	if err != nil {
		t.Fatal(err)
	}
	want := []chunkstore.Profile{{K: 2, M: 2}, {K: 1, M: 2}, {K: 1, M: 2}} // 4+2 fits 4 nodes as 2+2
	for i, ref := range refs {
		st, err := c.Store.Inspect(ctx(t), ref)
		if err != nil {
			t.Fatal(err)
		}
		if st.Profile != want[i] || st.Healthy != want[i].N() {
			t.Errorf("chunk %d: profile %s with %d healthy shards, want %s with all", i, st.Profile, st.Healthy, want[i])
		}
	}
	// Through the store itself: its own 2+1.
	refs, err = c.Store.PutMany(ctx(t), [][]byte{storetest.Data(4, 100<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := c.Store.Inspect(ctx(t), refs[0]); err != nil || st.Profile != (chunkstore.Profile{K: 2, M: 1}) {
		t.Fatalf("store batch wrote %s (%v), want 2+1", st.Profile, err)
	}
}

// TestPutManyNamed: chunks named by the caller are stored under their
// names without being hashed again (a wrong name is taken as given, and
// the read of it then fails as corrupt rather than returning the bytes),
// chunks with a zero name are hashed, and the view of another profile
// takes names too.
func TestPutManyNamed(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, FirstHost: 220})
	s, _, _ := batchStore(t, c, chunkstore.Profile{K: 2, M: 1})

	chunks := append(batchOf(1, 3, 16<<10), storetest.Data(9, 1<<20)) // the large one is hashed beside its encoding when unnamed
	names := []chunkstore.Ref{chunkstore.Sum(chunks[0]), {}, chunkstore.Sum(chunks[2]), chunkstore.Sum(chunks[3])}
	wrong := chunkstore.Sum([]byte("not the chunk's bytes"))
	chunks = append(chunks, storetest.Data(10, 16<<10))
	names = append(names, wrong)
	refs, err := s.PutManyNamed(ctx(t), chunks, names)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range chunks[:4] {
		if want := chunkstore.Sum(d); refs[i] != want {
			t.Errorf("chunk %d stored as %s, want %s", i, refs[i].Short(), want.Short())
		}
		got, err := c.Store.Fetch(ctx(t), refs[i])
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	if refs[4] != wrong {
		t.Fatalf("the misnamed chunk was stored as %s: the store hashed it (want its name %s)", refs[4].Short(), wrong.Short())
	}
	if got, err := c.Store.Fetch(ctx(t), wrong); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("Fetch of a misnamed chunk = %d bytes, %v; want ErrCorrupt", len(got), err)
	}

	v, err := s.WithProfile(chunkstore.Profile{K: 1, M: 2})
	if err != nil {
		t.Fatal(err)
	}
	d := storetest.Data(11, 64<<10)
	refs, err = chunkstore.PutManyNamed(ctx(t), v, [][]byte{d}, []chunkstore.Ref{chunkstore.Sum(d)})
	if err != nil || refs[0] != chunkstore.Sum(d) {
		t.Fatalf("view PutManyNamed = %v, %v", refs, err)
	}
	if got, err := c.Store.Fetch(ctx(t), refs[0]); err != nil || !bytes.Equal(got, d) {
		t.Fatalf("view chunk: %v", err)
	}
	if _, err := s.PutManyNamed(ctx(t), chunks, names[:1]); err == nil {
		t.Fatal("PutManyNamed with fewer names than chunks succeeded")
	}
}
