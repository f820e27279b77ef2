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
// Ops are typed: each is an Op[A, R] value (NodeAdd, VDiskCreate,
// VDiskHead, LeaseAcquire, KVPut, …) naming the command in the log and the
// types of its arguments and result; raft.Apply(ctx, control, fsm.VDiskHead,
// fsm.VDiskHeadArgs{…}) returns a *fsm.VDisk. The ops live in one file per
// domain (nodes.go, pools.go, vdisks.go, leases.go, flists.go, tokens.go,
// pins.go, kv.go, cluster.go) and are registered where they are declared:
//
//	var PinAdd = register(OpPinAdd, (*State).applyPinAdd)
//
// register decodes the arguments once, strictly, for every op, so an apply
// function only validates and changes the State. Adding an op is adding a
// name to the list in command.go, its argument type, its apply function
// and that one line; the name is part of the log format forever. The
// limits the State enforces are in limits.go.
//
// Usage: Decode (or build with NewCommand) a Command, then State.Apply it.
// Apply validates everything before it changes anything: a command that
// returns an error leaves the State untouched (but for the request table).
// Errors are *Error values with a stable Code (not_found, exists, invalid,
// conflict, stale_epoch, leased, outcome_unknown, key_reused, …) so they
// survive being forwarded between nodes as JSON.
//
// At most once: a Command with an ID is applied at most once however often
// it reaches the log; a repeat is answered with the first result, value or
// refusal (see Requests). The table of recent ids is replicated state like
// the rest — bounded by count, bytes and age, aged on Command.Time, in the
// snapshot since version 2 (a version 1 snapshot restores with an empty
// table, which is exact: nothing before it carried ids). A refusal is
// remembered too, so "a refused command changes nothing" holds for
// everything but the table. Results are kept as JSON, so replaying costs
// no re-encoding; a request id reused for another command (a different
// CRC-32C of op and arguments) is refused with ErrKeyReused.
//
// The scripts in testdata/*.txt (TestScripts, cockroachdb/datadriven) show
// the fencing, head CAS, rollback, clone, lease and token rules command by
// command; go test -run TestScripts -rewrite regenerates their output.
//
// Fencing: every head update is a compare-and-swap that carries the lease
// epoch. Acquiring a lease always issues a new, larger epoch, so a writer
// that lost its lease (paused, partitioned, or restarted) can never move the
// head again.
package fsm
