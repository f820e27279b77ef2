package blockd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/journal"
	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/internal/testcluster/wait"
	"github.com/zosproject/zos/raft"
	"github.com/zosproject/zos/raft/fsm"
)

// flakyStore fails on demand.
type flakyStore struct {
	chunkstore.Store
	failPut, failFetch atomic.Bool
	puts, fetches      atomic.Int64
	// failEvery, when > 0, fails every n-th Put and Fetch.
	failEvery atomic.Int64
	ops       atomic.Int64
	// putDelay (ns) slows every Put down, like a remote store.
	putDelay atomic.Int64
	// gate, when set, holds every Put until it is closed; the Puts it held
	// then fail (those after it succeed). gateMin, when > 0, limits it to
	// Puts of at least that many bytes.
	gate    atomic.Pointer[chan struct{}]
	gateMin atomic.Int64
	held    atomic.Int64 // Puts the gate holds now
	// putHook, when set, sees every Put first: an error it returns fails
	// the Put, nil lets it go on.
	putHook atomic.Pointer[func([]byte) error]
	// fetchHook, when set, sees every Fetch first, likewise.
	fetchHook atomic.Pointer[func(chunkstore.Ref) error]
}

func (f *flakyStore) flaky() bool {
	n := f.failEvery.Load()
	return n > 0 && f.ops.Add(1)%n == 0
}

var errInjected = fmt.Errorf("%w: injected failure", chunkstore.ErrUnavailable)

func (f *flakyStore) Put(ctx context.Context, b []byte) (chunkstore.Ref, error) {
	if h := f.putHook.Load(); h != nil {
		if err := (*h)(b); err != nil {
			return chunkstore.Ref{}, err
		}
	}
	if g := f.gate.Load(); g != nil && int64(len(b)) >= f.gateMin.Load() {
		f.held.Add(1)
		<-*g
		f.held.Add(-1)
		return chunkstore.Ref{}, errInjected
	}
	if f.failPut.Load() || f.flaky() {
		return chunkstore.Ref{}, errInjected
	}
	f.puts.Add(1)
	if d := f.putDelay.Load(); d > 0 {
		time.Sleep(time.Duration(d))
	}
	return f.Store.Put(ctx, b)
}

func (f *flakyStore) Fetch(ctx context.Context, r chunkstore.Ref) ([]byte, error) {
	if h := f.fetchHook.Load(); h != nil {
		if err := (*h)(r); err != nil {
			return nil, err
		}
	}
	if f.failFetch.Load() || f.flaky() {
		return nil, errInjected
	}
	f.fetches.Add(1)
	return f.Store.Fetch(ctx, r)
}

type env struct {
	ctl   *raft.Local
	store *flakyStore
	// journal is the vdisks' write journal, shared by the env's services
	// like a replicated journal on the storage nodes (nil: none).
	journal journal.Log
}

func newEnv() *env {
	return &env{ctl: raft.NewLocal("n1", "n2"), store: &flakyStore{Store: mem.New()}}
}

// withJournal gives the env's services a write journal: a journal.Dir.
func (e *env) withJournal(t testing.TB) *env {
	t.Helper()
	jd, err := journal.OpenDir(journal.DirConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { jd.Close() })
	e.journal = jd
	return e
}

