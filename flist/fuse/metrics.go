package fuse

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg                                          prometheus.Registerer
	fetches, fetchErrors, prefetches, readErrors prometheus.Counter
	fetchBytes, readBytes, assembled             prometheus.Counter
	fetchSeconds                                 prometheus.Histogram
	opens                                        *prometheus.CounterVec
	all                                          []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer, mountpoint string) *metrics {
	labels := prometheus.Labels{"mountpoint": mountpoint}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "flist_mount", Name: name, Help: help, ConstLabels: labels})
	}
	m := &metrics{
		reg:         reg,
		fetches:     counter("chunk_fetches_total", "Chunks fetched from the store."),
		fetchErrors: counter("chunk_fetch_errors_total", "Chunk fetches that failed (after retries)."),
		prefetches:  counter("chunk_prefetches_total", "Chunk fetches started by readahead."),
		readErrors:  counter("read_errors_total", "Reads answered with an error."),
		fetchBytes:  counter("chunk_fetch_bytes_total", "Bytes fetched from the store."),
		readBytes:   counter("read_bytes_total", "Bytes read through the daemon (not passthrough)."),
		assembled:   counter("passthrough_files_assembled_total", "Multi-chunk files assembled in the cache for passthrough."),
		fetchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "zos", Subsystem: "flist_mount", Name: "chunk_fetch_seconds",
			Help: "Time to fetch and verify one chunk.", ConstLabels: labels, Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}),
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "zos", Subsystem: "flist_mount", Name: "opens_total",
			Help: "Files opened, by mode (fuse or passthrough).", ConstLabels: labels}, []string{"mode"}),
	}
	m.all = []prometheus.Collector{m.fetches, m.fetchErrors, m.prefetches, m.readErrors, m.fetchBytes, m.readBytes, m.assembled, m.fetchSeconds, m.opens}
	if reg != nil {
		for _, c := range m.all {
			_ = reg.Register(c)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.all {
		m.reg.Unregister(c)
	}
}
