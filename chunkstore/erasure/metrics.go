package erasure

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg            *prometheus.Registry
	collectors     []prometheus.Collector
	puts           prometheus.Counter
	putBatches     prometheus.Counter
	putBytes       prometheus.Counter
	putErrors      prometheus.Counter
	partialPuts    prometheus.Counter
	fetches        prometheus.Counter
	fetchBytes     prometheus.Counter
	fetchErrors    prometheus.Counter
	fetchBatches   prometheus.Counter
	fetchFallbacks prometheus.Counter
	rangeBatches   prometheus.Counter
	rangeBytes     prometheus.Counter
	rangeFallbacks prometheus.Counter
	degraded       prometheus.Counter
	corruptShards  prometheus.Counter
	repairsQueued  prometheus.Counter
	repairsDropped prometheus.Counter
	repairedShards prometheus.Counter

	degradedPuts, pendingDropped, pendingRepaired, pendingAbandoned prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, pending func() float64) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		reg:            reg,
		puts:           c("zos_chunk_puts_total", "Chunks put."),
		putBatches:     c("zos_chunk_put_batches_total", "PutMany batches (their chunks count in zos_chunk_puts_total)."),
		putBytes:       c("zos_chunk_put_bytes_total", "Chunk bytes put."),
		putErrors:      c("zos_chunk_put_errors_total", "Puts that stored fewer than the durable minimum of shards."),
		partialPuts:    c("zos_chunk_partial_puts_total", "Puts acknowledged with some shards missing (remembered as pending repairs)."),
		fetches:        c("zos_chunk_fetches_total", "Chunk fetches."),
		fetchBytes:     c("zos_chunk_fetch_bytes_total", "Chunk bytes fetched."),
		fetchErrors:    c("zos_chunk_fetch_errors_total", "Fetches that failed."),
		fetchBatches:   c("zos_chunk_fetch_batches_total", "FetchMany batches (their chunks count in zos_chunk_fetches_total)."),
		fetchFallbacks: c("zos_chunk_fetch_batch_fallbacks_total", "Chunks of FetchMany batches the batched answers could not complete, read again by a single-chunk fetch."),
		rangeBatches:   c("zos_chunk_range_batches_total", "FetchRanges calls (parts of chunks read as parts of their data shards)."),
		rangeBytes:     c("zos_chunk_range_bytes_total", "Bytes of chunk ranges read as parts of shards."),
		rangeFallbacks: c("zos_chunk_range_fallbacks_total", "Chunk ranges the ranged answers could not complete, read whole by FetchMany."),
		degraded:       c("zos_chunk_degraded_reads_total", "Fetches that had to reconstruct from parity."),
		corruptShards:  c("zos_chunk_corrupt_shards_total", "Shards reported corrupt by a node during reads."),
		repairsQueued:  c("zos_chunk_read_repairs_total", "Background repairs queued by reads."),
		repairsDropped: c("zos_chunk_read_repairs_dropped_total", "Background repairs dropped because the queue was full."),
		repairedShards: c("zos_chunk_repaired_shards_total", "Shards rewritten by repair."),

		degradedPuts:     c("zos_chunk_degraded_puts_total", "Puts acknowledged with shards missing because their homes were unreachable (counted in zos_chunk_partial_puts_total too)."),
		pendingDropped:   c("zos_chunk_pending_repairs_dropped_total", "Partial puts not remembered as pending repairs because the list was full (left to heal passes)."),
		pendingRepaired:  c("zos_chunk_pending_repaired_total", "Pending repairs done: missing shards of a partial put rebuilt at their home."),
		pendingAbandoned: c("zos_chunk_pending_abandoned_total", "Pending repairs given up (chunk collected, re-encoded or unreadable; heal and scrub own it)."),
	}
	m.collectors = []prometheus.Collector{m.puts, m.putBatches, m.putBytes, m.putErrors, m.partialPuts, m.fetches, m.fetchBytes,
		m.fetchErrors, m.fetchBatches, m.fetchFallbacks, m.rangeBatches, m.rangeBytes, m.rangeFallbacks, m.degraded, m.corruptShards, m.repairsQueued, m.repairsDropped, m.repairedShards,
		m.degradedPuts, m.pendingDropped, m.pendingRepaired, m.pendingAbandoned,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "zos_chunk_pending_repairs", Help: "Chunks acknowledged with shards missing, waiting for their nodes."}, pending)}
	if reg != nil {
		for _, x := range m.collectors {
			reg.MustRegister(x)
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, x := range m.collectors {
		m.reg.Unregister(x)
	}
}
