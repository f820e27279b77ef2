package shardtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/storetest"
)

// NewStore makes an empty store for one subtest, with its clock.
type NewStore func(t *testing.T, now func() time.Time) chunkstore.ShardStore

// Run runs the suite against stores made by newStore.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s chunkstore.ShardStore, c *Clock)
	}{
		{"PutGet", testPutGet},
		{"Wildcards", testWildcards},
		{"QueryAnyProfile", testQueryAnyProfile},
		{"Stat", testStat},
		{"EnumeratePages", testEnumeratePages},
		{"RePutRefreshes", testRePutRefreshes},
		{"DeleteByAge", testDeleteByAge},
		{"RejectsBadShards", testRejectsBadShards},
		{"LargeShards", testLargeShards},
		{"CancelledPutsNeverReadLater", testCancelledPuts},
		{"Ranges", testRanges},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Clock{now: time.Unix(1000, 0)}
			tc.fn(t, newStore(t, c.Now), c)
		})
	}
}

// Clock is the suite's settable clock.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set sets the clock.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// Shards makes the k+m shards of a chunk of chunkSize bytes with fake (but
// well-shaped) contents derived from seed.
func Shards(seed uint64, chunkSize int, p chunkstore.Profile) []chunkstore.Shard {
	ref := chunkstore.Sum(storetest.Data(seed, 64))
	size := chunkstore.ShardSize(chunkSize, int(p.K))
	out := make([]chunkstore.Shard, p.N())
	for i := range out {
		out[i] = chunkstore.NewShard(chunkstore.ShardKey{Ref: ref, Profile: p, Index: uint8(i)}, chunkSize, storetest.Data(seed*100+uint64(i), size))
	}
	return out
}

// MustPut puts sh, failing t on error.
func MustPut(t testing.TB, s chunkstore.ShardStore, sh ...chunkstore.Shard) {
	t.Helper()
	if err := s.PutShards(ctx(t), sh); err != nil {
		t.Fatalf("PutShards: %v", err)
	}
}

// Get gets the shard k, failing t if the call (not the key) fails.
func Get(t testing.TB, s chunkstore.ShardStore, k chunkstore.ShardKey) chunkstore.ShardResult {
	t.Helper()
	res, err := s.GetShards(ctx(t), []chunkstore.ShardKey{k})
	if err != nil {
		t.Fatalf("GetShards: %v", err)
	}
	if len(res) != 1 {
		t.Fatalf("GetShards of 1 key: %d results", len(res))
	}
	return res[0]
}

// CheckShard fails t unless s returns want, bytes and header.
func CheckShard(t testing.TB, s chunkstore.ShardStore, want chunkstore.Shard) {
	t.Helper()
	r := Get(t, s, want.Key)
	if r.Err != nil {
		t.Fatalf("get %s: %v", want.Key, r.Err)
	}
	if !bytes.Equal(r.Shard.Data, want.Data) || r.Shard.Sum != want.Sum || r.Shard.ChunkSize != want.ChunkSize {
		t.Fatalf("get %s returned different bytes or header", want.Key)
	}
}

func stats(t *testing.T, s chunkstore.ShardStore) (chunkstore.ShardStoreStats, bool) {
	t.Helper()
	ss, ok := s.(chunkstore.ShardStatser)
	if !ok {
		return chunkstore.ShardStoreStats{}, false
	}
	st, err := ss.ShardStats(ctx(t))
	if err != nil {
		t.Fatalf("ShardStats: %v", err)
	}
	return st, true
}

