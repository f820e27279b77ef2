package erasure_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
)

func TestFitProfile(t *testing.T) {
	for _, c := range []struct {
		p     string
		units int
		want  string
	}{
		{"4+2", 6, "4+2"}, {"4+2", 7, "4+2"}, {"4+2", 5, "3+2"}, {"4+2", 4, "2+2"}, {"4+2", 3, "1+2"},
		{"4+2", 2, "1+1"}, {"4+2", 1, "4+2"}, {"2+1", 2, "1+1"}, {"2+1", 3, "2+1"}, {"8+3", 10, "7+3"},
		{"8+3", 3, "1+2"}, {"3+0", 2, "3+0"}, {"1+2", 2, "1+1"}, {"2+2", 4, "2+2"},
	} {
		p, _ := chunkstore.ParseProfile(c.p)
		if got := erasure.FitProfile(p, c.units).String(); got != c.want {
			t.Errorf("FitProfile(%s, %d) = %s, want %s", c.p, c.units, got, c.want)
		}
	}
}

func mapOf(up, down int, domains int) placement.Map {
	m := placement.Map{Epoch: 1}
	for i := range up + down {
		n := placement.Node{ID: fmt.Sprintf("n%02d", i), Addr: "x", Weight: 1, State: placement.Up}
		if i >= up {
			n.State = placement.Removed
		}
		if domains > 0 {
			n.Domain = fmt.Sprintf("rack%d", i%domains)
		}
		m.Nodes = append(m.Nodes, n)
	}
	return m
}

func TestFit(t *testing.T) {
	refs := make([]chunkstore.Ref, 200)
	for i := range refs {
		refs[i] = chunkstore.Sum([]byte(fmt.Sprint(i)))
	}
	for _, c := range []struct {
		name     string
		m        placement.Map
		p        string
		want     string // for every ref
		reencode bool
	}{
		{"6 nodes", mapOf(6, 0, 0), "4+2", "4+2", false},
		{"4 of 6", mapOf(4, 2, 0), "4+2", "2+2", true},
		{"5 of 6", mapOf(5, 1, 0), "4+2", "3+2", true},
		{"grown", mapOf(8, 0, 0), "2+2", "2+2", false},
		{"2+1 on 2", mapOf(2, 1, 0), "2+1", "1+1", true},
		// 2+2 on two nodes survives one node as 1+1 would: kept.
		{"2+2 on 2", mapOf(2, 2, 0), "2+2", "2+2", false},
		{"k+0", mapOf(2, 2, 0), "4+0", "4+0", false},
		{"one node", mapOf(1, 5, 0), "4+2", "4+2", false},
		// Six nodes in three racks: racks are what fails together.
		{"3 racks", mapOf(6, 0, 3), "4+2", "1+2", true},
		{"3 racks 2+1", mapOf(6, 0, 3), "2+1", "2+1", false},
	} {
		pl, err := placement.New(c.m)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := chunkstore.ParseProfile(c.p)
		for _, r := range refs {
			got, need := erasure.Fit(pl, r, p)
			if got.String() != c.want || need != c.reencode {
				t.Fatalf("%s: Fit(%s) = %s, %v; want %s, %v", c.name, c.p, got, need, c.want, c.reencode)
			}
		}
	}
}

// TestPutFitsProfile: with fewer up nodes than shards, new chunks are
// written in the profile heal would re-encode them to, and report healthy.
func TestPutFitsProfile(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 130})
	c.Stop(0)
	c.Stop(1)
	c.SetState(c.Nodes[0].ID, placement.Down)
	c.SetState(c.Nodes[1].ID, placement.Down)
	d := storetest.Data(77, 300000)
	ref, err := c.Store.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Store.Inspect(ctx(t), ref)
	if err != nil || st.Coding != "2+2" || st.Degraded || st.Undersized || st.Tolerance != 2 {
		t.Fatalf("chunk put on 4 of 6 nodes: %+v %v", st, err)
	}
}