func (e *env) service(t testing.TB, node string, mod func(*Config)) *Service {
	t.Helper()
	cfg := Config{
		Node: node, Control: e.ctl, Logger: slogx.Discard, Registerer: prometheus.NewRegistry(),
		StoreFor:          func(pool, typ string) chunkstore.Store { return e.store },
		WritebackInterval: -1,
		// Extents on: the tests cover the layout with them (and those
		// of the layout without set ExtentBytes to -1).
		ExtentBytes: DefaultExtentBytes,
	}
	if e.journal != nil {
		cfg.JournalFor = func(pool, typ string) journal.Log { return e.journal }
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustCreate(t testing.TB, s *Service, name string, size, bs int64, typ string) {
	t.Helper()
	if _, err := s.Create(context.Background(), CreateOptions{Name: name, Size: size, BlockSize: bs, Type: typ}, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t testing.TB, s *Service, export string) (*Disk, func()) {
	t.Helper()
	d, rel, err := s.Open(context.Background(), export)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rel)
	return d, rel
}

// trimModel applies a TRIM of [off, off+n) to a model of the disk: only
// whole blocks (and the partial last block of the disk) are trimmed.
func trimModel(model []byte, off, n, bs int64) {
	size := int64(len(model))
	from := (off + bs - 1) / bs * bs
	to := (off + n) / bs * bs
	if off+n == size {
		to = size
	}
	if to > from {
		clear(model[from:to])
	}
}

func readAll(t testing.TB, d *Disk) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if err := d.ReadAt(context.Background(), b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestModel drives random reads, writes, trims, zeroes and flushes against
// a byte-slice model, then reopens the vdisk on another Service and checks
// what was flushed.
func TestModel(t *testing.T) {
	for _, jn := range []bool{false, true} {
		for _, bs := range []int64{4096, 65536} {
			t.Run(fmt.Sprintf("%s/%d", map[bool]string{false: "commit", true: "journal"}[jn], bs), func(t *testing.T) {
				testModel(t, bs, jn)
			})
		}
	}
}

func testModel(t *testing.T, bs int64, withJournal bool) {
	{
		{
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 7))
			e := newEnv()
			if withJournal {
				e.withJournal(t)
			}
			s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = 1 << 20; c.WritebackBytes = 256 << 10 })
			const size = 8<<20 + 3*512 // not a multiple of the block size
			mustCreate(t, s, "m", size, bs, "db")
			d, release := mustOpen(t, s, "m")
			ctx := context.Background()
			model := make([]byte, size)
			durable := make([]byte, size)
			for step := 0; step < 600; step++ {
				off := rng.Int64N(size)
				n := min(rng.Int64N(3*bs)+1, size-off)
				if rng.IntN(3) == 0 { // aligned
					off = off &^ 511
					n = min(max(n&^511, 512), size-off)
				}
				switch op := rng.IntN(11); {
				case op == 10:
					// A bulk write: runs of blocks stored as extents,
					// which the small writes and trims then split.
					n = min(rng.Int64N(80*bs)+bs, size-off)
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.IntN(256))
					}
					if err := d.WriteAt(ctx, p, off, false); err != nil {
						t.Fatal(err)
					}
					copy(model[off:], p)
				case op < 4:
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.IntN(4)) // often zero
					}
					if rng.IntN(5) == 0 {
						clear(p)
					}
					if err := d.WriteAt(ctx, p, off, rng.IntN(10) == 0); err != nil {
						t.Fatal(err)
					}
					copy(model[off:], p)
				case op < 6:
					got := make([]byte, n)
					if err := d.ReadAt(ctx, got, off); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, model[off:off+n]) {
						t.Fatalf("step %d: read [%d,+%d) differs from the model", step, off, n)
					}
				case op == 6:
					if rng.IntN(4) == 0 {
						off, n = 0, size // whole disk: a span
					}
					if err := d.WriteZeroes(ctx, off, n, nbd.ZeroFlags(rng.IntN(2))*nbd.ZeroNoHole); err != nil {
						t.Fatal(err)
					}
					clear(model[off : off+n])
				case op == 7:
					// Trim is advisory on partial blocks: apply it to the
					// model only for whole blocks.
					if err := d.Trim(ctx, off, n, false); err != nil {
						t.Fatal(err)
					}
					trimModel(model, off, n, bs)
				default:
					if err := d.Flush(ctx); err != nil {
						t.Fatal(err)
					}
					copy(durable, model)
				}
			}
			if got := readAll(t, d); !bytes.Equal(got, model) {
				t.Fatal("final read differs from the model")
			}
			// Block status agrees with the content: nothing reported as a
			// zero extent holds data.
			var pos int64
			for pos < size {
				ext, err := d.BlockStatus(ctx, pos, size-pos)
				if err != nil || len(ext) == 0 {
					t.Fatal(ext, err)
				}
				for _, x := range ext {
					if x.Flags&nbd.ExtentZero != 0 && !isZero(model[pos:pos+x.Length]) {
						t.Fatalf("extent [%d,+%d) flagged zero holds data", pos, x.Length)
					}
					pos += x.Length
				}
			}
			if err := d.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			release()
			// Another node sees exactly the flushed state.
			s2 := e.service(t, "n2", nil)
			d2, _ := mustOpen(t, s2, "m")
			if got := readAll(t, d2); !bytes.Equal(got, model) {
				t.Fatal("reopened vdisk differs from the model")
			}
		}
	}
}

