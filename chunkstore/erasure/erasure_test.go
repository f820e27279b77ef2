package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/erasure"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/placement"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/loopback"
	"github.com/zosproject/zos/internal/testcluster/wait"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/erasure")

func start(t *testing.T, cfg localcluster.Config) *localcluster.Cluster {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = lo
	}
	c, err := localcluster.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestConformance runs the suite over 6 real shard servers on TCP, 4+2.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chunkstore.Store {
		return start(t, localcluster.Config{Nodes: 6, Profile: chunkstore.Profile{K: 4, M: 2}}).Store
	})
}

// TestConformanceSmall runs it over 3 nodes (2+1) and over 1 node (1+0).
func TestConformanceSmall(t *testing.T) {
	for _, n := range []int{3, 1} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) chunkstore.Store {
				return start(t, localcluster.Config{Nodes: n, FirstHost: 40}).Store
			})
		})
	}
	// k+0, the profile of cache data: no redundancy, three data shards.
	t.Run("3+0", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) chunkstore.Store {
			return start(t, localcluster.Config{Nodes: 3, Profile: chunkstore.Profile{K: 3, M: 0}, FirstHost: 45}).Store
		})
	})
}

func TestCodec(t *testing.T) {
	c := erasure.NewCodec()
	for _, p := range []chunkstore.Profile{{K: 4, M: 2}, {K: 1, M: 2}, {K: 3, M: 0}, {K: 10, M: 4}} {
		for _, size := range []int{0, 1, 5, 4096, 1<<20 + 7} {
			data := storetest.Data(uint64(size), size)
			shards, err := c.Encode(p, data)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Decode(p, size, shards)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s %d: healthy decode: %v", p, size, err)
			}
			if p.M == 0 || size == 0 {
				continue
			}
			// Lose m shards, data ones first.
			lost := append([][]byte(nil), shards...)
			for i := range int(p.M) {
				lost[i] = nil
			}
			got, err = c.Decode(p, size, lost)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s %d: degraded decode: %v", p, size, err)
			}
			lost[p.M] = nil
			if _, err := c.Decode(p, size, lost); err == nil {
				t.Fatalf("%s: decoded with m+1 shards lost", p)
			}
		}
	}
	if _, err := c.Encode(chunkstore.Profile{K: 0, M: 1}, nil); err == nil {
		t.Fatal("0+1 accepted")
	}
}

func TestDefaultProfileAndDurability(t *testing.T) {
	if got := erasure.MinDurable(chunkstore.Profile{K: 4, M: 2}); got != 5 {
		t.Fatalf("MinDurable(4+2) = %d", got)
	}
	if got := erasure.MinDurable(chunkstore.Profile{K: 3, M: 0}); got != 3 {
		t.Fatalf("MinDurable(3+0) = %d", got)
	}
}

func putMany(t *testing.T, s chunkstore.Store, n int, seed uint64) map[chunkstore.Ref][]byte {
	t.Helper()
	out := map[chunkstore.Ref][]byte{}
	for i := range n {
		d := storetest.Data(seed+uint64(i), 20000+int(seed+uint64(i))%300000)
		ref, err := s.Put(ctx(t), d)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		out[ref] = d
	}
	return out
}

func readAll(t *testing.T, s chunkstore.Store, want map[chunkstore.Ref][]byte) {
	t.Helper()
	for ref, d := range want {
		got, err := s.Fetch(ctx(t), ref)
		if err != nil {
			t.Fatalf("fetch %s: %v", ref.Short(), err)
		}
		if !bytes.Equal(got, d) {
			t.Fatalf("fetch %s: wrong bytes", ref.Short())
		}
	}
}

// TestDegradedReads: with two of six servers stopped (and the map not yet
// told), every chunk still reads; writes succeed degraded, and in full
// after the map marks them down.
func TestDegradedReads(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 50, RequestTimeout: 5 * time.Second})
	want := putMany(t, c.Store, 30, 1)
	c.Stop(1)
	c.Stop(4)
	readAll(t, c.Store, want)
	// Unknown to the map, 6 nodes give every 4+2 chunk 6 homes: with two
	// of them dead the write quorum is k = 4 (see WriteQuorum).
	readAll(t, c.Store, putMany(t, c.Store, 3, 1234))
	c.SetState(c.Nodes[1].ID, placement.Down)
	c.SetState(c.Nodes[4].ID, placement.Down)
	more := putMany(t, c.Store, 10, 100)
	readAll(t, c.Store, more)
	readAll(t, c.Store, want)
	// The new chunks are fully stored on the four up nodes.
	for ref := range more {
		st, err := c.Store.Inspect(ctx(t), ref)
		if err != nil || st.Healthy != st.Profile.N() {
			t.Fatalf("chunk written with 2 nodes down: %+v %v", st, err)
		}
	}
}

