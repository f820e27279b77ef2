// Package fsm is the control plane's state machine: a pure, deterministic
// function from (State, Command) to (State', result). It knows nothing of
// Raft, the network or the clock — the proposer stamps each Command with the
// time, so every replica applying the same log reaches the same State.
//
// The State is O(nodes + pools + vdisks + flists + tokens + kv), never
// O(chunks): it holds the cluster map (nodes, addresses, state, failure
// domain, capacity, epoch), pools with their erasure-coding profile, vdisk
// records (size, block size, head Ref, snapshots, the read-write lease and
// its fencing epoch), the flist registry, hashed API tokens, pinned blobs
// and a generic namespaced key/value space for the orchestrator.
//
// Usage: Decode (or build with NewCommand) a Command, then State.Apply it.
// Apply validates everything before it changes anything: a command that
// returns an error leaves the State untouched. Errors are *Error values
// with a stable Code (not_found, exists, invalid, conflict, stale_epoch,
// leased, …) so they survive being forwarded between nodes as JSON.
//
// Fencing: every head update is a compare-and-swap that carries the lease
// epoch. Acquiring a lease always issues a new, larger epoch, so a writer
// that lost its lease (paused, partitioned, or restarted) can never move the
// head again.
package fsm
