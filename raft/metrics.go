package raft

import (
	"time"

	hraft "github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/raft/fsm"
)

type metrics struct {
	reg        prometheus.Registerer
	collectors []prometheus.Collector
	applied    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	errors     *prometheus.CounterVec

	deduplicated *prometheus.CounterVec
	retries      *prometheus.CounterVec
	unknown      *prometheus.CounterVec
}

func newMetrics(s *Server, reg prometheus.Registerer) *metrics {
	m := &metrics{reg: reg}
	m.applied = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_raft_applied_total",
		Help: "Commands applied to the local state machine, by op."}, []string{"op"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "zos_raft_commit_seconds",
		Help:    "Latency of proposals from this node until their result (forwarding included).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"op"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_raft_apply_errors_total",
		Help: "Proposals that failed or were refused, by op."}, []string{"op"})
	m.deduplicated = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_raft_requests_deduplicated_total",
		Help: "Commands applied here whose request id was already in the request table: answered with the first result, not applied again, by op."}, []string{"op"})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_raft_apply_retries_total",
		Help: "Proposals from this node attempted again (same request id) after a leader change, by op."}, []string{"op"})
	m.unknown = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "zos_raft_apply_outcome_unknown_total",
		Help: "Proposals from this node given up with an unknown outcome (they may have been applied), by op."}, []string{"op"})
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	table := func(f func(*fsm.Requests) int) func() float64 {
		return func() float64 {
			s.m.mu.RLock()
			defer s.m.mu.RUnlock()
			return float64(f(s.m.state.Requests))
		}
	}
	m.collectors = []prometheus.Collector{m.applied, m.latency, m.errors, m.deduplicated, m.retries, m.unknown,
		gauge("zos_raft_request_table_entries", "Request ids remembered by the state machine (bounded by fsm.MaxRequests).", table((*fsm.Requests).Len)),
		gauge("zos_raft_request_table_bytes", "Bytes of ids and results the request table accounts for (bounded by fsm.MaxRequestBytes).", table((*fsm.Requests).Bytes)),
		gauge("zos_raft_state", "0 follower, 1 candidate, 2 leader, 3 shutdown.", func() float64 {
			switch s.raft.State() {
			case hraft.Candidate:
				return 1
			case hraft.Leader:
				return 2
			case hraft.Shutdown:
				return 3
			}
			return 0
		}),
		gauge("zos_raft_term", "Current Raft term.", func() float64 { return float64(s.raft.CurrentTerm()) }),
		gauge("zos_raft_commit_index", "Last committed index known here.", func() float64 { return float64(s.raft.CommitIndex()) }),
		gauge("zos_raft_applied_index", "Last index applied to the local state.", func() float64 { return float64(s.m.applied()) }),
		gauge("zos_raft_last_contact_seconds", "Seconds since this follower heard from the leader (0 on the leader).", func() float64 {
			if s.raft.State() == hraft.Leader {
				return 0
			}
			lc := s.raft.LastContact()
			if lc.IsZero() {
				return -1
			}
			return time.Since(lc).Seconds()
		}),
		gauge("zos_raft_cluster_epoch", "Epoch of the cluster map.", func() float64 {
			s.m.mu.RLock()
			defer s.m.mu.RUnlock()
			return float64(s.m.state.Epoch)
		}),
	}
	if reg != nil {
		for _, c := range m.collectors {
			reg.MustRegister(c)
		}
	}
	return m
}

func (m *metrics) observeApply(op string, start time.Time, err error) {
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.errors.WithLabelValues(op).Inc()
	}
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.collectors {
		m.reg.Unregister(c)
	}
}
