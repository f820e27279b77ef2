package disk_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/disk"
	"github.com/zosproject/zos/chunkstore/internal/faultfs"
)

func openFS(t *testing.T, fs vfs.FS) *disk.Store {
	t.Helper()
	s, err := disk.Open(disk.Config{Dir: "/store", FS: fs, SegmentSize: 1 << 20, CompactInterval: -1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func absent(t *testing.T, s chunkstore.ShardStore, k chunkstore.ShardKey) {
	t.Helper()
	if r := get(t, s, k); !errors.Is(r.Err, chunkstore.ErrNotFound) {
		t.Fatalf("unacknowledged shard %s: %v", k, r.Err)
	}
}

func TestWriteErrorsAndShortWrites(t *testing.T) {
	mem := vfs.NewCrashableMem()
	fs := faultfs.Wrap(mem)
	s := openFS(t, fs)
	p := chunkstore.Profile{K: 2, M: 1}
	a, b, c, d, e := shardsOf(1, 50000, p), shardsOf(2, 50000, p), shardsOf(3, 50000, p), shardsOf(4, 50000, p), shardsOf(5, 50000, p)
	mustPut(t, s, a...)

	rm := fs.Inject(faultfs.Rule{Op: faultfs.Write, PathContains: "/seg/", Times: 1})
	if err := s.PutShards(ctx(t), b); !errors.Is(err, disk.ErrIO) {
		t.Fatalf("put with a failing write: %v, want ErrIO", err)
	}
	rm()
	mustPut(t, s, c...)

	fs.Inject(faultfs.Rule{Op: faultfs.Write, PathContains: "/seg/", Short: true, Times: 1})
	if err := s.PutShards(ctx(t), d); !errors.Is(err, disk.ErrIO) {
		t.Fatalf("put with a short write: %v, want ErrIO", err)
	}
	mustPut(t, s, e...)
	if fs.Hits() != 2 {
		t.Fatalf("%d faults fired, want 2 (one error, one short write)", fs.Hits())
	}
	check := func(s *disk.Store) {
		t.Helper()
		for _, x := range [][]chunkstore.Shard{a, c, e} {
			for _, sh := range x {
				checkShard(t, s, sh)
			}
		}
		for _, x := range [][]chunkstore.Shard{b, d} {
			for _, sh := range x {
				absent(t, s, sh.Key)
			}
		}
	}
	check(s)
	// And after a crash (only synced data survives).
	s.Close()
	s2 := openFS(t, mem.CrashClone(vfs.CrashCloneCfg{}))
	check(s2)
	mustPut(t, s2, b...)
	checkShard(t, s2, b[0])
}

func TestCrashBeforeFsync(t *testing.T) {
	mem := vfs.NewCrashableMem()
	fs := faultfs.Wrap(mem)
	s := openFS(t, fs)
	p := chunkstore.Profile{K: 4, M: 2}
	a, b, c := shardsOf(1, 40000, p), shardsOf(2, 40000, p), shardsOf(3, 40000, p)
	mustPut(t, s, a...)
	// The segment fsync fails: the write is not acknowledged, and the store
	// never appends to that file again.
	rm := fs.Inject(faultfs.Rule{Op: faultfs.Sync, PathContains: "/seg/", Times: 1})
	if err := s.PutShards(ctx(t), b); !errors.Is(err, disk.ErrIO) {
		t.Fatalf("put whose fsync fails: %v", err)
	}
	rm()
	mustPut(t, s, c...)
	if st := s.Stats(); st.Segments < 2 {
		t.Fatalf("store kept appending to a segment whose fsync failed: %+v", st)
	}
	// Crash now: exactly the synced state survives.
	crashed := mem.CrashClone(vfs.CrashCloneCfg{})
	s2 := openFS(t, crashed)
	for _, sh := range append(a, c...) {
		checkShard(t, s2, sh)
	}
	for _, sh := range b {
		absent(t, s2, sh.Key)
	}
}

func TestReadErrorIsNotCorruption(t *testing.T) {
	fs := faultfs.Wrap(vfs.NewMem())
	s := openFS(t, fs)
	sh := shardsOf(1, 1000, chunkstore.Profile{K: 1, M: 0})
	mustPut(t, s, sh...)
	rm := fs.Inject(faultfs.Rule{Op: faultfs.Read, PathContains: "/seg/"})
	r := get(t, s, sh[0].Key)
	if !errors.Is(r.Err, disk.ErrIO) || chunkstore.IsCorruption(r.Err) {
		t.Fatalf("read error surfaced as %v, want ErrIO and not corruption", r.Err)
	}
	rm()
	checkShard(t, s, sh[0]) // not quarantined
	if s.Stats().Corrupt != 0 {
		t.Fatal("an I/O error was counted as corruption")
	}
}

// TestRandomCrashes writes from several goroutines and takes crash clones
// (with a random part of the unsynced data kept, so records are torn) at
// random moments; every write acknowledged before the clone must be intact
// in it, and the crashed store must accept writes.
func TestRandomCrashes(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	mem := vfs.NewCrashableMem()
	s := openFS(t, mem)
	var mu sync.Mutex
	var acked []chunkstore.Shard
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				sh := shardsOf(uint64(w*100000+i), 3000+i%5000, chunkstore.Profile{K: 2, M: 1})
				if err := s.PutShards(ctx(t), sh); err != nil {
					t.Errorf("put: %v", err)
					return
				}
				if i%7 == 0 {
					// Deletes race with the crash too.
					if _, err := s.DeleteShards(ctx(t), []chunkstore.ShardKey{sh[2].Key}, 0); err != nil {
						t.Errorf("delete: %v", err)
						return
					}
					sh = sh[:2]
				}
				mu.Lock()
				acked = append(acked, sh...)
				mu.Unlock()
			}
		})
	}
	for crash := range 4 {
		time.Sleep(time.Duration(20+rng.IntN(80)) * time.Millisecond)
		mu.Lock()
		n := len(acked)
		want := acked[:n:n]
		mu.Unlock()
		clone := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: rand.New(rand.NewPCG(seed, uint64(crash)))})
		c, err := disk.Open(disk.Config{Dir: "/store", FS: clone, SegmentSize: 1 << 20, CompactInterval: -1})
		if err != nil {
			t.Fatalf("crash %d: reopen: %v", crash, err)
		}
		for _, sh := range want {
			r := get(t, c, sh.Key)
			if r.Err != nil || !bytes.Equal(r.Shard.Data, sh.Data) {
				t.Fatalf("crash %d: acknowledged shard %s lost: %v", crash, sh.Key, r.Err)
			}
		}
		extra := shardsOf(uint64(9_000_000+crash), 10000, chunkstore.Profile{K: 2, M: 1})
		mustPut(t, c, extra...)
		checkShard(t, c, extra[1])
		c.Close()
		t.Logf("crash %d: %d acknowledged shards intact", crash, len(want))
	}
	close(stop)
	wg.Wait()
}
