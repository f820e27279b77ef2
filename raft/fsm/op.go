package fsm

import (
	"encoding/json"
	"fmt"
)

// Op is a typed command: its name in the log (Command.Op) and the types of
// its arguments (A) and of its result (R). The package declares one Op per
// command (NodeAdd, VDiskHead, LeaseAcquire, …); callers pass them to
// raft.Apply, which encodes A, proposes the command and decodes R, so no
// caller handles JSON. An Op's types are those of the function that applies
// it, so a caller and the state machine cannot disagree on them.
//
// R is None for commands that answer nothing but success.
type Op[A, R any] struct{ name string }

// Name returns the op's name in the log, e.g. "vdisk.head".
func (o Op[A, R]) Name() string { return o.name }

func (o Op[A, R]) String() string { return o.name }

// Result decodes the JSON result of o (as raft.Control.Apply returns it).
// An empty result, or the result of a command whose R is None, decodes to
// the zero R.
func (o Op[A, R]) Result(raw json.RawMessage) (R, error) {
	var r R
	if _, none := any(r).(None); none || len(raw) == 0 {
		return r, nil
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("fsm: decode result of %s: %w", o.name, err)
	}
	return r, nil
}

// None is the result type of commands without a result value.
type None struct{}

// applyFunc applies one decoded command to the State: c is the envelope
// (Time is the proposer's clock), a its arguments. On error the State must
// be unchanged.
type applyFunc[A, R any] func(s *State, c *Command, a A) (R, error)

// handler applies one command from its envelope.
type handler func(s *State, c *Command) (any, error)

// registry maps op names to their handlers. It is filled while the
// package's variables are initialized (register) and read-only after.
var registry = map[string]handler{}

// register adds the op name, applied by f, to the registry and returns its
// typed descriptor. The handler decodes the arguments strictly (unknown
// fields and trailing data are refused) before f runs, and answers no
// value on error or when R is None, so what reaches the log and the
// request table is exactly what a hand-written decode would give.
func register[A, R any](name string, f applyFunc[A, R]) Op[A, R] {
	if _, dup := registry[name]; dup {
		panic("fsm: op " + name + " registered twice")
	}
	var zero R
	_, none := any(zero).(None)
	registry[name] = func(s *State, c *Command) (any, error) {
		var a A
		if err := decodeArgs(c, &a); err != nil {
			return nil, err
		}
		r, err := f(s, c, a)
		if err != nil || none {
			return nil, err // never a typed nil in the interface
		}
		return r, nil
	}
	return Op[A, R]{name: name}
}

// applyOp applies one command, ignoring its request id. On error the
// State is unchanged.
func (s *State) applyOp(c *Command) (any, error) {
	if c.Op != OpInit && c.Op != OpNoop && s.ClusterID == "" {
		return nil, errf(ErrNotInitialized, "cluster is not initialized; %s refused", c.Op)
	}
	if c.Op == OpNoop {
		return nil, nil // takes no arguments, not even none
	}
	h, ok := registry[c.Op]
	if !ok {
		return nil, errf(ErrUnknownOp, "unknown command %q", c.Op)
	}
	return h(s, c)
}
