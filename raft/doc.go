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
// # Every command takes effect at most once
//
// A leader that loses its leadership while a command is in flight answers
// ErrLeadershipLost, yet the entry may already be committed (or be
// committed by the next leader); a forward whose answer was lost leaves
// the same doubt. Proposing the command again could apply it twice — a kv
// put bumping the version twice, a compare-and-swap applied and then
// answered "conflict", a vdisk head CAS committed and reported as failed.
// So, as in the Raft dissertation (§6.3), every proposal carries a request
// id and the state machine remembers recent ids with their results
// (fsm.Requests): an id it has seen is answered with the first result and
// not applied again. The id is chosen once per logical request — by the
// client through WithRequestID (the HTTP API derives it from an
// Idempotency-Key header), or by the proposing node — and kept across
// every retry and forward, so Apply may retry freely after a leader change.
//
// A client is told the truth: a result or an fsm refusal is what happened
// (the first answer, for a retried request); ErrOutcomeUnknown (HTTP 503
// outcome_unknown) means an attempt may have reached the log and no later
// attempt could tell before the context ended — retrying with the same id
// is safe and reports the outcome; ErrNoLeader, a context error or
// ErrClosed otherwise mean the command did not take effect.
//
// The table is bounded (fsm.MaxRequests, fsm.MaxRequestBytes,
// fsm.RequestTTL) and expires by what the log carries — entry indexes and
// the proposers' timestamps — never by a clock read inside Apply, so every
// replica forgets the same ids at the same entry, and it is part of the
// snapshot. Each command also carries Seen, the index its proposer had
// applied when it first proposed it; a retry whose id is gone but whose
// Seen is older than what the table forgot is refused as outcome unknown
// instead of being applied again, so the bounds can cost a retry its
// answer, never its at-most-once guarantee. Requests with their own
// Idempotency-Key sent again later than that (minutes, or fsm.MaxRequests
// writes) are new requests.
//
// Reads need no ids: Read is linearizable on every node (read index, with
// a barrier while a new leader has not yet applied an entry of its term);
// ReadStale is the explicit exception.
//
// Membership (AddMember, RemoveMember, SetVoter) is leader-only and returns
// ErrNotLeader elsewhere; the HTTP layer proxies such calls to the leader.
//
// Usage:
//
//	s, err := raft.Open(raft.Config{ID: "n1", Dir: dir, BindAddr: "127.0.0.1:9901", Bootstrap: true})
//	defer s.Close()
//	s.WaitLeader(ctx)
//	pool, err := raft.Apply(ctx, s, fsm.PoolCreate, fsm.PoolArgs{Name: "fast", K: 2, M: 1}) // *fsm.Pool
//	v, err := raft.Apply(raft.WithRequestID(ctx, clientOpID), s, fsm.VDiskHead, args)    // safe to repeat
//	err = raft.Exec(ctx, s, fsm.LeaseRelease, fsm.LeaseArgs{…})                           // no result wanted
//	err = s.Read(ctx, func(st *fsm.State) error { … })
//
// Apply and Exec are typed by the op (fsm.Op[A, R]: arguments A, result R)
// and work on any Control — a *Server, a Local in tests, or a wrapper of
// either.
package raft
