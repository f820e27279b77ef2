package raft

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	hraft "github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/internal/slogx"
	"github.com/zosproject/zos/raft/fsm"
	"github.com/zosproject/zos/raft/logstore"
)

// Errors.
var (
	// ErrNotLeader: a leader-only call on a follower. The error carries the
	// leader, if known (see *NotLeaderError).
	ErrNotLeader = errors.New("raft: not the leader")
	// ErrNoLeader: no leader is known right now (election in progress, or
	// this node is cut off from the majority). Retry later.
	ErrNoLeader = errors.New("raft: no leader")
	// ErrClosed: the server was closed.
	ErrClosed = errors.New("raft: closed")
)

// NotLeaderError is ErrNotLeader with the leader's identity.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "raft: not the leader and no leader is known"
	}
	return fmt.Sprintf("raft: not the leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Config configures a Server.
type Config struct {
	// ID is the node's unique, stable identity.
	ID string
	// Dir holds the log, stable store and snapshots.
	Dir string
	// BindAddr is the Raft listen address (host:port). Ignored when
	// Transport is set.
	BindAddr string
	// Transport overrides the TCP transport (in-memory tests).
	Transport hraft.Transport
	// ServerTLS and ClientTLS, when set, run the transport over mutual
	// TLS (see tlsstream.go): ServerTLS must require and verify client
	// certificates. Both or neither.
	ServerTLS, ClientTLS *tls.Config
	// Bootstrap starts a new single-voter cluster when Dir holds no state.
	Bootstrap bool
	// Forwarder sends leader-only work from a follower to the leader.
	// Without one, followers answer ErrNotLeader.
	Forwarder Forwarder

	Logger     *slog.Logger
	Registerer prometheus.Registerer

	HeartbeatTimeout   time.Duration // default 1s
	ElectionTimeout    time.Duration // default 1s
	LeaderLeaseTimeout time.Duration // default 500ms
	CommitTimeout      time.Duration // default 5ms
	SnapshotInterval   time.Duration // default 60s
	SnapshotThreshold  uint64        // default 8192 entries
	TrailingLogs       uint64        // default 10240 entries
	// ApplyTimeout bounds one proposal when the context has no deadline.
	ApplyTimeout time.Duration // default 10s
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slogx.Discard
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = time.Second
	}
	if c.ElectionTimeout == 0 {
		c.ElectionTimeout = time.Second
	}
	if c.LeaderLeaseTimeout == 0 {
		c.LeaderLeaseTimeout = c.HeartbeatTimeout / 2
	}
	if c.CommitTimeout == 0 {
		c.CommitTimeout = 5 * time.Millisecond
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 60 * time.Second
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
}

// Validate checks the configuration.
func (c *Config) Validate() error {
	if c.ID == "" {
		return errors.New("raft: config: ID is required")
	}
	if c.Dir == "" {
		return errors.New("raft: config: Dir is required")
	}
	if c.Transport == nil && c.BindAddr == "" {
		return errors.New("raft: config: BindAddr or Transport is required")
	}
	if (c.ServerTLS == nil) != (c.ClientTLS == nil) {
		return errors.New("raft: config: ServerTLS and ClientTLS go together")
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		return errors.New("raft: config: LeaderLeaseTimeout must not exceed HeartbeatTimeout")
	}
	return nil
}

// Server is one node's member of the control plane.
type Server struct {
	cfg   Config
	log   *slog.Logger
	raft  *hraft.Raft
	trans hraft.Transport
	store *logstore.Store
	m     *machine
	met   *metrics
	ids   *idSource

	closeOnce sync.Once
	closed    chan struct{}
	wg        sync.WaitGroup
}

// Open starts a Server. It returns once Raft runs; use WaitLeader to wait
// for an elected leader.
func Open(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("component", "raft", "node", cfg.ID)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("raft: %w", err)
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Info, JSONFormat: true,
		Output: slogx.HclogWriter(log)})

	store, err := logstore.Open(filepath.Join(cfg.Dir, "log"), cfg.Logger)
	if err != nil {
		return nil, err
	}
	snaps, err := hraft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("raft: snapshot store: %w", err)
	}
	trans := cfg.Transport
	if trans == nil {
		addr, err := net.ResolveTCPAddr("tcp", cfg.BindAddr)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("raft: bind address %q: %w", cfg.BindAddr, err)
		}
		if cfg.ServerTLS != nil {
			ln, err := net.Listen("tcp", cfg.BindAddr)
			if err != nil {
				store.Close()
				return nil, fmt.Errorf("raft: listen on %s: %w", cfg.BindAddr, err)
			}
			stream := newTLSStream(ln, addr, cfg.ServerTLS, cfg.ClientTLS, log)
			trans = &watchedTransport{hraft.NewNetworkTransportWithConfig(&hraft.NetworkTransportConfig{
				Stream: stream, MaxPool: 4, Timeout: 10 * time.Second, Logger: hlog}), 10 * time.Second}
		} else {
			t, err := hraft.NewTCPTransportWithLogger(cfg.BindAddr, addr, 4, 10*time.Second, hlog)
			if err != nil {
				store.Close()
				return nil, fmt.Errorf("raft: listen on %s: %w", cfg.BindAddr, err)
			}
			trans = &watchedTransport{t, 10 * time.Second}
		}
	}

	rc := hraft.DefaultConfig()
	rc.LocalID = hraft.ServerID(cfg.ID)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.MaxAppendEntries = 256
	rc.Logger = hlog

	s := &Server{cfg: cfg, log: log, trans: trans, store: store, closed: make(chan struct{}), ids: newIDSource(cfg.ID)}
	s.m = newMachine(log)
	s.met = newMetrics(s, cfg.Registerer)
	s.m.met = s.met

	existing, err := hraft.HasExistingState(store, store, snaps)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raft: %w", err)
	}
	r, err := hraft.NewRaft(rc, s.m, store, store, snaps, trans)
	if err != nil {
		s.closeStores()
		return nil, fmt.Errorf("raft: %w", err)
	}
	s.raft = r
	if cfg.Bootstrap && !existing {
		f := r.BootstrapCluster(hraft.Configuration{Servers: []hraft.Server{{
			Suffrage: hraft.Voter, ID: rc.LocalID, Address: trans.LocalAddr()}}})
		if err := f.Error(); err != nil && !errors.Is(err, hraft.ErrCantBootstrap) {
			r.Shutdown()
			s.closeStores()
			return nil, fmt.Errorf("raft: bootstrap: %w", err)
		}
	}
	log.Info("raft started", "addr", trans.LocalAddr(), "bootstrap", cfg.Bootstrap && !existing, "existing_state", existing)
	return s, nil
}

