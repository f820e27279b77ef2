package blockd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster/wait"
	"github.com/zosproject/zos/raft/fsm"
)

func randImage(seed uint64, size int, holes int) []byte {
	rng := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rng.IntN(256))
	}
	for k := 0; k < holes; k++ { // zero runs, some block aligned
		off := rng.IntN(size)
		n := min(rng.IntN(200000), size-off)
		clear(b[off : off+n])
	}
	return b
}

func exportBytes(t *testing.T, s *Service, name, snap string) []byte {
	t.Helper()
	im, err := s.Image(context.Background(), name, snap)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	n, err := im.WriteTo(context.Background(), &buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n != im.Size || int64(buf.Len()) != im.Size {
		t.Fatalf("export wrote %d bytes (buffer %d), size %d", n, buf.Len(), im.Size)
	}
	return buf.Bytes()
}

func TestImportExportSnapshotsCloneRollbackDiff(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	const size = 3<<20 + 512
	img := randImage(1, size-1000, 6) // shorter than the disk
	var last int64
	info, err := s.Create(ctx, CreateOptions{Name: "a", Size: size, BlockSize: 16384}, bytes.NewReader(img), func(n int64) { last = n })
	if err != nil {
		t.Fatal(err)
	}
	if last != int64(len(img)) {
		t.Fatalf("progress ended at %d, want %d", last, len(img))
	}
	info, _ = s.Get(ctx, "a", true)
	if info.Head == "" || info.Type != "db" || info.Allocated == 0 {
		t.Fatalf("info %+v", info)
	}
	want := append(bytes.Clone(img), make([]byte, size-len(img))...)
	if got := exportBytes(t, s, "a", ""); !bytes.Equal(got, want) {
		t.Fatal("export differs from the imported image")
	}
	// Zero blocks were skipped: fewer blocks allocated than the size.
	if info.Allocated >= size {
		t.Fatalf("allocated %d: zero blocks were stored", info.Allocated)
	}

	if _, err := s.Snapshot(ctx, "a", "s1"); err != nil {
		t.Fatal(err)
	}
	// Change some bytes through an engine.
	d, rel, err := s.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	patch := bytes.Repeat([]byte{0x5a}, 20000)
	d.WriteAt(ctx, patch, 100000, false)
	d.WriteZeroes(ctx, 1<<20, 1<<20, 0)
	// Rollback is refused while attached.
	if _, err := s.Rollback(ctx, "a", "s1"); !errors.Is(err, ErrBusy) {
		t.Fatalf("rollback while attached: %v", err)
	}
	// Snapshot flushes the attached engine first.
	if _, err := s.Snapshot(ctx, "a", "s2"); err != nil {
		t.Fatal(err)
	}
	rel()
	want2 := bytes.Clone(want)
	copy(want2[100000:], patch)
	clear(want2[1<<20 : 2<<20])
	if got := exportBytes(t, s, "a", "s2"); !bytes.Equal(got, want2) {
		t.Fatal("snapshot s2 differs")
	}
	if got := exportBytes(t, s, "a", "s1"); !bytes.Equal(got, want) {
		t.Fatal("snapshot s1 changed")
	}

	// Diff s1 -> s2: the patched blocks (data) and the zeroed MiB (zero).
	var ranges []Range
	if err := s.Diff(ctx, "a", "s1", "s2", func(r Range) error { ranges = append(ranges, r); return nil }); err != nil {
		t.Fatal(err)
	}
	var changed, zeroed int64
	for _, r := range ranges {
		if r.Zero {
			zeroed += r.Length
		} else {
			changed += r.Length
		}
		if !r.Zero && bytes.Equal(want[r.Offset:r.Offset+r.Length], want2[r.Offset:r.Offset+r.Length]) {
			t.Fatalf("range %+v reported changed but equal", r)
		}
	}
	// Everything outside the ranges is equal.
	covered := make([]bool, size)
	for _, r := range ranges {
		for i := r.Offset; i < r.Offset+r.Length; i++ {
			covered[i] = true
		}
	}
	for i := range covered {
		if !covered[i] && want[i] != want2[i] {
			t.Fatalf("byte %d changed but not in the diff", i)
		}
	}
	if changed < 20000 || changed > 20000+2*16384 || zeroed == 0 || zeroed > 1<<20 {
		t.Fatalf("diff: %d changed, %d zeroed: %+v", changed, zeroed, ranges)
	}

	// Clone s1 (O(1): same head), write to the clone, origin unchanged.
	c, err := s.Clone(ctx, "a", "s1", "b", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.Head != info.Head || c.Parent != "a@s1" {
		t.Fatalf("clone %+v", c)
	}
	db, relb, _ := s.Open(ctx, "b")
	db.WriteAt(ctx, []byte("clone"), 0, true)
	relb()
	if got := exportBytes(t, s, "a", "s1"); !bytes.Equal(got, want) {
		t.Fatal("clone write leaked into the origin's snapshot")
	}
	// create --from
	if _, err := s.Create(ctx, CreateOptions{Name: "c", From: "a@s2", Size: size + 1<<20}, nil, nil); err != nil {
		t.Fatal(err)
	}
	cc, _ := s.Get(ctx, "c", false)
	if cc.Size != size+1<<20 || cc.Type != "boot" {
		t.Fatalf("create --from: %+v", cc)
	}
	if got := exportBytes(t, s, "c", ""); !bytes.Equal(got[:size], want2) || !isZero(got[size:]) {
		t.Fatal("create --from content differs")
	}
	if _, err := s.Create(ctx, CreateOptions{Name: "x", From: "a@s2", Type: "cache"}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("clone db as cache: %v", err)
	}

	// Rollback to s1.
	if _, err := s.Rollback(ctx, "a", "s1"); err != nil {
		t.Fatal(err)
	}
	if got := exportBytes(t, s, "a", ""); !bytes.Equal(got, want) {
		t.Fatal("rollback did not restore s1")
	}

	// Snapshots list, delete.
	sn, _ := s.Snapshots(ctx, "a")
	if len(sn) != 2 || sn[0].Name != "s1" || sn[1].Name != "s2" {
		t.Fatalf("snapshots %+v", sn)
	}
	if err := s.DeleteSnapshot(ctx, "a", "s2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Image(ctx, "a", "s2"); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("deleted snapshot: %v", err)
	}

	if err := s.Delete(ctx, "b", false); err != nil { // b's own block becomes garbage
		t.Fatal(err)
	}
	// GC roots cover every chunk of every head and snapshot: the chunks of
	// the heads are all reachable, and exporting from only the marked
	// chunks works.
	marked := map[chunkstore.Ref]bool{}
	if err := s.Roots(ctx, func(r chunkstore.Ref) error { marked[r] = true; return nil }); err != nil {
		t.Fatal(err)
	}
	var unmarked []chunkstore.Ref
	e.store.Enumerate(ctx, chunkstore.Ref{}, func(in chunkstore.Info) error {
		if !marked[in.Ref] {
			unmarked = append(unmarked, in.Ref)
		}
		return nil
	})
	if len(unmarked) == 0 {
		t.Fatal("expected garbage after the snapshot delete and rollback")
	}
	e.store.Remove(ctx, unmarked...) // sweep
	s.blocks, s.nodes = nil, nil
	s2 := e.service(t, "n2", nil)
	if got := exportBytes(t, s2, "a", ""); !bytes.Equal(got, want) {
		t.Fatal("a lost data to the sweep")
	}
	if got := exportBytes(t, s2, "c", ""); !bytes.Equal(got[:size], want2) {
		t.Fatal("c lost data to the sweep")
	}

	// An image larger than the vdisk is refused and leaves no vdisk.
	if _, err := s.Create(ctx, CreateOptions{Name: "big", Size: 4096}, bytes.NewReader(make([]byte, 8192+1)), nil); err == nil {
		t.Fatal("oversized image accepted")
	}
	if _, err := s.Get(ctx, "big", false); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("failed create left a vdisk: %v", err)
	}
	// Import into an attached vdisk is refused.
	_, relc, _ := s.Open(ctx, "c")
	if err := s.Import(ctx, "c", bytes.NewReader([]byte("x")), nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("import into attached vdisk: %v", err)
	}
	relc()
	// Delete.
	if err := s.Delete(ctx, "c", false); err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListVDisks(ctx)
	if len(list) != 1 || list[0].Name != "a" {
		t.Fatalf("list %+v", list)
	}
}

func TestResize(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	const bs = 4096
	img := bytes.Repeat([]byte{9}, 10*bs)
	if _, err := s.Create(ctx, CreateOptions{Name: "r", Size: 10 * bs, BlockSize: bs}, bytes.NewReader(img), nil); err != nil {
		t.Fatal(err)
	}
	d, rel, _ := s.Open(ctx, "r")
	// Grow while attached: the engine sees the new size.
	if _, err := s.Resize(ctx, "r", 20*bs, false); err != nil {
		t.Fatal(err)
	}
	if d.Size() != 20*bs {
		t.Fatalf("engine size %d after grow", d.Size())
	}
	// Shrink needs force, and not being attached.
	if _, err := s.Resize(ctx, "r", 5*bs, false); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("shrink without force: %v", err)
	}
	if _, err := s.Resize(ctx, "r", 5*bs, true); !errors.Is(err, ErrBusy) {
		t.Fatalf("shrink while attached: %v", err)
	}
	rel()
	if _, err := s.Resize(ctx, "r", 5*bs+512, true); err != nil {
		t.Fatal(err)
	}
	// Grow again: the cut-off bytes read as zeroes.
	if _, err := s.Resize(ctx, "r", 10*bs, false); err != nil {
		t.Fatal(err)
	}
	got := exportBytes(t, s, "r", "")
	want := make([]byte, 10*bs)
	copy(want, img[:5*bs+512])
	if !bytes.Equal(got, want) {
		t.Fatal("shrink+grow content wrong")
	}
	info, _ := s.Get(ctx, "r", true)
	if info.Allocated != 6*bs {
		t.Fatalf("allocated %d, want %d", info.Allocated, 6*bs)
	}
}

