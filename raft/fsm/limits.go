package fsm

import (
	"regexp"

	"github.com/zosproject/zos/chunkstore"
)

// Limits on what the control plane accepts. Like the request table's
// bounds (RequestTTL, MaxRequests, MaxRequestBytes, MaxRequestID), they are
// part of the replicated state machine: every voter must use the same
// values, or replicas would accept different commands.
const (
	// MaxCommandSize bounds one encoded command (a batch included).
	MaxCommandSize = 4 << 20
	// MaxBatch bounds the commands of one batch.
	MaxBatch = 10000

	// MaxVDiskSize bounds a vdisk's size (1 PiB).
	MaxVDiskSize = 1 << 50
	// MinBlockSize and MaxBlockSize bound a vdisk's block size (a power
	// of two); blockd uses the same.
	MinBlockSize = 4 << 10
	MaxBlockSize = 1 << 20
	// MaxSnapshots bounds the snapshots of one vdisk.
	MaxSnapshots = 1024

	// MaxShards bounds a pool's k+m: the chunk store's own bound.
	MaxShards = chunkstore.MaxShards

	// MaxKVValue and maxKVKey bound a kv value and key, in bytes.
	MaxKVValue = 1 << 20
	maxKVKey   = 1024

	// maxNameLength bounds the name of a node, pool, vdisk, snapshot,
	// repository, flist, token or kv namespace.
	maxNameLength = 128

	// DefaultPool is the pool cluster.init creates and vdisks use when
	// they name none.
	DefaultPool = "default"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)

// ValidName reports whether s may name a node, pool, vdisk, snapshot,
// repository, flist, token or kv namespace: 1 to 128 letters, digits, '.',
// '_' or '-', not starting with '.' or '-'.
func ValidName(s string) bool {
	return len(s) > 0 && len(s) <= maxNameLength && nameRE.MatchString(s)
}

func checkName(kind, s string) error {
	if !ValidName(s) {
		return errf(ErrInvalid, "%s name %q: use 1-%d letters, digits, '.', '_' or '-', not starting with '.' or '-'", kind, s, maxNameLength)
	}
	return nil
}
