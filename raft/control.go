package raft

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/zosproject/zos/raft/fsm"
)

// Control is what the data plane (blockd, the hub, the store's garbage
// collector) needs from the control plane. *Server implements it over
// Raft; Local implements it in-process for unit tests and tools.
//
// Callers change the state with the typed function Apply, which calls
// Control.Apply; Control.Apply is the untyped form that implementations
// (and wrappers, such as tests' fault injectors) provide.
type Control interface {
	// Apply proposes one fsm command, by op name and arguments to encode,
	// and returns its JSON-encoded result. Refusals are *fsm.Error values
	// (test with errors.Is against the fsm sentinels).
	Apply(ctx context.Context, op string, args any) (json.RawMessage, error)
	// Read runs fn on a linearizable view of the state. fn must neither
	// modify nor retain the state.
	Read(ctx context.Context, fn func(*fsm.State) error) error
}

// Apply proposes op with its arguments through c and returns its result:
//
//	l, err := raft.Apply(ctx, c, fsm.LeaseAcquire, fsm.LeaseArgs{Name: "vm1", Node: "n1", TTL: ttl})
//
// The command reaches the log exactly as Control.Apply(ctx, op.Name(),
// args) sends it; a context with a request id (WithRequestID) makes it safe
// to repeat. Refusals are *fsm.Error values; the result of an op whose
// result type is fsm.None is None{}.
func Apply[A, R any](ctx context.Context, c Control, op fsm.Op[A, R], args A) (R, error) {
	raw, err := c.Apply(ctx, op.Name(), args)
	if err != nil {
		var zero R
		return zero, err
	}
	return op.Result(raw)
}

// Exec is Apply for a caller that needs no result: the same proposal,
// without decoding the answer (a vdisk's answer holds its snapshots).
func Exec[A, R any](ctx context.Context, c Control, op fsm.Op[A, R], args A) error {
	_, err := c.Apply(ctx, op.Name(), args)
	return err
}

// Local is a Control over an in-process state machine without Raft. It is
// real logic (the same fsm.Apply), only not replicated. It never retries,
// so its commands carry a request id only when ctx has one
// (WithRequestID); then a repeated call answers with the first result.
type Local struct {
	mu    sync.RWMutex
	state *fsm.State
	// Now is the clock stamped into commands; time.Now by default.
	Now func() time.Time
}

// NewLocal returns a Local over an initialized empty cluster whose nodes
// are the given IDs (addresses are made up).
func NewLocal(nodes ...string) *Local {
	l := &Local{state: fsm.NewState(), Now: time.Now}
	ctx := context.Background()
	must := func(op string, args any) {
		if _, err := l.Apply(ctx, op, args); err != nil {
			panic(err)
		}
	}
	must(fsm.OpInit, fsm.InitArgs{ClusterID: "local", Secret: "local-secret-0123456789",
		Admin: fsm.Token{ID: "admin", Hash: "0000000000000000000000000000000000000000000000000000000000000000"}})
	for i, id := range nodes {
		addr := fmt.Sprintf("127.0.0.%d", i+1)
		must(fsm.OpNodeAdd, fsm.NodeAddArgs{Node: fsm.Node{ID: id, Addr: addr, RaftAddr: addr + ":9901", APIAddr: addr + ":5000"}})
	}
	return l
}

// Apply implements Control.
func (l *Local) Apply(ctx context.Context, op string, args any) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c, err := fsm.NewCommand(op, l.Now().UnixNano(), args)
	if err != nil {
		return nil, err
	}
	c.ID = requestIDFrom(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	c.Seen = l.state.Index
	l.state.Index++
	v, err := l.state.Apply(&c)
	if err != nil {
		return nil, err
	}
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	return json.Marshal(v) // under the lock: v may point into state
}

// Read implements Control.
func (l *Local) Read(ctx context.Context, fn func(*fsm.State) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	return fn(l.state)
}
