package tree

import (
	"context"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/zosproject/zos/chunkstore"
)

// Trees without extents are encoded exactly as before extents existed: the
// roots below were computed by the format 1 code (main at d6d7ab8), so a
// vdisk written then has the same Refs now, reads unchanged, and dedups
// against new writes of the same blocks.
func TestFormat1Unchanged(t *testing.T) {
	var ch []Change
	for i := uint64(0); i < 3000; i += 7 {
		ch = append(ch, Change{i, Entry{Ref: blockRef(i, 1)}})
	}
	ch = append(ch, Change{1 << 40, Entry{Ref: blockRef(1<<40, 2)}})
	for fanout, want := range map[int]string{
		16:  "0bb7feb6bd1ebb93336ab3844766a8321d6d605cac26b53a8c407dc3016077ab",
		256: "49167e23dbc4cc646627d10661933bfb44dbbae75362077a71f934f59945a542",
	} {
		tr, s := newTree(t, fanout, false)
		root, err := tr.Update(context.Background(), chunkstore.Ref{}, ch)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(root[:]); got != want {
			t.Fatalf("fanout %d: root %s, format 1 gave %s", fanout, got, want)
		}
		// Every node is format 1.
		if err := tr.Refs(context.Background(), root, nil, func(r chunkstore.Ref, node bool) error {
			if !node {
				return nil
			}
			b, err := s.Fetch(context.Background(), r)
			if err != nil {
				return err
			}
			if b[1] != nodeVersion {
				t.Errorf("node %s has format %d", r.Short(), b[1])
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBadEntry(t *testing.T) {
	tr, _ := newTree(t, 16, false)
	ext := blockRef(99, 99)
	for _, e := range []Entry{
		{Ext: ext, Slot: 0, Blocks: 4},                      // no content
		{Ref: blockRef(1, 0), Slot: 1},                      // slot without extent
		{Ref: blockRef(1, 0), Ext: ext, Blocks: 0},          // empty extent
		{Ref: blockRef(1, 0), Ext: ext, Slot: 4, Blocks: 4}, // outside it
	} {
		_, err := tr.Update(context.Background(), chunkstore.Ref{}, []Change{{1, e}})
		if !errors.Is(err, ErrBadEntry) {
			t.Errorf("%+v: err %v, want ErrBadEntry", e, err)
		}
	}
}

// A format 2 leaf that is not canonical or not well formed is ErrBadNode.
func TestBadFormat2(t *testing.T) {
	tr, s := newTree(t, 16, false)
	ctx := context.Background()
	root, err := tr.Update(ctx, chunkstore.Ref{}, []Change{{1, entryOf(1, 1)}, {3, entryOf(3, 0)}})
	if err != nil {
		t.Fatal(err)
	}
	good, _ := s.Fetch(ctx, root)
	if good[1] != nodeVersion2 {
		t.Fatalf("leaf with an extent entry has format %d", good[1])
	}
	if _, err := validate(good, 4, 15); err != nil {
		t.Fatal(err)
	}
	extAt := headerSize + 16/4 + chunkstore.RefSize // slot 1's extent Ref
	for name, mod := range map[string]func(b []byte) []byte{
		"interior":         func(b []byte) []byte { b[3] = 1; return b },
		"ext bit, no slot": func(b []byte) []byte { b[headerSize+2] |= 1 << 5; return b },
		"no ext bits": func(b []byte) []byte {
			b[headerSize+2] = 0
			return append(b[:extAt], b[extAt+extSize:]...)
		},
		"zero extent":   func(b []byte) []byte { clear(b[extAt : extAt+chunkstore.RefSize]); return b },
		"slot past end": func(b []byte) []byte { b[extAt+chunkstore.RefSize] = 9; return b },
		"zero blocks":   func(b []byte) []byte { b[extAt+chunkstore.RefSize+2] = 0; return b },
		"short":         func(b []byte) []byte { return b[:len(b)-1] },
		"long":          func(b []byte) []byte { return append(b, 0) },
		"header only":   func(b []byte) []byte { return b[:headerSize+16/8] },
	} {
		b := mod(append([]byte(nil), good...))
		if _, err := validate(b, 4, 15); !errors.Is(err, ErrBadNode) {
			t.Errorf("%s: validate: %v, want ErrBadNode", name, err)
		}
		r, _ := s.Put(ctx, b)
		if _, err := tr.Lookup(ctx, r, 1); !errors.Is(err, ErrBadNode) {
			t.Errorf("%s: Lookup: %v, want ErrBadNode", name, err)
		}
	}
}

// Extent entries read back whole through every read path; Refs reports the
// extent chunk, never the content Refs of the blocks inside it; Diff does
// not report blocks that only moved.
func TestExtentEntries(t *testing.T) {
	tr, _ := newTree(t, 16, true)
	ctx := context.Background()
	extA, extB := blockRef(1, 100), blockRef(2, 100)
	var ch []Change
	for i := uint64(0); i < 40; i++ {
		e := Entry{Ref: blockRef(i, 0)}
		switch {
		case i < 20: // one extent across two leaves
			e.Ext, e.Slot, e.Blocks = extA, uint16(i), 20
		case i >= 30:
			e.Ext, e.Slot, e.Blocks = extB, uint16(i-30), 10
		}
		ch = append(ch, Change{i, e})
	}
	root, err := tr.Update(ctx, chunkstore.Ref{}, ch)
	if err != nil {
		t.Fatal(err)
	}
	cold, _ := New(tr.s, Config{Fanout: 16})
	for _, c := range ch {
		for _, x := range []*Tree{tr, cold} {
			if got, err := x.Lookup(ctx, root, c.Index); err != nil || got != c.Entry {
				t.Fatalf("Lookup(%d) = %+v, %v; want %+v", c.Index, got, err, c.Entry)
			}
		}
		if got, ok := tr.LookupCached(root, c.Index); !ok || got != c.Entry {
			t.Fatalf("LookupCached(%d) = %+v, %v", c.Index, got, ok)
		}
	}
	chunks := map[chunkstore.Ref]int{}
	if err := tr.Refs(ctx, root, nil, func(r chunkstore.Ref, node bool) error {
		if !node {
			chunks[r]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// extA spans leaves 0 and 1 (reported once per leaf), extB is in leaf
	// 1 and 2, the standalone blocks 20..29 are chunks of their own.
	if len(chunks) != 12 || chunks[extA] != 2 || chunks[extB] != 2 {
		t.Fatalf("Refs reported %d chunks (extA %d, extB %d), want 12 (2, 2)", len(chunks), chunks[extA], chunks[extB])
	}
	for i := uint64(0); i < 20; i++ {
		if chunks[blockRef(i, 0)] != 0 {
			t.Fatalf("Refs reported block %d inside an extent", i)
		}
	}
	// Rewrite blocks 5..24 standalone (the same contents) and change 7.
	var move []Change
	for i := uint64(5); i < 25; i++ {
		e := Entry{Ref: blockRef(i, 0)}
		if i == 7 {
			e.Ref = blockRef(i, 1)
		}
		move = append(move, Change{i, e})
	}
	moved, err := tr.Update(ctx, root, move)
	if err != nil {
		t.Fatal(err)
	}
	var diffs []uint64
	if err := tr.Diff(ctx, root, moved, func(i uint64, o, n chunkstore.Ref) error {
		diffs = append(diffs, i)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(diffs) != 1 || diffs[0] != 7 {
		t.Fatalf("Diff after moving blocks reported %v, want [7]", diffs)
	}
	// Walk gives entries.
	n := 0
	if err := cold.Walk(ctx, moved, 0, 40, func(i uint64, e Entry) error {
		if want := i < 5 || i >= 30; e.InExtent() != want {
			t.Errorf("block %d: in extent %v", i, e.InExtent())
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 40 {
		t.Fatalf("walked %d", n)
	}
	// Removing every extent entry of a leaf makes it format 1 again, the
	// same leaf as one written without extents.
	var plain []Change
	for i := uint64(0); i < 40; i++ {
		plain = append(plain, Change{i, Entry{Ref: blockRef(i, 0)}})
	}
	a, _ := tr.Update(ctx, root, plain)
	b, _ := tr.Update(ctx, chunkstore.Ref{}, plain)
	if a != b {
		t.Fatal("a tree rewritten without extents differs from one written so")
	}
}
