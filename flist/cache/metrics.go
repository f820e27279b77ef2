package cache

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg                              prometheus.Registerer
	hits, misses, evictions, corrupt prometheus.Counter
	readBytes, stored, evictedBytes  prometheus.Counter
	usage                            prometheus.Gauge
	collectors                       []prometheus.Collector
}

func newMetrics(reg prometheus.Registerer, c *Cache) *metrics {
	labels := prometheus.Labels{"dir": c.dir}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "flist_cache", Name: name, Help: help, ConstLabels: labels})
	}
	m := &metrics{
		reg:          reg,
		hits:         counter("hits_total", "Reads served from the chunk cache."),
		misses:       counter("misses_total", "Reads that missed the chunk cache."),
		evictions:    counter("evictions_total", "Objects evicted from the chunk cache."),
		corrupt:      counter("corrupt_total", "Cached objects dropped because they failed verification."),
		readBytes:    counter("read_bytes_total", "Bytes read from the chunk cache."),
		stored:       counter("stored_bytes_total", "Bytes written into the chunk cache."),
		evictedBytes: counter("evicted_bytes_total", "Bytes evicted from the chunk cache."),
		usage: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "zos", Subsystem: "flist_cache", Name: "usage_bytes",
			Help: "Bytes held by the chunk cache (as last accounted by this process).", ConstLabels: labels}),
	}
	m.collectors = []prometheus.Collector{m.hits, m.misses, m.evictions, m.corrupt, m.readBytes, m.stored, m.evictedBytes, m.usage}
	if reg != nil {
		for _, col := range m.collectors {
			_ = reg.Register(col)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, col := range m.collectors {
		m.reg.Unregister(col)
	}
}
