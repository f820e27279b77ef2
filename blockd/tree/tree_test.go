package tree

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/zosproject/zos/blockd/internal/refcache"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/mem"
)

// entryOf is version v of block i in a model: its content is version
// v/2, and odd versions store it inside an extent of 8 blocks, so v and v^1
// are the same content in two places.
func entryOf(i uint64, v int) Entry {
	e := Entry{Ref: blockRef(i, v/2)}
	if v%2 == 1 {
		e.Ext = blockRef(i/8, 1000+v)
		e.Slot, e.Blocks = uint16(i%8), 8
	}
	return e
}

func blockRef(i uint64, v int) chunkstore.Ref {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:], i)
	binary.LittleEndian.PutUint64(b[8:], uint64(v))
	return chunkstore.Sum(b[:])
}

// countingStore counts puts and fetches.
type countingStore struct {
	*mem.Store
	puts, fetches atomic.Int64
	putBytes      atomic.Int64
}

func (c *countingStore) Put(ctx context.Context, b []byte) (chunkstore.Ref, error) {
	c.puts.Add(1)
	c.putBytes.Add(int64(len(b)))
	return c.Store.Put(ctx, b)
}

func (c *countingStore) Fetch(ctx context.Context, r chunkstore.Ref) ([]byte, error) {
	c.fetches.Add(1)
	return c.Store.Fetch(ctx, r)
}

