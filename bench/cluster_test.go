package bench_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zosproject/zos/bench"
	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/internal/testcluster"
	"github.com/zosproject/zos/orchestrator/client"
)

// TestClusterLeavesNothing runs every API workload small against a
// separately started 3-process cluster, checks the report they make, and
// checks through the API that no bench-… vdisk, flist or blob is left.
func TestClusterLeavesNothing(t *testing.T) {
	tc := testcluster.Start(t, 3, testcluster.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl, err := bench.ConnectTLS(ctx, tc.APIAddr(1), tc.Token, clusterTLS(t, tc))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(cl.Prefix, "bench-") || cl.NBDAddr == "" {
		t.Fatalf("cluster %+v", cl)
	}
	dir := t.TempDir()
	rep := report.New([]string{"zos", "bench", "all", "--cluster", tc.APIAddr(1)}, dir)
	st, err := bench.StoreAPI(ctx, cl, bench.StoreAPIConfig{Sizes: []int{16 << 10, 64 << 10}, Bytes: 256 << 10, Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	rep.Add(st)
	rf, err := bench.RaftAPI(ctx, cl, bench.RaftAPIConfig{Duration: time.Second, Clients: 4})
	if err != nil {
		t.Fatal(err)
	}
	rep.Add(rf)
	jobs, _ := nbdbench.Workloads([]string{"4k-randrw-qd32"})
	nb, err := bench.NBDAPI(ctx, cl, bench.NBDAPIConfig{Runtime: time.Second, Size: 64 << 20, Workloads: jobs})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range nb.Jobs[0].Results {
		if r.CPU <= 0 || r.CPU > float64(runtime.NumCPU())+0.01 {
			t.Fatalf("%s: %v CPUs busy", r.Target, r.CPU)
		}
	}
	for _, n := range nb.Notes {
		if strings.Contains(n, "Ceilings") {
			t.Fatalf("a cluster elsewhere got this machine's ceilings: %s", n)
		}
	}
	rep.Add(nb)
	fl, err := bench.FlistAPI(ctx, cl, bench.FlistConfig{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep.Add(fl)
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := report.Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Workloads) != 4 || len(got.Workloads[2].Jobs[0].Results) != 3 {
		t.Fatalf("workloads %+v", got.Workloads)
	}
	left, err := bench.Leftovers(ctx, tc.Client(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestConnectBadInput: an unreachable address and a bad token fail within
// seconds with errors that say so.
func TestConnectBadInput(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	start := time.Now()
	_, err = bench.Connect(context.Background(), addr, "x")
	if !errors.Is(err, bench.ErrUnreachable) || time.Since(start) > bench.ConnectTimeout+time.Second {
		t.Fatalf("unreachable: %v after %v", err, time.Since(start))
	}
	// A listener that never answers: the timeout, not a hang.
	ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start = time.Now()
	_, err = bench.Connect(context.Background(), ln.Addr().String(), "x")
	if !errors.Is(err, bench.ErrUnreachable) || time.Since(start) > bench.ConnectTimeout+2*time.Second {
		t.Fatalf("silent: %v after %v", err, time.Since(start))
	}
}

func TestConnectBadToken(t *testing.T) {
	tc := testcluster.Start(t, 1, testcluster.Options{})
	start := time.Now()
	_, err := bench.ConnectTLS(context.Background(), tc.APIAddr(0), "zos_wrong", clusterTLS(t, tc))
	if !errors.Is(err, bench.ErrUnauthorized) || !strings.Contains(err.Error(), "ZOS_TOKEN") || time.Since(start) > bench.ConnectTimeout {
		t.Fatalf("bad token: %v after %v", err, time.Since(start))
	}
}

// clusterTLS trusts tc's CA (nil without TLS).
func clusterTLS(t *testing.T, tc *testcluster.Cluster) *tls.Config {
	if !tc.TLS() {
		return nil
	}
	c, err := client.CAConfig(tc.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNeedToolsNamesPackage(t *testing.T) {
	restore := bench.SetLookPath(func(string) (string, error) { return "", errors.New("not found") })
	defer restore()
	err := bench.NeedTools(false, "fio", nbdbench.TargetQemuNBD, nbdbench.TargetNbdkit)
	if !errors.Is(err, bench.ErrMissingTool) || !strings.Contains(err.Error(), "qemu-utils") || !strings.Contains(err.Error(), "apt-get install -y fio qemu-utils nbdkit") {
		t.Fatalf("NeedTools = %v", err)
	}
}

// TestNeedToolsInstalls: --install-deps runs apt-get install -y with the
// missing tools' Debian packages (a stand-in apt-get on PATH records its
// arguments and "installs" them), then checks again.
func TestNeedToolsInstalls(t *testing.T) {
	if os.Geteuid() != 0 {
		err := bench.NeedTools(true, "no-such-tool-zos")
		if !errors.Is(err, bench.ErrMissingTool) || !strings.Contains(err.Error(), "needs root") {
			t.Fatalf("non-root --install-deps: %v", err)
		}
		return
	}
	dir := t.TempDir()
	installed := filepath.Join(dir, "installed")
	script := "#!/bin/sh\necho \"$@\" > " + installed + "\n"
	if err := os.WriteFile(filepath.Join(dir, "apt-get"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	restore := bench.SetLookPath(func(bin string) (string, error) {
		if _, err := os.Stat(installed); err == nil {
			return "/usr/bin/" + bin, nil
		}
		return "", errors.New("not found")
	})
	defer restore()
	if err := bench.NeedTools(true, "fio", nbdbench.TargetQemuNBD, "qemu-nbd"); err != nil {
		t.Fatal(err)
	}
	args, err := os.ReadFile(installed)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(args)); got != "install -y fio qemu-utils" {
		t.Fatalf("apt-get %s", got)
	}
}
