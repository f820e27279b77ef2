package nbdbench

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"
)

// TestRun runs a short benchmark of every target so the harness itself is
// tested (tools found, servers started and stopped, fio output parsed).
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs fio against three servers")
	}
	// One job of each kind (the others vary only the depth or the mix):
	// the nine of DefaultWorkloads would triple the test's time.
	jobs, err := Workloads([]string{"4k-randrw-qd32", "4k-randread-qd1", "1m-seqwrite", "4k-randwrite-fsync16"})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Config{
		Runtime:   time.Second,
		Workloads: jobs,
		Size:      128 << 20,
		Dir:       t.TempDir(),
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep.Markdown())
	for _, w := range rep.Workloads {
		for _, target := range rep.Targets {
			r, ok := rep.Get(target, w)
			if !ok || r.IOPS() <= 0 {
				t.Errorf("%s on %s: no result (%+v)", w, target, r)
			}
		}
		if rep.Ratio(TargetNbdkit, w) <= 0 {
			t.Errorf("%s: no ratio", w)
		}
	}
}

// BenchmarkNBD runs the full benchmark once per b.N (use -benchtime=1x)
// and reports zos IOPS and the ratios as metrics.
func BenchmarkNBD(b *testing.B) {
	for i := 0; i < b.N; i++ {
		rep, err := Run(context.Background(), Config{Runtime: 5 * time.Second, Size: 512 << 20})
		if err != nil {
			b.Fatal(err)
		}
		for _, w := range rep.Workloads {
			z, _ := rep.Get(TargetZos, w)
			b.ReportMetric(z.IOPS(), w+"-zos-iops")
			b.ReportMetric(rep.Ratio(TargetQemuNBD, w), w+"-x-qemu-nbd")
			b.ReportMetric(rep.Ratio(TargetNbdkit, w), w+"-x-nbdkit")
		}
		b.Logf("\n%s", rep.Markdown())
	}
}
