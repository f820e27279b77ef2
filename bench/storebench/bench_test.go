package storebench_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"slices"

	"github.com/zosproject/zos/bench/report"
	"github.com/zosproject/zos/bench/storebench"
	"github.com/zosproject/zos/chunkstore"
	"github.com/zosproject/zos/internal/testcluster/loopback"
)

// lo is this package's loopback range (internal/testcluster/loopback).
var lo = loopback.Prefix("bench/storebench")

func TestStoreSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster benchmark")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := storebench.Store(ctx, storebench.Config{Bytes: 24 << 20, Dir: t.TempDir(), Prefix: lo, FirstHost: 60})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + res.String())
	if res.AnchorMBps <= 0 || res.PutMBps <= 0 || res.GetMBps <= 0 || res.RebuildMBps <= 0 || res.Chunks != 6 {
		t.Fatalf("result %+v", res)
	}
	// The lost node held one shard of each chunk: all of them rebuilt.
	if want := int64(res.Chunks) * int64(chunkstore.ShardSize(res.ChunkSize, 4)); res.RebuiltBytes != want {
		t.Fatalf("rebuilt %d bytes, want %d", res.RebuiltBytes, want)
	}
	// A second node lost without replacement: every chunk re-encoded to 3+2.
	if want := int64(res.Chunks) * 5 * int64(chunkstore.ShardSize(res.ChunkSize, 3)); res.Reencoded != int64(res.Chunks) || res.ReencodedBytes != want {
		t.Fatalf("re-encoded %d chunks, %d bytes; want %d, %d", res.Reencoded, res.ReencodedBytes, res.Chunks, want)
	}
}

func BenchmarkAnchor(b *testing.B) {
	p := chunkstore.Profile{K: 4, M: 2}
	b.SetBytes(chunkstore.MaxChunkSize)
	for b.Loop() {
		if _, err := storebench.Anchor(p, chunkstore.MaxChunkSize, chunkstore.MaxChunkSize); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStore runs the whole benchmark (PUT, GET, rebuild) once per
// iteration over 128 MiB and reports the rates and ratios:
//
//	go test -run=^$ -bench=Store -benchtime=1x ./bench/storebench
func BenchmarkStore(b *testing.B) {
	for b.Loop() {
		res, err := storebench.Store(context.Background(), storebench.Config{Bytes: 128 << 20, Dir: b.TempDir(), Prefix: lo, FirstHost: 70})
		if err != nil {
			b.Fatal(err)
		}
		b.Log("\n" + res.String())
		b.ReportMetric(res.AnchorMBps, "anchor-MB/s")
		b.ReportMetric(res.PutMBps, "put-MB/s")
		b.ReportMetric(res.GetMBps, "get-MB/s")
		b.ReportMetric(res.RebuildMBps, "rebuild-MB/s")
		b.ReportMetric(res.PutRatio, "put/anchor")
		b.ReportMetric(res.GetRatio, "get/anchor")
		b.ReportMetric(res.RebuildRatio, "rebuild/put")
		b.ReportMetric(res.RestoreRatio, "restore/put")
		b.ReportMetric(res.ReencodeRatio, "reencode/put")
	}
}

// TestMatrixReport runs the store workload small, with a node killed under
// load, and checks the report it makes: every target ran, the plots are
// well formed, and the kill and the rebuild are marked on the series.
func TestMatrixReport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w, err := storebench.Matrix(ctx, storebench.MatrixConfig{Bytes: 1 << 20, Sizes: []int{16 << 10, 64 << 10, 1 << 20},
		KillNode: true, Duration: 3 * time.Second, Dir: t.TempDir(), Prefix: lo, FirstHost: 80})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rep := report.New([]string{"zos", "bench", "store"}, dir)
	rep.Add(w)
	if err := rep.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := report.Verify(dir)
	if err != nil {
		t.Fatal(err)
	}
	jobs := got.Workloads[0].Jobs
	if len(jobs) != 12 { // PUT, GET, degraded GET × 3 sizes, batched PUT × 2 small sizes, rebuild
		t.Fatalf("%d jobs: %+v", len(jobs), jobs)
	}
	// Small chunks are counted in chunks/s too, anchors included.
	for _, j := range jobs[:2] {
		if j.OpsUnit != "chunks/s" || j.Results[0].OpsPerSec <= 0 || j.Results[1].OpsPerSec <= 0 {
			t.Fatalf("job %q: ops unit %q, results %+v", j.Name, j.OpsUnit, j.Results)
		}
	}
	if jobs[1].Name != "PUT 16 KiB, batches of 256" {
		t.Fatalf("job 1 is %q", jobs[1].Name)
	}
	if l := jobs[0].Results[0].Latency; l == nil || l.P50 <= 0 || l.P999 < l.P50 {
		t.Fatalf("PUT latency %+v", l)
	}
	var labels []string
	for _, e := range got.Workloads[0].Events {
		labels = append(labels, e.Label)
	}
	if !slices.Contains(labels, "node killed") || !(slices.Contains(labels, "rebuild done") || slices.Contains(labels, "load ended, rebuild unfinished")) || len(got.Workloads[0].Series) != 2 {
		t.Fatalf("events %v, %d series", labels, len(got.Workloads[0].Series))
	}
}

// TestDiskRates: both passes write and sync real files, report a rate,
// and leave nothing behind.
func TestDiskRates(t *testing.T) {
	dir := t.TempDir()
	fresh, over, err := storebench.DiskRates(dir, chunkstore.Profile{K: 2, M: 1}, 3, 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fresh <= 0 || over <= 0 {
		t.Fatalf("rates %v, %v", fresh, over)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("left %d files", len(ents))
	}
	if _, _, err := storebench.DiskRates(filepath.Join(dir, "missing"), chunkstore.Profile{K: 2, M: 1}, 3, 8<<20); err == nil {
		t.Fatal("no error for a missing directory")
	}
}
