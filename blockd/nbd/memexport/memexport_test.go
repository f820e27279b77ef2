package memexport

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"sync"
	"testing"

	"github.com/zosproject/zos/blockd/nbd"
)

var ctx = context.Background()

// The export behaves like a flat byte array: random operations against a
// reference slice, seeded and reproducible.
func TestAgainstReference(t *testing.T) {
	const size = 1<<20 + 4567 // not a page multiple
	seed := int64(42)
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	e := MustNew(size, Options{PageSize: 4096})
	ref := make([]byte, size)
	for i := 0; i < 5000; i++ {
		off := rng.Int63n(size)
		n := rng.Int63n(min(size-off, 3*4096)) + 1
		switch rng.Intn(5) {
		case 0, 1:
			p := make([]byte, n)
			rng.Read(p)
			if err := e.WriteAt(ctx, p, off, false); err != nil {
				t.Fatal(err)
			}
			copy(ref[off:], p)
		case 2:
			if err := e.Trim(ctx, off, n, false); err != nil {
				t.Fatal(err)
			}
			clear(ref[off : off+n])
		case 3:
			f := nbd.ZeroFlags(rng.Intn(8))
			if err := e.WriteZeroes(ctx, off, n, f); err != nil {
				t.Fatal(err)
			}
			clear(ref[off : off+n])
		case 4:
			p := make([]byte, n)
			if err := e.ReadAt(ctx, p, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, ref[off:off+n]) {
				t.Fatalf("op %d: read [%d,+%d) differs", i, off, n)
			}
		}
	}
	got := make([]byte, size)
	e.ReadAt(ctx, got, 0)
	if !bytes.Equal(got, ref) {
		t.Fatal("final contents differ")
	}
	// Block status agrees with the contents: no extent claims zero over
	// nonzero bytes, extents are contiguous and cover the range.
	ext, err := e.BlockStatus(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	var pos int64
	for _, x := range ext {
		if x.Flags&nbd.ExtentZero != 0 && !bytes.Equal(ref[pos:pos+x.Length], make([]byte, x.Length)) {
			t.Fatalf("extent [%d,+%d) claims zero", pos, x.Length)
		}
		pos += x.Length
	}
	if pos != size {
		t.Fatalf("extents cover %d of %d bytes", pos, size)
	}
}

func TestSparse(t *testing.T) {
	e := MustNew(1<<40, Options{}) // 1 TiB costs nothing until written
	if e.Allocated() != 0 {
		t.Fatal("allocated at start")
	}
	e.WriteAt(ctx, []byte{1}, 1<<39, false)
	if e.Allocated() != DefaultPageSize {
		t.Fatalf("allocated %d after one byte", e.Allocated())
	}
	ext, _ := e.BlockStatus(ctx, 1<<39-DefaultPageSize, 3*DefaultPageSize)
	if len(ext) != 3 || ext[0].Flags != nbd.ExtentHole|nbd.ExtentZero || ext[1].Flags != 0 || ext[2].Flags != nbd.ExtentHole|nbd.ExtentZero {
		t.Fatalf("extents %v", ext)
	}
	e.Trim(ctx, 1<<39, DefaultPageSize, false)
	if e.Allocated() != 0 {
		t.Fatal("trim of a whole page did not free it")
	}
	e.WriteZeroes(ctx, 0, 2*DefaultPageSize, nbd.ZeroNoHole)
	if e.Allocated() != 2*DefaultPageSize {
		t.Fatal("NO_HOLE did not allocate")
	}
	ext, _ = e.BlockStatus(ctx, 0, 2*DefaultPageSize)
	if len(ext) != 1 || ext[0].Flags != nbd.ExtentZero {
		t.Fatalf("allocated zeroes: %v", ext)
	}
}

func TestResizeAndErrors(t *testing.T) {
	e := MustNew(1<<20, Options{MaxSize: 4 << 20})
	e.WriteAt(ctx, bytes.Repeat([]byte{7}, 1<<20), 0, false)
	if err := e.Resize(1000); err != nil {
		t.Fatal(err)
	}
	if err := e.Resize(4 << 20); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 2000)
	e.ReadAt(ctx, p, 0)
	if p[999] != 7 || p[1000] != 0 {
		t.Fatal("shrink then grow did not drop the tail")
	}
	if err := e.Resize(5 << 20); !errors.Is(err, ErrOptions) {
		t.Fatalf("grow past MaxSize: %v", err)
	}
	if err := e.ReadAt(ctx, p, 4<<20-1); !errors.Is(err, ErrRange) {
		t.Fatalf("read past end: %v", err)
	}
	ro := MustNew(4096, Options{ReadOnly: true})
	if err := ro.WriteAt(ctx, p[:1], 0, false); !errors.Is(err, nbd.ErrReadOnly) {
		t.Fatalf("read-only write: %v", err)
	}
	if _, err := New(1, Options{PageSize: 1000}); !errors.Is(err, ErrOptions) {
		t.Fatal("bad page size accepted")
	}
}

// Concurrent writers to distinct ranges and readers; run with -race.
func TestConcurrent(t *testing.T) {
	e := MustNew(8<<20, Options{PageSize: 4096})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(w + 1)}, 4096)
			q := make([]byte, 4096)
			for i := 0; i < 200; i++ {
				off := int64(w)<<20 + int64(i%256)*4096
				e.WriteAt(ctx, p, off, false)
				e.ReadAt(ctx, q, off)
				if !bytes.Equal(p, q) {
					t.Errorf("writer %d read back wrong data", w)
					return
				}
				e.BlockStatus(ctx, 0, 8<<20)
			}
		}(w)
	}
	wg.Wait()
}

func BenchmarkReadWrite4k(b *testing.B) {
	e := MustNew(1<<30, Options{})
	p := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(p)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := int64(0)
		for pb.Next() {
			off := (i * 7919 % (1 << 18)) * 4096
			e.WriteAt(ctx, p, off, false)
			e.ReadAt(ctx, p, off)
			i++
		}
	})
}