// TestReadRepair: a shard deleted from its home (or corrupted there) is
// rewritten in the background after a read.
func TestReadRepair(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 60})
	d := storetest.Data(5, 500000)
	ref, err := c.Store.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Store.ProfileFor(len(d))
	homes := c.Store.Placer().Place(ref, p.N())
	// Delete data shard 1 at its home; corrupt data shard 2 at its home.
	n1 := c.Node(homes[1].ID)
	if _, err := n1.Disk.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: ref, Profile: p, Index: 1}}, 0); err != nil {
		t.Fatal(err)
	}
	n2 := c.Node(homes[2].ID)
	corruptShard(t, n2, chunkstore.ShardKey{Ref: ref, Profile: p, Index: 2})
	got, err := c.Store.Fetch(ctx(t), ref)
	if err != nil || !bytes.Equal(got, d) {
		t.Fatalf("degraded fetch: %v", err)
	}
	waitHealthy(t, c.Store, ref)
}

func waitHealthy(t *testing.T, s *erasure.Store, ref chunkstore.Ref) {
	t.Helper()
	wait.Until(t, time.Minute, func() error {
		st, err := s.Inspect(ctx(t), ref)
		if err == nil && st.Healthy != st.Profile.N() {
			err = fmt.Errorf("chunk %s not repaired: %+v", ref.Short(), st)
		}
		return err
	})
}

// corruptShard flips a byte of a shard's data in the node's (in-memory)
// segment file.
func corruptShard(t *testing.T, n *localcluster.Node, k chunkstore.ShardKey) {
	t.Helper()
	loc, err := n.Disk.Where(k)
	if err != nil {
		t.Fatal(err)
	}
	f, err := n.FS.OpenReadWrite(loc.File, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	f.ReadAt(b, loc.DataOffset+loc.Size/2)
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, loc.DataOffset+loc.Size/2); err != nil {
		t.Fatal(err)
	}
}

// TestTinyChunksReplicated: small chunks are stored as 1+m copies and read
// from one node.
func TestTinyChunksReplicated(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 70})
	d := []byte("a tiny chunk")
	ref, err := c.Store.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Store.Inspect(ctx(t), ref)
	if err != nil || st.Coding != "1+2" || st.Healthy != 3 {
		t.Fatalf("tiny chunk stored as %+v, %v", st, err)
	}
	got, err := c.Store.Fetch(ctx(t), ref)
	if err != nil || !bytes.Equal(got, d) {
		t.Fatal(err)
	}
}

// TestMapChange: after nodes join, chunks are found at their old homes
// (through the map history, and without it by asking every node).
func TestMapChange(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 4, FirstHost: 80})
	want := putMany(t, c.Store, 20, 7)
	if _, err := c.AddNode(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddNode(); err != nil {
		t.Fatal(err)
	}
	readAll(t, c.Store, want)
	// A store that never saw the old map finds them by asking every node.
	fresh, err := erasure.New(erasure.Config{Map: c.Map(), Dialer: erasure.PoolDialer(c.Pool, nil), Profile: c.Store.Profile()})
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	readAll(t, fresh, want)
	for ref := range want {
		if _, err := fresh.Stat(ctx(t), ref); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnavailable: with too many nodes gone, errors say so instead of
// "not found", and writes fail cleanly.
func TestUnavailable(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 90, RequestTimeout: 3 * time.Second})
	want := putMany(t, c.Store, 5, 3)
	for i := range 3 {
		c.Stop(i)
	}
	for ref := range want {
		_, err := c.Store.Fetch(ctx(t), ref)
		st, _ := c.Store.Inspect(ctx(t), ref)
		if err == nil {
			// Possible only if the chunk had k shards on the 3 live nodes.
			if st.Profile.K > 3 {
				t.Fatalf("read %s with 3 of 6 nodes", ref.Short())
			}
			continue
		}
		if !chunkstore.IsTransient(err) {
			t.Fatalf("fetch with 3 nodes down: %v, want ErrUnavailable", err)
		}
	}
	if _, err := c.Store.Put(ctx(t), storetest.Data(99, 100000)); !chunkstore.IsTransient(err) {
		t.Fatalf("put with 3 of 6 nodes down: %v", err)
	}
	if _, err := c.Store.Fetch(ctx(t), chunkstore.Sum([]byte("nothing"))); err == nil {
		t.Fatal("fetch of an unknown chunk succeeded")
	}
}

