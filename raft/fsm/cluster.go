package fsm

import (
	"errors"
)

// Cluster ops: initialization and batches.
var (
	// ClusterInit initializes an empty cluster: its id, secret, first admin
	// token and the default pool. It is the only op an uninitialized State
	// accepts (besides noop).
	ClusterInit = register(OpInit, (*State).applyInit)

	// Batch applies several commands in one log entry; each succeeds or
	// fails on its own (a batch is a unit of replication, not a transaction).
	Batch = register(OpBatch, (*State).applyBatch)
)

// Arguments.
type (
	InitArgs struct {
		ClusterID string `json:"cluster_id"`
		Secret    string `json:"secret"`
		Admin     Token  `json:"admin"`
	}
	BatchArgs struct {
		Cmds []Command `json:"cmds"`
	}
)

// BatchResult is one entry of a batch's result.
type BatchResult struct {
	Value any    `json:"value,omitempty"`
	Err   *Error `json:"error,omitempty"`
}

func (s *State) applyInit(c *Command, a InitArgs) (None, error) {
	if s.ClusterID != "" {
		return None{}, errf(ErrExists, "cluster %s is already initialized", s.ClusterID)
	}
	if a.ClusterID == "" || len(a.Secret) < 16 {
		return None{}, errf(ErrInvalid, "init needs a cluster id and a secret of at least 16 characters")
	}
	if err := checkToken(&a.Admin); err != nil {
		return None{}, err
	}
	s.ClusterID, s.Secret, s.Created = a.ClusterID, a.Secret, c.Time
	a.Admin.Created = c.Time
	a.Admin.Role = RoleAdmin
	tok := a.Admin
	s.Tokens[tok.ID] = &tok
	s.Pools[DefaultPool] = &Pool{Name: DefaultPool, Created: c.Time}
	return None{}, nil
}

// applyBatch applies each command in order; each succeeds or fails on its
// own (a batch is a unit of replication, not a transaction).
func (s *State) applyBatch(c *Command, a BatchArgs) ([]BatchResult, error) {
	if len(a.Cmds) > MaxBatch {
		return nil, errf(ErrInvalid, "batch of %d commands exceeds %d", len(a.Cmds), MaxBatch)
	}
	out := make([]BatchResult, len(a.Cmds))
	for i := range a.Cmds {
		sub := &a.Cmds[i]
		if sub.Op == OpBatch || sub.Op == OpInit {
			out[i].Err = errf(ErrInvalid, "%s is not allowed inside a batch", sub.Op)
			continue
		}
		sub.Time, sub.ID, sub.Seen = c.Time, "", 0
		v, err := s.applyOp(sub)
		out[i].Value = v
		if err != nil {
			var fe *Error
			if !errors.As(err, &fe) {
				fe = &Error{Code: "internal", Msg: err.Error()}
			}
			out[i].Err = fe
		}
	}
	return out, nil
}
