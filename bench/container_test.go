package bench_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosproject/zos/bench"
	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/internal/testcluster"
)

// TestContainerWorkload: one short round of `zos bench container` on a
// busybox root (a real zos node, real runc) produces a report that
// report.Verify accepts, and leaves no node, bridge or mount behind.
func TestContainerWorkload(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("containers need root (CI runs as root)")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc not installed (scripts/deps.sh)")
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	if out, err := exec.Command("cp", "/usr/bin/busybox", filepath.Join(root, "bin/busybox")).CombinedOutput(); err != nil {
		t.Fatalf("busybox (busybox-static): %v %s", err, out)
	}
	os.Symlink("busybox", filepath.Join(root, "bin/sh"))
	w, rounds, err := bench.Container(context.Background(), bench.ContainerConfig{Binary: testcluster.Binary(t), Root: root, Rounds: 1, Progress: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rounds) != 1 || len(w.Jobs) != 2 {
		t.Fatalf("rounds %v jobs %+v", rounds, w.Jobs)
	}
	dir := t.TempDir()
	rep := report.New([]string{"zos", "bench", "container", "--rounds", "1"}, dir)
	rep.Add(w)
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := report.Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range got.Workloads[0].Jobs {
		if zr, ok := j.Zos(); !ok || !(zr.Ratio > 0) {
			t.Errorf("%s: no ratio to the anchor: %+v", j.Name, j.Results)
		}
	}
	b, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(b), "zos-bench-node-") {
		t.Errorf("mounts left:\n%s", b)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "type", "bridge").Output(); strings.Contains(string(out), ": zb") {
		t.Errorf("bridge left:\n%s", out)
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "zos_zb") {
		t.Errorf("nft table left:\n%s", out)
	}
	if out, _ := exec.Command("find", "/sys/fs/cgroup", "-maxdepth", "2", "-name", "zos_zb*").Output(); len(out) > 0 {
		t.Errorf("cgroup parent left:\n%s", out)
	}
}