func newTree(t testing.TB, fanout int, cache bool) (*Tree, *countingStore) {
	t.Helper()
	s := &countingStore{Store: mem.New()}
	cfg := Config{Fanout: fanout}
	if cache {
		cfg.Cache = refcache.New(8 << 20)
	}
	tr, err := New(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr, s
}

func sortedChanges(m map[uint64]Entry) []Change {
	var out []Change
	for i, r := range m {
		out = append(out, Change{i, r})
	}
	slices.SortFunc(out, func(a, b Change) int {
		switch {
		case a.Index < b.Index:
			return -1
		case a.Index > b.Index:
			return 1
		}
		return 0
	})
	return out
}

func checkModel(t *testing.T, tr *Tree, root chunkstore.Ref, model map[uint64]Entry, probes []uint64) {
	t.Helper()
	ctx := context.Background()
	for _, i := range probes {
		got, err := tr.Lookup(ctx, root, i)
		if err != nil {
			t.Fatal(err)
		}
		if got != model[i] {
			t.Fatalf("Lookup(%d) = %+v, want %+v", i, got, model[i])
		}
		// The path was just read: with a cache it is there.
		if c, ok := tr.LookupCached(root, i); tr.cache != nil && (!ok || c != got) {
			t.Fatalf("LookupCached(%d) = %+v, %v, want %+v", i, c, ok, got)
		} else if tr.cache == nil && ok && !root.IsZero() {
			t.Fatalf("LookupCached(%d) without a cache = %+v, true", i, c)
		}
	}
	var walked []Change
	if err := tr.Walk(ctx, root, 0, ^uint64(0), func(i uint64, r Entry) error {
		walked = append(walked, Change{i, r})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := sortedChanges(model)
	if !slices.Equal(walked, want) {
		t.Fatalf("Walk gave %d entries, model has %d", len(walked), len(want))
	}
	// The tree is canonical: building the model from scratch in one batch
	// gives the same root.
	fresh, err := tr.Update(ctx, chunkstore.Ref{}, want)
	if err != nil {
		t.Fatal(err)
	}
	if fresh != root {
		t.Fatalf("tree is not canonical: incremental root %s, fresh root %s", root.Short(), fresh.Short())
	}
}

func TestTreeModel(t *testing.T) {
	for _, fanout := range []int{16, 256} {
		for _, cache := range []bool{false, true} {
			t.Run(fmt.Sprintf("fanout%d/cache=%v", fanout, cache), func(t *testing.T) {
				seed := rand.Uint64()
				t.Logf("seed %d", seed)
				rng := rand.New(rand.NewPCG(seed, 1))
				tr, _ := newTree(t, fanout, cache)
				ctx := context.Background()
				model := map[uint64]Entry{}
				var root chunkstore.Ref
				spaces := []uint64{64, 5000, 1 << 20, 1 << 40, ^uint64(0)}
				var roots []chunkstore.Ref
				var models []map[uint64]Entry
				for step := 0; step < 60; step++ {
					space := spaces[rng.IntN(len(spaces))]
					batch := map[uint64]Entry{}
					n := 1 + rng.IntN(40)
					for k := 0; k < n; k++ {
						var i uint64
						if rng.IntN(3) == 0 && len(model) > 0 {
							for j := range model { // an existing index
								i = j
								break
							}
						} else {
							i = rng.Uint64() % space
							if space == ^uint64(0) {
								i = rng.Uint64()
							}
						}
						if rng.IntN(4) == 0 {
							batch[i] = Entry{}
						} else {
							batch[i] = entryOf(i, step)
						}
					}
					nr, err := tr.Update(ctx, root, sortedChanges(batch))
					if err != nil {
						t.Fatal(err)
					}
					old := maps(model)
					for i, r := range batch {
						if r.IsZero() {
							delete(model, i)
						} else {
							model[i] = r
						}
					}
					// Diff against the previous root matches the model diff.
					checkDiff(t, tr, root, nr, old, model)
					root = nr
					var probes []uint64
					for i := range batch {
						probes = append(probes, i, i+1, i-1)
					}
					checkModel(t, tr, root, model, probes)
					roots = append(roots, root)
					models = append(models, maps(model))
					if step%7 == 3 { // punch a range
						var from uint64
						if len(model) > 0 {
							c := sortedChanges(model)
							from = c[rng.IntN(len(c))].Index
						}
						to := from + uint64(rng.IntN(1<<uint(rng.IntN(30))))
						nr, err := tr.Punch(ctx, root, from, to)
						if err != nil {
							t.Fatal(err)
						}
						old := maps(model)
						for i := range model {
							if i >= from && i < to {
								delete(model, i)
							}
						}
						checkDiff(t, tr, root, nr, old, model)
						root = nr
						checkModel(t, tr, root, model, []uint64{from - 1, from, to - 1, to})
					}
					if step%10 == 9 { // truncate
						var cut uint64
						if len(model) > 0 {
							c := sortedChanges(model)
							cut = c[rng.IntN(len(c))].Index + uint64(rng.IntN(3))
						}
						nr, err := tr.Truncate(ctx, root, cut)
						if err != nil {
							t.Fatal(err)
						}
						old := maps(model)
						for i := range model {
							if i >= cut {
								delete(model, i)
							}
						}
						checkDiff(t, tr, root, nr, old, model)
						root = nr
						checkModel(t, tr, root, model, []uint64{cut - 1, cut, cut + 1})
					}
				}
				// Old roots are intact (path copying) and diff between any
				// two matches the models.
				for k := 0; k < 10; k++ {
					a, b := rng.IntN(len(roots)), rng.IntN(len(roots))
					checkDiff(t, tr, roots[a], roots[b], models[a], models[b])
				}
				if len(model) == 0 && !root.IsZero() {
					t.Fatal("empty model, non-zero root")
				}
			})
		}
	}
}

func maps(m map[uint64]Entry) map[uint64]Entry {
	o := make(map[uint64]Entry, len(m))
	for k, v := range m {
		o[k] = v
	}
	return o
}

func checkDiff(t *testing.T, tr *Tree, a, b chunkstore.Ref, ma, mb map[uint64]Entry) {
	t.Helper()
	// Diff compares contents: a block that only moved (into or out of an
	// extent) is not a change.
	want := map[uint64][2]chunkstore.Ref{}
	for _, m := range []map[uint64]Entry{ma, mb} {
		for i := range m {
			if ma[i].Ref != mb[i].Ref {
				want[i] = [2]chunkstore.Ref{ma[i].Ref, mb[i].Ref}
			}
		}
	}
	last := uint64(0)
	n := 0
	err := tr.Diff(context.Background(), a, b, func(i uint64, o, nw chunkstore.Ref) error {
		if n > 0 && i <= last {
			return fmt.Errorf("diff out of order: %d after %d", i, last)
		}
		last = i
		n++
		w, ok := want[i]
		if !ok {
			return fmt.Errorf("diff reports index %d, which did not change", i)
		}
		if w != [2]chunkstore.Ref{o, nw} {
			return fmt.Errorf("diff at %d: %s->%s, want %s->%s", i, o.Short(), nw.Short(), w[0].Short(), w[1].Short())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(want) {
		t.Fatalf("diff reported %d changes, want %d", n, len(want))
	}
}

func TestUpdateWritesOnlyChangedPath(t *testing.T) {
	tr, s := newTree(t, 256, false)
	ctx := context.Background()
	var ch []Change
	for i := uint64(0); i < 256*256; i++ { // two full levels
		ch = append(ch, Change{i, Entry{Ref: blockRef(i, 0)}})
	}
	root, err := tr.Update(ctx, chunkstore.Ref{}, ch)
	if err != nil {
		t.Fatal(err)
	}
	if lvl, _ := tr.Level(ctx, root); lvl != 1 {
		t.Fatalf("level %d, want 1", lvl)
	}
	s.puts.Store(0)
	if _, err := tr.Update(ctx, root, []Change{{1000, Entry{Ref: blockRef(1000, 1)}}}); err != nil {
		t.Fatal(err)
	}
	if got := s.puts.Load(); got != 2 {
		t.Fatalf("one change wrote %d nodes, want 2 (leaf and root)", got)
	}
	// Diff of two trees differing in one block reads only that path.
	root2, _ := tr.Update(ctx, root, []Change{{70000 % 65536, Entry{Ref: blockRef(1, 9)}}})
	s.fetches.Store(0)
	n := 0
	tr.Diff(ctx, root, root2, func(uint64, chunkstore.Ref, chunkstore.Ref) error { n++; return nil })
	if n != 1 || s.fetches.Load() > 4 {
		t.Fatalf("diff: %d changes with %d fetches; want 1 change and at most 4 fetches", n, s.fetches.Load())
	}
}

func TestGrowAndShrinkHeight(t *testing.T) {
	tr, _ := newTree(t, 16, true)
	ctx := context.Background()
	root, err := tr.Update(ctx, chunkstore.Ref{}, []Change{{3, Entry{Ref: blockRef(3, 0)}}})
	if err != nil {
		t.Fatal(err)
	}
	if l, _ := tr.Level(ctx, root); l != 0 {
		t.Fatalf("level %d", l)
	}
	root, _ = tr.Update(ctx, root, []Change{{1 << 20, Entry{Ref: blockRef(1<<20, 0)}}})
	if l, _ := tr.Level(ctx, root); l != 5 {
		t.Fatalf("level %d, want 5", l)
	}
	root, _ = tr.Update(ctx, root, []Change{{1 << 20, Entry{}}})
	if l, _ := tr.Level(ctx, root); l != 0 {
		t.Fatalf("after removal level %d, want 0 (canonical)", l)
	}
	root, _ = tr.Update(ctx, root, []Change{{^uint64(0), Entry{Ref: blockRef(9, 9)}}})
	if e, _ := tr.Lookup(ctx, root, ^uint64(0)); e.Ref != blockRef(9, 9) {
		t.Fatal("max index lost")
	}
	root, _ = tr.Truncate(ctx, root, 4)
	if l, _ := tr.Level(ctx, root); l != 0 {
		t.Fatalf("after truncate level %d, want 0", l)
	}
	root, _ = tr.Truncate(ctx, root, 3)
	if !root.IsZero() {
		t.Fatal("truncate to 3 should leave the empty tree")
	}
}

func TestUnsorted(t *testing.T) {
	tr, _ := newTree(t, 16, false)
	_, err := tr.Update(context.Background(), chunkstore.Ref{}, []Change{{2, Entry{Ref: blockRef(2, 0)}}, {2, Entry{Ref: blockRef(2, 1)}}})
	if !errors.Is(err, ErrUnsorted) {
		t.Fatalf("err %v", err)
	}
}

// A chunk that is not a node (or a node of another fanout) is an error, not
// a panic.
func TestBadNode(t *testing.T) {
	tr, s := newTree(t, 256, false)
	ctx := context.Background()
	junk, _ := s.Put(ctx, []byte("not a node"))
	if _, err := tr.Lookup(ctx, junk, 1); !errors.Is(err, ErrBadNode) {
		t.Fatalf("junk root: %v", err)
	}
	small, _ := newTree(t, 16, false)
	r16, err := small.Update(ctx, chunkstore.Ref{}, []Change{{1, Entry{Ref: blockRef(1, 0)}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := small.s.Fetch(ctx, r16)
	r, _ := s.Put(ctx, b)
	if _, err := tr.Lookup(ctx, r, 1); !errors.Is(err, ErrBadNode) {
		t.Fatalf("foreign fanout: %v", err)
	}
	// Missing chunk.
	if _, err := tr.Lookup(ctx, blockRef(1, 1), 1); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("missing root: %v", err)
	}
}

func TestRefsSharedSubtrees(t *testing.T) {
	tr, _ := newTree(t, 16, true)
	ctx := context.Background()
	var ch []Change
	for i := uint64(0); i < 1000; i++ {
		ch = append(ch, Change{i, Entry{Ref: blockRef(i, 0)}})
	}
	a, _ := tr.Update(ctx, chunkstore.Ref{}, ch)
	b, _ := tr.Update(ctx, a, []Change{{5, Entry{Ref: blockRef(5, 1)}}})
	seen := map[chunkstore.Ref]bool{}
	blocks := map[chunkstore.Ref]bool{}
	nodes := 0
	mark := func(r chunkstore.Ref) bool {
		if seen[r] {
			return true
		}
		seen[r] = true
		return false
	}
	for _, root := range []chunkstore.Ref{a, b} {
		if err := tr.Refs(ctx, root, mark, func(r chunkstore.Ref, node bool) error {
			if node {
				nodes++
			} else {
				blocks[r] = true
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(blocks) != 1001 {
		t.Fatalf("%d distinct blocks, want 1001", len(blocks))
	}
	// a has 63 leaves + 4 level-1 + 1 root = 68 nodes; b adds only its
	// changed path (leaf, level-1, root).
	if nodes != 68+3 {
		t.Fatalf("%d nodes visited, want 71", nodes)
	}
}

func FuzzValidate(f *testing.F) {
	tr, s := newTree(f, 16, false)
	ctx := context.Background()
	r, _ := tr.Update(ctx, chunkstore.Ref{}, []Change{{1, Entry{Ref: blockRef(1, 0)}}, {300, Entry{Ref: blockRef(300, 0)}}})
	b, _ := s.Fetch(ctx, r)
	f.Add(b)
	r2, _ := tr.Update(ctx, chunkstore.Ref{}, []Change{{1, entryOf(1, 1)}, {2, entryOf(2, 0)}, {7, entryOf(7, 1)}})
	b2, _ := s.Fetch(ctx, r2)
	f.Add(b2)
	f.Add([]byte{nodeMagic, nodeVersion, 4, 0, 1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := validate(b, 4, 15)
		if err != nil {
			return
		}
		// A valid node re-encodes to itself.
		var got []byte
		if n.level() == 0 {
			leaf := make([]Entry, 16)
			n.expandEntries(16, leaf)
			got = encodeLeaf(4, leaf)
		} else {
			slots := make([]chunkstore.Ref, 16)
			n.expand(16, slots)
			got = encode(4, n.level(), slots)
		}
		if string(got) != string(b) {
			t.Fatalf("re-encoding differs")
		}
		for s := 0; s < 16; s++ {
			if n.child(16, s) != n.entry(16, s).Ref {
				t.Fatalf("slot %d: child and entry differ", s)
			}
		}
	})
}

// FuzzOps drives random update/truncate sequences decoded from the input
// against a map model.
func FuzzOps(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 200, 100, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, _ := newTree(t, 16, false)
		ctx := context.Background()
		model := map[uint64]Entry{}
		var root chunkstore.Ref
		for ops := 0; len(in) >= 3 && ops < 300; ops++ {
			op, idx := in[0], uint64(binary.LittleEndian.Uint16(in[1:3]))
			in = in[3:]
			idx *= uint64(op%7) + 1
			switch {
			case op < 200:
				var r Entry
				if op%3 != 0 {
					r = entryOf(idx, int(op))
					model[idx] = r
				} else {
					delete(model, idx)
				}
				nr, err := tr.Update(ctx, root, []Change{{idx, r}})
				if err != nil {
					t.Fatal(err)
				}
				root = nr
			case op < 230:
				to := idx + uint64(op-190)*uint64(op-190)
				nr, err := tr.Punch(ctx, root, idx, to)
				if err != nil {
					t.Fatal(err)
				}
				for i := range model {
					if i >= idx && i < to {
						delete(model, i)
					}
				}
				root = nr
			default:
				nr, err := tr.Truncate(ctx, root, idx)
				if err != nil {
					t.Fatal(err)
				}
				for i := range model {
					if i >= idx {
						delete(model, i)
					}
				}
				root = nr
			}
		}
		fresh, err := tr.Update(ctx, chunkstore.Ref{}, sortedChanges(model))
		if err != nil {
			t.Fatal(err)
		}
		if fresh != root {
			t.Fatal("not canonical")
		}
		for i, r := range model {
			if got, _ := tr.Lookup(ctx, root, i); got != r {
				t.Fatalf("lookup %d", i)
			}
		}
	})
}

// A Batch of punches and updates gives the root the same operations give
// one by one, and Stage names exactly the nodes that root needs: after
// Store, a tree without a cache reads it whole from the store, and nodes
// made and replaced within the batch are never written.
func TestBatchModel(t *testing.T) {
	for _, fanout := range []int{16, 256} {
		t.Run(fmt.Sprintf("fanout%d", fanout), func(t *testing.T) {
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 2))
			tr, s := newTree(t, fanout, true)
			one, _ := newTree(t, fanout, true)          // one by one, in another store
			cold, err := New(s, Config{Fanout: fanout}) // no cache: reads the store
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			model := map[uint64]Entry{}
			var root chunkstore.Ref
			spaces := []uint64{64, 5000, 1 << 20, 1 << 40}
			for step := 0; step < 40; step++ {
				b := tr.NewBatch(root)
				seq := root // the same operations one by one
				for op := 0; op < 1+rng.IntN(4); op++ {
					space := spaces[rng.IntN(len(spaces))]
					if rng.IntN(3) == 0 {
						from := rng.Uint64() % space
						to := from + uint64(rng.IntN(1<<uint(rng.IntN(20))))
						if err := b.Punch(ctx, from, to); err != nil {
							t.Fatal(err)
						}
						if seq, err = one.Punch(ctx, seq, from, to); err != nil {
							t.Fatal(err)
						}
						for i := range model {
							if i >= from && i < to {
								delete(model, i)
							}
						}
						continue
					}
					batch := map[uint64]Entry{}
					for k := 0; k < 1+rng.IntN(30); k++ {
						i := rng.Uint64() % space
						if rng.IntN(5) == 0 {
							batch[i] = Entry{}
						} else {
							batch[i] = entryOf(i, step*10+op)
						}
					}
					if err := b.Update(ctx, sortedChanges(batch)); err != nil {
						t.Fatal(err)
					}
					if seq, err = one.Update(ctx, seq, sortedChanges(batch)); err != nil {
						t.Fatal(err)
					}
					for i, r := range batch {
						if r.IsZero() {
							delete(model, i)
						} else {
							model[i] = r
						}
					}
				}
				st, err := b.Stage(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if st.Root != seq {
					t.Fatalf("step %d: batch root %s, one by one %s", step, st.Root.Short(), seq.Short())
				}
				if err := tr.Store(ctx, st); err != nil {
					t.Fatal(err)
				}
				// Every staged node is reachable from the root.
				reach := map[chunkstore.Ref]bool{}
				if err := cold.Refs(ctx, st.Root, nil, func(r chunkstore.Ref, isNode bool) error {
					if isNode {
						reach[r] = true
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				for r := range st.Nodes {
					if !reach[r] {
						t.Fatalf("step %d: staged node %s is not reachable from the root", step, r.Short())
					}
				}
				root = st.Root
				checkModel(t, cold, root, model, nil)
			}
		})
	}
}

// The nodes of a batch are stored only by Store: staging writes nothing.
func TestBatchStagesWithoutWriting(t *testing.T) {
	tr, s := newTree(t, 16, true)
	ctx := context.Background()
	root, err := tr.Update(ctx, chunkstore.Ref{}, []Change{{1, Entry{Ref: blockRef(1, 0)}}, {300, Entry{Ref: blockRef(300, 0)}}})
	if err != nil {
		t.Fatal(err)
	}
	puts := s.puts.Load()
	b := tr.NewBatch(root)
	if err := b.Update(ctx, []Change{{2, Entry{Ref: blockRef(2, 0)}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Punch(ctx, 300, 301); err != nil {
		t.Fatal(err)
	}
	if err := b.Update(ctx, []Change{{5000, Entry{Ref: blockRef(5000, 0)}}}); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.puts.Load() != puts {
		t.Fatalf("staging wrote %d chunks", s.puts.Load()-puts)
	}
	if _, err := s.Fetch(ctx, st.Root); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("staged root fetched before Store: %v", err)
	}
	if err := tr.Store(ctx, st); err != nil {
		t.Fatal(err)
	}
	if got := s.puts.Load() - puts; got != int64(len(st.Nodes)) {
		t.Fatalf("Store wrote %d chunks, staged %d", got, len(st.Nodes))
	}
	cold, _ := New(s, Config{Fanout: 16})
	for i, want := range map[uint64]chunkstore.Ref{1: blockRef(1, 0), 2: blockRef(2, 0), 300: {}, 5000: blockRef(5000, 0)} {
		if got, err := cold.Lookup(ctx, st.Root, i); err != nil || got.Ref != want {
			t.Fatalf("Lookup(%d) = %s, %v", i, got.Ref.Short(), err)
		}
	}
}
