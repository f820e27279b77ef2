package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/bench/report"
)

// runBench runs `zos bench args…` in this process and returns its output
// (stdout, then stderr's progress lines).
func runBench(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	cmd := newBenchCmd()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.ExecuteContext(ctx)
	return out.String() + errb.String(), err
}

// benchPrereqs fails the test when a tool the workloads run is missing
// (CI installs them): fio, nbdkit, qemu-nbd, and FUSE for the flists.
func benchPrereqs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"fio", "nbdkit", "qemu-nbd", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install -y fio nbdkit qemu-utils)", tool)
		}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Fatalf("the flist workloads mount FUSE: need root and /dev/fuse (%v)", err)
	}
}

// smallRoot is a root file system for the flist workload: a 512 KiB
// "binary" and a few hundred small files.
func smallRoot(t *testing.T) (root, binary string) {
	t.Helper()
	root = t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "bin"), 0o755))
	b := make([]byte, 512<<10)
	_, _ = rand.Read(b)
	must(os.WriteFile(filepath.Join(root, "bin/app"), b, 0o755))
	for d := range 10 {
		dir := filepath.Join(root, "etc", fmt.Sprint(d))
		must(os.MkdirAll(dir, 0o755))
		for f := range 20 {
			must(os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d.conf", f)), []byte(strings.Repeat("x", 100*f)), 0o644))
		}
	}
	return root, "/bin/app"
}

// checkReport verifies DIR's report (files, plots, every figure non-zero)
// and that every workload in it measured at least one anchor.
func checkReport(t *testing.T, dir string, workloads ...string) {
	t.Helper()
	rep, err := report.Verify(dir)
	if err != nil {
		t.Fatalf("report: %v", err)
	}
	var got []string
	for _, w := range rep.Workloads {
		got = append(got, w.Name)
		anchors := 0
		for _, j := range w.Jobs {
			for _, r := range j.Results {
				if r.Anchor && r.Value > 0 {
					anchors++
				}
			}
		}
		if anchors == 0 {
			t.Errorf("%s: no anchor ran", w.Name)
		}
	}
	if strings.Join(got, ",") != strings.Join(workloads, ",") {
		t.Errorf("workloads %v, want %v", got, workloads)
	}
}

// TestBenchCLI runs each workload's command tiny against an embedded
// cluster and checks the report it writes: not the figures, but that the
// report, results and plots are well formed and the anchors ran.
func TestBenchCLI(t *testing.T) {
	benchPrereqs(t)
	root, binary := smallRoot(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"raft", []string{"raft", "--dev", "--duration", "1s", "--clients", "4"}},
		{"store", []string{"store", "--dev", "--duration", "1s", "--size", "1M", "--concurrency", "4"}},
		{"nbd", []string{"nbd", "--dev", "--duration", "1s", "--size", "96M", "--within-size", "64M", "--jobs", "4k-randrw-qd32"}},
		{"flist", []string{"flist", "--dev", "--root", root, "--binary", binary}},
		{"flist", []string{"flist", "--local", "--root", root, "--binary", binary, "--size", "8M"}},
	} {
		t.Run(strings.Join(tc.args[:2], " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := t.TempDir()
			out, err := runBench(t, ctx, append(tc.args, "--out", dir)...)
			if err != nil {
				t.Fatalf("zos bench %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
			if !strings.Contains(out, "## "+tc.name) || !strings.Contains(out, "report: "+dir) {
				t.Errorf("output:\n%s", out)
			}
			checkReport(t, dir, tc.name)
		})
	}
}

// TestBenchAllCLI runs `zos bench all` tiny: one report of every workload,
// the store one with a node killed.
func TestBenchAllCLI(t *testing.T) {
	benchPrereqs(t)
	root, binary := smallRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	out, err := runBench(t, ctx, "all", "--duration", "1s", "--size", "1M", "--nbd-size", "64M", "--nbd-within-size", "0",
		"--nbd-jobs", "4k-randread-qd1", "--flist-root", root, "--flist-binary", binary, "--out", dir)
	if err != nil {
		t.Fatalf("zos bench all: %v\n%s", err, out)
	}
	checkReport(t, dir, "store", "nbd", "flist", "raft")
	rep, err := report.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if w := rep.Workloads[0]; len(w.Series) == 0 || len(w.Events) == 0 {
		t.Errorf("store: no throughput series with events (the killed node): %+v %+v", w.Series, w.Events)
	}
}
