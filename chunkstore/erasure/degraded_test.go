package erasure_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// degradedStore returns an erasure store over c's nodes (and c's map,
// which keeps every node up: the nodes tests stop are dead but not marked
// down) with its own metrics registry and a quick pending-repair round.
func degradedStore(t *testing.T, c *localcluster.Cluster, p chunkstore.Profile, mod func(*erasure.Config)) (*erasure.Store, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := erasure.Config{Map: c.Map(), Profile: p, Dialer: erasure.PoolDialer(c.Pool, nil), Registry: reg, PendingInterval: 100 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	s, err := erasure.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, reg
}

// homedOn counts the chunks (written with their store's profile for their
// size) that have a home on one of the nodes.
func homedOn(s *erasure.Store, chunks map[chunkstore.Ref][]byte, nodes ...string) int {
	n := 0
	for ref, d := range chunks {
		homes := s.Placer().PlaceIDs(ref, s.ProfileFor(len(d)).N())
		if slices.ContainsFunc(homes, func(id string) bool { return slices.Contains(nodes, id) }) {
			n++
		}
	}
	return n
}

// writeBoth stores chunks with Put (half) and PutMany (the other half and
// a duplicate), and returns them by Ref.
func writeBoth(t *testing.T, s *erasure.Store, seed uint64, sizes []int) map[chunkstore.Ref][]byte {
	t.Helper()
	out := map[chunkstore.Ref][]byte{}
	var batch [][]byte
	for i, size := range sizes {
		d := storetest.Data(seed+uint64(i), size)
		if i%2 == 0 {
			ref, err := s.Put(ctx(t), d)
			if err != nil {
				t.Fatalf("put %d (%d bytes): %v", i, size, err)
			}
			out[ref] = d
			continue
		}
		batch = append(batch, d)
	}
	batch = append(batch, batch[0])
	refs, err := s.PutMany(ctx(t), batch)
	if err != nil {
		t.Fatalf("PutMany of %d chunks: %v", len(batch), err)
	}
	for i, ref := range refs {
		out[ref] = batch[i]
	}
	return out
}

// waitPendingHealed waits until the store has no pending repairs and every
// chunk has all its shards at home.
func waitPendingHealed(t *testing.T, s *erasure.Store, chunks map[chunkstore.Ref][]byte) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var bad error
		if p := s.Pending(); p.Chunks > 0 {
			bad = errors.New("pending repairs left")
		}
		for ref := range chunks {
			if bad != nil {
				break
			}
			st, err := s.Inspect(ctx(t), ref)
			if err != nil {
				bad = err
			} else if st.Healthy != st.Profile.N() {
				bad = errors.New("chunk " + ref.Short() + " still lacks shards")
			}
		}
		if bad == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("degraded chunks not repaired: %v; pending %+v", bad, s.Pending())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var degradedSizes = []int{100 << 10, 1000, 1 << 20, 16 << 10, 300 << 10, 50 << 10, 4 << 20, 200, 64 << 10, 8 << 10, 700 << 10, 2 << 10}

// TestDegradedWriteThreeNodes: 3 nodes, 2+1, one server stopped (dead, the
// map still says up): Put and PutMany succeed with the shards of the two
// live homes, every chunk reads back, the degraded writes are counted and
// pending; two stopped is ErrUnavailable naming both, with nothing
// acknowledged or remembered; once the servers are back on their
// directories the pending repairs rebuild every missing shard.
func TestDegradedWriteThreeNodes(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, Dir: t.TempDir(), NoSync: true, FirstHost: 140, RequestTimeout: 5 * time.Second})
	s, reg := degradedStore(t, c, chunkstore.Profile{K: 2, M: 1}, nil)
	dead := c.Nodes[2].ID
	c.Stop(2)
	chunks := writeBoth(t, s, 1000, degradedSizes)
	readAll(t, s, chunks)
	want := homedOn(s, chunks, dead) // tiny 1+1 chunks may avoid it
	if want < len(chunks)/2 {
		t.Fatalf("only %d of %d chunks have a home on the dead node", want, len(chunks))
	}
	for ref, d := range chunks {
		st, err := s.Inspect(ctx(t), ref)
		if err != nil {
			t.Fatal(err)
		}
		p := s.ProfileFor(len(d))
		if slices.Contains(s.Placer().PlaceIDs(ref, p.N()), dead) && st.Healthy != p.N()-1 {
			t.Fatalf("chunk %s (%s) has %d shards at home, want %d", ref.Short(), p, st.Healthy, p.N()-1)
		}
	}
	if got := metric(t, reg, "zos_chunk_degraded_puts_total"); got != float64(want) {
		t.Errorf("zos_chunk_degraded_puts_total = %v, want %d", got, want)
	}
	p := s.Pending()
	if p.Chunks != want || len(p.Nodes) != 1 || p.Nodes[0].Node != dead || p.Nodes[0].Chunks != want {
		t.Fatalf("pending %+v, want %d chunks all on %s", p, want, dead)
	}

	// Two dead: one live home of three is fewer than k.
	dead2 := c.Nodes[1].ID
	c.Stop(1)
	d := storetest.Data(77, 200<<10)
	_, err := s.Put(ctx(t), d)
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), dead) || !strings.Contains(err.Error(), dead2) ||
		!strings.Contains(err.Error(), "need 2") {
		t.Fatalf("put with 2 of 3 nodes dead: %v, want ErrUnavailable naming %s and %s", err, dead, dead2)
	}
	batch := [][]byte{storetest.Data(78, 30<<10), storetest.Data(79, 90<<10)}
	_, err = s.PutMany(ctx(t), batch)
	var be *chunkstore.BatchError
	if !errors.As(err, &be) || !slices.Equal(be.Failed, []int{0, 1}) || !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("PutMany with 2 of 3 nodes dead: %v, want both chunks failed with ErrUnavailable", err)
	}
	if got := s.Pending().Chunks; got != want {
		t.Fatalf("failed writes changed the pending repairs: %d, want %d", got, want)
	}

	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(2); err != nil {
		t.Fatal(err)
	}
	waitPendingHealed(t, s, chunks)
	readAll(t, c.Store, chunks)
	if got := metric(t, reg, "zos_chunk_pending_repaired_total"); got != float64(want) {
		t.Errorf("zos_chunk_pending_repaired_total = %v, want %d", got, want)
	}
}

