package blockd

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/zosproject/zos/chunkstore"
)

// corruptStore answers Fetch of the listed chunks as the real stores do
// when a chunk fails its Ref check and cannot be rebuilt.
type corruptStore struct {
	*flakyStore
	mu  sync.Mutex
	bad map[chunkstore.Ref]bool
}

func (c *corruptStore) Fetch(ctx context.Context, r chunkstore.Ref) ([]byte, error) {
	c.mu.Lock()
	bad := c.bad[r]
	c.mu.Unlock()
	if bad {
		return nil, errors.Join(chunkstore.ErrCorrupt, errors.New("injected: content does not match its ref"))
	}
	return c.flakyStore.Fetch(ctx, r)
}

func (c *corruptStore) corrupt(refs ...chunkstore.Ref) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bad = map[chunkstore.Ref]bool{}
	for _, r := range refs {
		c.bad[r] = true
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// corruptService is a Service over cs logging to logs, with empty caches.
func corruptService(t *testing.T, e *env, cs *corruptStore, logs *syncBuffer) *Service {
	t.Helper()
	s, err := New(Config{
		Node: "n1", Control: e.ctl, Registerer: prometheus.NewRegistry(),
		Logger:            slog.New(slog.NewTextHandler(logs, nil)),
		StoreFor:          func(pool, typ string) chunkstore.Store { return cs },
		WritebackInterval: -1,
		ExtentBytes:       DefaultExtentBytes,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCorruptChunkFailsItsRangeOnly: a block chunk or a tree node that
// fails its check makes reads of the range it holds fail (EIO to NBD
// clients: the error is a chunkstore corruption, which the NBD server does
// not map to anything else), logged with the vdisk and the offset; reads
// of other ranges of the vdisk, and of other vdisks, go on.
func TestCorruptChunkFailsItsRangeOnly(t *testing.T) {
	const bs = 4096
	e := newEnv()
	cs := &corruptStore{flakyStore: e.store}
	ctx := context.Background()
	service := func(logs *syncBuffer) *Service { return corruptService(t, e, cs, logs) }
	s := service(&syncBuffer{})
	// Blocks 0 and 300 sit in different leaves (fanout 256).
	mustCreate(t, s, "v", 4<<20, bs, "db")
	mustCreate(t, s, "x", 4<<20, bs, "db")
	a, b, x := bytes.Repeat([]byte{0xa1}, bs), bytes.Repeat([]byte{0xb2}, bs), bytes.Repeat([]byte{0xc3}, bs)
	for name, c := range map[string][]byte{"v": b, "x": x} {
		d, rel := mustOpen(t, s, name)
		if err := d.WriteAt(ctx, a, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := d.WriteAt(ctx, c, 300*bs, false); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		rel()
	}
	s.Close()
	var head chunkstore.Ref
	var nodes []chunkstore.Ref
	{
		s := service(&syncBuffer{})
		d, rel := mustOpen(t, s, "v:ro")
		head = d.Head()
		err := d.tree.Refs(ctx, head, func(chunkstore.Ref) bool { return false }, func(r chunkstore.Ref, node bool) error {
			if node && r != head {
				nodes = append(nodes, r)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		rel()
		s.Close()
	}
	if len(nodes) != 2 {
		t.Fatalf("%d leaves under the root, want 2", len(nodes))
	}
	// x shares block 0 and its leaf with v, not block 300 or its leaf.
	cases := []struct {
		name string
		bad  chunkstore.Ref
	}{
		{"block", chunkstore.Sum(b)},
		{"leaf 1", nodes[0]},
		{"leaf 2", nodes[1]},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			logs := &syncBuffer{}
			s := service(logs) // empty caches: every read goes to the store
			cs.corrupt(c.bad)
			defer cs.corrupt()
			d, _ := mustOpen(t, s, "v:ro")
			got := make([]byte, bs)
			errA := d.ReadAt(ctx, got, 0)
			okA := errA == nil && bytes.Equal(got, a)
			errB := d.ReadAt(ctx, got, 300*bs)
			okB := errB == nil && bytes.Equal(got, b)
			if okA == okB {
				t.Fatalf("block 0: %v (ok %v), block 300: %v (ok %v); want exactly one range to fail", errA, okA, errB, okB)
			}
			failed, off := errB, "off=1228800"
			if !okA {
				failed, off = errA, "off=0"
			}
			if !chunkstore.IsCorruption(failed) {
				t.Fatalf("read of the damaged range: %v, want a corruption error", failed)
			}
			if l := logs.String(); !strings.Contains(l, "vdisk=v") || !strings.Contains(l, off) {
				t.Fatalf("no log of the failed read with the vdisk and %s:\n%s", off, l)
			}
			// A hole beyond both leaves reads fine, and so does the other
			// vdisk.
			if err := d.ReadAt(ctx, got, 600*bs); err != nil || !bytes.Equal(got, make([]byte, bs)) {
				t.Fatalf("hole: %v", err)
			}
			if !okA { // x's leaf of block 0 is the same chunk as v's (dedup)
				return
			}
			dx, _ := mustOpen(t, s, "x:ro")
			for _, r := range []struct {
				off  int64
				want []byte
			}{{0, a}, {300 * bs, x}} {
				if err := dx.ReadAt(ctx, got, r.off); err != nil || !bytes.Equal(got, r.want) {
					t.Fatalf("vdisk x at %d: %v", r.off, err)
				}
			}
		})
	}
}

// TestCorruptExtentFailsItsRangeOnly: an extent that fails its check (and
// cannot be rebuilt) fails reads of the blocks it holds, whether the read
// wanted a range of it or most of it, logged with the vdisk and offset;
// the blocks of other extents and standalone blocks read on.
func TestCorruptExtentFailsItsRangeOnly(t *testing.T) {
	const bs = 4096
	e := newEnv()
	cs := &corruptStore{flakyStore: e.store}
	ctx := context.Background()
	service := func(logs *syncBuffer) *Service { return corruptService(t, e, cs, logs) }
	s := service(&syncBuffer{})
	mustCreate(t, s, "v", 4<<20, bs, "db")
	d, rel := mustOpen(t, s, "v")
	want := make([]byte, 4<<20)
	fill := func(off, n int64, seed byte) {
		for i := off; i < off+n; i++ {
			want[i] = seed + byte(i/bs)
		}
		if err := d.WriteAt(ctx, want[off:off+n], off, false); err != nil {
			t.Fatal(err)
		}
	}
	fill(0, 16*bs, 1)       // extent A: blocks 0-15
	fill(300*bs, 16*bs, 50) // extent B: blocks 300-315
	fill(600*bs, bs, 99)    // a block of its own
	if err := d.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	rel()
	ents := entries(t, s, "v")
	extA := ents[3].Ext
	if extA.IsZero() || ents[303].Ext.IsZero() || ents[303].Ext == extA || ents[600].InExtent() {
		t.Fatalf("layout: block 3 %+v, 303 %+v, 600 %+v", ents[3], ents[303], ents[600])
	}
	cs.corrupt(extA)
	defer cs.corrupt()
	for _, r := range []struct{ off, n int64 }{{3 * bs, bs}, {0, 16 * bs}} { // a range, the whole
		logs := &syncBuffer{}
		ro, release := mustOpen(t, service(logs), "v:ro") // empty caches
		got := make([]byte, r.n)
		if err := ro.ReadAt(ctx, got, r.off); !chunkstore.IsCorruption(err) {
			t.Fatalf("read [%d, +%d) of the damaged extent: %v, want a corruption error", r.off, r.n, err)
		}
		if l := logs.String(); !strings.Contains(l, "vdisk=v") || !strings.Contains(l, "off="+strconv.FormatInt(r.off, 10)) {
			t.Fatalf("no log of the failed read with the vdisk and off=%d:\n%s", r.off, l)
		}
		for _, ok := range []struct{ off, n int64 }{{16 * bs, bs}, {303 * bs, bs}, {300 * bs, 16 * bs}, {600 * bs, bs}} {
			got := make([]byte, ok.n)
			if err := ro.ReadAt(ctx, got, ok.off); err != nil || !bytes.Equal(got, want[ok.off:ok.off+ok.n]) {
				t.Fatalf("read [%d, +%d) beside the damaged extent: %v", ok.off, ok.n, err)
			}
		}
		release()
	}
}