// Concurrent writers to different parts of the same blocks, with flushes
// running meanwhile, lose nothing.
func TestConcurrentPartialWrites(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = 1 << 20; c.WritebackBytes = 128 << 10 })
	const bs = 65536
	const size = 64 * bs
	mustCreate(t, s, "c", size, bs, "db")
	d, _ := mustOpen(t, s, "c")
	ctx := context.Background()
	// Pre-fill and flush so partial writes read-modify-write from the store.
	fill := bytes.Repeat([]byte{0xee}, size)
	if err := d.WriteAt(ctx, fill, 0, true); err != nil {
		t.Fatal(err)
	}
	s.blocks = nil // force store reads
	const writers = 16
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for k := 0; k < 200; k++ {
				blk := rng.Int64N(size / bs)
				// Writer w owns the 4 KiB piece w of every block.
				p := bytes.Repeat([]byte{byte(w + 1)}, 4096)
				if err := d.WriteAt(ctx, p, blk*bs+int64(w)*4096, false); err != nil {
					t.Error(err)
					return
				}
				if k%50 == 0 {
					if err := d.Flush(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := readAll(t, d)
	// Every piece is either untouched (0xee) or its writer's byte.
	for blk := 0; blk < size/bs; blk++ {
		for w := 0; w < writers; w++ {
			piece := got[blk*bs+w*4096 : blk*bs+(w+1)*4096]
			if !bytes.Equal(piece, bytes.Repeat([]byte{0xee}, 4096)) && !bytes.Equal(piece, bytes.Repeat([]byte{byte(w + 1)}, 4096)) {
				t.Fatalf("block %d piece %d is torn or lost", blk, w)
			}
		}
	}
	// Replay the writes' final state deterministically to compare.
	want := bytes.Repeat([]byte{0xee}, size)
	for w := 0; w < writers; w++ {
		rng := rand.New(rand.NewPCG(uint64(w), 1))
		for k := 0; k < 200; k++ {
			blk := rng.Int64N(size / bs)
			copy(want[blk*bs+int64(w)*4096:], bytes.Repeat([]byte{byte(w + 1)}, 4096))
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("a partial write was lost")
	}
}

func TestLeases(t *testing.T) {
	e := newEnv()
	s1 := e.service(t, "n1", func(c *Config) { c.LeaseTTL = 2 * time.Second; c.LeaseRenew = 500 * time.Millisecond })
	s2 := e.service(t, "n2", nil)
	ctx := context.Background()
	mustCreate(t, s1, "l", 1<<20, 4096, "db")
	d1, _ := mustOpen(t, s1, "l")
	if err := d1.WriteAt(ctx, bytes.Repeat([]byte{1}, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	// A second read-write attach on another node is refused, clearly.
	_, _, err := s2.Open(ctx, "l")
	var ae *AttachedError
	if !errors.As(err, &ae) || !errors.Is(err, nbd.ErrAttached) {
		t.Fatalf("second rw attach: %v", err)
	}
	if want := "vdisk l is attached read-write on node n1"; !strings.Contains(err.Error(), want) {
		t.Fatalf("message %q lacks %q", err, want)
	}
	// Read-only attaches are fine and see flushed data.
	ro, _ := mustOpen(t, s2, "l:ro")
	b := make([]byte, 4096)
	if err := ro.ReadAt(ctx, b, 0); err != nil || b[0] != 1 {
		t.Fatalf("ro read %v %v", b[0], err)
	}
	if err := ro.WriteAt(ctx, b, 0, false); !errors.Is(err, nbd.ErrReadOnly) {
		t.Fatalf("ro write: %v", err)
	}
	// The lease is renewed in the background: it outlives its TTL.
	time.Sleep(3 * time.Second)
	if _, _, err := s2.Open(ctx, "l"); !errors.As(err, &ae) {
		t.Fatalf("attach after TTL with renewals running: %v", err)
	}
	// n1 dies (marked down): its lease lapses and n2 takes over.
	if _, err := e.ctl.Apply(ctx, fsm.OpNodeState, fsm.NodeStateArgs{ID: "n1", State: fsm.NodeDown}); err != nil {
		t.Fatal(err)
	}
	d2, _ := mustOpen(t, s2, "l")
	if d2.Epoch() <= d1.Epoch() {
		t.Fatalf("takeover epoch %d not above %d", d2.Epoch(), d1.Epoch())
	}
	if err := d2.WriteAt(ctx, bytes.Repeat([]byte{2}, 4096), 0, true); err != nil {
		t.Fatal(err)
	}
	// The old holder is fenced: its flush fails with a stale epoch and
	// does not move the head (its renewal may have noticed first, then the
	// write fails already).
	if err := d1.WriteAt(ctx, bytes.Repeat([]byte{3}, 4096), 4096, false); err != nil && !errors.Is(err, ErrLeaseLost) {
		t.Fatal(err)
	}
	if err := d1.Flush(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("fenced flush: %v", err)
	}
	if err := d1.WriteAt(ctx, b, 0, false); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("write after fencing: %v", err)
	}
	check, _ := mustOpen(t, s2, "l:ro")
	got := make([]byte, 8192)
	if err := check.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if got[0] != 2 || got[4096] != 0 {
		t.Fatalf("after takeover: %d %d, want 2 0", got[0], got[4096])
	}
}

func TestStoreFailures(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) { c.FlushTimeout = 5 * time.Second; c.BlockCacheBytes = -1 })
	ctx := context.Background()
	mustCreate(t, s, "f", 1<<20, 4096, "db")
	d, _ := mustOpen(t, s, "f")
	p := bytes.Repeat([]byte{7}, 8192)
	if err := d.WriteAt(ctx, p, 0, false); err != nil {
		t.Fatal(err)
	}
	e.store.failPut.Store(true)
	if err := d.Flush(ctx); err == nil {
		t.Fatal("flush succeeded with a failing store")
	}
	// The data is still served from memory and flushes once the store is back.
	got := make([]byte, 8192)
	if err := d.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read after failed flush: %v", err)
	}
	e.store.failPut.Store(false)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Reads of blocks not in memory fail with an error, not a crash.
	e.store.failFetch.Store(true)
	s2 := e.service(t, "n2", func(c *Config) { c.BlockCacheBytes = -1; c.NodeCacheBytes = -1 })
	ro, _ := mustOpen(t, s2, "f:ro")
	if err := ro.ReadAt(ctx, got, 0); !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("read with failing store: %v", err)
	}
	e.store.failFetch.Store(false)
	if err := ro.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read after recovery: %v", err)
	}
}

// Dirty memory stays bounded: writes far past the bound are written back
// early, and writers wait rather than grow the cache.
func TestWritebackBound(t *testing.T) {
	e := newEnv()
	const max = 2 << 20
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = max })
	ctx := context.Background()
	mustCreate(t, s, "w", 64<<20, 65536, "db")
	d, _ := mustOpen(t, s, "w")
	p := make([]byte, 256<<10)
	peak := int64(0)
	for off := int64(0); off < 64<<20; off += int64(len(p)) {
		p[0] = byte(off >> 18)
		p[1] = 1
		if err := d.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		peak = max64(peak, d.Stats().CacheBytes)
	}
	if peak > max+int64(len(p))+64<<10 {
		t.Fatalf("dirty peaked at %d, bound %d", peak, max)
	}
	if e.store.puts.Load() == 0 {
		t.Fatal("nothing was written back before FLUSH")
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	for off := int64(0); off < 64<<20; off += int64(len(p)) {
		if err := d.ReadAt(ctx, got, off); err != nil || got[0] != byte(off>>18) || got[1] != 1 {
			t.Fatalf("at %d: %v %v", off, got, err)
		}
	}
}