// TestDegradedWriteSixNodes: 6 nodes, 4+2: one dead leaves 5 live homes
// and the quorum at k+1 (5 shards stored); two dead leave 4 = k live homes
// and the quorum at k; three dead is ErrUnavailable. Restarted, every
// missing shard is rebuilt (at a limited rate).
func TestDegradedWriteSixNodes(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, Dir: t.TempDir(), NoSync: true, FirstHost: 150, RequestTimeout: 5 * time.Second})
	s, reg := degradedStore(t, c, chunkstore.Profile{K: 4, M: 2}, func(cfg *erasure.Config) { cfg.PendingRate = 64 << 20 })
	c.Stop(0)
	one := writeBoth(t, s, 2000, degradedSizes[:6])
	c.Stop(3)
	two := writeBoth(t, s, 3000, degradedSizes)
	readAll(t, s, one)
	readAll(t, s, two)
	for ref, d := range two {
		st, err := s.Inspect(ctx(t), ref)
		if err != nil {
			t.Fatal(err)
		}
		p := s.ProfileFor(len(d))
		homes := s.Placer().PlaceIDs(ref, p.N())
		lost := 0
		for _, id := range homes {
			if id == c.Nodes[0].ID || id == c.Nodes[3].ID {
				lost++
			}
		}
		if st.Healthy != p.N()-lost || st.Healthy < int(p.K) {
			t.Fatalf("chunk %s (%s) has %d shards at home with %d homes dead", ref.Short(), p, st.Healthy, lost)
		}
	}
	want := homedOn(s, one, c.Nodes[0].ID) + homedOn(s, two, c.Nodes[0].ID, c.Nodes[3].ID)
	if got := metric(t, reg, "zos_chunk_degraded_puts_total"); got != float64(want) {
		t.Errorf("zos_chunk_degraded_puts_total = %v, want %d", got, want)
	}
	c.Stop(5)
	big := storetest.Data(4000, 1<<20) // 4+2 has a home on every node
	if _, err := s.Put(ctx(t), big); !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "need 4") {
		t.Fatalf("4+2 put with 3 of 6 nodes dead: %v", err)
	}
	for _, i := range []int{0, 3, 5} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	for ref, d := range one {
		two[ref] = d
	}
	waitPendingHealed(t, s, two)
}

