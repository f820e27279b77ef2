package fuse

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestReadahead: reading the start of a large file fetches the next chunks
// in the background, before anyone reads them.
func TestReadahead(t *testing.T) {
	src := t.TempDir()
	data := make([]byte, 12<<20)
	rand.New(rand.NewSource(5)).Read(data)
	os.WriteFile(filepath.Join(src, "f"), data, 0o644)
	fx := build(t, src)
	chunks, err := fx.r.Chunks(2)
	if err != nil || len(chunks) < 5 {
		t.Fatalf("%d chunks, %v", len(chunks), err)
	}
	m := fx.mount(t, Config{Readahead: 3})
	f, err := os.Open(filepath.Join(m.Dir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	// The first chunk plus 3 prefetched ones land in the cache (a fetch
	// is counted before its chunk is cached: wait for the cache itself).
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; i <= 3; i++ {
		for !m.mfs.src.cached(chunks[i]) {
			if time.Now().After(deadline) {
				t.Fatalf("chunk %d not prefetched after reading the first 4 KiB (%d fetches)", i, fx.store.Fetches.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if m.mfs.src.cached(chunks[len(chunks)-1]) && len(chunks) > 6 {
		t.Errorf("prefetched past the readahead window")
	}
}
