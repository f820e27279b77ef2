package blob

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"testing"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/flist/internal/memstore"
)

func TestBlobRoundTrip(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	for _, size := range []int{0, 1, PieceSize - 1, PieceSize, 3*PieceSize + 12345} {
		data := make([]byte, size)
		rand.New(rand.NewSource(int64(size))).Read(data)
		ref, n, err := Put(ctx, store, bytes.NewReader(data))
		if err != nil || n != int64(size) {
			t.Fatal(n, err)
		}
		r, err := Open(ctx, store, ref)
		if err != nil {
			t.Fatal(err)
		}
		all, err := r.ReadAll()
		if err != nil || !bytes.Equal(all, data) {
			t.Fatalf("size %d: ReadAll: %v", size, err)
		}
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 50 && size > 0; i++ {
			off := rng.Intn(size)
			buf := make([]byte, 1+rng.Intn(2*PieceSize))
			k, err := r.ReadAt(buf, int64(off))
			want := min(len(buf), size-off)
			if k != want || !bytes.Equal(buf[:k], data[off:off+k]) || (k < len(buf) && err == nil) {
				t.Fatalf("size %d: ReadAt(%d, %d) = %d, %v", size, len(buf), off, k, err)
			}
		}
	}
}

func TestBlobCorruption(t *testing.T) {
	ctx := context.Background()
	store := memstore.New()
	data := bytes.Repeat([]byte("abc"), PieceSize)
	ref, _, err := Put(ctx, store, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, store, ref)
	if err != nil {
		t.Fatal(err)
	}
	store.Corrupt(r.pieces[1].ref)
	if _, err := r.ReadAll(); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("corrupt piece: %v", err)
	}
	// A data chunk is not a manifest.
	dref, _ := store.Put(ctx, []byte("plain chunk, not a blob"))
	if _, err := Open(ctx, store, dref); !errors.Is(err, ErrNotBlob) {
		t.Fatalf("plain chunk: %v", err)
	}
	store.Corrupt(ref)
	if _, err := Open(ctx, store, ref); !errors.Is(err, chunkstore.ErrCorrupt) {
		t.Fatalf("corrupt manifest: %v", err)
	}
}