// TestCommitDrainsAsItStores: a commit that takes a full write-back cache
// frees it round by round as the store answers, so a writer waiting for
// room goes on long before the commit ends (it used to wait for the
// commit's whole store round: seconds, for a gigabyte of dirty blocks).
func TestCommitDrainsAsItStores(t *testing.T) {
	e := newEnv()
	const bs = 16 << 10
	// 4096 dirty blocks fill the cache exactly, and background write-back
	// starts only beyond it: nothing is written back before the commit,
	// and the commit takes every block.
	const max = 4096 * (entryCost + bs)
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes, c.WritebackBytes, c.NodeDirtyBytes = max, max, 1<<30 })
	ctx := context.Background()
	mustCreate(t, s, "c", 256<<20, bs, "db")
	d, _ := mustOpen(t, s, "c")
	p := bytes.Repeat([]byte{7}, 1<<20) // no zero block
	var off int64
	for ; d.Stats().CacheBytes < max; off += int64(len(p)) {
		p[0], p[1] = byte(off>>20), 1
		if err := d.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.store.puts.Load(); n != 0 {
		t.Fatalf("%d puts before the commit", n)
	}
	blocks := off / bs
	e.store.putDelay.Store(int64(5 * time.Millisecond))
	synced := make(chan error, 1)
	go func() { synced <- d.Sync(ctx) }()
	deadline := time.Now().Add(time.Minute)
	for e.store.puts.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the commit stored nothing in a minute")
		}
		time.Sleep(time.Millisecond)
	}
	// The cache is full: this write waits for room.
	p[0], p[1] = byte(off>>20), 1
	if err := d.WriteAt(ctx, p, off, false); err != nil {
		t.Fatal(err)
	}
	if n := e.store.puts.Load(); n >= blocks {
		t.Fatalf("the waiting write went on after %d puts, when the commit of %d blocks had stored them all", n, blocks)
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2)
	for o := int64(0); o <= off; o += int64(len(p)) {
		if err := d.ReadAt(ctx, got, o); err != nil || got[0] != byte(o>>20) || got[1] != 1 {
			t.Fatalf("at %d: %v %v", o, got, err)
		}
	}
}

// A commit of more than a few rounds names a round only once one of its
// rounds in flight is stored: the blocks it copies into extents for the
// store are bounded, not a second copy of the whole cache.
func TestCommitRoundsBounded(t *testing.T) {
	e := newEnv()
	const bs = 16 << 10
	const max = 8192 * (entryCost + bs) // 128 MiB: 16 rounds
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes, c.WritebackBytes, c.NodeDirtyBytes = max, max, 1<<30 })
	ctx := context.Background()
	mustCreate(t, s, "c", 256<<20, bs, "db")
	d, _ := mustOpen(t, s, "c")
	p := bytes.Repeat([]byte{7}, 1<<20)
	var off int64
	for ; d.Stats().CacheBytes < max; off += int64(len(p)) {
		p[0], p[1] = byte(off>>20), 1
		if err := d.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
	}
	// Puts far slower than naming: unbounded, the commit named every round
	// long before the store answered the first ones.
	e.store.putDelay.Store(int64(200 * time.Millisecond))
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// The tree's round may join the last block rounds.
	bound := int64(4+1) * ownRoundBytes // ownRoundsInFlight and the tree's
	if m := d.maxNamed.Load(); m > bound {
		t.Fatalf("a commit of %d MiB had %d MiB named and not yet stored, want at most %d MiB", off>>20, m>>20, bound>>20)
	} else if m < ownRoundBytes/2 {
		t.Fatalf("at most %d bytes named at once: the commit named no round", m)
	}
	if n := d.named.Load(); n != 0 {
		t.Fatalf("%d bytes still named after the commit", n)
	}
	got := make([]byte, 2)
	for o := int64(0); o < off; o += int64(len(p)) {
		if err := d.ReadAt(ctx, got, o); err != nil || got[0] != byte(o>>20) || got[1] != 1 {
			t.Fatalf("at %d: %v %v", o, got, err)
		}
	}
}