func walk(t *testing.T, s chunkstore.ShardStore, pageSize int) []chunkstore.ShardInfo {
	t.Helper()
	var all []chunkstore.ShardInfo
	if err := chunkstore.WalkShards(ctx(t), s, chunkstore.ShardKey{}, pageSize, func(si chunkstore.ShardInfo) error {
		all = append(all, si)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return all
}

// fixture stores the 6 shards of a (4+2) and shards 1 and 2 of b (2+1).
func fixture(t *testing.T, s chunkstore.ShardStore) (a, b []chunkstore.Shard) {
	a = Shards(1, 10000, chunkstore.Profile{K: 4, M: 2})
	b = Shards(2, 100, chunkstore.Profile{K: 2, M: 1})
	MustPut(t, s, a...)
	MustPut(t, s, b[1:]...)
	return a, b
}

func testPutGet(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	a, b := fixture(t, s)
	for _, sh := range append(a, b[1:]...) {
		CheckShard(t, s, sh)
	}
	if r := Get(t, s, b[0].Key); !errors.Is(r.Err, chunkstore.ErrNotFound) || r.Shard.Data != nil {
		t.Fatalf("missing shard: %v", r.Err)
	}
	// A batch answers per key, in order.
	keys := []chunkstore.ShardKey{a[0].Key, b[0].Key, b[2].Key, a[5].Key}
	res, err := s.GetShards(ctx(t), keys)
	if err != nil || len(res) != len(keys) {
		t.Fatalf("GetShards: %d results, %v", len(res), err)
	}
	if res[0].Err != nil || !bytes.Equal(res[0].Shard.Data, a[0].Data) || !errors.Is(res[1].Err, chunkstore.ErrNotFound) ||
		res[2].Err != nil || !bytes.Equal(res[2].Shard.Data, b[2].Data) || res[3].Err != nil || !bytes.Equal(res[3].Shard.Data, a[5].Data) {
		t.Fatalf("batch results: %v %v %v %v", res[0].Err, res[1].Err, res[2].Err, res[3].Err)
	}
}

func testWildcards(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	a, b := fixture(t, s)
	// Index 3 of a under any profile; any shard of b (its first, index 1).
	if r := Get(t, s, chunkstore.ShardKey{Ref: a[0].Key.Ref, Index: 3}); r.Err != nil || r.Shard.Key != a[3].Key || !bytes.Equal(r.Shard.Data, a[3].Data) {
		t.Fatalf("wildcard profile get = %v, %v", r.Shard.Key, r.Err)
	}
	if r := Get(t, s, chunkstore.ShardKey{Ref: b[0].Key.Ref, Index: chunkstore.AnyIndex}); r.Err != nil || r.Shard.Key != b[1].Key {
		t.Fatalf("wildcard get = %v, %v", r.Shard.Key, r.Err)
	}
	if r := Get(t, s, chunkstore.ShardKey{Ref: chunkstore.Sum(nil), Index: chunkstore.AnyIndex}); !errors.Is(r.Err, chunkstore.ErrNotFound) {
		t.Fatalf("wildcard get of an absent Ref: %v", r.Err)
	}
}

// testQueryAnyProfile: a read of one index under any profile finds the
// shard whatever its profile, the first in key order when the Ref is
// stored under several (point lookups for a few profiles, a scan for
// many), and nothing for a Ref that is not there.
func testQueryAnyProfile(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	for n, profiles := range [][]chunkstore.Profile{
		{{K: 2, M: 1}},
		{{K: 4, M: 2}, {K: 2, M: 1}},
		{{K: 4, M: 2}, {K: 3, M: 2}, {K: 2, M: 2}, {K: 2, M: 1}, {K: 1, M: 2}, {K: 6, M: 3}},
	} {
		t.Run(fmt.Sprint(len(profiles)), func(t *testing.T) {
			// Each case uses its own seeds: the store is shared.
			seed := uint64(1000 * (n + 1))
			var first chunkstore.Profile
			for i, p := range profiles {
				MustPut(t, s, Shards(seed, 100000, p)...)
				if i == 0 || p.K < first.K || p.K == first.K && p.M < first.M {
					first = p
				}
				// Another Ref under each profile, so that lookups see
				// keys next to the one asked for.
				MustPut(t, s, Shards(seed+uint64(10+i), 50000, p)...)
			}
			want := Shards(seed, 100000, first)
			for idx := range int(first.K + first.M) {
				q := chunkstore.ShardKey{Ref: want[0].Key.Ref, Index: uint8(idx)}
				r := Get(t, s, q)
				if r.Err != nil || r.Shard.Key != want[idx].Key || !bytes.Equal(r.Shard.Data, want[idx].Data) {
					t.Fatalf("index %d under any profile: %v %v, want %v", idx, r.Shard.Key, r.Err, want[idx].Key)
				}
			}
			// An index only the larger profiles have.
			if len(profiles) > 1 {
				q := chunkstore.ShardKey{Ref: want[0].Key.Ref, Index: 5}
				if r := Get(t, s, q); r.Err != nil || r.Shard.Key.Index != 5 || int(r.Shard.Key.Profile.K+r.Shard.Key.Profile.M) <= 5 {
					t.Fatalf("index 5 under any profile: %v %v", r.Shard.Key, r.Err)
				}
			}
			missing := chunkstore.ShardKey{Ref: chunkstore.Sum([]byte("absent")), Index: 0}
			if r := Get(t, s, missing); !errors.Is(r.Err, chunkstore.ErrNotFound) {
				t.Fatalf("absent Ref: %v", r.Err)
			}
		})
	}
}

func testStat(t *testing.T, s chunkstore.ShardStore, c *Clock) {
	a, b := fixture(t, s)
	st, err := s.StatShards(ctx(t), []chunkstore.ShardKey{a[2].Key, b[0].Key, {Ref: a[0].Key.Ref, Index: 4}})
	if err != nil || len(st) != 3 {
		t.Fatalf("StatShards: %d results, %v", len(st), err)
	}
	if st[0].Err != nil || st[0].Shard.Size != a[2].Size || st[0].Shard.Written != c.Now().UnixNano() || st[0].Shard.Data != nil {
		t.Fatalf("stat = %+v", st[0])
	}
	if !errors.Is(st[1].Err, chunkstore.ErrNotFound) {
		t.Fatalf("stat missing = %v", st[1].Err)
	}
	if st[2].Err != nil || st[2].Shard.Key != a[4].Key || st[2].Shard.Sum != a[4].Sum {
		t.Fatalf("wildcard stat = %+v", st[2])
	}
	if ss, ok := stats(t, s); ok && (ss.Shards != 8 || ss.Bytes != int64(6*a[0].Size+2*b[0].Size)) {
		t.Fatalf("stats %+v, want 8 shards", ss)
	}
}

func testEnumeratePages(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	a, b := fixture(t, s)
	for _, page := range []int{1, 2, 3, 100} {
		all := walk(t, s, page)
		if len(all) != 8 {
			t.Fatalf("pages of %d: enumerated %d shards, want 8", page, len(all))
		}
		for i := 1; i < len(all); i++ {
			if all[i-1].Key.Compare(all[i].Key) >= 0 {
				t.Fatalf("pages of %d: enumeration out of order at %d", page, i)
			}
		}
	}
	// After a key, only greater keys; past the last, nothing.
	last := a[5].Key
	if b[2].Key.Compare(last) > 0 {
		last = b[2].Key
	}
	page, err := s.EnumerateShards(ctx(t), last, 10)
	if err != nil || len(page) != 0 {
		t.Fatalf("enumerate after the last key: %d, %v", len(page), err)
	}
	page, err = s.EnumerateShards(ctx(t), a[2].Key, 2)
	if err != nil || len(page) != 2 || page[0].Key != a[3].Key || page[1].Key != a[4].Key {
		t.Fatalf("enumerate after %s: %v, %v", a[2].Key, page, err)
	}
}

// testRePutRefreshes: putting a stored shard again refreshes its write
// time without rewriting it.
func testRePutRefreshes(t *testing.T, s chunkstore.ShardStore, c *Clock) {
	a, _ := fixture(t, s)
	before, counted := stats(t, s)
	c.Set(time.Unix(2000, 0))
	MustPut(t, s, a[0])
	if after, _ := stats(t, s); counted && (after.WriteBytes != before.WriteBytes || after.Shards != before.Shards) {
		t.Fatalf("re-put rewrote data: %+v -> %+v", before, after)
	}
	st, err := s.StatShards(ctx(t), []chunkstore.ShardKey{a[0].Key, a[1].Key})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Shard.Written != c.Now().UnixNano() || st[1].Shard.Written != time.Unix(1000, 0).UnixNano() {
		t.Fatalf("written times after touch: %d %d", st[0].Shard.Written, st[1].Shard.Written)
	}
	CheckShard(t, s, a[0])
}

func testDeleteByAge(t *testing.T, s chunkstore.ShardStore, c *Clock) {
	a, b := fixture(t, s)
	c.Set(time.Unix(2000, 0))
	MustPut(t, s, a[0])
	// Conditional delete: shards of a written before 1500 go, a[0] stays.
	n, err := s.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: a[0].Key.Ref, Index: chunkstore.AnyIndex}}, time.Unix(1500, 0).UnixNano())
	if err != nil || n != 5 {
		t.Fatalf("conditional delete = %d, %v; want 5", n, err)
	}
	CheckShard(t, s, a[0])
	if r := Get(t, s, a[1].Key); !errors.Is(r.Err, chunkstore.ErrNotFound) {
		t.Fatalf("deleted shard still readable: %v", r.Err)
	}
	// Deleting what is not there is no error.
	if n, err := s.DeleteShards(ctx(t), []chunkstore.ShardKey{a[1].Key, b[0].Key}, 0); err != nil || n != 0 {
		t.Fatalf("delete of missing shards = %d, %v", n, err)
	}
	// Unconditional wildcard delete.
	n, err = s.DeleteShards(ctx(t), []chunkstore.ShardKey{{Ref: a[0].Key.Ref, Index: chunkstore.AnyIndex}, {Ref: b[0].Key.Ref, Index: chunkstore.AnyIndex}}, 0)
	if err != nil || n != 3 {
		t.Fatalf("delete = %d, %v; want 3", n, err)
	}
	if all := walk(t, s, 10); len(all) != 0 {
		t.Fatalf("%d shards listed after deleting everything", len(all))
	}
	if st, ok := stats(t, s); ok && (st.Shards != 0 || st.Bytes != 0) {
		t.Fatalf("stats after deleting everything: %+v", st)
	}
}