// Export streams through a slow writer without holding the whole image.
func TestExportToFailingWriter(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	if _, err := s.Create(ctx, CreateOptions{Name: "x", Size: 8 << 20, BlockSize: 65536}, bytes.NewReader(randImage(2, 8<<20, 0)), nil); err != nil {
		t.Fatal(err)
	}
	im, _ := s.Image(ctx, "x", "")
	_, err := im.WriteTo(ctx, &failAfter{n: 1 << 20}, nil)
	if !errors.Is(err, io.ErrShortWrite) {
		t.Fatalf("export to failing writer: %v", err)
	}
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, io.ErrShortWrite
	}
	f.n -= len(p)
	return len(p), nil
}

// Blocks an open vdisk stored but did not commit yet are GC roots too.
func TestRootsIncludePendingBlocks(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", func(c *Config) { c.MaxDirtyBytes = 1 << 20; c.WritebackBytes = 4096 })
	ctx := context.Background()
	mustCreate(t, s, "p", 1<<20, 4096, "db")
	d, _ := mustOpen(t, s, "p")
	data := bytes.Repeat([]byte{9}, 64<<10)
	if err := d.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "background write-back", func() bool { return d.Stats().PendingBlocks > 0 })
	if !d.Head().IsZero() {
		t.Fatal("committed without a flush")
	}
	// The pending blocks are stored as chunks of their own or as extents
	// (runs of them): some marked chunk is a run of the written blocks.
	var marked []chunkstore.Ref
	if err := s.GCRoots().Mark(ctx, e.store, func(r chunkstore.Ref) { marked = append(marked, r) }); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range marked {
		b, err := e.store.Fetch(ctx, r)
		if err == nil && len(b) > 0 && len(b)%4096 == 0 && bytes.Equal(b, data[:len(b)]) {
			found = true
		}
	}
	if !found {
		t.Fatalf("no stored, uncommitted block is a GC root (%d marked)", len(marked))
	}
}