// The node-wide bound holds across vdisks: a vdisk with dirty data below
// its own bound and no writer is made to write back when another vdisk's
// writer waits for the node's room.
func TestNodeDirtyBound(t *testing.T) {
	e := newEnv()
	const node = 4 << 20
	s := e.service(t, "n1", func(c *Config) {
		c.MaxDirtyBytes, c.WritebackBytes, c.NodeDirtyBytes = 8<<20, 8<<20, node
		c.Parallelism = 2 // with slow puts, the writer outruns write-back
	})
	ctx := context.Background()
	mustCreate(t, s, "idle", 16<<20, 65536, "db")
	mustCreate(t, s, "busy", 64<<20, 65536, "db")
	idle, _ := mustOpen(t, s, "idle")
	busy, _ := mustOpen(t, s, "busy")
	p := bytes.Repeat([]byte{7}, 256<<10)
	// 1.5 MiB dirty on idle: under every bound and under half the node's,
	// nothing is written back.
	puts := e.store.puts.Load()
	for off := int64(0); off < 3<<19; off += int64(len(p)) {
		if err := idle.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.store.puts.Load() - puts; n != 0 {
		t.Fatalf("%d puts below every bound", n)
	}
	e.store.putDelay.Store(int64(2 * time.Millisecond))
	peak := int64(0)
	for off := int64(0); off < 64<<20; off += int64(len(p)) {
		p[0] = byte(off >> 18)
		if err := busy.WriteAt(ctx, p, off, false); err != nil {
			t.Fatal(err)
		}
		peak = max64(peak, s.dirty.used.Load())
	}
	if peak > node+int64(len(p))+64<<10 {
		t.Fatalf("node dirty peaked at %d, bound %d", peak, node)
	}
	if st := idle.Stats(); st.DirtyBlocks == 24 {
		t.Fatalf("the idle vdisk kept all its dirty blocks: %+v", st)
	}
	e.store.putDelay.Store(0)
	for _, d := range []*Disk{idle, busy} {
		if err := d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 1)
	for off := int64(0); off < 64<<20; off += int64(len(p)) {
		if err := busy.ReadAt(ctx, got, off); err != nil || got[0] != byte(off>>18) {
			t.Fatalf("at %d: %v %v", off, got, err)
		}
	}
	if err := idle.ReadAt(ctx, got, 3<<19-1); err != nil || got[0] != 7 {
		t.Fatalf("idle: %v %v", got, err)
	}
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// A failing store with a full cache fails writes with an error instead of
// blocking them forever.
func TestWriteStallFailsWithStoreDown(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = 1 << 20; c.FlushTimeout = 2 * time.Second })
	ctx := context.Background()
	mustCreate(t, s, "s", 16<<20, 65536, "db")
	d, _ := mustOpen(t, s, "s")
	e.store.failPut.Store(true)
	p := bytes.Repeat([]byte{1}, 256<<10)
	var err error
	for off := int64(0); off < 16<<20 && err == nil; off += int64(len(p)) {
		err = d.WriteAt(ctx, p, off, false)
	}
	if err == nil || !errors.Is(err, chunkstore.ErrUnavailable) {
		t.Fatalf("writes past a full cache with a failing store: %v", err)
	}
	e.store.failPut.Store(false)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestBlockStatusAndFastZero(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) { c.BlockCacheBytes = -1 })
	ctx := context.Background()
	const bs = 65536
	mustCreate(t, s, "b", 16*bs, bs, "db")
	d, _ := mustOpen(t, s, "b")
	ext := func() []nbd.Extent {
		t.Helper()
		x, err := d.BlockStatus(ctx, 0, 16*bs)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	if x := ext(); len(x) != 1 || x[0].Flags != nbd.ExtentHole|nbd.ExtentZero || x[0].Length != 16*bs {
		t.Fatalf("empty disk: %+v", x)
	}
	d.WriteAt(ctx, bytes.Repeat([]byte{1}, 2*bs), 2*bs, false)
	d.WriteZeroes(ctx, 8*bs, bs, nbd.ZeroNoHole)
	want := []nbd.Extent{xt(2*bs, 3), xt(2*bs, 0), xt(4*bs, 3), xt(bs, nbd.ExtentZero), xt(7*bs, 3)}
	for round := 0; round < 2; round++ { // in memory, then from the tree
		if x := ext(); fmt.Sprint(x) != fmt.Sprint(want) {
			t.Fatalf("round %d: %+v, want %+v", round, x, want)
		}
		if err := d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// An unaligned query is clipped to its range.
	x, _ := d.BlockStatus(ctx, bs+100, bs)
	if fmt.Sprint(x) != fmt.Sprint([]nbd.Extent{xt(bs-100, 3), xt(100, 0)}) {
		t.Fatalf("unaligned: %+v", x)
	}
	// Fast zero: whole blocks are fine, a partial block whose data is only
	// in the store is not.
	if err := d.WriteZeroes(ctx, 2*bs, bs, nbd.ZeroFast); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(ctx, 3*bs+100, 100, nbd.ZeroFast); !errors.Is(err, nbd.ErrNotFast) {
		t.Fatalf("unaligned fast zero of a stored block: %v", err)
	}
	if err := d.WriteZeroes(ctx, 3*bs+512, 512, nbd.ZeroFast); err != nil { // sector-aligned: no read
		t.Fatalf("aligned fast zero: %v", err)
	}
	if err := d.WriteZeroes(ctx, 10*bs+512, 512, nbd.ZeroFast); err != nil { // absent block
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want = []nbd.Extent{xt(3*bs, 3), xt(bs, 0), xt(4*bs, 3), xt(bs, nbd.ExtentZero), xt(7*bs, 3)}
	if x := ext(); fmt.Sprint(x) != fmt.Sprint(want) {
		t.Fatalf("after zeroing: %+v, want %+v", x, want)
	}
}

func TestTmpDeletedOnDetach(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	mustCreate(t, s, "t", 1<<20, 4096, "tmp")
	d1, rel1, err := s.Open(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	d2, rel2, err := s.Open(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Fatal("two opens of one vdisk got two engines")
	}
	d1.WriteAt(ctx, []byte("x"), 0, true)
	rel1()
	rel1() // idempotent
	if _, err := s.Get(ctx, "t", false); err != nil {
		t.Fatalf("tmp vdisk gone while still attached: %v", err)
	}
	rel2()
	if _, err := s.Get(ctx, "t", false); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("tmp vdisk after last detach: %v", err)
	}
}

func TestServiceCloseFlushes(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	mustCreate(t, s, "c", 1<<20, 4096, "db")
	d, _, err := s.Open(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	d.WriteAt(ctx, []byte("hello"), 100, false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(ctx, []byte("x"), 0, false); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	s2 := e.service(t, "n2", nil)
	d2, _ := mustOpen(t, s2, "c") // the lease was released: no wait
	got := make([]byte, 5)
	d2.ReadAt(ctx, got, 100)
	if string(got) != "hello" {
		t.Fatalf("got %q", got)
	}
}

func xt(n int64, f nbd.ExtentFlags) nbd.Extent { return nbd.Extent{Length: n, Flags: f} }

// Writers on disjoint regions do random writes (aligned and not), zeroes,
// trims and flushes concurrently with background write-back and commits;
// each checks its own region against its model, and a fresh engine sees
// everything after the final flush.
func TestConcurrentModel(t *testing.T) {
	t.Run("commit", func(t *testing.T) { testConcurrentModel(t, false) })
	t.Run("journal", func(t *testing.T) { testConcurrentModel(t, true) })
}

func testConcurrentModel(t *testing.T, withJournal bool) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	e := newEnv()
	if withJournal {
		e.withJournal(t)
	}
	s := e.service(t, "n1", func(c *Config) {
		c.MaxDirtyBytes = 1 << 20
		c.WritebackBytes = 128 << 10
		c.WritebackInterval = 20 * time.Millisecond
		c.BlockCacheBytes = 256 << 10
	})
	const bs = 16384
	const regionBlocks = 96 // > smallZero: whole-region zeroing makes a span
	const writers = 6
	const size = writers * regionBlocks * bs
	mustCreate(t, s, "cm", size, bs, "db")
	d, release := mustOpen(t, s, "cm")
	ctx := context.Background()
	models := make([][]byte, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		models[w] = make([]byte, regionBlocks*bs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			model := models[w]
			base := int64(w) * regionBlocks * bs
			rsize := int64(len(model))
			for step := 0; step < 400; step++ {
				off := rng.Int64N(rsize)
				n := min(rng.Int64N(2*bs)+1, rsize-off)
				if rng.IntN(2) == 0 {
					off &^= 511
					n = min(max(n&^511, 512), rsize-off)
				}
				var err error
				switch op := rng.IntN(12); {
				case op < 5:
					p := make([]byte, n)
					for i := range p {
						p[i] = byte(rng.IntN(3))
					}
					err = d.WriteAt(ctx, p, base+off, rng.IntN(20) == 0)
					copy(model[off:], p)
				case op < 8:
					got := make([]byte, n)
					if err = d.ReadAt(ctx, got, base+off); err == nil && !bytes.Equal(got, model[off:off+n]) {
						err = fmt.Errorf("writer %d step %d: read [%d,+%d) differs", w, step, off, n)
					}
				case op == 8:
					if rng.IntN(3) == 0 {
						off, n = 0, rsize
					}
					err = d.WriteZeroes(ctx, base+off, n, 0)
					clear(model[off : off+n])
				case op == 9:
					from := off / bs * bs
					to := min(from+rng.Int64N(80)*bs, rsize)
					err = d.Trim(ctx, base+from, to-from, false)
					clear(model[from:to])
				default:
					err = d.Flush(ctx)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	release()
	want := bytes.Join(models, nil)
	s2 := e.service(t, "n2", nil)
	d2, _ := mustOpen(t, s2, "cm:ro")
	if got := readAll(t, d2); !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("reopened vdisk differs from the models first at byte %d (block %d)", i, i/bs)
			}
		}
	}
}

// With a store failing every few operations, writes, flushes and reads fail
// with errors (never wrong data), and once the store is healthy a flush
// makes exactly the written content durable.
func TestFlakyStoreModel(t *testing.T) {
	seed := rand.Uint64()
	if v := os.Getenv("ZOS_SEED"); v != "" { // replay a failed run's seed
		// (the interleaving with write-back jobs still varies)
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) {
		c.MaxDirtyBytes = 1 << 20
		c.WritebackBytes = 64 << 10
		c.BlockCacheBytes = -1
		c.NodeCacheBytes = -1
		c.FlushTimeout = 10 * time.Second
	})
	const bs = 16384
	const size = 256 * bs
	mustCreate(t, s, "f", size, bs, "db")
	d, release := mustOpen(t, s, "f")
	ctx := context.Background()
	model := make([]byte, size)
	e.store.failEvery.Store(7)
	failures := 0
	// hist: the operations so far, for the report of a wrong read.
	type histEnt struct {
		step, op int
		off, n   int64
		err      string
	}
	var hist []histEnt
	// readHealed reads once the store is healthy. A read may still fail
	// once or twice: it can share a fetch that started before (a
	// prefetch's, a readahead's) and failed.
	readHealed := func(off, n int64) []byte {
		got := make([]byte, n)
		var err error
		for range 5 {
			if err = d.ReadAt(ctx, got, off); !errors.Is(err, chunkstore.ErrUnavailable) {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for step := 0; step < 500; step++ {
		off := rng.Int64N(size)
		n := min(rng.Int64N(3*bs)+1, size-off)
		if rng.IntN(2) == 0 {
			off &^= 511
			n = min(max(n&^511, 512), size-off)
		}
		op := rng.IntN(10)
		hist = append(hist, histEnt{step: step, op: op, off: off, n: n})
		switch {
		case op < 5:
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.IntN(5))
			}
			if err := d.WriteAt(ctx, p, off, false); err != nil {
				hist[len(hist)-1].err = err.Error()
				// An unaligned write needs its block's content: a failed
				// read fails the write, whose earlier blocks may have
				// landed; read the range back when healthy.
				if !errors.Is(err, chunkstore.ErrUnavailable) {
					t.Fatal(err)
				}
				failures++
				e.store.failEvery.Store(0)
				got := readHealed(off, n)
				for i := range got { // each byte is old or new
					if got[i] != model[off+int64(i)] && got[i] != p[i] {
						t.Fatalf("step %d: byte %d after a failed write is neither old nor new", step, off+int64(i))
					}
				}
				copy(model[off:], got)
				e.store.failEvery.Store(7)
				continue
			}
			copy(model[off:], p)
		case op < 8:
			got := make([]byte, n)
			if err := d.ReadAt(ctx, got, off); err != nil {
				if !errors.Is(err, chunkstore.ErrUnavailable) {
					t.Fatal(err)
				}
				failures++
				continue
			}
			if !bytes.Equal(got, model[off:off+n]) {
				for i := range got {
					if got[i] != model[off+int64(i)] {
						b := (off + int64(i)) / bs
						t.Logf("first diff at %d (block %d): got %d want %d", off+int64(i), b, got[i], model[off+int64(i)])
						for _, h := range hist {
							if h.off < (b+1)*bs && h.off+h.n > b*bs || h.op == 9 { // or a flush
								t.Logf("  %+v", h)
							}
						}
						break
					}
				}
				t.Fatalf("step %d: read [%d,+%d) differs from the model", step, off, n)
			}
		case op == 8:
			if err := d.WriteZeroes(ctx, off, n, 0); err != nil {
				hist[len(hist)-1].err = err.Error()
				if !errors.Is(err, chunkstore.ErrUnavailable) {
					t.Fatal(err)
				}
				failures++
				// Zeroing is not atomic across blocks: the model cannot
				// tell which part landed; read it back when healthy.
				e.store.failEvery.Store(0)
				got := readHealed(off, n)
				copy(model[off:], got)
				e.store.failEvery.Store(7)
				continue
			}
			clear(model[off : off+n])
		default:
			if err := d.Flush(ctx); err != nil {
				hist[len(hist)-1].err = err.Error()
				failures++
			}
		}
	}
	t.Logf("%d operations failed", failures)
	if failures == 0 {
		t.Fatal("the flaky store never failed an operation")
	}
	e.store.failEvery.Store(0)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	release()
	s2 := e.service(t, "n2", nil)
	d2, _ := mustOpen(t, s2, "f:ro")
	if got := readAll(t, d2); !bytes.Equal(got, model) {
		t.Fatal("content after recovery differs from the model")
	}
}

// A block whose store write failed goes back to the cache; written again
// and flushed once the store works, its new content is what is committed.
func TestRetryAfterFailedPut(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	mustCreate(t, s, "r", 1<<20, 65536, "db")
	d, release := mustOpen(t, s, "r")
	e.store.failPut.Store(true)
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{1}, 65536), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err == nil {
		t.Fatal("flush succeeded with a failing store")
	}
	e.store.failPut.Store(false)
	if err := d.WriteAt(ctx, bytes.Repeat([]byte{2}, 512), 512, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	release()
	d2, _ := mustOpen(t, e.service(t, "n2", nil), "r:ro")
	got := make([]byte, 1536)
	d2.ReadAt(ctx, got, 0)
	want := append(append(bytes.Repeat([]byte{1}, 512), bytes.Repeat([]byte{2}, 512)...), bytes.Repeat([]byte{1}, 512)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("committed %v…, want %v…", got[:8], want[:8])
	}
}

// partitionedControl fails the lease renewals of one node, as if it could
// not reach the control plane.
type partitionedControl struct {
	*raft.Local
	cut  atomic.Bool
	node string
}

func (p *partitionedControl) Apply(ctx context.Context, op string, args any) (json.RawMessage, error) {
	if p.cut.Load() {
		if la, ok := args.(fsm.LeaseArgs); ok && la.Node == p.node {
			return nil, errors.New("control plane unreachable")
		}
		if _, ok := args.(fsm.VDiskHeadArgs); ok {
			return nil, errors.New("control plane unreachable")
		}
	}
	return p.Local.Apply(ctx, op, args)
}

// A holder that cannot renew loses its lease after the TTL; another node
// takes the vdisk over, and the old holder's flushes are refused with a
// stale epoch once it can talk again.
func TestLeaseLapsesAndFences(t *testing.T) {
	e := newEnv()
	pc := &partitionedControl{Local: e.ctl, node: "n1"}
	cfg := func(c *Config) {
		c.Control = pc
		c.LeaseTTL = 2 * time.Second
		c.LeaseRenew = 300 * time.Millisecond
		c.FlushTimeout = 3 * time.Second
	}
	s1 := e.service(t, "n1", cfg)
	s2 := e.service(t, "n2", cfg)
	ctx := context.Background()
	mustCreate(t, s1, "lap", 1<<20, 4096, "db")
	d1, _ := mustOpen(t, s1, "lap")
	if err := d1.WriteAt(ctx, []byte("first"), 0, true); err != nil {
		t.Fatal(err)
	}
	pc.cut.Store(true)
	d1.WriteAt(ctx, []byte("lost!"), 0, false) // never flushed
	var d2 *Disk
	wait.For(t, 30*time.Second, "the lease to lapse", func() bool {
		d, rel, err := s2.Open(ctx, "lap")
		if err != nil {
			return false
		}
		t.Cleanup(rel)
		d2 = d
		return true
	})
	if d2.Epoch() <= d1.Epoch() {
		t.Fatalf("epoch %d after takeover, holder had %d", d2.Epoch(), d1.Epoch())
	}
	got := make([]byte, 5)
	d2.ReadAt(ctx, got, 0)
	if string(got) != "first" {
		t.Fatalf("new holder reads %q, want the flushed %q", got, "first")
	}
	pc.cut.Store(false)
	if err := d1.Flush(ctx); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("old holder's flush after takeover: %v", err)
	}
	if !strings.Contains(d1.Flush(ctx).Error(), "stale") {
		t.Fatalf("fencing error does not say the epoch is stale: %v", d1.Flush(ctx))
	}
	d2.ReadAt(ctx, got, 0)
	if string(got) != "first" {
		t.Fatalf("fenced holder changed the vdisk: %q", got)
	}
}

// A commit whose takeover of failed write-back jobs fails stops at the
// first failure (here with Parallelism 1: one retry at a time) and gives
// the blocks it did not retry back to the cache, so that the next FLUSH
// stores them. They used to stay in flight with no job to end them: every
// later commit waited for them until its FlushTimeout (a hang of
// TestFlakyStoreModel about once in a hundred runs).
func TestFailedTakeoverReturnsTheRest(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) {
		c.MaxDirtyBytes = 4 << 20
		c.WritebackBytes = 64 << 10
		c.Parallelism = 1
		c.FlushTimeout = 20 * time.Second
	})
	mustCreate(t, s, "tr", 8<<20, 16384, "db")
	d, release := mustOpen(t, s, "tr")
	defer release()
	ctx := context.Background()
	gate := make(chan struct{})
	e.store.gateMin.Store(16384)
	e.store.gate.Store(&gate)
	want := bytes.Repeat([]byte{0xcd}, 1<<20)
	if err := d.WriteAt(ctx, want, 0, false); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "write-back jobs", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.wb.inflight) > 1
	})
	flushed := make(chan error, 1)
	go func() { flushed <- d.Flush(ctx) }()
	wait.For(t, 30*time.Second, "the commit to claim the jobs", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		n := 0
		for _, b := range d.wb.inflight {
			if b.claim != nil {
				n++
			}
		}
		return n > 1
	})
	e.store.failPut.Store(true) // the takeover fails too
	e.store.gate.Store(nil)
	close(gate) // the held puts fail
	if err := <-flushed; err == nil {
		t.Fatal("flush succeeded with every put failing")
	}
	e.store.failPut.Store(false)
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := d.Flush(fctx); err != nil {
		t.Fatalf("flush once the store is healthy: %v", err)
	}
	got := make([]byte, len(want))
	if err := d.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("content after the failed takeover differs (err %v)", err)
	}
	d.mu.Lock()
	n := len(d.wb.inflight)
	d.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d blocks still in flight after a successful flush", n)
	}
}

