package raft

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/zosproject/zos/raft/fsm"
)

// ErrOutcomeUnknown: a proposal may or may not have taken effect — its
// answer was lost with a leader and no later attempt could find out
// before the context ended (an *OutcomeUnknownError), or the state machine
// no longer remembers its request id (an *fsm.Error). Proposing it again
// with the same request id (WithRequestID) is safe: it takes effect at
// most once, and the retry reports the outcome. The HTTP API answers it
// with 503 outcome_unknown. Test with errors.Is.
var ErrOutcomeUnknown = fsm.ErrOutcomeUnknown

type requestKey struct{}

// requestSeq hands out the request ids of one context.
type requestSeq struct {
	mu   sync.Mutex
	base string
	n    int
}

func (q *requestSeq) next() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n++
	if q.n == 1 {
		return q.base
	}
	return q.base + "#" + strconv.Itoa(q.n)
}

// WithRequestID returns a context whose proposals (Server.Apply,
// Local.Apply) carry request ids derived from id: the first proposal made
// with it is request id, the second id#2, and so on. A client that
// retries a whole operation (an HTTP request with the same
// Idempotency-Key) under the same id gets, proposal by proposal, the
// results of the proposals that already took effect instead of applying
// them again. An id must be unique per logical operation and at most
// fsm.MaxRequestID bytes (less room for the "#N" suffix).
//
// Without a request id, Server.Apply makes one per call and keeps it
// across its own retries.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestKey{}, &requestSeq{base: id})
}

// requestIDFrom takes the next request id of ctx ("" without one).
func requestIDFrom(ctx context.Context) string {
	if q, ok := ctx.Value(requestKey{}).(*requestSeq); ok {
		return q.next()
	}
	return ""
}

// idSource makes request ids unique across nodes and restarts: the node
// ID, a random boot nonce and a counter.
type idSource struct {
	prefix string
	mu     sync.Mutex
	n      uint64
}

func newIDSource(node string) *idSource {
	var b [8]byte
	rand.Read(b[:])
	return &idSource{prefix: node + "." + hex.EncodeToString(b[:]) + "."}
}

func (g *idSource) next() string {
	g.mu.Lock()
	g.n++
	n := g.n
	g.mu.Unlock()
	return g.prefix + strconv.FormatUint(n, 36)
}

// proposal is one logical request being committed: the same command,
// request id and Seen on every attempt.
type proposal struct {
	op   string
	args []byte
	id   string
	seen uint64
}

// maybeAppliedError is an attempt whose command may have reached the log:
// the leader lost its leadership or stopped while the command was in
// flight, or the forward to the leader failed after it may have been
// sent. Retrying with the same request id is safe, and only a retry can
// tell what happened.
type maybeAppliedError struct{ err error }

func (e *maybeAppliedError) Error() string { return e.err.Error() }
func (e *maybeAppliedError) Unwrap() error { return e.err }

func maybeApplied(err error) bool {
	var m *maybeAppliedError
	return errors.As(err, &m)
}

// OutcomeUnknownError is how Apply gives up on a proposal after an attempt
// that may have reached the log: errors.Is(err, ErrOutcomeUnknown) holds.
// It is not an *fsm.Error — it is no answer of the state machine — so a
// caller that retries transient control-plane errors retries it too.
type OutcomeUnknownError struct {
	Op, ID string
	// Last is the error of the last attempt. It is not unwrapped: its
	// kind (no leader, deadline) says nothing about the outcome.
	Last error
}

func (e *OutcomeUnknownError) Error() string {
	return fmt.Sprintf("raft: %s (request %s): outcome unknown, it may or may not have been applied (%v); retrying with the same request id (Idempotency-Key) is safe and reports the outcome", e.Op, e.ID, e.Last)
}

// Is makes errors.Is(err, ErrOutcomeUnknown) hold.
func (e *OutcomeUnknownError) Is(target error) bool {
	t, ok := target.(*fsm.Error)
	return ok && t.Code == fsm.ErrOutcomeUnknown.Code
}
