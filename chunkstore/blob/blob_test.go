package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/chunkstore/blob"
	"github.com/zosproject/zos/chunkstore/localcluster"
	"github.com/zosproject/zos/chunkstore/mem"
	"github.com/zosproject/zos/chunkstore/storetest"
	"github.com/zosproject/zos/internal/testcluster/loopback"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("chunkstore/blob")

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func TestRoundTrip(t *testing.T) {
	opts := blob.Options{ChunkSize: 1024, FanOut: 4, Parallel: 3}
	for _, size := range []int{0, 1, 1023, 1024, 1025, 4096, 10*1024 + 5, 100 * 1024} {
		s := mem.New()
		data := storetest.Data(uint64(size), size)
		var last int64
		ref, err := opts.Write(ctx(t), s, bytes.NewReader(data), func(n int64) {
			if n < last {
				t.Fatalf("progress went back from %d to %d", last, n)
			}
			last = n
		})
		if err != nil {
			t.Fatalf("%d: write: %v", size, err)
		}
		if last != int64(size) && size > 0 {
			t.Fatalf("%d: progress ended at %d", size, last)
		}
		if size <= 1024 && ref != chunkstore.Sum(data) {
			t.Fatalf("%d bytes: a one-chunk blob should be the chunk itself", size)
		}
		r, err := opts.Open(ctx(t), s, ref)
		if err != nil {
			t.Fatalf("%d: open: %v", size, err)
		}
		if r.Size() != int64(size) {
			t.Fatalf("size %d, want %d", r.Size(), size)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d: sequential read: %v (got %d bytes)", size, err, len(got))
		}
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		for range 50 {
			if size == 0 {
				break
			}
			off := rng.IntN(size)
			n := rng.IntN(3000)
			buf := make([]byte, n)
			k, err := r.ReadAt(buf, int64(off))
			want := data[off:min(off+n, size)]
			if k != len(want) || !bytes.Equal(buf[:k], want) || (k < n && err != io.EOF) || (k == n && err != nil) {
				t.Fatalf("%d: ReadAt(%d, %d) = %d, %v", size, off, n, k, err)
			}
		}
		if size > 10 {
			if _, err := r.Seek(-10, io.SeekEnd); err != nil {
				t.Fatal(err)
			}
			tail, _ := io.ReadAll(r)
			if !bytes.Equal(tail, data[size-10:]) {
				t.Fatal("seek from the end")
			}
		}
		// Refs lists every chunk, and all of them are stored.
		var refs []chunkstore.Ref
		if err := blob.Refs(ctx(t), s, ref, func(r chunkstore.Ref) error { refs = append(refs, r); return nil }); err != nil {
			t.Fatal(err)
		}
		n, _ := s.Len()
		if len(refs) != n {
			t.Fatalf("%d: Refs listed %d chunks, the store holds %d", size, len(refs), n)
		}
		if size == 100*1024 {
			// 100 data chunks, fan-out 4: 25 + 7 + 2 + 1 manifests.
			root, _ := s.Fetch(ctx(t), ref)
			m, err := blob.DecodeManifest(root)
			if err != nil || m.Level != 4 || len(refs) != 135 {
				t.Fatalf("nesting: level %d, %d chunks, %v", m.Level, len(refs), err)
			}
		}
	}
}

// TestMagicPrefixedData: raw data that starts like a manifest is stored
// behind a manifest and never misread.
func TestMagicPrefixedData(t *testing.T) {
	s := mem.New()
	data := append([]byte(blob.Magic), "not really a manifest"...)
	ref, err := blob.Write(ctx(t), s, bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	if ref == chunkstore.Sum(data) {
		t.Fatal("magic-prefixed data stored as a bare chunk")
	}
	r, err := blob.Open(ctx(t), s, ref)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, data) {
		t.Fatal("wrong bytes")
	}
}

func TestErrors(t *testing.T) {
	s := mem.New()
	opts := blob.Options{ChunkSize: 100}
	data := storetest.Data(1, 1000)
	ref, err := opts.Write(ctx(t), s, bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	// A missing data chunk surfaces as ErrNotFound.
	s.Remove(ctx(t), chunkstore.Sum(data[500:600]))
	r, err := opts.Open(ctx(t), s, ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, chunkstore.ErrNotFound) {
		t.Fatalf("read with a chunk missing: %v", err)
	}
	// A broken manifest is refused.
	bad := blob.Manifest{Level: 1, Total: 10, Entries: []blob.Entry{{Ref: chunkstore.Sum(nil), Size: 9}}}.Encode()
	bref, _ := s.Put(ctx(t), bad)
	if _, err := blob.Open(ctx(t), s, bref); !errors.Is(err, blob.ErrManifest) {
		t.Fatalf("bad manifest: %v", err)
	}
	// A failing source.
	if _, err := blob.Write(ctx(t), s, io.MultiReader(bytes.NewReader(data), errReader{}), nil); err == nil {
		t.Fatal("source error swallowed")
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

// TestOverErasure writes a 20 MiB blob through a 6-node 4+2 cluster.
func TestOverErasure(t *testing.T) {
	c, err := localcluster.Start(localcluster.Config{Nodes: 6, Prefix: lo, FirstHost: 140})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := storetest.Data(9, 20<<20+12345)
	ref, err := blob.Write(ctx(t), c.Store, bytes.NewReader(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := blob.Open(ctx(t), c.Store, ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if r.Chunks() != 6 {
		t.Fatalf("%d chunks, want 6 of 4 MiB", r.Chunks())
	}
}
