package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

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
