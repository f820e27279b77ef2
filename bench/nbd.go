package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/zosproject/zos/bench/nbdbench"
	"github.com/zosproject/zos/node"
)

// NBDConfig configures the vdisk benchmark.
type NBDConfig struct {
	Runtime time.Duration // per fio job; default 10s
	Size    int64         // vdisk and anchor export size; default 1 GiB
	Nodes   int           // cluster size; default 3
	// BlockSize of the vdisk; 0 means blockd's default.
	BlockSize int64
	// Targets besides zos: default (nil) nbdkit-memory and qemu-nbd-raw;
	// empty or ["none"] measures zos alone.
	Anchors []string
	// Workloads selects jobs of nbdbench.DefaultWorkloads by name; empty
	// runs them all.
	Workloads []string
	// CPUProfile, if set, receives a CPU profile of this process (the
	// nodes run in it) while the zos target runs.
	CPUProfile string
	// Metrics, if set, receives a summary of the serving node's blockd
	// and NBD metrics (counters; histogram counts and means) after the zos
	// target ran: cache hits, flush phases, write stalls.
	Metrics io.Writer
	Logger  *slog.Logger
}

// NBD measures fio (nbd engine) against a vdisk served by a loopback
// cluster of real nodes (chunk store with fsync, Raft heads), and against
// nbdkit memory and qemu-nbd on a raw file in the same run.
func NBD(ctx context.Context, cfg NBDConfig) (*nbdbench.Report, error) {
	if cfg.Runtime == 0 {
		cfg.Runtime = 10 * time.Second
	}
	if cfg.Size == 0 {
		cfg.Size = 1 << 30
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Anchors == nil {
		cfg.Anchors = []string{nbdbench.TargetNbdkit, nbdbench.TargetQemuNBD}
	}
	if len(cfg.Anchors) == 1 && cfg.Anchors[0] == "none" {
		cfg.Anchors = []string{}
	}
	dir, err := os.MkdirTemp("", "zos-bench-nbd-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	base := fmt.Sprintf("127.%d.%d.1", 20+rand.IntN(200), rand.IntN(250))
	dev, err := node.StartDev(ctx, node.DevConfig{Dir: dir, Nodes: cfg.Nodes, BaseIP: base})
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	c := dev.Client(0)
	if err := c.Do(ctx, http.MethodPost, "/api/v1/vdisks", map[string]any{"name": "bench", "size": cfg.Size, "block_size": cfg.BlockSize}, nil); err != nil {
		return nil, fmt.Errorf("bench: create vdisk: %w", err)
	}
	n0 := dev.Nodes[0].Config()
	uri := fmt.Sprintf("nbd://%s:%d/bench", n0.Bind, n0.NBDPort)
	jobs, err := nbdbench.Workloads(cfg.Workloads)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	if cfg.CPUProfile != "" || cfg.Metrics != nil {
		// Only the zos target runs in this process: profile while the
		// jobs run on it, then the anchors without the profiler.
		if cfg.CPUProfile != "" {
			f, err := os.Create(cfg.CPUProfile)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return nil, err
			}
		}
		rep, err := nbdbench.Run(ctx, nbdbench.Config{Runtime: cfg.Runtime, Size: cfg.Size, Dir: dir, ZosURI: uri,
			Targets: []string{nbdbench.TargetZos}, Workloads: jobs, Logger: cfg.Logger})
		if cfg.CPUProfile != "" {
			pprof.StopCPUProfile()
		}
		if cfg.Metrics != nil {
			writeMetrics(cfg.Metrics, dev.Nodes[0].Registry(), "zos_blockd_", "zos_nbd_requests_total")
		}
		if err != nil || len(cfg.Anchors) == 0 {
			return rep, err
		}
		more, err := nbdbench.Run(ctx, nbdbench.Config{Runtime: cfg.Runtime, Size: cfg.Size, Dir: dir,
			Targets: cfg.Anchors, Workloads: jobs, Logger: cfg.Logger})
		if more != nil {
			rep.Targets = append(rep.Targets, more.Targets...)
			rep.Results = append(rep.Results, more.Results...)
		}
		return rep, err
	}
	return nbdbench.Run(ctx, nbdbench.Config{Runtime: cfg.Runtime, Size: cfg.Size, Dir: dir, ZosURI: uri,
		Targets: append([]string{nbdbench.TargetZos}, cfg.Anchors...), Workloads: jobs, Logger: cfg.Logger})
}

// writeMetrics prints the metrics of g whose names start with one of
// prefixes: counters and gauges by value, histograms as count and mean.
func writeMetrics(w io.Writer, g prometheus.Gatherer, prefixes ...string) {
	mfs, err := g.Gather()
	if err != nil {
		fmt.Fprintf(w, "metrics: %v\n", err)
		return
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			id := name
			if len(labels) > 0 {
				id += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				mean := 0.0
				if h.GetSampleCount() > 0 {
					mean = h.GetSampleSum() / float64(h.GetSampleCount())
				}
				fmt.Fprintf(w, "%s count=%d mean=%.3g p50<=%.3g p90<=%.3g p99<=%.3g\n", id, h.GetSampleCount(), mean,
					bucketQuantile(h, 0.5), bucketQuantile(h, 0.9), bucketQuantile(h, 0.99))
			case m.GetCounter() != nil:
				fmt.Fprintf(w, "%s %.6g\n", id, m.GetCounter().GetValue())
			case m.GetGauge() != nil:
				fmt.Fprintf(w, "%s %.6g\n", id, m.GetGauge().GetValue())
			}
		}
	}
}

// bucketQuantile is the upper bound of the histogram bucket holding the
// q-quantile (+Inf past the last bucket).
func bucketQuantile(h interface {
	GetSampleCount() uint64
	GetBucket() []*dto.Bucket
}, q float64) float64 {
	want := uint64(math.Ceil(q * float64(h.GetSampleCount())))
	for _, b := range h.GetBucket() {
		if b.GetCumulativeCount() >= want {
			return b.GetUpperBound()
		}
	}
	return math.Inf(1)
}
