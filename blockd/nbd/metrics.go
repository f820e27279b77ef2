package nbd

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/blockd/nbd/internal/wire"
)

// numCmds covers the command types the server knows (READ..BLOCK_STATUS)
// plus one slot for unknown commands.
const (
	numCmds    = int(wire.CmdBlockStatus) + 2
	cmdUnknown = numCmds - 1
)

func cmdIndex(t uint16) int {
	if int(t) < numCmds-1 {
		return int(t)
	}
	return cmdUnknown
}

func cmdLabel(i int) string {
	if i == cmdUnknown {
		return "unknown"
	}
	return wire.CommandName(uint16(i))
}

// metrics are the server's Prometheus metrics. Per-command children are
// resolved once so the request path does not look up labels.
type metrics struct {
	requests    [numCmds]prometheus.Counter
	duration    [numCmds]prometheus.Observer
	errors      *prometheus.CounterVec
	readBytes   prometheus.Counter
	writeBytes  prometheus.Counter
	inFlight    prometheus.Gauge
	connsActive prometheus.Gauge
	connsTotal  prometheus.Counter
	handshakes  *prometheus.CounterVec
	panics      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "zos", Subsystem: "nbd", Name: "requests_total",
		Help: "NBD requests answered, by command.",
	}, []string{"command"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "zos", Subsystem: "nbd", Name: "request_duration_seconds",
		Help:    "Time from reading an NBD request to queuing its reply, by command.",
		Buckets: prometheus.ExponentialBuckets(5e-6, 4, 12), // 5µs .. ~21s
	}, []string{"command"})
	m := &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "request_errors_total",
			Help: "NBD requests answered with an error, by command and NBD error.",
		}, []string{"command", "error"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "read_bytes_total",
			Help: "Bytes returned by successful NBD reads.",
		}),
		writeBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "written_bytes_total",
			Help: "Bytes accepted by successful NBD writes.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "requests_in_flight",
			Help: "NBD requests read and not yet answered, all connections.",
		}),
		connsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "connections",
			Help: "Open NBD connections.",
		}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "connections_total",
			Help: "NBD connections accepted.",
		}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "handshakes_total",
			Help: "NBD handshakes by result (ok, abort, error).",
		}, []string{"result"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "zos", Subsystem: "nbd", Name: "export_panics_total",
			Help: "Panics recovered from Export methods (answered with EIO).",
		}),
	}
	for i := 0; i < numCmds; i++ {
		m.requests[i] = requests.WithLabelValues(cmdLabel(i))
		m.duration[i] = duration.WithLabelValues(cmdLabel(i))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{requests, duration, m.errors, m.readBytes, m.writeBytes,
			m.inFlight, m.connsActive, m.connsTotal, m.handshakes, m.panics} {
			reg.MustRegister(c)
		}
	}
	return m
}