// OpenAlone refuses a vdisk open read-write here, or being opened, in the
// same step as its own open: of concurrent callers exactly one gets it.
func TestOpenAlone(t *testing.T) {
	e := newEnv()
	s := e.service(t, "n1", nil)
	ctx := context.Background()
	if _, err := s.Create(ctx, CreateOptions{Name: "x", Size: 1 << 20, BlockSize: 4096}, nil, nil); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var rels []func()
		refused := 0
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, rel, err := s.OpenAlone(ctx, "x")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					rels = append(rels, rel)
				case errors.Is(err, ErrAttachedHere):
					refused++
				default:
					t.Errorf("OpenAlone: %v", err)
				}
			}()
		}
		wg.Wait()
		if len(rels) != 1 || refused != 5 {
			t.Fatalf("round %d: %d opens, %d refused; want 1 and 5", round, len(rels), refused)
		}
		// A shared open (an adopted VM's) joins it; a read-only one is
		// not an attach.
		_, relShared, err := s.Open(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		_, relRO, err := s.Open(ctx, "x:ro")
		if err != nil {
			t.Fatal(err)
		}
		rels[0]()
		if _, _, err := s.OpenAlone(ctx, "x"); !errors.Is(err, ErrAttachedHere) {
			t.Fatalf("OpenAlone while a shared open holds it: %v", err)
		}
		relShared()
		relRO()
	}
	_, rel, err := s.OpenAlone(ctx, "x")
	if err != nil {
		t.Fatalf("OpenAlone once everyone let go: %v", err)
	}
	rel()
	if _, _, err := s.OpenAlone(ctx, "x:ro"); err == nil {
		t.Fatal("OpenAlone of a read-only export name succeeded")
	}
}
