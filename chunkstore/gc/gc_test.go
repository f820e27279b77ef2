package gc_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
	"github.com/zosproject/zos/chunkstore/gc"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/gc")

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func start(t *testing.T, host int) *localcluster.Cluster {
	t.Helper()
	c, err := localcluster.Start(localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, Prefix: lo, FirstHost: host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func put(t *testing.T, s chunkstore.Store, seed uint64, size int) chunkstore.Ref {
	t.Helper()
	r, err := s.Put(ctx(t), storetest.Data(seed, size))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func exists(t *testing.T, s chunkstore.Store, r chunkstore.Ref) bool {
	t.Helper()
	_, err := s.Stat(ctx(t), r)
	if err != nil && !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("stat %s: %v", r.Short(), err)
	}
	return err == nil
}

// shardsOf counts a chunk's shards over every node.
func shardsOf(t *testing.T, c *localcluster.Cluster, r chunkstore.Ref) int {
	n := 0
	for _, nd := range c.Nodes {
		if nd.Disk == nil {
			continue
		}
		infos, err := nd.Disk.EnumerateShards(ctx(t), chunkstore.ShardKey{Ref: r}, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, si := range infos {
			if si.Key.Ref == r {
				n++
			}
		}
	}
	return n
}

func TestMarkAndSweep(t *testing.T) {
	c := start(t, 220)
	live := put(t, c.Store, 1, 300000)
	tiny := put(t, c.Store, 2, 100) // replicated 1+2
	data := storetest.Data(3, 9<<20)
	blobRef, err := blob.Write(ctx(t), c.Store, bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	garbage := []chunkstore.Ref{put(t, c.Store, 10, 500000), put(t, c.Store, 11, 10), put(t, c.Store, 12, 1<<20)}
	reg := prometheus.NewRegistry()
	col, err := gc.New(gc.Config{Store: c.Store, Grace: time.Nanosecond, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer col.Close()
	// Dry run first: counts, deletes nothing.
	dry, err := gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond, DryRun: true}, gc.Refs{live, tiny}, gc.Blobs{blobRef})
	if err != nil || dry.Chunks != 3 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	for _, g := range garbage {
		if !exists(t, c.Store, g) {
			t.Fatal("dry run deleted")
		}
	}
	res, err := col.Run(ctx(t), gc.Refs{live, tiny}, gc.Blobs{blobRef})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", res)
	wantShards := 6 + 3 + 6
	if res.Chunks != 3 || res.Shards != int64(wantShards) || res.Bytes <= 0 || res.Nodes != 6 {
		t.Fatalf("collected %+v; want 3 chunks, %d shards", res, wantShards)
	}
	if res.Marked != 2+1+3 { // live, tiny, the blob's manifest and its 3 data chunks
		t.Fatalf("marked %d chunks, want 6", res.Marked)
	}
	for _, g := range garbage {
		if exists(t, c.Store, g) || shardsOf(t, c, g) != 0 {
			t.Fatalf("garbage %s survived", g.Short())
		}
	}
	for _, r := range []chunkstore.Ref{live, tiny} {
		if !exists(t, c.Store, r) {
			t.Fatalf("live chunk %s collected", r.Short())
		}
	}
	rd, err := blob.Open(ctx(t), c.Store, blobRef)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := rd.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("blob after gc: %v", err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "zos_gc_collected_chunks_total" && mf.GetMetric()[0].GetCounter().GetValue() != 3 {
			t.Fatalf("metric %v", mf)
		}
	}
}

// TestGrace: chunks written within the grace period, or while the mark
// runs, or re-put (deduplicated) while the mark runs, survive.
func TestGrace(t *testing.T) {
	c := start(t, 230)
	old := put(t, c.Store, 1, 100000)
	reused := put(t, c.Store, 2, 100000)
	time.Sleep(5 * time.Millisecond)
	var during chunkstore.Ref
	roots := gc.RootsFunc(func(ctx context.Context, f chunkstore.Fetcher, mark func(chunkstore.Ref)) error {
		// While marking, a writer stores a new chunk and re-puts an old
		// one; neither is referenced by any root yet.
		during = put(t, c.Store, 3, 100000)
		put(t, c.Store, 2, 100000)
		return nil
	})
	res, err := gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond}, roots)
	if err != nil {
		t.Fatal(err)
	}
	if !exists(t, c.Store, during) || !exists(t, c.Store, reused) {
		t.Fatalf("a chunk written during the mark was collected: %+v", res)
	}
	if exists(t, c.Store, old) {
		t.Fatal("old garbage survived")
	}
	if res.Spared < 12 {
		t.Fatalf("spared %d shards, want at least 12", res.Spared)
	}
	// With a long grace, nothing recent goes.
	fresh := put(t, c.Store, 4, 1000)
	res, err = gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Hour})
	if err != nil || res.Shards != 0 || !exists(t, c.Store, fresh) {
		t.Fatalf("grace 1h: %+v %v", res, err)
	}
}