// TestDegradedWriteRefusingNode: a node that answers with an error (here
// its disk store is closed under a running server) is live: it does not
// lower the quorum, so 2+1 with one refusing home fails, and 4+2 with one
// refusing home stores 5 shards (a partial write, not a degraded one).
// (The stores are on real files: closing a disk store while its server
// reads from it is a data race on pebble's MemFS.)
func TestDegradedWriteRefusingNode(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, Dir: t.TempDir(), NoSync: true, FirstHost: 160, RequestTimeout: 5 * time.Second})
	s, reg := degradedStore(t, c, chunkstore.Profile{K: 2, M: 1}, nil)
	c.Nodes[1].Disk.Close() // the server answers, every write refused
	_, err := s.Put(ctx(t), storetest.Data(5, 100<<10))
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "2 of 3 shards stored, need 3") {
		t.Fatalf("2+1 put with a refusing home: %v, want 2 of 3 stored, need 3", err)
	}
	if strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("a refusing node reported unreachable: %v", err)
	}
	// Refusing plus dead: 2 live homes, quorum k = 2, 1 stored.
	c.Stop(2)
	_, err = s.PutMany(ctx(t), [][]byte{storetest.Data(6, 100<<10)})
	if !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "1 of 3 shards stored, need 2") ||
		!strings.Contains(err.Error(), c.Nodes[2].ID) {
		t.Fatalf("put with one home refusing and one dead: %v", err)
	}
	if got := metric(t, reg, "zos_chunk_degraded_puts_total"); got != 0 {
		t.Errorf("zos_chunk_degraded_puts_total = %v after failed puts", got)
	}

	c6 := start(t, localcluster.Config{Nodes: 6, Dir: t.TempDir(), NoSync: true, FirstHost: 170, RequestTimeout: 5 * time.Second})
	s6, reg6 := degradedStore(t, c6, chunkstore.Profile{K: 4, M: 2}, nil)
	c6.Nodes[4].Disk.Close()
	d := storetest.Data(7, 1<<20)
	ref, err := s6.Put(ctx(t), d)
	if err != nil {
		t.Fatalf("4+2 put with one refusing home: %v", err)
	}
	if got, err := s6.Fetch(ctx(t), ref); err != nil || !bytes.Equal(got, d) {
		t.Fatalf("read back: %v", err)
	}
	if got := metric(t, reg6, "zos_chunk_partial_puts_total"); got != 1 {
		t.Errorf("zos_chunk_partial_puts_total = %v, want 1", got)
	}
	if got := metric(t, reg6, "zos_chunk_degraded_puts_total"); got != 0 {
		t.Errorf("zos_chunk_degraded_puts_total = %v, want 0 (the node answered)", got)
	}
	// A second refusing home: 5 live, quorum 5, 4 stored.
	c6.Nodes[5].Disk.Close()
	if _, err := s6.Put(ctx(t), storetest.Data(8, 1<<20)); !errors.Is(err, chunkstore.ErrUnavailable) || !strings.Contains(err.Error(), "need 5") {
		t.Fatalf("4+2 put with two refusing homes: %v, want need 5", err)
	}
	// Their stores back, the first refusing node gets its shard from the
	// pending repair.
	for _, i := range []int{4, 5} {
		c6.Stop(i)
		if err := c6.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	waitPendingHealed(t, s6, map[chunkstore.Ref][]byte{ref: d})
}

