package scrub_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/scrub"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/scrub")

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return c
}

func start(t *testing.T, host int) (*localcluster.Cluster, map[chunkstore.Ref][]byte) {
	t.Helper()
	c, err := localcluster.Start(localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, Dir: t.TempDir(), NoSync: true, Prefix: lo, FirstHost: host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	want := map[chunkstore.Ref][]byte{}
	for i := range 24 {
		d := storetest.Data(uint64(i), 50000+i*40000)
		ref, err := c.Store.Put(ctx(t), d)
		if err != nil {
			t.Fatal(err)
		}
		want[ref] = d
	}
	return c, want
}

// rot overwrites bytes inside n random shards' records in the segment
// files on disk (data or header), at most one shard per chunk so every chunk
// stays recoverable. It returns how many shards it damaged.
func rot(t *testing.T, c *localcluster.Cluster, n int, seed uint64, dataOnly bool) int {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	t.Logf("bitrot seed %d", seed)
	hit := map[chunkstore.Ref]bool{}
	damaged := 0
	for damaged < n {
		node := c.Nodes[rng.IntN(len(c.Nodes))]
		infos, err := node.Disk.EnumerateShards(ctx(t), chunkstore.ShardKey{}, 1000)
		if err != nil || len(infos) == 0 {
			t.Fatal(err)
		}
		si := infos[rng.IntN(len(infos))]
		if hit[si.Key.Ref] || dataOnly && si.Key.Index >= si.Key.Profile.K {
			continue
		}
		hit[si.Key.Ref] = true
		loc, err := node.Disk.Where(si.Key)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(loc.File, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Overwrite 8 bytes somewhere in the record (header or data).
		off := loc.Offset + rng.Int64N(64+loc.Size-8)
		if _, err := f.WriteAt([]byte("BITROT!!"), off); err != nil {
			t.Fatal(err)
		}
		f.Close()
		damaged++
	}
	return damaged
}

func readAll(t *testing.T, c *localcluster.Cluster, want map[chunkstore.Ref][]byte) {
	t.Helper()
	for ref, d := range want {
		got, err := c.Store.Fetch(ctx(t), ref)
		if err != nil || !bytes.Equal(got, d) {
			t.Fatalf("fetch %s: %v", ref.Short(), err)
		}
	}
}

func scrubAll(t *testing.T, c *localcluster.Cluster) (total scrub.Result) {
	t.Helper()
	for _, n := range c.Nodes {
		s, err := scrub.New(scrub.Config{NodeID: n.ID, Local: n.Disk, Store: c.Store})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Run(ctx(t))
		s.Close()
		if err != nil {
			t.Fatalf("scrub %s: %v", n.ID, err)
		}
		total.Scanned += r.Scanned
		total.Bytes += r.Bytes
		total.Corrupt += r.Corrupt
		total.Repaired += r.Repaired
		total.Unrepairable += r.Unrepairable
		total.Errors = append(total.Errors, r.Errors...)
	}
	return total
}

// TestScrubRepairsBitrot: the scrubber finds and repairs every shard whose
// bytes were overwritten on disk.
func TestScrubRepairsBitrot(t *testing.T) {
	c, want := start(t, 190)
	damaged := rot(t, c, 10, uint64(time.Now().UnixNano()), false)
	res := scrubAll(t, c)
	t.Logf("scrub: %+v", res)
	if res.Corrupt != int64(damaged) || res.Repaired != int64(damaged) || res.Unrepairable != 0 {
		t.Fatalf("damaged %d shards; scrub found %d corrupt, repaired %d, unrepairable %d (%v)", damaged, res.Corrupt, res.Repaired, res.Unrepairable, res.Errors)
	}
	if res.Scanned < int64(len(want))*3 {
		t.Fatalf("scanned only %d shards", res.Scanned)
	}
	// Everything healthy: a second scrub finds nothing, Inspect agrees.
	if again := scrubAll(t, c); again.Corrupt != 0 {
		t.Fatalf("second scrub found %d corrupt", again.Corrupt)
	}
	for ref := range want {
		st, err := c.Store.Inspect(ctx(t), ref)
		if err != nil || st.Healthy != st.Profile.N() {
			t.Fatalf("after scrub %s: %+v %v", ref.Short(), st, err)
		}
	}
	readAll(t, c, want)
}

// TestReadsSurviveBitrot: reads return correct bytes from damaged data
// shards and read repair fixes them (parity shards are not read by a healthy
// read; the scrubber is what finds their rot).
func TestReadsSurviveBitrot(t *testing.T) {
	c, want := start(t, 200)
	rot(t, c, 12, uint64(time.Now().UnixNano()), true)
	readAll(t, c, want)
	deadline := time.Now().Add(time.Minute)
	for ref := range want {
		for {
			st, err := c.Store.Inspect(ctx(t), ref)
			if err == nil && st.Healthy == st.Profile.N() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not repaired: %+v %v", st, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if res := scrubAll(t, c); res.Corrupt != 0 {
		t.Fatalf("read repair left %d corrupt shards", res.Corrupt)
	}
}

// TestScheduled: Start runs passes on its interval; Close stops them.
func TestScheduled(t *testing.T) {
	c, _ := start(t, 210)
	n := c.Nodes[0]
	reg := prometheus.NewRegistry()
	s, err := scrub.New(scrub.Config{NodeID: n.ID, Local: n.Disk, Store: c.Store, Interval: 20 * time.Millisecond, RateLimit: 100 << 20, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	wait.For(t, time.Minute, "a scheduled pass", func() bool { return !s.Progress().Finished.IsZero() })
	// Count from the metrics (Close may interrupt a later pass, whose
	// result is what Progress reports then).
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	var scanned float64
	for _, mf := range mfs {
		if mf.GetName() == "zos_scrub_scanned_shards_total" {
			scanned = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if scanned == 0 {
		t.Fatal("scheduled passes scanned nothing")
	}
}
