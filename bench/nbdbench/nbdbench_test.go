package nbdbench

import (
	"context"
	"log/slog"
	"os"
	"slices"
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

// TestWorkloadsRepeated: a job named twice runs twice with results of its
// own (the report is keyed by job name; both rows showed the first run's
// figures before); unknown names are refused.
func TestWorkloadsRepeated(t *testing.T) {
	jobs, err := Workloads([]string{"1m-seqread", "4k-randrw-qd32", "1m-seqread", "1m-seqread"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, j := range jobs {
		names = append(names, j.Name)
	}
	want := []string{"1m-seqread", "4k-randrw-qd32", "1m-seqread#2", "1m-seqread#3"}
	if !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	if jobs[2].RW != "read" || jobs[2].BS != "1M" {
		t.Fatalf("repeated job %+v is not 1m-seqread's", jobs[2])
	}
	rep := &Report{Results: []Result{{Target: TargetZos, Workload: "1m-seqread", ReadIOPS: 1}, {Target: TargetZos, Workload: "1m-seqread#2", ReadIOPS: 2}}}
	if a, _ := rep.Get(TargetZos, "1m-seqread"); a.ReadIOPS != 1 {
		t.Fatalf("first run: %+v", a)
	}
	if b, _ := rep.Get(TargetZos, "1m-seqread#2"); b.ReadIOPS != 2 {
		t.Fatalf("second run: %+v", b)
	}
	if _, err := Workloads([]string{"1m-seqread", "nope"}); err == nil {
		t.Fatal("unknown job accepted")
	}
}