func (s *Server) closeStores() {
	if wt, ok := s.trans.(*watchedTransport); ok && s.cfg.Transport == nil {
		nt := wt.NetworkTransport
		// Close does not close the pooled connections to the peers:
		// without this their handlers (each a goroutine, blocked reading)
		// and our sockets would outlive the server.
		nt.CloseStreams()
	}
	if c, ok := s.trans.(interface{ Close() error }); ok && s.cfg.Transport == nil {
		c.Close()
	}
	s.store.Close()
}

// Close stops Raft and closes the stores. It does not leave the cluster.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.closed)
		err = s.raft.Shutdown().Error()
		s.wg.Wait()
		s.closeStores()
		s.met.unregister()
		s.log.Info("raft stopped")
	})
	return err
}

// ID returns the local node ID.
func (s *Server) ID() string { return s.cfg.ID }

// Addr returns the local Raft address.
func (s *Server) Addr() string { return string(s.trans.LocalAddr()) }

// IsLeader reports whether this server is the leader right now.
func (s *Server) IsLeader() bool { return s.raft.State() == hraft.Leader }

// Leader returns the current leader's ID and Raft address ("" if unknown).
func (s *Server) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// WaitLeader waits until a leader is known.
func (s *Server) WaitLeader(ctx context.Context) error {
	for {
		if id, _ := s.Leader(); id != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("raft: waiting for a leader: %w", ctx.Err())
		case <-s.closed:
			return ErrClosed
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) notLeader() error {
	id, addr := s.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// Apply implements Control: it proposes op(args) and waits for its result.
// On a follower the command is forwarded to the leader.
//
// The command carries a request id — the next one of ctx (WithRequestID)
// or a new one — and keeps it on every attempt, so it takes effect at
// most once even when Apply retries it after a leader change. The answer
// is the truth: a result or an fsm refusal means the command was applied
// or refused (a retried request gets its first answer); ErrOutcomeUnknown
// means an attempt may have reached the log and no later one could tell
// before ctx ended; any other error (ErrNoLeader, a context error,
// ErrClosed) means it did not take effect.
func (s *Server) Apply(ctx context.Context, op string, args any) (json.RawMessage, error) {
	p := &proposal{op: op, id: requestIDFrom(ctx)}
	if p.id == "" {
		p.id = s.ids.next()
	} else if len(p.id) > fsm.MaxRequestID {
		return nil, &fsm.Error{Code: fsm.ErrInvalid.Code, Msg: fmt.Sprintf("raft: request id of %d bytes exceeds %d", len(p.id), fsm.MaxRequestID)}
	}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("raft: encode %s: %w", op, err)
		}
		p.args = b
	}
	// Every attempt of p lands after what this node has applied.
	p.seen = s.m.applied()
	return s.apply(ctx, p)
}

