package main

import (
	"bufio"
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

	"github.com/zosproject/zos/bench"
	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/internal/testcluster"
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
			if tc.name == "nbd" {
				// An embedded cluster's disk and CPUs are this machine's.
				for _, want := range []string{"| CPU busy |", " cores |", "Ceilings of this machine in this run: ", "MiB/s of guest data durably into new blocks"} {
					if !strings.Contains(out, want) {
						t.Errorf("no %q in the nbd report:\n%s", want, out)
					}
				}
			}
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
		"--nbd-jobs", "4k-randread-qd1", "--flist-root", root, "--flist-binary", binary, "--out", dir,
		"--container=false") // in-process the executable is this test binary, not zos: the container workload has its own test (bench TestContainerWorkload)
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

// TestBenchInterrupt starts `zos bench store --cluster` and `zos bench
// nbd --cluster` against a separately started 3-process cluster, sends
// SIGINT (Ctrl-C) while they hold objects on it (pinned blobs; a vdisk
// under fio), and checks that each exits within seconds and leaves no
// bench-… object behind.
func TestBenchInterrupt(t *testing.T) {
	benchPrereqs(t)
	tc := testcluster.Start(t, 3, testcluster.Options{})
	for _, c := range []struct {
		args []string
		when string // the progress line after which to interrupt
	}{
		{[]string{"store", "--size", "16M", "--concurrency", "4"}, "store: GET"},
		{[]string{"nbd", "--size", "64M", "--within-size", "0", "--duration", "20s", "--jobs", "4k-randrw-qd32"}, "benchmarking target=zos"},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			cmd := exec.Command(tc.Bin, append([]string{"bench"}, append(c.args, "--cluster", tc.APIAddr(0))...)...)
			cmd.Env = tc.Env(0)
			var out bytes.Buffer
			cmd.Stdout = &out
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = pw
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			seen := make(chan struct{})
			var errb bytes.Buffer
			go func() {
				sc := bufio.NewScanner(pr)
				once := false
				for sc.Scan() {
					errb.WriteString(sc.Text() + "\n")
					if !once && strings.Contains(sc.Text(), c.when) {
						once = true
						close(seen)
					}
				}
			}()
			select {
			case <-seen:
			case <-time.After(90 * time.Second):
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("no %q progress line in 90s:\n%s", c.when, errb.String())
			}
			time.Sleep(500 * time.Millisecond)
			sent := time.Now()
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(45 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("still running 45s after SIGINT:\n%s", errb.String())
			}
			t.Logf("exited %v after SIGINT in %v", err, time.Since(sent).Round(time.Millisecond))
			if err == nil {
				t.Fatalf("finished before the interrupt took effect (make the run longer):\n%s", errb.String())
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			left, err := bench.Leftovers(ctx, tc.Client(0))
			if err != nil {
				t.Fatal(err)
			}
			if len(left) > 0 {
				t.Fatalf("left behind after SIGINT: %v\n%s", left, errb.String())
			}
		})
	}
}
