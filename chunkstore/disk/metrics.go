package disk

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg          *prometheus.Registry
	collectors   []prometheus.Collector
	corrupt      prometheus.Counter
	writtenBytes prometheus.Counter
	compacted    prometheus.Counter
	writeErrors  prometheus.Counter
	commit       prometheus.Histogram
	commitOps    prometheus.Histogram
	filterSkips  prometheus.Counter
}

func newMetrics(s *Store, reg *prometheus.Registry) *metrics {
	m := &metrics{
		reg: reg,
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_disk_corrupt_shards_total", Help: "Shards that failed verification on read and were quarantined.",
		}),
		writtenBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_disk_written_bytes_total", Help: "Bytes appended to segment files (records and headers).",
		}),
		compacted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_disk_compacted_bytes_total", Help: "Segment bytes reclaimed by compaction.",
		}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_disk_write_errors_total", Help: "Group commits that failed (nothing of them acknowledged).",
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "zos_disk_commit_seconds", Help: "Time to apply and sync one group commit.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		commitOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "zos_disk_commit_ops", Help: "Requests (puts, deletes, relocations) applied by one group commit: they share its fsync and index commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		filterSkips: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "zos_disk_filter_skips_total", Help: "Index lookups skipped because the key filter knew the key absent: a put's new key, or a read's try of a profile the Ref is not stored under.",
		}),
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.collectors = []prometheus.Collector{
		m.corrupt, m.writtenBytes, m.compacted, m.writeErrors, m.commit, m.commitOps, m.filterSkips,
		gauge("zos_disk_write_queue", "Write requests waiting for the writer (the next group commit).", func() float64 { return float64(len(s.ops)) }),
		gauge("zos_disk_shards", "Live shards in the local store.", func() float64 { return float64(s.shards.Load()) }),
		gauge("zos_disk_shard_bytes", "Live shard data bytes in the local store.", func() float64 { return float64(s.dataBytes.Load()) }),
		gauge("zos_disk_dead_bytes", "Dead bytes in segment files awaiting compaction.", func() float64 { return float64(s.Stats().DeadBytes) }),
		gauge("zos_disk_segments", "Segment files.", func() float64 { return float64(s.Stats().Segments) }),
	}
	if reg != nil {
		for _, c := range m.collectors {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m == nil || m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