// TestHungNode: a node that accepts and never answers costs a timeout, not
// a hang, and reads and writes still succeed.
func TestHungNode(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 100, RequestTimeout: 2 * time.Second})
	want := putMany(t, c.Store, 10, 11)
	// Node 2's address now leads to a listener that accepts and hangs.
	addr := c.Nodes[2].Addr
	c.Stop(2)
	hang := hangingListener(t, addr)
	defer hang()
	done := make(chan struct{})
	go func() {
		defer close(done)
		readAll(t, c.Store, want)
		// Writes acknowledged with one home hanging are all readable.
		readAll(t, c.Store, putMany(t, c.Store, 5, 200))
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("store hung on a hanging node")
	}
}

func TestRefErrors(t *testing.T) {
	if _, err := chunkstore.ParseRef("abc"); !errors.Is(err, chunkstore.ErrBadRef) {
		t.Fatalf("short ref: %v", err)
	}
	if _, err := chunkstore.ParseRef(string(bytes.Repeat([]byte("zz"), 32))); !errors.Is(err, chunkstore.ErrBadRef) {
		t.Fatalf("non-hex ref: %v", err)
	}
}

// TestEncodeShared: the no-copy encoding gives the same shards as Encode,
// for every size around the shard boundaries, with and without parity.
func TestEncodeShared(t *testing.T) {
	c := erasure.NewCodec()
	for _, p := range []chunkstore.Profile{{K: 4, M: 2}, {K: 3, M: 0}, {K: 1, M: 2}, {K: 5, M: 3}} {
		for _, n := range []int{0, 1, 3, 4, 5, 4095, 4096, 4097, 65536, 1<<20 + 3, 4 << 20} {
			d := storetest.Data(uint64(n), n)
			want, err := c.Encode(p, d)
			if err != nil {
				t.Fatal(err)
			}
			// A dirty pool must not leak into the padding.
			for range 3 {
				got, release, err := c.EncodeShared(p, d)
				if err != nil {
					t.Fatal(err)
				}
				for i := range want {
					if !bytes.Equal(got[i], want[i]) {
						t.Fatalf("%s, %d bytes: shard %d differs", p, n, i)
					}
				}
				for i := range got {
					for j := range got[i] {
						got[i][j] = 0xab
					}
				}
				release()
				d = storetest.Data(uint64(n), n) // the caller's data was scribbled on too
			}
		}
	}
}

// damagingStore damages every shard it returns unverified, as a faulty
// network or NIC would after the server verified it.
type damagingStore struct{ chunkstore.ShardStore }

func (s damagingStore) GetShardsUnverified(ctx context.Context, keys []chunkstore.ShardKey) ([]chunkstore.ShardResult, error) {
	res, err := s.ShardStore.(chunkstore.UnverifiedGetter).GetShardsUnverified(ctx, keys)
	for i := range res {
		if res[i].Err == nil && len(res[i].Shard.Data) > 0 {
			res[i].Shard.Data[len(res[i].Shard.Data)/2] ^= 0x5a
		}
	}
	return res, err
}

// A read does not checksum remote shards on arrival (their server did, and
// the chunk is checked against its Ref); when that check fails, the
// shards are checksummed, the damaged one is replaced by another, and the
// read returns the right bytes.
func TestShardDamagedInTransit(t *testing.T) {
	c := start(t, localcluster.Config{Nodes: 6, FirstHost: 110})
	d := storetest.Data(9, 1<<20)
	ref, err := c.Store.Put(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Store.ProfileFor(len(d))
	bad := c.Store.Placer().Place(ref, p.N())[1].ID // home of data shard 1
	st, err := erasure.New(erasure.Config{Map: c.Map(), Profile: c.Store.Profile(),
		Dialer: erasure.DialFunc(func(n placement.Node) (chunkstore.ShardStore, error) {
			s, err := c.Pool.Get(n.Addr)
			if err != nil || n.ID != bad {
				return s, err
			}
			return damagingStore{s}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Fetch(ctx(t), ref)
	if err != nil || !bytes.Equal(got, d) {
		t.Fatalf("fetch through a damaging link: %v (equal %v)", err, bytes.Equal(got, d))
	}
	// The undamaged path reads without the detour.
	if got, err := c.Store.Fetch(ctx(t), ref); err != nil || !bytes.Equal(got, d) {
		t.Fatalf("fetch: %v", err)
	}
}
