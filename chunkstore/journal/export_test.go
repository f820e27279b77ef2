package journal

import (
	"context"
	"slices"
	"testing"
	"time"
)

// BenchAppends appends one 64 KiB record per iteration to l (trimming
// every 500) and reports the median and 99th percentile latency.
func BenchAppends(b *testing.B, l Log) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	var seq uint64
	var lat []time.Duration
	for b.Loop() {
		seq++
		start := time.Now()
		if err := l.Append(ctx, "vd", 1, []Record{{Epoch: 1, Seq: seq, Payload: p}}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		if seq%500 == 0 {
			if err := l.Trim(ctx, "vd", 1, seq); err != nil {
				b.Fatal(err)
			}
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}

// OpenFiles is how many journal files d keeps open.
func (d *Dir) OpenFiles() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lru.Len()
}
