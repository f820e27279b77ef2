package disk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/storetest"
)

func open(t *testing.T, cfg disk.Config) *disk.Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.CompactInterval == 0 {
		cfg.CompactInterval = -1
	}
	s, err := disk.Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chunkstore.Store {
		return open(t, disk.Config{Registry: prometheus.NewRegistry()}).Chunks()
	})
}

func TestConformanceSmallSegments(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chunkstore.Store {
		return open(t, disk.Config{SegmentSize: 1 << 20, FS: vfs.NewMem(), Dir: "/s"}).Chunks()
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// shardsOf makes the k+m shards of a chunk with fake (but well-shaped)
// contents derived from seed.
func shardsOf(seed uint64, chunkSize int, p chunkstore.Profile) []chunkstore.Shard {
	ref := chunkstore.Sum(storetest.Data(seed, 64))
	size := chunkstore.ShardSize(chunkSize, int(p.K))
	out := make([]chunkstore.Shard, p.N())
	for i := range out {
		out[i] = chunkstore.NewShard(chunkstore.ShardKey{Ref: ref, Profile: p, Index: uint8(i)}, chunkSize, storetest.Data(seed*100+uint64(i), size))
	}
	return out
}

func mustPut(t *testing.T, s chunkstore.ShardStore, sh ...chunkstore.Shard) {
	t.Helper()
	if err := s.PutShards(ctx(t), sh); err != nil {
		t.Fatalf("PutShards: %v", err)
	}
}

func get(t *testing.T, s chunkstore.ShardStore, k chunkstore.ShardKey) chunkstore.ShardResult {
	t.Helper()
	res, err := s.GetShards(ctx(t), []chunkstore.ShardKey{k})
	if err != nil {
		t.Fatalf("GetShards: %v", err)
	}
	return res[0]
}

func checkShard(t *testing.T, s chunkstore.ShardStore, want chunkstore.Shard) {
	t.Helper()
	r := get(t, s, want.Key)
	if r.Err != nil {
		t.Fatalf("get %s: %v", want.Key, r.Err)
	}
	if !bytes.Equal(r.Shard.Data, want.Data) || r.Shard.Sum != want.Sum || r.Shard.ChunkSize != want.ChunkSize {
		t.Fatalf("get %s returned different bytes or header", want.Key)
	}
}

func TestShardOps(t *testing.T) {
	var now time.Time = time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := open(t, disk.Config{Now: clock})
	a := shardsOf(1, 10000, chunkstore.Profile{K: 4, M: 2})
	b := shardsOf(2, 100, chunkstore.Profile{K: 2, M: 1})
	mustPut(t, s, a...)
	mustPut(t, s, b[1:]...)
	for _, sh := range append(a, b[1:]...) {
		checkShard(t, s, sh)
	}
	// Wildcards: index 3 of a under any profile; any shard of b.
	if r := get(t, s, chunkstore.ShardKey{Ref: a[0].Key.Ref, Index: 3}); r.Err != nil || r.Shard.Key != a[3].Key {
		t.Fatalf("wildcard profile get = %v, %v", r.Shard.Key, r.Err)
	}
	if r := get(t, s, chunkstore.ShardKey{Ref: b[0].Key.Ref, Index: chunkstore.AnyIndex}); r.Err != nil || r.Shard.Key != b[1].Key {
		t.Fatalf("wildcard get = %v, %v", r.Shard.Key, r.Err)
	}
	if r := get(t, s, b[0].Key); !errors.Is(r.Err, chunkstore.ErrNotFound) {
		t.Fatalf("missing shard: %v", r.Err)
	}
	st, _ := s.StatShards(ctx(t), []chunkstore.ShardKey{a[2].Key, b[0].Key})
	if st[0].Err != nil || st[0].Shard.Size != a[2].Size || st[0].Shard.Written != now.UnixNano() || st[0].Shard.Data != nil {
		t.Fatalf("stat = %+v", st[0])
	}
	if !errors.Is(st[1].Err, chunkstore.ErrNotFound) {
		t.Fatalf("stat missing = %v", st[1].Err)
	}
	// Enumerate in pages of 2 sees all 8 in key order.
	var all []chunkstore.ShardInfo
	if err := chunkstore.WalkShards(ctx(t), s, chunkstore.ShardKey{}, 2, func(si chunkstore.ShardInfo) error {
		all = append(all, si)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(all) != 8 {
		t.Fatalf("enumerated %d shards, want 8", len(all))
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].Key.Compare(all[i].Key) >= 0 {
			t.Fatalf("enumeration out of order at %d", i)
		}
	}
	// Re-putting refreshes the write time without rewriting.
	before := s.Stats()
	mu.Lock()
	now = time.Unix(2000, 0)
	mu.Unlock()
	mustPut(t, s, a[0])
	after := s.Stats()
	if after.WriteBytes != before.WriteBytes || after.Shards != before.Shards {
		t.Fatalf("re-put rewrote data: %+v -> %+v", before, after)
	}
	st, _ = s.StatShards(ctx(t), []chunkstore.ShardKey{a[0].Key, a[1].Key})
	if st[0].Shard.Written != now.UnixNano() || st[1].Shard.Written != time.Unix(1000, 0).UnixNano() {
		t.Fatalf("written times after touch: %d %d", st[0].Shard.Written, st[1].Shard.Written)
	}
	// Conditional delete: shards of a written before 1500 go, a[0] stays.
	n, err := s.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: a[0].Key.Ref, Index: chunkstore.AnyIndex}}, time.Unix(1500, 0).UnixNano())
	if err != nil || n != 5 {
		t.Fatalf("conditional delete = %d, %v; want 5", n, err)
	}
	checkShard(t, s, a[0])
	if r := get(t, s, a[1].Key); !errors.Is(r.Err, chunkstore.ErrNotFound) {
		t.Fatalf("deleted shard still readable: %v", r.Err)
	}
	// Unconditional wildcard delete.
	n, err = s.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: a[0].Key.Ref, Index: chunkstore.AnyIndex}, {Ref: b[0].Key.Ref, Index: chunkstore.AnyIndex}}, 0)
	if err != nil || n != 3 {
		t.Fatalf("delete = %d, %v; want 3", n, err)
	}
	if st := s.Stats(); st.Shards != 0 || st.Bytes != 0 {
		t.Fatalf("stats after deleting everything: %+v", st)
	}
}