// TestPendingOverflow: past PendingLimit, degraded chunks are not
// remembered but counted; when their node answers, HealNeeded is called
// for it, and the remembered ones are rebuilt.
func TestPendingOverflow(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 3, NoSync: true, FirstHost: 175, RequestTimeout: 5 * time.Second})
	called := make(chan string, 10)
	s, reg := degradedStore(t, c, chunkstore.Profile{K: 2, M: 1}, func(cfg *erasure.Config) {
		cfg.PendingLimit = 2
		cfg.HealNeeded = func(node string) { called <- node }
	})
	dead := c.Nodes[0].ID
	c.Stop(0)
	chunks := map[chunkstore.Ref][]byte{}
	for i := range 5 {
		d := storetest.Data(uint64(9000+i), 64<<10)
		ref, err := s.Put(ctx(t), d)
		if err != nil {
			t.Fatal(err)
		}
		chunks[ref] = d
	}
	p := s.Pending()
	if p.Chunks != 2 || p.Dropped != 3 || len(p.Nodes) != 1 || p.Nodes[0].Dropped != 3 {
		t.Fatalf("pending %+v, want 2 chunks remembered and 3 dropped for %s", p, dead)
	}
	if got := metric(t, reg, "zos_chunk_pending_repairs_dropped_total"); got != 3 {
		t.Errorf("zos_chunk_pending_repairs_dropped_total = %v, want 3", got)
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	select {
	case node := <-called:
		if node != dead {
			t.Fatalf("HealNeeded(%s), want %s", node, dead)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("HealNeeded not called after the node came back")
	}
	wait.Until(t, 2*time.Minute, func() error {
		if p := s.Pending(); p.Chunks > 0 || len(p.Nodes) > 0 {
			return fmt.Errorf("pending repairs left: %+v", p)
		}
		return nil
	})
	healed := 0
	for ref := range chunks {
		if st, err := s.Inspect(ctx(t), ref); err == nil && st.Healthy == 3 {
			healed++
		}
	}
	if healed != 2 {
		t.Fatalf("%d chunks healed by the pending list, want the 2 remembered", healed)
	}
}

// TestPendingNodeRemovedOrOut: pending repairs for a node wait while the
// map says it is down, are dropped when it is removed (heal rebuilds its
// shards elsewhere) and by ForgetPending (out).
func TestPendingNodeRemovedOrOut(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, NoSync: true, FirstHost: 180, RequestTimeout: 5 * time.Second})
	s, _ := degradedStore(t, c, chunkstore.Profile{K: 4, M: 2}, nil)
	c.Stop(0)
	c.Stop(1)
	for i := range 8 {
		if _, err := s.Put(ctx(t), storetest.Data(uint64(500+i), 64<<10)); err != nil {
			t.Fatal(err)
		}
	}
	p := s.Pending()
	if len(p.Nodes) != 2 {
		t.Fatalf("pending %+v, want backlogs on two nodes", p)
	}
	m := c.Map()
	m.Epoch++
	m.Nodes[0].State = placement.Down
	m.Nodes[1].State = placement.Removed
	if err := s.SetMap(m); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		p = s.Pending()
		if len(p.Nodes) == 1 && p.Nodes[0].Node == c.Nodes[0].ID {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending %+v after %s was removed, want only %s's backlog", p, c.Nodes[1].ID, c.Nodes[0].ID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.ForgetPending(c.Nodes[0].ID); n != int64(p.Nodes[0].Chunks) {
		t.Fatalf("ForgetPending dropped %d, want %d", n, p.Nodes[0].Chunks)
	}
	if p := s.Pending(); p.Chunks != 0 || len(p.Nodes) != 0 {
		t.Fatalf("pending %+v after ForgetPending", p)
	}
}

func TestWriteQuorum(t *testing.T) {
	for _, tc := range []struct {
		p          chunkstore.Profile
		live, want int
	}{
		{chunkstore.Profile{K: 2, M: 1}, 3, 3},
		{chunkstore.Profile{K: 2, M: 1}, 2, 2},
		{chunkstore.Profile{K: 2, M: 1}, 1, 2}, // never below k: fails
		{chunkstore.Profile{K: 4, M: 2}, 6, 5},
		{chunkstore.Profile{K: 4, M: 2}, 5, 5},
		{chunkstore.Profile{K: 4, M: 2}, 4, 4},
		{chunkstore.Profile{K: 1, M: 2}, 1, 1},
		{chunkstore.Profile{K: 3, M: 0}, 2, 3}, // k+0: all, always
	} {
		if got := erasure.WriteQuorum(tc.p, tc.live); got != tc.want {
			t.Errorf("WriteQuorum(%s, %d live) = %d, want %d", tc.p, tc.live, got, tc.want)
		}
	}
}