func (s *Server) apply(ctx context.Context, p *proposal) (json.RawMessage, error) {
	start := time.Now()
	maybe := false // an attempt may have reached the log
	var err error
	for attempt := 0; ; attempt++ {
		var res json.RawMessage
		res, err = s.applyOnce(ctx, p)
		var fe *fsm.Error
		if err == nil || errors.As(err, &fe) {
			// The state machine's answer: the truth, retried or not.
			s.met.observeApply(p.op, start, err)
			return res, err
		}
		maybe = maybe || maybeApplied(err)
		if !retryable(err) || attempt >= 50 {
			break
		}
		s.met.retries.WithLabelValues(p.op).Inc()
		// Leadership is changing: wait a little for the new leader.
		select {
		case <-ctx.Done():
			err = fmt.Errorf("raft: %s: %w (last error: %v)", p.op, ctx.Err(), err)
		case <-s.closed:
			err = ErrClosed
		case <-time.After(min(time.Duration(attempt+1)*20*time.Millisecond, 250*time.Millisecond)):
			continue
		}
		break
	}
	if maybe {
		err = &OutcomeUnknownError{Op: p.op, ID: p.id, Last: err}
		s.met.unknown.WithLabelValues(p.op).Inc()
		s.log.Warn("proposal outcome unknown", "op", p.op, "request", p.id, "err", err)
	}
	s.met.observeApply(p.op, start, err)
	return nil, err
}

func retryable(err error) bool {
	return maybeApplied(err) || errors.Is(err, ErrNoLeader) || errors.Is(err, hraft.ErrLeadershipLost) ||
		errors.Is(err, hraft.ErrNotLeader) || errors.Is(err, ErrNotLeader) ||
		errors.Is(err, hraft.ErrLeadershipTransferInProgress)
}

func (s *Server) applyOnce(ctx context.Context, p *proposal) (json.RawMessage, error) {
	if s.IsLeader() {
		return s.applyLocal(ctx, p)
	}
	id, addr := s.Leader()
	if id == "" {
		return nil, ErrNoLeader
	}
	if id == s.cfg.ID || s.cfg.Forwarder == nil {
		return nil, s.notLeader()
	}
	resp, err := s.cfg.Forwarder.Forward(ctx, Leader{ID: id, Addr: addr},
		&ForwardRequest{Kind: ForwardApply, Op: p.op, Args: p.args, ID: p.id, Seen: p.seen})
	if err != nil {
		// The leader may have received it.
		return nil, &maybeAppliedError{err}
	}
	if resp.Err != nil {
		return nil, resp.Err.err()
	}
	return resp.Result, nil
}

// applyLocal commits a command on the leader.
func (s *Server) applyLocal(ctx context.Context, p *proposal) (json.RawMessage, error) {
	c := fsm.Command{Op: p.op, Time: time.Now().UnixNano(), Args: p.args, ID: p.id, Seen: p.seen}
	b, err := c.Encode()
	if err != nil {
		return nil, err
	}
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, ctx.Err()
		}
	}
	f := s.raft.Apply(b, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, hraft.ErrNotLeader):
			// Refused before it was appended.
			return nil, s.notLeader()
		case errors.Is(err, hraft.ErrLeadershipTransferInProgress):
			return nil, fmt.Errorf("raft: %s: %w", p.op, err) // refused too; retried
		case errors.Is(err, hraft.ErrEnqueueTimeout):
			return nil, fmt.Errorf("raft: %s: commit timed out after %v (no quorum?)", p.op, timeout)
		case errors.Is(err, hraft.ErrRaftShutdown):
			return nil, &maybeAppliedError{fmt.Errorf("%w: the leader stopped while %s was in flight", ErrClosed, p.op)}
		}
		// ErrLeadershipLost and the rest: the entry may have been
		// appended, and may yet commit under the next leader.
		return nil, &maybeAppliedError{fmt.Errorf("raft: %s: %w", p.op, err)}
	}
	res := f.Response().(applyResult)
	return res.data, res.err
}

// Read implements Control with a linearizable read.
func (s *Server) Read(ctx context.Context, fn func(*fsm.State) error) error {
	idx, err := s.readIndex(ctx)
	if err != nil {
		return err
	}
	if err := s.WaitApplied(ctx, idx); err != nil {
		return err
	}
	return s.ReadStale(fn)
}