func TestRejectsBadShards(t *testing.T) {
	s := open(t, disk.Config{})
	sh := shardsOf(1, 1000, chunkstore.Profile{K: 2, M: 1})
	bad := sh[0]
	bad.Data = bytes.Clone(bad.Data)
	bad.Data[0] ^= 1
	if err := s.PutShards(ctx(t), []chunkstore.Shard{sh[1], bad}); !chunkstore.IsCorruption(err) {
		t.Fatalf("put with a bad checksum: %v", err)
	}
	wrongSize := chunkstore.NewShard(sh[0].Key, 5000, sh[0].Data)
	if err := s.PutShards(ctx(t), []chunkstore.Shard{wrongSize}); err == nil {
		t.Fatal("shard of the wrong size for its chunk accepted")
	}
	badIdx := sh[0]
	badIdx.Key.Index = 7
	if err := s.PutShards(ctx(t), []chunkstore.Shard{badIdx}); err == nil {
		t.Fatal("shard index out of range accepted")
	}
	if st := s.Stats(); st.Shards != 0 {
		t.Fatalf("rejected batch stored %d shards", st.Shards)
	}
}

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := disk.Open(disk.Config{Dir: dir, SegmentSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var all []chunkstore.Shard
	for i := range 30 {
		sh := shardsOf(uint64(i), 200000, chunkstore.Profile{K: 4, M: 2})
		mustPut(t, s, sh...)
		all = append(all, sh...)
	}
	if err := s.SetMeta("heal", []byte("checkpoint")); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetShards(ctx(t), []chunkstore.ShardKey{all[0].Key}); !errors.Is(err, disk.ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	s = open(t, disk.Config{Dir: dir, SegmentSize: 1 << 20})
	for _, sh := range all {
		checkShard(t, s, sh)
	}
	st2 := s.Stats()
	if st2.Shards != st.Shards || st2.Bytes != st.Bytes || st2.Segments < 2 {
		t.Fatalf("stats before close %+v, after reopen %+v", st, st2)
	}
	// Putting the same shards again writes nothing: the index (and the
	// key filter rebuilt by Open) knows them.
	mustPut(t, s, all...)
	if st3 := s.Stats(); st3.Shards != st2.Shards || st3.Bytes != st2.Bytes || st3.DiskBytes != st2.DiskBytes {
		t.Fatalf("re-putting stored shards after reopen changed the store: %+v -> %+v", st2, st3)
	}
	if v, err := s.GetMeta("heal"); err != nil || string(v) != "checkpoint" {
		t.Fatalf("meta = %q, %v", v, err)
	}
	if _, err := s.GetMeta("nope"); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("missing meta: %v", err)
	}
}

func TestCompaction(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := open(t, disk.Config{SegmentSize: 1 << 20, FS: vfs.NewMem(), Dir: "/d", Registry: reg})
	var keep, drop []chunkstore.Shard
	for i := range 60 {
		sh := shardsOf(uint64(i), 100000, chunkstore.Profile{K: 2, M: 1})
		mustPut(t, s, sh...)
		if i%4 == 0 {
			keep = append(keep, sh...)
		} else {
			drop = append(drop, sh...)
		}
	}
	var keys []chunkstore.ShardKey
	for _, sh := range drop {
		keys = append(keys, sh.Key)
	}
	if n, err := s.DeleteShards(ctx(t), keys, 0); err != nil || n != len(keys) {
		t.Fatalf("delete %d: %d, %v", len(keys), n, err)
	}
	before := s.Stats()
	// Readers run during compaction and must never miss.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				sh := keep[r.IntN(len(keep))]
				res, err := s.GetShards(context.Background(), []chunkstore.ShardKey{sh.Key})
				if err == nil {
					err = res[0].Err
				}
				if err == nil && !bytes.Equal(res[0].Shard.Data, sh.Data) {
					err = fmt.Errorf("%s: wrong bytes", sh.Key)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	reclaimed, err := s.Compact(ctx(t))
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("read during compaction: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	t.Logf("compaction reclaimed %d bytes; before %+v after %+v", reclaimed, before, after)
	if reclaimed == 0 || after.DiskBytes >= before.DiskBytes || after.DeadBytes >= before.DeadBytes {
		t.Fatalf("compaction did not reclaim space: before %+v after %+v", before, after)
	}
	if after.Shards != int64(len(keep)) {
		t.Fatalf("%d shards after compaction, want %d", after.Shards, len(keep))
	}
	for _, sh := range keep {
		checkShard(t, s, sh)
	}
	// Metrics are registered on the given registry.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "zos_disk_compacted_bytes_total" && mf.GetMetric()[0].GetCounter().GetValue() > 0 {
			found = true
		}
	}
	if !found {
		t.Fatal("zos_disk_compacted_bytes_total not reported")
	}
}

func TestBackgroundCompaction(t *testing.T) {
	s := open(t, disk.Config{SegmentSize: 1 << 16, FS: vfs.NewMem(), Dir: "/d", CompactInterval: 10 * time.Millisecond})
	var keys []chunkstore.ShardKey
	for i := range 40 {
		sh := shardsOf(uint64(i), 20000, chunkstore.Profile{K: 1, M: 0})
		mustPut(t, s, sh...)
		keys = append(keys, sh[0].Key)
	}
	if _, err := s.DeleteShards(ctx(t), keys[:30], 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats().Compacted == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("background compaction never ran: %+v", s.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// corruptOnDisk flips a byte of the shard's data in its segment file.
func corruptOnDisk(t *testing.T, s *disk.Store, k chunkstore.ShardKey, at int64) {
	t.Helper()
	l, err := s.Where(k)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(l.File, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at+l.Offset); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, at+l.Offset); err != nil {
		t.Fatal(err)
	}
}

func TestBitrotDetectedAndQuarantined(t *testing.T) {
	s := open(t, disk.Config{})
	sh := shardsOf(1, 300000, chunkstore.Profile{K: 2, M: 1})
	mustPut(t, s, sh...)
	corruptOnDisk(t, s, sh[0].Key, 64+1000) // in the data
	corruptOnDisk(t, s, sh[1].Key, 20)      // in the header's key
	for _, k := range []chunkstore.ShardKey{sh[0].Key, sh[1].Key} {
		if r := get(t, s, k); !chunkstore.IsCorruption(r.Err) || r.Shard.Data != nil {
			t.Fatalf("corrupt shard %s read as %v", k, r.Err)
		}
		// Quarantined: no longer listed, so a repair can write it again.
		st, _ := s.StatShards(ctx(t), []chunkstore.ShardKey{k})
		if !errors.Is(st[0].Err, chunkstore.ErrNotFound) {
			t.Fatalf("corrupt shard still indexed: %v", st[0].Err)
		}
	}
	checkShard(t, s, sh[2])
	if c := s.Stats().Corrupt; c != 2 {
		t.Fatalf("corrupt count %d, want 2", c)
	}
	mustPut(t, s, sh[0], sh[1])
	checkShard(t, s, sh[0])
	checkShard(t, s, sh[1])
}

func TestTornTailDroppedAtOpen(t *testing.T) {
	dir := t.TempDir()
	s, err := disk.Open(disk.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	sh := shardsOf(1, 100000, chunkstore.Profile{K: 2, M: 1})
	mustPut(t, s, sh...)
	l, _ := s.Where(sh[2].Key)
	s.Close()
	// Append half a record and garbage after the last record.
	f, err := os.OpenFile(l.File, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{0x31, 0x52, 0x53, 0x5a, 7}, 300))
	f.Close()
	s = open(t, disk.Config{Dir: dir})
	for _, x := range sh {
		checkShard(t, s, x)
	}
	more := shardsOf(2, 100000, chunkstore.Profile{K: 2, M: 1})
	mustPut(t, s, more...)
	s.Close()
	s = open(t, disk.Config{Dir: dir})
	for _, x := range append(sh, more...) {
		checkShard(t, s, x)
	}
	fi, _ := os.Stat(filepath.Clean(l.File))
	if fi.Size() > l.Offset+64+int64(len(sh[2].Data))+2*(64+int64(len(more[0].Data)))*3 {
		t.Fatalf("segment grew past the garbage instead of overwriting it: %d", fi.Size())
	}
}

// TestCancelledPutsNeverReadLater: callers reuse their buffers as soon as
// PutShards returns, cancelled or not. A write abandoned by its ctx is
// either not applied or finished before the call returned, so scribbling
// over the buffers afterwards never leaves a corrupt record.
func TestCancelledPutsNeverReadLater(t *testing.T) {
	s := open(t, disk.Config{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 50 {
				sh := shardsOf(uint64(w*1000+i), 256<<10, chunkstore.Profile{K: 2, M: 1})
				c, cancel := context.WithTimeout(context.Background(), time.Duration(rng.IntN(3000))*time.Microsecond)
				err := s.PutShards(c, sh)
				cancel()
				if err != nil && !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("put: %v", err)
				}
				for _, x := range sh {
					for j := range x.Data {
						x.Data[j] = 0xee
					}
				}
			}
		})
	}
	wg.Wait()
	stored := 0
	err := chunkstore.WalkShards(ctx(t), s, chunkstore.ShardKey{}, 64, func(si chunkstore.ShardInfo) error {
		res, err := s.GetShards(ctx(t), []chunkstore.ShardKey{si.Key})
		if err != nil {
			return err
		}
		if res[0].Err != nil {
			t.Errorf("shard %s: %v", si.Key, res[0].Err)
		}
		stored++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Stats().Corrupt != 0 {
		t.Fatalf("%d corrupt shards", s.Stats().Corrupt)
	}
	t.Logf("%d of %d shards stored", stored, 4*50*3)
}

// TestQueryAnyProfile: a read of one index under any profile finds the
// shard whatever its profile, the first in key order when the Ref is
// stored under several (point lookups for a few profiles, a scan for
// many), and nothing for a Ref that is not there.
func TestQueryAnyProfile(t *testing.T) {
	for _, profiles := range [][]chunkstore.Profile{
		{{K: 2, M: 1}},
		{{K: 4, M: 2}, {K: 2, M: 1}},
		{{K: 4, M: 2}, {K: 3, M: 2}, {K: 2, M: 2}, {K: 2, M: 1}, {K: 1, M: 2}, {K: 6, M: 3}},
	} {
		t.Run(fmt.Sprint(len(profiles)), func(t *testing.T) {
			s := open(t, disk.Config{})
			var first chunkstore.Profile
			for i, p := range profiles {
				mustPut(t, s, shardsOf(1, 100000, p)...)
				if i == 0 || p.K < first.K || p.K == first.K && p.M < first.M {
					first = p
				}
				// Another Ref under each profile, so that lookups see
				// keys next to the one asked for.
				mustPut(t, s, shardsOf(uint64(10+i), 50000, p)...)
			}
			want := shardsOf(1, 100000, first)
			for idx := range int(first.K + first.M) {
				q := chunkstore.ShardKey{Ref: want[0].Key.Ref, Index: uint8(idx)}
				r := get(t, s, q)
				if r.Err != nil || r.Shard.Key != want[idx].Key || !bytes.Equal(r.Shard.Data, want[idx].Data) {
					t.Fatalf("index %d under any profile: %v %v, want %v", idx, r.Shard.Key, r.Err, want[idx].Key)
				}
			}
			// An index only the larger profiles have.
			if len(profiles) > 1 {
				q := chunkstore.ShardKey{Ref: want[0].Key.Ref, Index: 5}
				if r := get(t, s, q); r.Err != nil || r.Shard.Key.Index != 5 || int(r.Shard.Key.Profile.K+r.Shard.Key.Profile.M) <= 5 {
					t.Fatalf("index 5 under any profile: %v %v", r.Shard.Key, r.Err)
				}
			}
			missing := chunkstore.ShardKey{Ref: chunkstore.Sum([]byte("absent")), Index: 0}
			if r := get(t, s, missing); !errors.Is(r.Err, chunkstore.ErrNotFound) {
				t.Fatalf("absent Ref: %v", r.Err)
			}
		})
	}
}