// A commit takes over the write-back jobs it counts on: background jobs
// store blocks when a FLUSH starts, their puts fail after the commit froze
// the blocks' Refs, and the commit stores those blocks itself and
// succeeds (no retry of the whole commit, no false failure).
func TestCommitTakesOverFailedJobs(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testCommitTakesOverFailedJobs(t, false) })
	// A zeroing covers the claimed blocks before their puts fail: the
	// commit still needs them stored (its frozen layer names them), and
	// the blocks end once, when it has (they used to end when their
	// jobs failed and again after the takeover, which counted the
	// in-flight bytes below zero).
	t.Run("zeroed", func(t *testing.T) { testCommitTakesOverFailedJobs(t, true) })
}

func testCommitTakesOverFailedJobs(t *testing.T, zero bool) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = 4 << 20; c.WritebackBytes = 64 << 10 })
	mustCreate(t, s, "to", 8<<20, 16384, "db")
	d, release := mustOpen(t, s, "to")
	ctx := context.Background()
	gate := make(chan struct{})
	// Hold the blocks' puts (whole blocks and extents), not the commit's
	// tree nodes: a failed put the commit started fails it, by design.
	e.store.gateMin.Store(16384)
	e.store.gate.Store(&gate)
	want := bytes.Repeat([]byte{0xab}, 2<<20)
	if err := d.WriteAt(ctx, want, 0, false); err != nil {
		t.Fatal(err)
	}
	// Background write-back started (past WritebackBytes) and its puts
	// are held.
	wait.For(t, 30*time.Second, "write-back jobs", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return len(d.wb.inflight) > 0
	})
	flushed := make(chan error, 1)
	go func() { flushed <- d.Flush(ctx) }()
	// Every claimed block's put must be held at the gate when it opens: a
	// put that reaches it after it opened succeeds, and its blocks need
	// no takeover.
	wait.For(t, 30*time.Second, "the commit to claim the jobs, their puts held", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		claimed := false
		runs := map[*extentRun]bool{}
		for _, b := range d.wb.inflight {
			if b.claim != nil {
				claimed = true
				runs[b.run] = true
			}
		}
		return claimed && e.store.held.Load() >= int64(len(runs))
	})
	if zero {
		// More than smallZero blocks: a zeroed span, over the blocks in
		// flight.
		if err := d.WriteZeroes(ctx, 0, int64(len(want)), 0); err != nil {
			t.Fatal(err)
		}
		want = make([]byte, len(want))
	}
	e.store.gate.Store(nil)
	close(gate) // the held puts fail
	if err := <-flushed; err != nil {
		t.Fatalf("flush with failed background jobs: %v", err)
	}
	if n := testutil.ToFloat64(s.m.flushTakeover); n == 0 {
		t.Fatal("no block was taken over by the commit")
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	err := d.invariantsLocked()
	d.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	release()
	ro, _ := mustOpen(t, e.service(t, "n2", nil), "to:ro")
	got := make([]byte, len(want))
	if err := ro.ReadAt(ctx, got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("committed content differs (err %v)", err)
	}
}
