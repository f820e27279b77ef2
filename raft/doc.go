// Package raft is zos's control plane: one hashicorp/raft group among the
// voter nodes, replicating the deterministic state machine of package fsm,
// with its log and stable state in pebble (package logstore) and file
// snapshots.
//
// A Server runs on every node. Any node accepts writes: a follower forwards
// the command to the leader through a Forwarder (the node daemon sends it to
// the leader's internal HTTP endpoint), and the leader stamps it with its
// clock, commits it and answers with the FSM's result. Reads through Read
// are linearizable (read-index: the leader confirms its leadership and its
// commit index; the reader waits until it has applied that far); ReadStale
// reads the local state without a round trip.
//
// Membership (AddMember, RemoveMember, SetVoter) is leader-only and returns
// ErrNotLeader elsewhere; the HTTP layer proxies such calls to the leader.
//
// Usage:
//
//	s, err := raft.Open(raft.Config{ID: "n1", Dir: dir, BindAddr: "127.0.0.1:9901", Bootstrap: true})
//	defer s.Close()
//	s.WaitLeader(ctx)
//	res, err := s.Apply(ctx, fsm.OpPoolCreate, fsm.PoolArgs{Name: "fast", K: 2, M: 1})
//	err = s.Read(ctx, func(st *fsm.State) error { … })
package raft
