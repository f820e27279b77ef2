package raft

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/zosproject/zos/raft/fsm"
)

// Leader identifies the node a request is forwarded to.
type Leader struct {
	ID   string
	Addr string // Raft address
}

// Forwarder sends leader-only work from a follower to the leader. The node
// daemon implements it over the leader's internal HTTP endpoint, which calls
// HandleForward there. An error means no answer came back: the leader may
// or may not have received the request (an apply is then retried with the
// same request id, which is safe).
type Forwarder interface {
	Forward(ctx context.Context, to Leader, req *ForwardRequest) (*ForwardResponse, error)
}

// Kinds of forwarded requests.
const (
	ForwardApply     = "apply"
	ForwardReadIndex = "readindex"
)

// ForwardRequest is a request for the leader.
type ForwardRequest struct {
	Kind string          `json:"kind"`
	Op   string          `json:"op,omitempty"`
	Args json.RawMessage `json:"args,omitempty"`
	// ID and Seen are the request id and Seen of the command (see
	// fsm.Command), the same on every attempt.
	ID   string `json:"id,omitempty"`
	Seen uint64 `json:"seen,omitempty"`
}

// ForwardResponse is the leader's answer.
type ForwardResponse struct {
	Result json.RawMessage `json:"result,omitempty"`
	Index  uint64          `json:"index,omitempty"`
	Err    *WireError      `json:"error,omitempty"`
}

// WireError carries an error across a forward.
type WireError struct {
	Code       string `json:"code"`
	Msg        string `json:"message"`
	LeaderID   string `json:"leader_id,omitempty"`
	LeaderAddr string `json:"leader_addr,omitempty"`
}

const (
	codeNotLeader = "not_leader"
	codeNoLeader  = "no_leader"
	codeClosed    = "closed"
	codeInternal  = "internal"
	// codeMaybeApplied: the command was in flight on the leader when it
	// lost its leadership or stopped (see maybeAppliedError).
	codeMaybeApplied = "maybe_applied"
)

func errResponse(err error) *ForwardResponse {
	return &ForwardResponse{Err: toWire(err)}
}

func toWire(err error) *WireError {
	var fe *fsm.Error
	var nl *NotLeaderError
	switch {
	case maybeApplied(err):
		return &WireError{Code: codeMaybeApplied, Msg: err.Error()}
	case errors.As(err, &fe):
		return &WireError{Code: fe.Code, Msg: fe.Msg}
	case errors.As(err, &nl):
		return &WireError{Code: codeNotLeader, Msg: nl.Error(), LeaderID: nl.LeaderID, LeaderAddr: nl.LeaderAddr}
	case errors.Is(err, ErrNoLeader):
		return &WireError{Code: codeNoLeader, Msg: err.Error()}
	case errors.Is(err, ErrClosed):
		return &WireError{Code: codeClosed, Msg: err.Error()}
	}
	return &WireError{Code: codeInternal, Msg: err.Error()}
}

func (w *WireError) err() error {
	switch w.Code {
	case codeNotLeader:
		return &NotLeaderError{LeaderID: w.LeaderID, LeaderAddr: w.LeaderAddr}
	case codeNoLeader:
		return ErrNoLeader
	case codeClosed:
		// The leader is shutting down: as good as no leader.
		return fmt.Errorf("%w: leader is shutting down", ErrNoLeader)
	case codeInternal:
		return errors.New(w.Msg)
	case codeMaybeApplied:
		return &maybeAppliedError{errors.New(w.Msg)}
	}
	return &fsm.Error{Code: w.Code, Msg: w.Msg}
}
