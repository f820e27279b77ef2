package blockd

// Stats is a Disk's cache state.
type Stats struct {
	DirtyBlocks    int   `json:"dirty_blocks"`
	InflightBlocks int   `json:"inflight_blocks"`
	PendingBlocks  int   `json:"pending_blocks"` // stored, not yet committed
	CacheBytes     int64 `json:"cache_bytes"`    // dirty and in-flight data
	Fenced         bool  `json:"fenced"`
}

// Stats reports the write-back cache state.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	pending := len(d.layers.cur.refs)
	for _, l := range d.layers.frozen {
		pending += len(l.refs)
	}
	return Stats{DirtyBlocks: len(d.cache.dirty), InflightBlocks: len(d.wb.inflight), PendingBlocks: pending,
		CacheBytes: d.cache.bytes + d.wb.bytes, Fenced: d.lease.fenced != nil}
}
