// Package orchestrator is the cluster's REST API, served by every node on
// its HTTP port (5000 by default): cluster status and membership, tokens,
// and — mounted from their own packages — vdisks, the chunk store and the
// flist hub. It is a client of the control plane (package raft): every
// node answers reads from its replica with read-index linearizability and
// forwards writes to the leader, so a user can point ZOS_ADDR at any node.
//
// Authentication: every route except /healthz and /readyz (and the hub's
// public reads) needs "Authorization: Bearer <token>". Tokens are stored in
// Raft as SHA-256 hashes; the admin token is created at bootstrap. Nodes
// authenticate to each other with the cluster secret.
//
// Leader-only operations (join, remove, promote, demote) are proxied to the
// leader's API when they arrive at a follower.
package orchestrator