// ReadStale runs fn on the local state without checking with the leader:
// it may lag behind the cluster by the replication delay.
func (s *Server) ReadStale(fn func(*fsm.State) error) error {
	s.m.mu.RLock()
	defer s.m.mu.RUnlock()
	return fn(s.m.state)
}

// readIndex returns an index at least as new as every write committed
// before the call.
func (s *Server) readIndex(ctx context.Context) (uint64, error) {
	for attempt := 0; ; attempt++ {
		idx, err := s.readIndexOnce(ctx)
		if err == nil || !retryable(err) || attempt >= 50 {
			return idx, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("raft: read: %w (last error: %v)", ctx.Err(), err)
		case <-s.closed:
			return 0, ErrClosed
		case <-time.After(min(time.Duration(attempt+1)*20*time.Millisecond, 250*time.Millisecond)):
		}
	}
}

func (s *Server) readIndexOnce(ctx context.Context) (uint64, error) {
	if s.IsLeader() {
		return s.leaderReadIndex()
	}
	id, addr := s.Leader()
	if id == "" {
		return 0, ErrNoLeader
	}
	if id == s.cfg.ID || s.cfg.Forwarder == nil {
		return 0, s.notLeader()
	}
	resp, err := s.cfg.Forwarder.Forward(ctx, Leader{ID: id, Addr: addr}, &ForwardRequest{Kind: ForwardReadIndex})
	if err != nil {
		return 0, err
	}
	if resp.Err != nil {
		return 0, resp.Err.err()
	}
	return resp.Index, nil
}

func (s *Server) leaderReadIndex() (uint64, error) {
	idx := s.raft.CommitIndex()
	if err := s.raft.VerifyLeader().Error(); err != nil {
		if errors.Is(err, hraft.ErrNotLeader) || errors.Is(err, hraft.ErrLeadershipLost) {
			return 0, s.notLeader()
		}
		return 0, fmt.Errorf("raft: verify leader: %w", err)
	}
	// A new leader's commit index may trail entries committed by its
	// predecessor until its first entry commits; the barrier covers that.
	if s.raft.AppliedIndex() < idx || s.m.appliedTerm() < s.raft.CurrentTerm() {
		if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
			return 0, fmt.Errorf("raft: barrier: %w", err)
		}
		idx = max(idx, s.raft.CommitIndex())
	}
	return idx, nil
}

// WaitApplied waits until the local state has applied index idx.
func (s *Server) WaitApplied(ctx context.Context, idx uint64) error {
	for {
		ch := s.m.changed()
		if s.appliedThrough(idx) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("raft: waiting to apply index %d (at %d): %w", idx, s.m.applied(), ctx.Err())
		case <-s.closed:
			return ErrClosed
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// appliedThrough reports whether the local state reflects every command
// with an index up to idx. The state machine only sees commands, while the
// commit index also counts configuration changes, barriers and the no-op a
// new leader appends; so once Raft has handed everything up to idx to the
// state machine, the entries after the last applied command are checked:
// if none of them is a command, the state is current.
func (s *Server) appliedThrough(idx uint64) bool {
	a := s.m.applied()
	if a >= idx {
		return true
	}
	if s.raft.AppliedIndex() < idx {
		return false
	}
	snapIdx := uint64(0)
	for i := a + 1; i <= idx; i++ {
		var l hraft.Log
		if err := s.store.GetLog(i, &l); err != nil {
			// Compacted: covered by a snapshot the state already holds.
			if snapIdx == 0 {
				snapIdx, _ = strconv.ParseUint(s.raft.Stats()["last_snapshot_index"], 10, 64)
			}
			if i <= snapIdx {
				continue
			}
			return false
		}
		if l.Type == hraft.LogCommand {
			return false
		}
	}
	return true
}

// Changed returns a channel closed at the next applied command. Watchers
// of the cluster map re-read the state after it fires.
func (s *Server) Changed() <-chan struct{} { return s.m.changed() }

// HandleForward serves a forwarded request on the leader.
func (s *Server) HandleForward(ctx context.Context, req *ForwardRequest) *ForwardResponse {
	switch req.Kind {
	case ForwardApply:
		if !s.IsLeader() {
			return errResponse(s.notLeader())
		}
		res, err := s.applyLocal(ctx, &proposal{op: req.Op, args: req.Args, id: req.ID, seen: req.Seen})
		if err != nil {
			return errResponse(err)
		}
		return &ForwardResponse{Result: res}
	case ForwardReadIndex:
		if !s.IsLeader() {
			return errResponse(s.notLeader())
		}
		idx, err := s.leaderReadIndex()
		if err != nil {
			return errResponse(err)
		}
		return &ForwardResponse{Index: idx}
	}
	return errResponse(fmt.Errorf("raft: unknown forwarded request %q", req.Kind))
}