// TestMarkFailureSweepsNothing: a root that fails aborts the collection.
func TestMarkFailureSweepsNothing(t *testing.T) {
	c := start(t, 240)
	g := put(t, c.Store, 1, 1000)
	bad := gc.RootsFunc(func(context.Context, chunkstore.Fetcher, func(chunkstore.Ref)) error {
		return errors.New("raft unavailable")
	})
	if _, err := gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond}, bad); err == nil {
		t.Fatal("collection with a failed root succeeded")
	}
	if !exists(t, c.Store, g) {
		t.Fatal("swept after a failed mark")
	}
	// A blob root whose manifest is missing also fails the mark.
	if _, err := gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond}, gc.Blobs{chunkstore.Sum([]byte("gone"))}); err == nil {
		t.Fatal("missing blob root accepted")
	}
	if !exists(t, c.Store, g) {
		t.Fatal("swept after a failed mark")
	}
}

// TestDownNodeSkipped: a node marked down is not swept; an unreachable up
// node is reported and the others are swept.
func TestDownNodeSkipped(t *testing.T) {
	c := start(t, 244)
	g := put(t, c.Store, 1, 200000)
	c.Stop(5)
	res, err := gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond})
	if !chunkstore.IsTransient(err) || len(res.Skipped) != 1 || res.Nodes != 5 {
		t.Fatalf("unreachable node: %+v %v", res, err)
	}
	c.SetState(c.Nodes[5].ID, placement.Down)
	res, err = gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond})
	if err != nil || len(res.Skipped) != 0 || res.Nodes != 5 {
		t.Fatalf("down node: %+v %v", res, err)
	}
	if n := shardsOf(t, c, g); n != 0 {
		t.Fatalf("%d shards of the garbage chunk left on up nodes", n)
	}
	// The node returns with its copy; the next collection takes it.
	if err := c.Restart(5); err != nil {
		t.Fatal(err)
	}
	c.SetState(c.Nodes[5].ID, placement.Up)
	// Wait out the client's dial backoff.
	cl, _ := c.Pool.Get(c.Nodes[5].Addr)
	wait.For(t, 30*time.Second, "the restarted node to answer", func() bool { return cl.Ping(ctx(t)) == nil })
	if n := shardsOf(t, c, g); n != 1 {
		t.Fatalf("%d shards on the returned node, want 1", n)
	}
	res, err = gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond})
	if err != nil || res.Shards != 1 || shardsOf(t, c, g) != 0 {
		t.Fatalf("after the node returned: %+v %v", res, err)
	}
}

// TestTwoProfiles: a chunk being re-encoded has shards in two profiles; GC
// treats them all as that chunk: a marked chunk keeps both, an unmarked
// one loses both.
func TestTwoProfiles(t *testing.T) {
	c := start(t, 240)
	dl := storetest.Data(20, 400000)
	dg := storetest.Data(21, 400000)
	live := put(t, c.Store, 20, 400000)
	garbage := put(t, c.Store, 21, 400000)
	view, err := c.Store.WithProfile(chunkstore.Profile{K: 2, M: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range [][]byte{dl, dg} {
		if _, err := view.Put(ctx(t), d); err != nil {
			t.Fatal(err)
		}
	}
	if n := shardsOf(t, c, live); n != 10 {
		t.Fatalf("live chunk has %d shards, want 6 + 4", n)
	}
	res, err := gc.Collect(ctx(t), gc.Config{Store: c.Store, Grace: time.Nanosecond}, gc.Refs{live})
	if err != nil {
		t.Fatal(err)
	}
	if res.Chunks != 1 || res.Shards != 10 {
		t.Fatalf("collected %+v; want 1 chunk, 10 shards", res)
	}
	if n := shardsOf(t, c, live); n != 10 {
		t.Fatalf("live chunk has %d shards after gc, want 10", n)
	}
	if n := shardsOf(t, c, garbage); n != 0 {
		t.Fatalf("garbage chunk has %d shards after gc", n)
	}
}
