package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/zosproject/zos/raft/fsm"
)

// lossyForwarder delivers every request to the leader but loses the
// answers of the first `lose` applies, as a connection reset after the
// leader committed would.
type lossyForwarder struct {
	next Forwarder
	lose atomic.Int64
	sent atomic.Int64
}

func (f *lossyForwarder) Forward(ctx context.Context, to Leader, req *ForwardRequest) (*ForwardResponse, error) {
	resp, err := f.next.Forward(ctx, to, req)
	if req.Kind == ForwardApply {
		f.sent.Add(1)
		if f.lose.Add(-1) >= 0 {
			return nil, fmt.Errorf("%w: connection reset by peer (answer lost)", ErrNoLeader)
		}
	}
	return resp, err
}

func counter(t *testing.T, s *Server, name string) float64 {
	t.Helper()
	mfs, err := s.cfg.Registerer.(*prometheus.Registry).Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestRetryTakesEffectOnce: a follower whose forwards reach the leader but
// lose the answers retries with the same request id; the command is
// applied once and the retry gets the first answer — for a compare-and-
// swap too, which applied a second time would be refused.
func TestRetryTakesEffectOnce(t *testing.T) {
	ctx := ctxT(t, 60*time.Second)
	c := threeNodes(t, ctx, 0)
	lead := c.leader(ctx)
	var follower *Server
	for _, s := range c.servers {
		if s != lead {
			follower = s
			break
		}
	}
	lf := &lossyForwarder{next: directForwarder{c}}
	follower.cfg.Forwarder = lf
	version := func() uint64 {
		var v uint64
		lead.ReadStale(func(st *fsm.State) error {
			if kv := st.KV["t"]["cas"]; kv != nil {
				v = kv.Version
			}
			return nil
		})
		return v
	}

	// A follower that has not heard from the leader yet retries before it
	// forwards anything: let it know the leader first. The counters may
	// still count retries of the cluster's start: compare deltas.
	if err := follower.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	dedup0 := counter(t, lead, "zos_raft_requests_deduplicated_total")
	retries0 := counter(t, follower, "zos_raft_apply_retries_total")
	lf.lose.Store(2)
	res, err := follower.Apply(ctx, fsm.OpKVPut, fsm.KVPutArgs{NS: "t", Key: "cas", Value: []byte("a"), IfVersion: ptr(uint64(0))})
	if err != nil {
		t.Fatalf("create-if-absent with lost answers: %v", err)
	}
	var kv fsm.KV
	if err := json.Unmarshal(res, &kv); err != nil || kv.Version != 1 || string(kv.Value) != "a" {
		t.Fatalf("answer %s (%v), want version 1", res, err)
	}
	if lf.sent.Load() != 3 || version() != 1 {
		t.Fatalf("%d forwards, version %d; want 3 and 1", lf.sent.Load(), version())
	}
	if n := counter(t, lead, "zos_raft_requests_deduplicated_total") - dedup0; n != 2 {
		t.Fatalf("leader counted %v deduplicated proposals, want 2", n)
	}
	if n := counter(t, follower, "zos_raft_apply_retries_total") - retries0; n != 2 {
		t.Fatalf("follower counted %v retries, want 2", n)
	}

	// Every answer lost until the deadline: the outcome is unknown, not a
	// failure, and the command took effect once.
	lf.lose.Store(1 << 30)
	sent := lf.sent.Load()
	unknown0 := counter(t, follower, "zos_raft_apply_outcome_unknown_total")
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = follower.Apply(wctx, fsm.OpKVPut, fsm.KVPutArgs{NS: "t", Key: "cas", Value: []byte("b"), IfVersion: ptr(uint64(1))})
	cancel()
	var ou *OutcomeUnknownError
	var fe *fsm.Error
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.As(err, &ou) || errors.As(err, &fe) || errors.Is(err, ErrNoLeader) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply with every answer lost = %v, want an OutcomeUnknownError (and no kind of its last attempt)", err)
	}
	if lf.sent.Load()-sent < 2 || version() != 2 {
		t.Fatalf("%d attempts, version %d; want several and 2", lf.sent.Load()-sent, version())
	}
	if n := counter(t, follower, "zos_raft_apply_outcome_unknown_total") - unknown0; n != 1 {
		t.Fatalf("outcome unknown counted %v times", n)
	}

	// The client that got "unknown" retries under its own request id and
	// learns the outcome.
	lf.lose.Store(0)
	rctx := WithRequestID(ctx, "client-op-1")
	args := fsm.KVPutArgs{NS: "t", Key: "cas", Value: []byte("c"), IfVersion: ptr(uint64(2))}
	first, err := follower.Apply(rctx, fsm.OpKVPut, args)
	if err != nil {
		t.Fatal(err)
	}
	again, err := lead.Apply(WithRequestID(ctx, "client-op-1"), fsm.OpKVPut, args)
	if err != nil || string(again) != string(first) || version() != 3 {
		t.Fatalf("retry under the same id: %s %v (first %s), version %d", again, err, first, version())
	}
	// The second proposal of a context is a request of its own.
	if _, err := follower.Apply(rctx, fsm.OpKVPut, fsm.KVPutArgs{NS: "t", Key: "cas", Value: []byte("d")}); err != nil || version() != 4 {
		t.Fatalf("second proposal under one context: %v, version %d", err, version())
	}
	if _, err := lead.Apply(WithRequestID(ctx, "client-op-1"), fsm.OpKVPut, fsm.KVPutArgs{NS: "t", Key: "cas", Value: []byte("e")}); !errors.Is(err, fsm.ErrKeyReused) {
		t.Fatalf("id reused for another command: %v", err)
	}
}

// TestLocalRequestID: Local deduplicates under WithRequestID as the
// replicated state machine does.
func TestLocalRequestID(t *testing.T) {
	l := NewLocal("n1")
	args := fsm.KVPutArgs{NS: "t", Key: "k", Value: []byte("v")}
	var answers []string
	for range 2 {
		res, err := l.Apply(WithRequestID(context.Background(), "op"), fsm.OpKVPut, args)
		if err != nil {
			t.Fatal(err)
		}
		answers = append(answers, string(res))
	}
	if answers[0] != answers[1] || l.state.KV["t"]["k"].Version != 1 {
		t.Fatalf("answers %q, version %d", answers, l.state.KV["t"]["k"].Version)
	}
	if _, err := l.Apply(context.Background(), fsm.OpKVPut, args); err != nil || l.state.KV["t"]["k"].Version != 2 {
		t.Fatal("a proposal without an id was deduplicated")
	}
}

func ptr[T any](v T) *T { return &v }
