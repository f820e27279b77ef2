package blockd

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics, shared by all its vdisks.
type metrics struct {
	dirtyBytes    prometheus.Gauge
	openDisks     *prometheus.GaugeVec
	flushSeconds  prometheus.Histogram
	flushPhase    *prometheus.HistogramVec
	flushBlocks   prometheus.Counter
	flushErrors   prometheus.Counter
	flushTakeover prometheus.Counter
	takeover      prometheus.Histogram
	cacheHits     *prometheus.CounterVec
	cacheMisses   *prometheus.CounterVec
	readBytes     prometheus.Counter
	writtenBytes  prometheus.Counter
	storedBytes   prometheus.Counter
	leaseRenewals prometheus.Counter
	leaseFailures prometheus.Counter
	leaseLost     prometheus.Counter
	writeStalls   prometheus.Counter

	journalSeconds  prometheus.Histogram
	journalBytes    prometheus.Counter
	journalErrors   prometheus.Counter
	journalReplayed prometheus.Counter

	readaheadBytes   prometheus.Counter
	readaheadWindows prometheus.Counter
	readaheadErrors  prometheus.Counter

	cleanedBlocks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		dirtyBytes: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "dirty_bytes", Help: "Bytes in the write-back caches of open vdisks (dirty and being flushed)."}),
		openDisks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "open_vdisks", Help: "vdisk engines open on this node, by mode."}, []string{"mode"}),
		flushSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "flush_seconds", Help: "Latency of flushes (store writes, tree update and head commit).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		flushPhase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "flush_phase_seconds", Help: "Time of the phases of a commit: drain (dirty blocks named), tree (tree nodes built and stored), blocks (waiting for block chunks after the tree), head (head moved through the control plane).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}, []string{"phase"}),
		flushBlocks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "flush_blocks_total", Help: "Blocks written back by flushes."}),
		flushErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "flush_errors_total", Help: "Flushes that failed."}),
		flushTakeover: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "flush_takeovers_total", Help: "Blocks a commit stored itself because the write-back job it counted on failed."}),
		takeover: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "takeover_seconds", Help: "Time from the last lease renewal of a vdisk's failed writer to the first write completed on this node after it took the vdisk over.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 10)}),
		cacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "cache_hits_total", Help: "Cache hits by cache (block, node)."}, []string{"cache"}),
		cacheMisses: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "cache_misses_total", Help: "Cache misses (fetches from the chunk store) by cache (block, node)."}, []string{"cache"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "read_bytes_total", Help: "Bytes read by clients."}),
		writtenBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "written_bytes_total", Help: "Bytes written by clients."}),
		storedBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "stored_bytes_total", Help: "Block bytes sent to the chunk store by flushes and imports."}),
		leaseRenewals: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "lease_renewals_total", Help: "Successful read-write lease renewals."}),
		leaseFailures: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "lease_renewal_failures_total", Help: "Failed lease renewals (the control plane was unreachable or refused)."}),
		leaseLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "leases_lost_total", Help: "Read-write leases lost to another node or a deletion (the vdisk went read-only)."}),
		writeStalls: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "write_stalls_total", Help: "Writes that waited for the write-back cache to drain."}),
		journalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "journal_append_seconds", Help: "Latency of journal appends (a FLUSH answered from the journal).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18)}),
		journalBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "journal_appended_bytes_total", Help: "Bytes appended to vdisk journals (per copy)."}),
		journalErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "journal_append_errors_total", Help: "Journal appends that failed (the FLUSH committed instead)."}),
		journalReplayed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "journal_replayed_records_total", Help: "Journal records replayed when a vdisk was attached after its writer failed."}),
		readaheadBytes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "readahead_bytes_total", Help: "Block bytes fetched into the block cache by readahead of sequential readers."}),
		readaheadWindows: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "readahead_windows_total", Help: "Readahead windows started (a sequential reader got close to the end of what was read ahead)."}),
		readaheadErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "readahead_errors_total", Help: "Readahead fetches that failed (the reads of those blocks fetch them again and report errors)."}),
		cleanedBlocks: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "zos", Subsystem: "blockd",
			Name: "cleaned_blocks_total", Help: "Blocks the cleaner put back in the write-back cache, unchanged, to free extents at most half live (clean.go)."}),
	}
	if reg != nil {
		reg.MustRegister(m.dirtyBytes, m.openDisks, m.flushSeconds, m.flushPhase, m.flushBlocks, m.flushErrors, m.flushTakeover, m.takeover, m.cacheHits,
			m.cacheMisses, m.readBytes, m.writtenBytes, m.storedBytes, m.leaseRenewals, m.leaseFailures, m.leaseLost, m.writeStalls,
			m.journalSeconds, m.journalBytes, m.journalErrors, m.journalReplayed,
			m.readaheadBytes, m.readaheadWindows, m.readaheadErrors, m.cleanedBlocks)
	}
	return m
}