// testRejectsBadShards: a batch with a corrupt or misshapen shard is
// refused whole.
func testRejectsBadShards(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	sh := Shards(1, 1000, chunkstore.Profile{K: 2, M: 1})
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
	wild := sh[0]
	wild.Key.Index = chunkstore.AnyIndex
	if err := s.PutShards(ctx(t), []chunkstore.Shard{wild}); err == nil {
		t.Fatal("shard with a wildcard key accepted")
	}
	if all := walk(t, s, 10); len(all) != 0 {
		t.Fatalf("rejected batches stored %d shards", len(all))
	}
	if st, ok := stats(t, s); ok && st.Shards != 0 {
		t.Fatalf("rejected batch stored %d shards", st.Shards)
	}
}

// testLargeShards: 1.5 MiB shards and a batch of 24 MiB go and come back.
func testLargeShards(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	var all []chunkstore.Shard
	for i := range 8 {
		all = append(all, Shards(uint64(50+i), 3<<20, chunkstore.Profile{K: 2, M: 1})[:2]...)
	}
	MustPut(t, s, all...)
	keys := make([]chunkstore.ShardKey, len(all))
	for i, sh := range all {
		keys[i] = sh.Key
	}
	res, err := s.GetShards(ctx(t), keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || !bytes.Equal(r.Shard.Data, all[i].Data) {
			t.Fatalf("item %d: %v", i, r.Err)
		}
	}
	chunkstore.ReleaseResults(res)
}

// testCancelledPuts: callers reuse their buffers as soon as PutShards
// returns, cancelled or not. A write abandoned by its ctx is either not
// applied or finished before the call returned, so scribbling over the
// buffers afterwards never leaves a corrupt shard.
func testCancelledPuts(t *testing.T, s chunkstore.ShardStore, _ *Clock) {
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 50 {
				sh := Shards(uint64(w*1000+i), 256<<10, chunkstore.Profile{K: 2, M: 1})
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
	for _, si := range walk(t, s, 64) {
		res, err := s.GetShards(ctx(t), []chunkstore.ShardKey{si.Key})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err != nil {
			t.Errorf("shard %s: %v", si.Key, res[0].Err)
		}
		stored++
	}
	if st, ok := stats(t, s); ok && st.Corrupt != 0 {
		t.Fatalf("%d corrupt shards", st.Corrupt)
	}
	t.Logf("%d of %d shards stored", stored, 4*50*3)
}
