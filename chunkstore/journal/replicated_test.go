package journal_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/chunkstore/journal/journaltest"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/remote"
	"github.com/zosproject/zos/chunkstore/shard"
	"github.com/zosproject/zos/internal/testcluster/loopback"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/journal")

var secret = []byte("journal-test-secret-0123456789")

// node is one storage node: a shard server over a disk store (in memory)
// and a journal.Dir (on disk).
type node struct {
	id, addr string
	host     int
	jdir     string
	jfs      vfs.FS // of the journal.Dir; nil: the OS
	fs       vfs.FS
	dir      *journal.Dir
	store    *disk.Store
	srv      *shard.Server
}

// cluster is a few nodes on lo (127.0.N.x) and the map over them. The first
// node's journal is reached directly (as a node reaches its own), the
// others through remote clients.
type cluster struct {
	t      testing.TB
	noSync bool
	mu     sync.Mutex
	remote bool // reach the first node through its server too
	m      placement.Map
	nodes  []*node
	pool   *remote.Pool
}

func startCluster(t testing.TB, n int, noSync bool) *cluster {
	return startClusterFS(t, n, noSync, nil)
}

// startClusterFS is startCluster with node i's journal.Dir over jfs(i)
// (jfs nil, or returning nil: the OS).
func startClusterFS(t testing.TB, n int, noSync bool, jfs func(i int) vfs.FS) *cluster {
	c := &cluster{t: t, noSync: noSync, m: placement.Map{Epoch: 1}, pool: newPool()}
	t.Cleanup(c.close)
	for i := range n {
		nd := &node{id: fmt.Sprintf("node-%d", i+1), host: 60 + i, jdir: t.TempDir(), fs: vfs.NewMem()}
		if jfs != nil {
			nd.jfs = jfs(i)
		}
		c.nodes = append(c.nodes, nd)
		if err := c.start(nd, fmt.Sprintf("%s%d:0", lo, nd.host)); err != nil {
			t.Fatal(err)
		}
		c.m.Nodes = append(c.m.Nodes, placement.Node{ID: nd.id, Addr: nd.addr, Weight: 1, State: placement.Up})
	}
	return c
}

func newPool() *remote.Pool {
	return remote.NewPool(remote.Config{Secret: secret, DialTimeout: 5 * time.Second, RequestTimeout: 20 * time.Second})
}

func (c *cluster) start(nd *node, addr string) error {
	d, err := journal.OpenDir(journal.DirConfig{Dir: nd.jdir, NoSync: c.noSync, FS: nd.jfs})
	if err != nil {
		return err
	}
	st, err := disk.Open(disk.Config{Dir: "/s", FS: nd.fs, CompactInterval: -1, NoSync: true})
	if err != nil {
		d.Close()
		return err
	}
	var srv *shard.Server
	for try := 0; ; try++ { // a restarted node's port may linger briefly
		srv, err = shard.Start(shard.Config{Addr: addr, Secret: secret, Store: st, Journal: d})
		if err == nil || try == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		st.Close()
		d.Close()
		return err
	}
	c.mu.Lock()
	nd.dir, nd.store, nd.srv, nd.addr = d, st, srv, srv.Addr().String()
	c.mu.Unlock()
	return nil
}

// stop stops node i as if it was killed: its files stay.
func (c *cluster) stop(i int) {
	c.mu.Lock()
	nd := c.nodes[i]
	srv, st, d := nd.srv, nd.store, nd.dir
	nd.srv, nd.store, nd.dir = nil, nil, nil
	c.mu.Unlock()
	if srv != nil {
		srv.Close()
		st.Close()
		d.Close()
	}
}

// restart brings node i back on its address with its files, with fresh
// clients (the old ones back off dialing the dead address).
func (c *cluster) restart(i int) {
	nd := c.nodes[i]
	if err := c.start(nd, nd.addr); err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	old := c.pool
	c.pool = newPool()
	c.mu.Unlock()
	old.Close()
}

func (c *cluster) setState(i int, s placement.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m.Nodes[i].State = s
	c.m.Epoch++
}

func (c *cluster) Map() placement.Map {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.m
	m.Nodes = slices.Clone(c.m.Nodes)
	return m
}

