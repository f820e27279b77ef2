package fuse

import (
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestReopenAfterCachedRelease opens files again right after their first,
// daemon-served open was closed. The second open is a passthrough one
// (the first filled the cache) and races the release of the first in the
// daemon: it must not fail with EIO.
func TestReopenAfterCachedRelease(t *testing.T) {
	src := t.TempDir()
	const files = 400
	content := func(i int) []byte {
		if i%4 == 0 { // several chunks: assembled in the background
			b := make([]byte, 512<<10)
			rand.New(rand.NewSource(int64(i))).Read(b)
			return b
		}
		return bytes.Repeat([]byte{byte(i)}, 1000+i)
	}
	for i := range files {
		os.WriteFile(filepath.Join(src, fmt.Sprint(i)), content(i), 0o644)
	}
	fx := build(t, src).withCache(t, 256<<20)
	m := fx.mount(t, Config{})
	if !m.Passthrough() {
		t.Skip("kernel does not offer FUSE passthrough")
	}
	for i := range files {
		p := filepath.Join(m.Dir(), fmt.Sprint(i))
		want := content(i)
		for round := range 3 {
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("file %d, read %d: %v", i, round, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("file %d, read %d: wrong bytes", i, round)
			}
		}
	}
}

// TestOpenDuringCachedRelease holds the release of a daemon-served open
// while the file is opened again (in passthrough mode: the first read
// filled the cache) and, once the release is done, a third time while the
// second is still open. go-fuse drops a backing file reference on every
// release, whether the handle took one or not; unserialised, the second
// open's backing file was unregistered under it and the third open
// registered another one, which the kernel refuses for an inode that has
// one (EIO).
func TestOpenDuringCachedRelease(t *testing.T) {
	src := t.TempDir()
	want := bytes.Repeat([]byte("x"), 3000)
	os.WriteFile(filepath.Join(src, "f"), want, 0o644)
	fx := build(t, src).withCache(t, 256<<20)
	m := fx.mount(t, Config{})
	if !m.Passthrough() {
		t.Skip("kernel does not offer FUSE passthrough")
	}
	released := make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() {
			time.Sleep(300 * time.Millisecond)
			close(released)
		})
	}
	testAfterCachedRelease.Store(&hook)
	t.Cleanup(func() { testAfterCachedRelease.Store(nil) })
	p := filepath.Join(m.Dir(), "f")
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("first read: %v", err)
	}
	f2, err := os.Open(p)
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	defer f2.Close()
	select {
	case <-released:
	case <-time.After(time.Minute):
		t.Fatal("the first open was never released")
	}
	for i := range 3 {
		f3, err := os.Open(p)
		if err != nil {
			t.Fatalf("open %d while the second is open: %v", i+3, err)
		}
		got, err := io.ReadAll(f3)
		f3.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read %d: %v", i+3, err)
		}
	}
	if got, err := io.ReadAll(f2); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("second read: %v", err)
	}
}
