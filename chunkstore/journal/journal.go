// Package journal is a fenced, replicated write-ahead log keyed by name,
// kept by the storage nodes beside their shards. blockd uses one journal per
// read-write vdisk so that a FLUSH costs one replicated append instead of a
// store round plus a Raft commit (see blockd/doc.go).
//
// A journal holds Records. Each carries the writer's lease epoch and a
// sequence number that grows within an epoch; the payload is opaque here.
// Records are ordered by (Epoch, Seq).
//
// Three implementations share the Log interface, and pass the conformance
// suite in journal/journaltest:
//   - Dir: one node's journals, as files in a directory (append + fdatasync),
//     through a pebble vfs.FS (DirConfig.FS) so that tests inject faults.
//   - remote.Client: a node's Dir over the shard protocol.
//   - Replicated: a journal over the cluster; an append is acknowledged
//     once n distinct nodes have it durably: the first n of a rendezvous
//     ranking of the name over the up nodes, an unreachable one replaced
//     by the next node of the ranking (a node dead but not yet marked down
//     does not stop appends); a read merges what all reachable nodes hold,
//     and needs answers from all but n-1 of them so that it sees at least
//     one copy of every acknowledged record.
//
// Fencing: Read(name, seal) raises the name's seal to seal on every node
// that answers; from then on those nodes refuse appends with an older
// epoch (ErrFenced). A writer that lost its lease cannot get an append
// acknowledged once a Read sealed the journal: the Read sealed all but at
// most n-1 of the members (the map's nodes that are not Removed), so any n
// distinct members include a sealed one, whichever nodes of the ranking an
// append lands on. ErrFenced is an answer, never a reason to try another
// node: it aborts the append. (A node that joins the map after the Read
// was not sealed by it; the new owner's first append, at its epoch, seals
// the nodes it reaches.)
//
// Why reads still find every acknowledged record after a failover: the
// append's n copies are on n distinct members wherever the ranking put
// them, and a Read asks every member, not the ranking, and hears from all
// but n-1 of them, so at least one of the n answers. Trim asks every member
// too, so copies on a replacement node are trimmed like the others.
//
// # What a Read returns
//
// Every acknowledged record, and maybe records that never were: an append
// that failed on some of its nodes, or whose write a crash cut after it
// reached the disk, may be read later (whole); so may an append of a
// fenced writer to nodes that missed the seal (down during the takeover
// Read). (Epoch, Seq) names one record: an append retried must carry the
// same payload, and reads return one record per pair. Readers replay in
// (Epoch, Seq) order from their mark; a new owner at epoch E should commit
// a mark of at least (E, 0) once it has replayed, so that no record of an
// older epoch is replayed again. Read may also return records a Trim
// covered (see Dir.Trim).
//
// # Dir on disk
//
// Per name, a journal file <hex of RefOf(name)[:16]>.jnl and maybe a seal
// file .seal beside it; a LOCK file (flock) keeps a second Dir out.
// Integers are little-endian, checksums CRC-32C (Castagnoli):
//
//	journal file  "ZOSJNL01" | name len u16 | name | crc32c u32
//	              then one frame per Append:
//	              size u32 | crc32c u32 of the size bytes that follow |
//	              epoch u64 | count u32 | count × (seq u64 | len u32 | payload)
//	seal file     "ZOSSEAL1" | name len u16 | name | seal u64 | crc32c u32
//
// A name's seal is the larger of its seal file's and the highest epoch of
// its records.
//
// # Crash safety (Dir)
//
//   - An Append is one pwritev of its frame at the end of the file, then
//     one fdatasync: an acknowledged append is whole on disk, and an
//     append is all or nothing. A crash mid-append leaves a torn tail:
//     loading stops at the first frame that does not check, reads ignore
//     the rest, and the next append truncates it.
//   - A failed write or fdatasync fails the append, and the journal then
//     refuses appends (ErrSyncFailed) until the Dir is reopened (which
//     reads and checks the file again) or Trim(name, All, All) removes it:
//     after a failed fdatasync the kernel may have dropped dirty pages and
//     report later syncs as successful (fsyncgate), so nothing appended
//     after it could be called durable. Other journals go on.
//   - A bad frame followed by a good one is no torn tail but damage to an
//     acknowledged append: that journal fails reads and appends with
//     chunkstore.ErrCorrupt (logged as an error) until Trim(name, All, All)
//     removes it; its records live on in the other copies. Damage to the
//     last frame cannot be told from a torn append: it is dropped with a
//     warning.
//   - Seal files, new journal files and rewrites are written to a
//     temporary file, fsynced, renamed over the old one, and the directory
//     fsynced: a crash leaves the old file or the new one (OpenDir removes
//     leftover temporary files).
//   - Before a Trim drops records, the seal they imply goes to the seal
//     file. Emptying a journal truncates its file without an fsync: after
//     a crash the covered records may come back, and readers skip them.
package journal

import (
	"cmp"
	"context"
	"errors"
	"math"
)

// Record is one journal entry.
type Record struct {
	Epoch   uint64
	Seq     uint64
	Payload []byte
}

// Compare orders records by (Epoch, Seq).
func Compare(a, b Record) int {
	if c := cmp.Compare(a.Epoch, b.Epoch); c != 0 {
		return c
	}
	return cmp.Compare(a.Seq, b.Seq)
}

// Before reports whether (epoch, seq) of r is at or before (epoch, seq).
func (r Record) Before(epoch, seq uint64) bool {
	return r.Epoch < epoch || r.Epoch == epoch && r.Seq <= seq
}

// All, as Trim's (epoch, seq), drops every record.
const All = math.MaxUint64

// MaxName is the longest journal name.
const MaxName = 255

// MaxBytes bounds the records one Read returns (and so one journal's
// size): a writer keeps its journal well below it by trimming. Each record
// counts as len(Payload)+RecordOverhead bytes; an Append that would take a
// journal past it fails with ErrFull.
const MaxBytes = 48 << 20

// RecordOverhead is what a record costs toward MaxBytes beyond its payload
// (its framing on disk and on the wire), so that empty records cannot grow
// a journal without bound.
const RecordOverhead = 32

// MaxRecords is the most records one Append may carry.
const MaxRecords = 1 << 16

// Log is a journal store.
type Log interface {
	// Append adds records (all of epoch epoch) to name's journal; when it
	// returns nil they are durable. It fails with ErrFenced when name is
	// sealed at a newer epoch.
	Append(ctx context.Context, name string, epoch uint64, recs []Record) error
	// Read seals name at epoch seal (if higher than its seal) and returns
	// its records in (Epoch, Seq) order. A seal of 0 reads without
	// sealing. A name never written has no records.
	Read(ctx context.Context, name string, seal uint64) ([]Record, error)
	// Trim drops name's records at or before (epoch, seq); Trim(name, All,
	// All) drops the whole journal and its seal.
	Trim(ctx context.Context, name string, epoch, seq uint64) error
}

// ErrFenced: the journal was sealed by a newer epoch; the writer lost its
// lease.
var ErrFenced = errors.New("journal: fenced by a newer epoch")

// ErrInvalid: a bad name, epoch or record.
var ErrInvalid = errors.New("journal: invalid request")

// ErrFull: the append would take the journal past MaxBytes; the writer
// must commit and Trim first.
var ErrFull = errors.New("journal: full")

// ErrClosed: the Log was closed.
var ErrClosed = errors.New("journal: closed")