func (c *cluster) dial(n placement.Node) (journal.Log, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n.ID == c.nodes[0].id && !c.remote {
		if c.nodes[0].dir == nil {
			return nil, fmt.Errorf("%w: node %s is stopped", chunkstore.ErrUnavailable, n.ID)
		}
		return c.nodes[0].dir, nil
	}
	return c.pool.Get(n.Addr)
}

func (c *cluster) replicated(copies int) *journal.Replicated {
	r, err := journal.NewReplicated(journal.ReplicatedConfig{Map: c.Map, Dial: c.dial, Copies: copies, Timeout: 30 * time.Second})
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}

// holders returns the indexes of the nodes an append of name goes to.
func (c *cluster) holders(name string, copies int) []int {
	p, err := placement.New(c.Map())
	if err != nil {
		c.t.Fatal(err)
	}
	var out []int
	for _, id := range p.PlaceIDs(journal.RefOf(name), copies) {
		for i, nd := range c.nodes {
			if nd.id == id {
				out = append(out, i)
			}
		}
	}
	return out
}

func (c *cluster) close() {
	for i := range c.nodes {
		c.stop(i)
	}
	c.mu.Lock()
	c.pool.Close()
	c.mu.Unlock()
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var rec = journaltest.Rec

// TestReplicatedHolderLoss: appends go to exactly Copies nodes; with one
// of them gone a takeover's Read still returns every acknowledged record
// and fences the old writer, even after the lost holder comes back.
func TestReplicatedHolderLoss(t *testing.T) {
	c := startCluster(t, 4, false)
	r := c.replicated(2)
	ctx := testCtx(t)
	const name = "pool/vdisk-a"
	var acked []journal.Record
	for s := range uint64(12) {
		recs := []journal.Record{rec(1, 2*s, 1000+int(s)*100), rec(1, 2*s+1, 64<<10)}
		if err := r.Append(ctx, name, 1, recs); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, recs...)
	}
	holders := c.holders(name, 2)
	for i, nd := range c.nodes {
		got, err := nd.dir.Read(ctx, name, 0)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(holders, i) {
			journaltest.Same(t, got, acked...)
		} else if len(got) != 0 {
			t.Fatalf("%s is not a holder but has %d records", nd.id, len(got))
		}
	}

	// One holder dies; the new owner (epoch 2) reads.
	lost := holders[0]
	c.stop(lost)
	got, err := r.Read(ctx, name, 2)
	if err != nil {
		t.Fatal(err)
	}
	journaltest.Same(t, got, acked...)
	// The old writer is fenced by the surviving holder.
	if err := r.Append(ctx, name, 1, []journal.Record{rec(1, 100, 10)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("old writer's append: %v", err)
	}
	// The new owner's appends go to the surviving holder and the next
	// node of the ranking, before and after the map says the lost one is
	// down.
	next := []journal.Record{rec(2, 1, 500)}
	if err := r.Append(ctx, name, 2, next); err != nil {
		t.Fatalf("append with a holder dead: %v", err)
	}
	c.setState(lost, placement.Down)
	next = append(next, rec(2, 2, 600))
	if err := r.Append(ctx, name, 2, next[1:]); err != nil {
		t.Fatal(err)
	}
	got, err = r.Read(ctx, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	journaltest.Same(t, got, append(slices.Clone(acked), next...)...)

	// The lost holder comes back (never sealed: it did not answer): the
	// old writer, whose holders it is again, is still fenced by the other.
	c.restart(lost)
	c.setState(lost, placement.Up)
	if err := r.Append(ctx, name, 1, []journal.Record{rec(1, 101, 10)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("old writer's append after the holder's return: %v", err)
	}
	// Trim reaches every node.
	if err := r.Trim(ctx, name, 2, 2); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Read(ctx, name, 0); err != nil || len(got) != 0 {
		t.Fatalf("after trim: %d records, %v", len(got), err)
	}
	if err := r.Trim(ctx, name, journal.All, journal.All); err != nil {
		t.Fatal(err)
	}
}

// ranking returns node indexes in the order an append tries them: the
// first copies of the ranking, then the rest of it.
func (c *cluster) ranking(name string, copies int) []int {
	p, err := placement.New(c.Map())
	if err != nil {
		c.t.Fatal(err)
	}
	idx := func(id string) int {
		return slices.IndexFunc(c.nodes, func(nd *node) bool { return nd.id == id })
	}
	var out []int
	for _, id := range p.PlaceIDs(journal.RefOf(name), copies) {
		out = append(out, idx(id))
	}
	for _, id := range p.PlaceIDs(journal.RefOf(name), len(p.Eligible())) {
		if i := idx(id); !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	return out
}

// has reports whether node i's own journal holds record (epoch, seq).
func (c *cluster) has(t *testing.T, i int, name string, epoch, seq uint64) bool {
	t.Helper()
	recs, err := c.nodes[i].dir.Read(testCtx(t), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(recs, func(r journal.Record) bool { return r.Epoch == epoch && r.Seq == seq })
}

// TestReplicatedFailover: with one of the first Copies nodes of a
// journal's ranking dead (the map still says up), an append lands on the
// other and on the next node of the ranking; a Read finds it whichever of
// its copies survives, and still fences the old writer; a sealed node
// aborts an append (no failover around ErrFenced); with too few reachable
// nodes the append fails naming them.
func TestReplicatedFailover(t *testing.T) {
	c := startCluster(t, 4, true)
	r := c.replicated(2)
	ctx := testCtx(t)
	const name = "pool/failover"
	order := c.ranking(name, 2)
	first := []journal.Record{rec(1, 1, 100)}
	if err := r.Append(ctx, name, 1, first); err != nil {
		t.Fatal(err)
	}
	c.stop(order[0])
	rec2 := []journal.Record{rec(1, 2, 4000)}
	if err := r.Append(ctx, name, 1, rec2); err != nil {
		t.Fatalf("append with %s dead: %v", c.nodes[order[0]].id, err)
	}
	for _, i := range order[1:] {
		want := i == order[1] || i == order[2]
		if got := c.has(t, i, name, 1, 2); got != want {
			t.Fatalf("node %s (rank %d) holds the failed-over append: %v, want %v", c.nodes[i].id, slices.Index(order, i), got, want)
		}
	}
	// The dead node comes back without the record; the replacement dies:
	// a takeover's Read still finds it (on the other copy) and seals.
	c.restart(order[0])
	c.stop(order[2])
	got, err := r.Read(ctx, name, 2)
	if err != nil {
		t.Fatal(err)
	}
	journaltest.Same(t, got, append(slices.Clone(first), rec2...)...)
	if err := r.Append(ctx, name, 1, []journal.Record{rec(1, 3, 10)}); !errors.Is(err, journal.ErrFenced) {
		t.Fatalf("old writer's append after the takeover: %v, want ErrFenced", err)
	}
	// The new owner appends around the dead replacement.
	if err := r.Append(ctx, name, 2, []journal.Record{rec(2, 1, 10)}); err != nil {
		t.Fatal(err)
	}
	c.restart(order[2])

	// A node sealed at a newer epoch aborts the append even though other
	// nodes would take it: the spares never see it.
	const name2 = "pool/fenced"
	order = c.ranking(name2, 2)
	if _, err := c.nodes[order[0]].dir.Read(ctx, name2, 7); err != nil {
		t.Fatal(err)
	}
	err = r.Append(ctx, name2, 6, []journal.Record{rec(6, 1, 10)})
	if !errors.Is(err, journal.ErrFenced) || !strings.Contains(err.Error(), c.nodes[order[0]].id) {
		t.Fatalf("append to a sealed first node: %v, want ErrFenced from %s", err, c.nodes[order[0]].id)
	}
	for _, i := range order[2:] {
		if c.has(t, i, name2, 6, 1) {
			t.Fatalf("a fenced append reached spare %s", c.nodes[i].id)
		}
	}

	// Three of four dead: one reachable node is too few for 2 copies.
	order = c.ranking(name, 2)
	for _, i := range order[1:] {
		c.stop(i)
	}
	err = r.Append(ctx, name, 2, []journal.Record{rec(2, 2, 10)})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "acknowledged by 1 of the 2 nodes") {
		t.Fatalf("append with 3 of 4 nodes dead: %v", err)
	}
	for _, i := range order[1:] {
		if !strings.Contains(err.Error(), c.nodes[i].id) {
			t.Fatalf("the error does not name dead node %s: %v", c.nodes[i].id, err)
		}
	}
}

// TestReplicatedFencing: a Read sealed at E makes appends at E-1 fail.
func TestReplicatedFencing(t *testing.T) {
	c := startCluster(t, 3, true)
	r := c.replicated(2)
	ctx := testCtx(t)
	if err := r.Append(ctx, "vd", 4, []journal.Record{rec(4, 1, 10)}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(ctx, "vd", 5); err != nil {
		t.Fatal(err)
	}
	err := r.Append(ctx, "vd", 4, []journal.Record{rec(4, 2, 10)})
	if !errors.Is(err, journal.ErrFenced) || !strings.Contains(err.Error(), "sealed at epoch 5") {
		t.Fatalf("append at the old epoch: %v", err)
	}
	if err := r.Append(ctx, "vd", 5, []journal.Record{rec(5, 1, 10)}); err != nil {
		t.Fatal(err)
	}
	// Bad input fails before any node is asked.
	if err := r.Append(ctx, "vd", 5, []journal.Record{rec(6, 1, 10)}); !errors.Is(err, journal.ErrInvalid) {
		t.Fatalf("mixed epochs: %v", err)
	}
}

// TestReplicatedUnavailable: too few nodes answering is a clear
// ErrUnavailable.
func TestReplicatedUnavailable(t *testing.T) {
	c := startCluster(t, 4, true)
	r := c.replicated(2)
	ctx := testCtx(t)
	if err := r.Append(ctx, "vd", 1, []journal.Record{rec(1, 1, 10)}); err != nil {
		t.Fatal(err)
	}
	// One node down of four: reads and trims go on.
	c.stop(3)
	if _, err := r.Read(ctx, "vd", 0); err != nil {
		t.Fatal(err)
	}
	// Two down: fewer than all but one answer.
	c.stop(2)
	_, err := r.Read(ctx, "vd", 2)
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "needs answers from 3 of 4 nodes") ||
		!strings.Contains(err.Error(), "2 answered") {
		t.Fatalf("read with 2 of 4 nodes: %v", err)
	}
	if err := r.Trim(ctx, "vd", 1, 1); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("trim with 2 of 4 nodes: %v", err)
	}
	// With 3 copies, two silent nodes of four are tolerated.
	if _, err := r.WithCopies(3).Read(ctx, "vd", 0); err != nil {
		t.Fatalf("read with 3 copies and 2 of 4 nodes: %v", err)
	}
	// Fewer eligible nodes than copies.
	c.setState(1, placement.Removed)
	c.setState(2, placement.Down)
	c.setState(3, placement.Down)
	err = r.Append(ctx, "vd", 1, []journal.Record{rec(1, 2, 10)})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "needs 2 nodes") {
		t.Fatalf("append with 1 node up: %v", err)
	}
}

// TestReplicatedWithCopies: a view with 3 copies puts appends on 3 nodes.
func TestReplicatedWithCopies(t *testing.T) {
	c := startCluster(t, 4, true)
	r := c.replicated(2).WithCopies(3)
	ctx := testCtx(t)
	want := []journal.Record{rec(1, 1, 100)}
	if err := r.Append(ctx, "vd3", 1, want); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, nd := range c.nodes {
		got, err := nd.dir.Read(ctx, "vd3", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 0 {
			journaltest.Same(t, got, want...)
			n++
		}
	}
	if n != 3 {
		t.Fatalf("the append is on %d nodes, want 3", n)
	}
	if _, err := journal.NewReplicated(journal.ReplicatedConfig{Map: c.Map}); !errors.Is(err, journal.ErrConfig) {
		t.Fatalf("no Dial: %v", err)
	}
}

// BenchmarkReplicatedAppend: one 64 KiB record per append, to 2 loopback
// shard servers whose journals fdatasync.
func BenchmarkReplicatedAppend(b *testing.B) {
	c := startCluster(b, 2, false)
	c.remote = true
	r := c.replicated(2)
	journal.BenchAppends(b, r)
}
