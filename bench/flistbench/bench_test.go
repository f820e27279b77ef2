package flistbench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// benchRoot is a debootstrap tree when one is cached (ZOS_TEST_CACHE,
// default /var/cache/zos-test), else a busybox tree.
func benchRoot(b testing.TB) (root, binary string) {
	base := os.Getenv("ZOS_TEST_CACHE")
	if base == "" {
		base = "/var/cache/zos-test"
	}
	if d := filepath.Join(base, "bookworm-minbase"); fileExists(filepath.Join(d, "usr/bin/bash")) {
		return d, "/usr/bin/bash"
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		b.Fatalf("busybox not installed (scripts/deps.sh test): %v", err)
	}
	dir := b.TempDir()
	os.MkdirAll(filepath.Join(dir, "bin"), 0o755)
	data, _ := os.ReadFile(bb)
	os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755)
	if out, err := exec.Command("chroot", dir, "/bin/busybox", "--install", "-s").CombinedOutput(); err != nil {
		b.Fatalf("busybox --install: %v %s", err, out)
	}
	return dir, "/bin/busybox"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func BenchmarkColdStart(b *testing.B) {
	root, bin := benchRoot(b)
	for i := 0; i < b.N; i++ {
		r, err := ColdStart(context.Background(), ColdStartConfig{Root: root, Binary: bin, WorkDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.Mount.Seconds()*1000, "mount-ms")
		b.ReportMetric(r.Anchor.Seconds()*1000, "download+extract-ms")
		b.ReportMetric(r.Ratio, "ratio")
		b.Logf("%+v", r)
	}
}

func BenchmarkWarmRead(b *testing.B) {
	for i := 0; i < b.N; i++ {
		r, err := WarmRead(context.Background(), b.TempDir(), 100<<20)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(r.Bytes)
		b.ReportMetric(r.MountMBps, "mount-MB/s")
		b.ReportMetric(r.NativeMBps, "native-MB/s")
		b.ReportMetric(r.Ratio, "ratio")
		b.Logf("%+v", r)
	}
}

func BenchmarkStatWalk(b *testing.B) {
	root, _ := benchRoot(b)
	for i := 0; i < b.N; i++ {
		r, err := StatWalk(context.Background(), root, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(r.MountPerSec, "mount-files/s")
		b.ReportMetric(r.SourcePerSec, "source-files/s")
		b.ReportMetric(r.Ratio, "ratio")
		b.Logf("%+v", r)
	}
}

// TestBenchmarksRun runs every benchmark once on a small input, so they
// stay working.
func TestBenchmarksRun(t *testing.T) {
	root, bin := benchRoot(t)
	if testing.Short() {
		t.Skip("short")
	}
	cs, err := ColdStart(context.Background(), ColdStartConfig{Root: root, Binary: bin, WorkDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if cs.Mount <= 0 || cs.Anchor <= 0 || cs.FetchedByte == 0 {
		t.Fatalf("cold start %+v", cs)
	}
	t.Logf("cold start: %+v", cs)
	wr, err := WarmRead(context.Background(), t.TempDir(), 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm read: %+v", wr)
	sw, err := StatWalk(context.Background(), root, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if sw.Files == 0 {
		t.Fatal("no files walked")
	}
	t.Logf("stat walk: %+v", sw)
}
