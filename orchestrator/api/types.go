package api

import "github.com/zosproject/zos/raft/fsm"

// NodeStatus is a node of the cluster map with its Raft role.
type NodeStatus struct {
	fsm.Node
	// Raft is "voter", "nonvoter" or "" (not in the Raft configuration).
	Raft   string `json:"raft"`
	Leader bool   `json:"leader"`
}

// ClusterStatus answers GET /api/v1/cluster.
type ClusterStatus struct {
	ClusterID    string `json:"cluster_id"`
	LeaderID     string `json:"leader_id"`
	LeaderAddr   string `json:"leader_addr"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// FirstIndex and SnapshotIndex are the answering node's log bounds.
	FirstIndex    uint64       `json:"first_index"`
	SnapshotIndex uint64       `json:"snapshot_index"`
	Epoch         uint64       `json:"epoch"`
	AnsweredBy    string       `json:"answered_by"`
	Nodes         []NodeStatus `json:"nodes"`
}

// JoinRequest is what a joining node sends: its cluster-map entry.
type JoinRequest struct {
	Node fsm.Node `json:"node"`
	// CSR is the node's certificate request (PEM), on a cluster with TLS.
	CSR string `json:"csr,omitempty"`
}

// JoinResponse tells the new node what it joined.
type JoinResponse struct {
	ClusterID string `json:"cluster_id"`
	Secret    string `json:"secret"`
	Voter     bool   `json:"voter"`
	LeaderID  string `json:"leader_id"`
	// Cert is the node certificate signed from the request's CSR, CACert
	// the cluster CA (PEM); both empty without a CSR.
	Cert   string `json:"cert,omitempty"`
	CACert string `json:"ca_cert,omitempty"`
}

// TokenInfo is a token without its secret.
type TokenInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Role is admin, operator or reader (tokens created as "user" before
	// these roles existed show as operator, which is what they are).
	Role string `json:"role"`
	// Prefixes limit the token to vdisks and flists whose names start
	// with one of them; none: every name.
	Prefixes []string `json:"prefixes,omitempty"`
	Created  int64    `json:"created"`
}

// CreateTokenRequest asks for a new token.
type CreateTokenRequest struct {
	Name string `json:"name"`
	// Role: admin, operator (the default) or reader; "user" is accepted
	// as operator.
	Role string `json:"role,omitempty"`
	// Prefixes, if any, limit an operator or reader token to vdisks and
	// flists whose names start with one of them.
	Prefixes []string `json:"prefixes,omitempty"`
}

// CreateTokenResponse carries the token; it is shown once.
type CreateTokenResponse struct {
	TokenInfo
	Token string `json:"token"`
}

// KVEntry is one key of the generic namespace.
type KVEntry struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"`
	Version uint64 `json:"version"`
}
