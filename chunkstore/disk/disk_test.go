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
	"github.com/zosproject/zos/chunkstore/shardtest"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/wait"
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

// TestShardRangesFallback: chunkstore.GetShardRanges over a store that
// has no ranged reads (the disk store with them hidden) answers as the
// store's own.
func TestShardRangesFallback(t *testing.T) {
	shardtest.Run(t, func(t *testing.T, now func() time.Time) chunkstore.ShardStore {
		return struct{ chunkstore.ShardStore }{open(t, disk.Config{Now: now})}
	})
}

func TestConformanceSmallSegments(t *testing.T) {
	storetest.Run(t, func(t *testing.T) chunkstore.Store {
		return open(t, disk.Config{SegmentSize: 1 << 20, FS: vfs.NewMem(), Dir: "/s"}).Chunks()
	})
}

// TestShardConformance: the disk store passes the ShardStore suite, on the
// OS file system and on small segments in memory.
func TestShardConformance(t *testing.T) {
	shardtest.Run(t, func(t *testing.T, now func() time.Time) chunkstore.ShardStore {
		return open(t, disk.Config{Now: now})
	})
	t.Run("SmallSegments", func(t *testing.T) {
		shardtest.Run(t, func(t *testing.T, now func() time.Time) chunkstore.ShardStore {
			return open(t, disk.Config{Now: now, SegmentSize: 1 << 20, FS: vfs.NewMem(), Dir: "/s"})
		})
	})
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// shardsOf makes the k+m shards of a chunk with fake (but well-shaped)
// contents derived from seed.
var shardsOf = shardtest.Shards

// Helpers shared with the shard conformance suite.
var (
	mustPut    = shardtest.MustPut
	get        = shardtest.Get
	checkShard = shardtest.CheckShard
)

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
				want := sh.Data
				var res []chunkstore.ShardResult
				var err error
				if r.IntN(2) == 0 {
					res, err = s.GetShards(context.Background(), []chunkstore.ShardKey{sh.Key})
				} else { // ranged reads follow moved records too
					off := r.IntN(len(sh.Data))
					n := r.IntN(len(sh.Data) - off)
					want = sh.Data[off : off+n]
					res, err = s.GetShardRanges(context.Background(), []chunkstore.ShardRange{{Key: sh.Key, Off: uint32(off), Len: uint32(n)}})
				}
				if err == nil {
					err = res[0].Err
				}
				if err == nil && !bytes.Equal(res[0].Shard.Data, want) {
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
	wait.Until(t, 30*time.Second, func() error {
		if st := s.Stats(); st.Compacted == 0 {
			return fmt.Errorf("background compaction never ran: %+v", st)
		}
		return nil
	})
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

// TestRangesCheckHeaders: a ranged read checks its record's header (a bad
// one quarantines the shard, as a whole read does) but cannot check the
// bytes against the shard's checksum: a flipped byte outside the range
// does not matter, one inside it is returned as read (the caller verifies
// what it assembles) and the shard stays until a whole read finds it.
func TestRangesCheckHeaders(t *testing.T) {
	s := open(t, disk.Config{})
	sh := shardsOf(3, 300000, chunkstore.Profile{K: 2, M: 1})
	mustPut(t, s, sh...)
	corruptOnDisk(t, s, sh[0].Key, 64+100000) // in the data, far in
	corruptOnDisk(t, s, sh[1].Key, 20)        // in the header's key
	ranges := func(rs ...chunkstore.ShardRange) []chunkstore.ShardResult {
		t.Helper()
		res, err := s.GetShardRanges(ctx(t), rs)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { chunkstore.ReleaseResults(res) })
		return res
	}
	res := ranges(chunkstore.ShardRange{Key: sh[0].Key, Off: 10, Len: 4096},
		chunkstore.ShardRange{Key: sh[0].Key, Off: 99000, Len: 4096},
		chunkstore.ShardRange{Key: sh[1].Key, Off: 10, Len: 4096},
		chunkstore.ShardRange{Key: sh[2].Key, Off: 50000, Len: 4096})
	if res[0].Err != nil || !bytes.Equal(res[0].Shard.Data, sh[0].Data[10:10+4096]) {
		t.Fatalf("range before the flipped byte: %v", res[0].Err)
	}
	if res[1].Err != nil || bytes.Equal(res[1].Shard.Data, sh[0].Data[99000:99000+4096]) {
		t.Fatalf("range over the flipped byte: %v, or the flip was not there", res[1].Err)
	}
	if !chunkstore.IsCorruption(res[2].Err) || res[2].Shard.Data != nil {
		t.Fatalf("range of a shard with a bad header: %v", res[2].Err)
	}
	if res[3].Err != nil || !bytes.Equal(res[3].Shard.Data, sh[2].Data[50000:50000+4096]) {
		t.Fatalf("range of a good shard: %v", res[3].Err)
	}
	if c := s.Stats().Corrupt; c != 1 {
		t.Fatalf("corrupt count %d after ranged reads, want 1 (the bad header)", c)
	}
	st, _ := s.StatShards(ctx(t), []chunkstore.ShardKey{sh[1].Key, sh[0].Key})
	if !errors.Is(st[0].Err, chunkstore.ErrNotFound) || st[1].Err != nil {
		t.Fatalf("after ranged reads: bad header %v (want quarantined), flipped data %v (want kept)", st[0].Err, st[1].Err)
	}
	if r := get(t, s, sh[0].Key); !chunkstore.IsCorruption(r.Err) {
		t.Fatalf("whole read of the flipped shard: %v", r.Err)
	}
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
