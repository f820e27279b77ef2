package flist

import (
	"context"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist/internal/memstore"
)

// TestMarkStored: the chunks MarkStored reports for a stored flist are
// exactly the chunks its build and Put wrote — nothing live is missed
// (which the garbage collector would delete) and nothing else is claimed.
func TestMarkStored(t *testing.T) {
	ctx := context.Background()
	src := t.TempDir()
	makeSourceTree(t, src)
	store := memstore.New()
	tr, err := BuildDir(ctx, src, &Options{Store: store, AllowDevices: true})
	if err != nil {
		t.Fatal(err)
	}
	ref, _, _, err := Put(ctx, store, tr)
	if err != nil {
		t.Fatal(err)
	}
	marked := map[chunkstore.Ref]bool{}
	if err := MarkStored(ctx, store, ref, func(r chunkstore.Ref) { marked[r] = true }); err != nil {
		t.Fatal(err)
	}
	stored := map[chunkstore.Ref]bool{}
	store.Enumerate(ctx, chunkstore.Ref{}, func(i chunkstore.Info) error { stored[i.Ref] = true; return nil })
	for r := range stored {
		if !marked[r] {
			t.Errorf("stored chunk %s not marked", r.Short())
		}
	}
	for r := range marked {
		if !stored[r] {
			t.Errorf("marked chunk %s was never stored", r.Short())
		}
	}
	if len(stored) < 3 {
		t.Fatalf("only %d chunks stored; the tree should have several", len(stored))
	}
	if err := MarkStored(ctx, store, chunkstore.Sum([]byte("nothing")), func(chunkstore.Ref) {}); err == nil {
		t.Fatal("marking a missing flist succeeded")
	}
}
