package vdiskbench

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/zosproject/zos/bench/nbdbench"
)

// BenchmarkNBD runs the fio jobs on a vdisk, qemu-nbd and nbdkit in
// one run and reports zos's ratio to each anchor per job. Set
// VDISKBENCH_RUNTIME (e.g. 10s) for longer jobs; the default is short.
//
//	go test -run=^$ -bench=NBD -benchtime=1x ./bench/vdiskbench/
func BenchmarkNBD(b *testing.B) {
	rt := 3 * time.Second
	if s := os.Getenv("VDISKBENCH_RUNTIME"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			b.Fatal(err)
		}
		rt = d
	}
	var bs int64
	if s := os.Getenv("VDISKBENCH_BS"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		bs = n
	}
	for i := 0; i < b.N; i++ {
		nodes, _ := strconv.Atoi(os.Getenv("VDISKBENCH_CLUSTER"))
		rep, err := Run(context.Background(), Config{Bench: nbdbench.Config{Runtime: rt, Size: 1 << 30}, Addr: lo + "21", ClusterPrefix: lo, BlockSize: bs, Cluster: nodes})
		if out := os.Getenv("VDISKBENCH_OUT"); out != "" && rep != nil {
			os.WriteFile(out, []byte(rep.Markdown()), 0o644)
		}
		if errors.Is(err, nbdbench.ErrMissingTool) {
			b.Fatal(err)
		}
		if err != nil {
			b.Fatal(err)
		}
		if i == b.N-1 {
			b.Logf("\n%s", rep.Markdown())
			for _, w := range rep.Workloads {
				b.ReportMetric(rep.Ratio(nbdbench.TargetQemuNBD, w), w+"-x-qemu-nbd")
				b.ReportMetric(rep.Ratio(nbdbench.TargetNbdkit, w), w+"-x-nbdkit")
			}
		}
	}
}

// A short smoke run: the in-process vdisk target works with fio.
func TestServeWithFio(t *testing.T) {
	if testing.Short() {
		t.Skip("runs fio")
	}
	rep, err := Run(context.Background(), Config{Addr: lo + "22", ClusterPrefix: lo, Bench: nbdbench.Config{Runtime: time.Second, Size: 64 << 20,
		Targets: []string{nbdbench.TargetZos}, Workloads: nbdbench.DefaultWorkloads[:1]}})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := rep.Get(nbdbench.TargetZos, nbdbench.DefaultWorkloads[0].Name)
	if !ok || r.IOPS() == 0 {
		t.Fatalf("no result: %+v", rep)
	}
}

// BenchmarkZos runs each fio job on the in-process vdisk alone (no
// anchors), over each store, so that a CPU profile sees only the server
// side and blockd's own cost. It reports the job's IOPS and MiB/s.
//
//	go test -run=^$ -bench='Zos/mem/4k-randrw' -benchtime=1x -cpuprofile=cpu.out ./bench/vdiskbench/
func BenchmarkZos(b *testing.B) {
	for _, st := range []struct {
		name    string
		memory  bool
		cluster int
	}{{"mem", true, 0}, {"disk", false, 0}, {"cluster", false, 3}} {
		for _, w := range append(slices.Clip(nbdbench.DefaultWorkloads), nbdbench.MoreWorkloads...) {
			b.Run(st.name+"/"+w.Name, func(b *testing.B) {
				for range b.N {
					rep, err := Run(context.Background(), Config{Addr: lo + "23", ClusterPrefix: lo, Memory: st.memory, Cluster: st.cluster,
						Bench: nbdbench.Config{Runtime: 10 * time.Second, Size: 1 << 30, Targets: []string{nbdbench.TargetZos}, Workloads: []nbdbench.Workload{w}}})
					if err != nil {
						b.Fatal(err)
					}
					r, ok := rep.Get(nbdbench.TargetZos, w.Name)
					if !ok || r.IOPS() == 0 {
						b.Fatalf("no result: %+v", rep)
					}
					b.ReportMetric(r.IOPS(), "iops")
					b.ReportMetric(r.MiBps(), "MiB/s")
				}
			})
		}
	}
}
