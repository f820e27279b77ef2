package report_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zosproject/zos/bench/report"
)

func sample() report.Workload {
	lat := &report.Latency{P50: 120, P99: 900, P999: 2500}
	return report.Workload{
		Name: "store", Measures: "chunk PUT/GET",
		Jobs: []report.Job{
			{Name: "PUT 16 KiB", Unit: "MB/s", OpsUnit: "chunks/s", Results: []report.Result{
				{Target: report.Zos, Value: 50, OpsPerSec: 3050, Latency: lat},
				{Target: "reedsolomon+blake3", Anchor: true, Value: 100, OpsPerSec: 6100},
				{Target: "disk-ceiling", Anchor: true, Value: 25},
			}},
			{Name: "cold start", Unit: "s", LowerIsBetter: true, Results: []report.Result{
				{Target: report.Zos, Value: 0.5}, {Target: "tar.gz", Anchor: true, Value: 2},
			}},
		},
		Series: []report.Series{{Name: "GET 4 MiB", Unit: "MB/s", Points: []report.Point{{T: 0, V: 10}, {T: 1, V: 2}, {T: 2, V: 12}}}},
		Events: []report.Event{{T: 0.8, Label: "node killed"}, {T: 1.7, Label: "rebuild done"}},
	}
}

func TestWriteVerifyPublish(t *testing.T) {
	dir := t.TempDir()
	r := report.New([]string{"/usr/bin/zos", "bench", "store", "--out", dir}, dir)
	r.Add(sample())
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := report.Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	j := got.Workloads[0].Jobs
	if j[0].Results[1].Ratio != 0.5 || j[0].Results[2].Ratio != 2 || j[1].Results[1].Ratio != 4 {
		t.Fatalf("ratios %+v %+v", j[0].Results, j[1].Results)
	}
	if got.Machine.Cores == 0 || got.Machine.Kernel == "" || !strings.HasPrefix(got.Command, "zos bench store") {
		t.Fatalf("head %+v %q", got.Machine, got.Command)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	for _, want := range []string{"node killed", "store-put_16_kib-bars.svg", "store-throughput.png", "p99.9", "0.50×", "50.0 MB/s (3050 chunks/s)", "(6100 chunks/s)"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report.md lacks %q:\n%s", want, md)
		}
	}

	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	os.WriteFile(doc, []byte("# Benchmarks\n\nhand-written intro\n\n"+report.BeginMarker+"\nold\n"+report.EndMarker+"\n\nhand-written tail\n"), 0o644)
	if err := report.Publish(dir, doc, filepath.Join(filepath.Dir(doc), "bench")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(doc)
	s := string(b)
	if strings.Contains(s, "\nold\n") || !strings.Contains(s, "hand-written intro") || !strings.Contains(s, "hand-written tail") ||
		!strings.Contains(s, "](bench/store-throughput.svg)") || !strings.Contains(s, "### store") {
		t.Fatalf("published doc:\n%s", s)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(doc), "bench", "store-throughput.png")); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejectsZeroAnchor(t *testing.T) {
	dir := t.TempDir()
	r := report.New([]string{"zos"}, dir)
	w := sample()
	w.Jobs[0].Results[1].Value = 0
	r.Add(w)
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := report.Verify(dir); err == nil || !strings.Contains(err.Error(), "reedsolomon") {
		t.Fatalf("Verify = %v, want an error naming the anchor", err)
	}
}

// TestMarkdownCPUColumn: a workload whose results carry the machine's busy
// CPUs gets a CPU column (— where a result has none); others keep their
// table.
func TestMarkdownCPUColumn(t *testing.T) {
	w := report.Workload{Name: "nbd", Jobs: []report.Job{{Name: "1m-seqwrite", Unit: "MiB/s", Results: []report.Result{
		{Target: report.Zos, Value: 300, CPU: 1.84, Latency: &report.Latency{P50: 1000, P99: 2000, P999: 3000}},
		{Target: "qemu-nbd-raw", Anchor: true, Value: 1200, Ratio: 0.25},
	}}}}
	md := w.Markdown(nil, "")
	for _, want := range []string{"| p99.9 | CPU busy | zos vs it |", "| 1.84 cores | — |", "| — | 0.25× |"} {
		if !strings.Contains(md, want) {
			t.Fatalf("no %q in\n%s", want, md)
		}
	}
	w.Jobs[0].Results[0].CPU = 0
	if md := w.Markdown(nil, ""); strings.Contains(md, "CPU") {
		t.Fatalf("CPU column without CPU figures:\n%s", md)
	}
}
