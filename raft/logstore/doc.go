// Package logstore is the durable half of the control plane: a
// hashicorp/raft LogStore and StableStore on one pebble/v2 database.
//
// The design keeps every other piece of node-local state in pebble, so the
// log lives there too rather than in raft-boltdb's separate bolt file (and
// its own fsync stream).
//
// Layout: log entries under "l"+big-endian index (so index order is key
// order and DeleteRange is one range tombstone), stable keys under
// "s"+key. Every write batch is committed with pebble.Sync: an entry that
// StoreLogs acknowledged survives a crash of the process or the machine.
// First and last index are cached in memory and recomputed after a
// DeleteRange; the store is safe for concurrent use.
//
// Missing entries are raft.ErrLogNotFound; a missing stable key reads as
// empty / zero, as raft's contract asks.
package logstore
