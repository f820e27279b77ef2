package fuse

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestPassthroughWhenCached(t *testing.T) {
	src := t.TempDir()
	small := []byte("small file, one chunk")
	big := make([]byte, 9<<20)
	rand.New(rand.NewSource(9)).Read(big)
	os.WriteFile(filepath.Join(src, "small"), small, 0o644)
	os.WriteFile(filepath.Join(src, "big"), big, 0o644)
	fx := build(t, src).withCache(t, 256<<20)
	reg := prometheus.NewRegistry()
	m := fx.mount(t, Config{Registry: reg})
	if !m.Passthrough() {
		t.Fatal("kernel does not offer FUSE passthrough (this kernel should)")
	}
	mt := m.mfs.m
	for _, name := range []string{"small", "big"} {
		want := small
		if name == "big" {
			want = big
		}
		p := filepath.Join(m.Dir(), name)
		// First read goes through the daemon and fills the cache.
		if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: first read: %v", name, err)
		}
		// Multi-chunk files are assembled in the background after
		// release; wait for it.
		deadline := time.Now().Add(60 * time.Second)
		for {
			before := value(mt.opens.WithLabelValues("passthrough"))
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: read: %v", name, err)
			}
			if value(mt.opens.WithLabelValues("passthrough")) > before {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never opened in passthrough mode", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// A passthrough open does not read through the daemon.
		readBefore := value(mt.readBytes)
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		n, _ := f.ReadAt(buf, int64(len(want)/2))
		f.Close()
		if !bytes.Equal(buf[:n], want[len(want)/2:len(want)/2+n]) {
			t.Fatalf("%s: passthrough read wrong bytes", name)
		}
		if got := value(mt.readBytes); got != readBefore {
			t.Errorf("%s: passthrough read went through the daemon (%v bytes)", name, got-readBefore)
		}
	}
	// A file open in passthrough mode can be opened again while the first
	// open is alive (the kernel refuses mixing modes).
	f1, err := os.Open(filepath.Join(m.Dir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Open(filepath.Join(m.Dir(), "big"))
	if err != nil {
		t.Fatal(err)
	}
	f1.Close()
	f2.Close()
}

func value(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 1)
	c.Collect(ch)
	var pb dto.Metric
	(<-ch).Write(&pb)
	return pb.GetCounter().GetValue()
}
