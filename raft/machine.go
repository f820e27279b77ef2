package raft

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	hraft "github.com/hashicorp/raft"

	"github.com/zosproject/zos/raft/fsm"
)

// machine adapts fsm.State to hraft.FSM.
type machine struct {
	log *slog.Logger
	met *metrics

	mu    sync.RWMutex // guards state
	state *fsm.State

	index atomic.Uint64
	term  atomic.Uint64

	chMu sync.Mutex
	ch   chan struct{} // closed and replaced after every apply
}

type applyResult struct {
	data json.RawMessage
	err  error
}

func newMachine(log *slog.Logger) *machine {
	return &machine{log: log, state: fsm.NewState(), ch: make(chan struct{})}
}

func (m *machine) applied() uint64     { return m.index.Load() }
func (m *machine) appliedTerm() uint64 { return m.term.Load() }

func (m *machine) changed() <-chan struct{} {
	m.chMu.Lock()
	defer m.chMu.Unlock()
	return m.ch
}

func (m *machine) notify() {
	m.chMu.Lock()
	close(m.ch)
	m.ch = make(chan struct{})
	m.chMu.Unlock()
}

// Apply implements hraft.FSM.
func (m *machine) Apply(l *hraft.Log) any {
	defer m.notify()
	c, err := fsm.Decode(l.Data)
	if err != nil {
		// Only commands that encoded cleanly are proposed; a bad entry
		// here is logged and skipped on every replica alike.
		m.log.Error("undecodable log entry skipped", "index", l.Index, "err", err)
		m.mu.Lock()
		m.state.Index = l.Index
		m.mu.Unlock()
		m.index.Store(l.Index)
		m.term.Store(l.Term)
		return applyResult{err: err}
	}
	m.mu.Lock()
	m.state.Index = l.Index // the request table records it
	replays := m.state.Requests.Replays()
	v, aerr := m.state.Apply(&c)
	replayed := m.state.Requests.Replays() != replays
	var data json.RawMessage
	if raw, ok := v.(json.RawMessage); ok {
		data = raw // a remembered result, already encoded
	} else if aerr == nil && v != nil {
		data, err = json.Marshal(v) // under the lock: v may point into state
	}
	m.mu.Unlock()
	m.index.Store(l.Index)
	m.term.Store(l.Term)
	if replayed {
		m.log.Debug("retried request answered from the request table", "op", c.Op, "request", c.ID, "index", l.Index)
	}
	if m.met != nil {
		m.met.applied.WithLabelValues(c.Op).Inc()
		if replayed {
			m.met.deduplicated.WithLabelValues(c.Op).Inc()
		}
	}
	if err != nil {
		return applyResult{err: fmt.Errorf("raft: encode result of %s: %w", c.Op, err)}
	}
	return applyResult{data: data, err: aerr}
}

// Snapshot implements hraft.FSM: it serializes the state now (the state is
// small, and Persist may run concurrently with later applies).
func (m *machine) Snapshot() (hraft.FSMSnapshot, error) {
	var buf snapshotBuffer
	m.mu.RLock()
	err := m.state.WriteSnapshot(&buf)
	m.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	return &buf, nil
}

// Restore implements hraft.FSM.
func (m *machine) Restore(r io.ReadCloser) error {
	defer r.Close()
	st, err := fsm.ReadSnapshot(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.state = st
	m.mu.Unlock()
	m.index.Store(st.Index)
	m.notify()
	m.log.Info("state restored from snapshot", "index", st.Index)
	return nil
}

type snapshotBuffer struct{ b []byte }

func (s *snapshotBuffer) Write(p []byte) (int, error) { s.b = append(s.b, p...); return len(p), nil }

func (s *snapshotBuffer) Persist(sink hraft.SnapshotSink) error {
	if _, err := sink.Write(s.b); err != nil {
		sink.Cancel()
		return fmt.Errorf("raft: write snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshotBuffer) Release() {}