// TestReprofileStore: Reprofile writes the new profile, then deletes the
// old; Inspect calls the chunk undersized before and healthy after; reads
// work throughout; repeating it is harmless; a repair asked for the old
// profile reports ErrOtherProfile.
func TestReprofileStore(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 140, RequestTimeout: 5e9})
	d := storetest.Data(78, 1<<20)
	ref, err := c.Store.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(2)
	c.SetState(c.Nodes[2].ID, placement.Removed)
	st, err := c.Store.Inspect(ctx(t), ref)
	if err != nil || !st.Undersized || !st.Degraded || st.Target != "3+2" || st.Tolerance != 1 {
		t.Fatalf("4+2 on 5 nodes: %+v %v", st, err)
	}
	from, to := chunkstore.Profile{K: 4, M: 2}, chunkstore.Profile{K: 3, M: 2}
	res, err := c.Store.Reprofile(ctx(t), ref, from, to)
	if err != nil || len(res.Written) != 5 || res.Deleted != 5 || res.To != to {
		t.Fatalf("reprofile: %+v %v", res, err)
	}
	st, err = c.Store.Inspect(ctx(t), ref)
	if err != nil || st.Coding != "3+2" || st.Degraded || st.Healthy != 5 || len(st.Others) != 0 || st.Tolerance != 2 {
		t.Fatalf("after reprofile: %+v %v", st, err)
	}
	got, err := c.Store.Fetch(ctx(t), ref)
	if err != nil || !bytes.Equal(got, d) {
		t.Fatalf("fetch after reprofile: %v", err)
	}
	// Again: nothing to write or delete.
	res, err = c.Store.Reprofile(ctx(t), ref, from, to)
	if err != nil || len(res.Written) != 0 || res.Deleted != 0 {
		t.Fatalf("second reprofile: %+v %v", res, err)
	}
	if _, err := c.Store.RepairPositions(ctx(t), ref, from, []int{0}); !errors.Is(err, erasure.ErrOtherProfile) {
		t.Fatalf("repair of the old profile: %v", err)
	}
	if _, err := c.Store.DropSuperseded(ctx(t), ref, to); !errors.Is(err, erasure.ErrNotSuperseded) {
		t.Fatalf("drop of the only profile: %v", err)
	}
	// Status counts it healthy.
	s, err := c.Store.Status(ctx(t), true)
	if err != nil || s.Census.Healthy != 1 || s.Census.Undersized != 0 || s.Census.Stale != 0 {
		t.Fatalf("status: %+v %v", s.Census, err)
	}
}

// TestDropSupersededOrder: of two complete profiles that both fit, only
// the one ordered after the other may be dropped, so that two nodes can
// never drop both.
func TestDropSupersededOrder(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}, FirstHost: 150})
	d := storetest.Data(79, 500000)
	ref, err := c.Store.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	view, _ := c.Store.WithProfile(chunkstore.Profile{K: 2, M: 2})
	if _, err := view.Put(ctx(t), d); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store.DropSuperseded(ctx(t), ref, chunkstore.Profile{K: 2, M: 2}); !errors.Is(err, erasure.ErrNotSuperseded) {
		t.Fatalf("drop 2+2 while 4+2 complete: %v", err)
	}
	n, err := c.Store.DropSuperseded(ctx(t), ref, chunkstore.Profile{K: 4, M: 2})
	if err != nil || n != 6 {
		t.Fatalf("drop 4+2 while 2+2 complete: %d, %v", n, err)
	}
	st, err := c.Store.Inspect(ctx(t), ref)
	if err != nil || st.Coding != "2+2" || st.Degraded || len(st.Others) != 0 {
		t.Fatalf("after drop: %+v %v", st, err)
	}
	got, err := c.Store.Fetch(ctx(t), ref)
	if err != nil || !bytes.Equal(got, d) {
		t.Fatal(err)
	}
}
