package blockd

import (
	"errors"
	"fmt"

	"github.com/zosproject/zos/blockd/nbd"
	"github.com/zosproject/zos/raft/fsm"
)

// Block size limits: the control plane's.
const (
	MinBlockSize = fsm.MinBlockSize
	MaxBlockSize = fsm.MaxBlockSize
)

// Errors. Control-plane refusals (not found, exists, leased, stale epoch,
// invalid) are returned as the raft/fsm *Error values they are.
var (
	// ErrInvalid: a request that cannot be served as given (bad name,
	// size, range, option combination). The message says what to change.
	ErrInvalid = errors.New("blockd: invalid request")
	// ErrBusy: the vdisk is in use on this node in a way that forbids the
	// operation (an import while it is attached, a second exclusive
	// operation). Retry when it is detached.
	ErrBusy = errors.New("blockd: vdisk busy")
	// ErrLeaseLost: this node no longer holds the vdisk's read-write lease
	// (another node took it over, or it was deleted); writes and flushes
	// fail until the vdisk is reattached.
	ErrLeaseLost = errors.New("blockd: read-write lease lost")
	// ErrCorruptBlock: a block chunk has an impossible size.
	ErrCorruptBlock = errors.New("blockd: corrupt block")
	// ErrClosed: the vdisk or service was closed.
	ErrClosed = errors.New("blockd: closed")
	// ErrNotAttached: the vdisk is not attached read-write on the node
	// asked to commit it (Service.SyncLocal).
	ErrNotAttached = errors.New("blockd: vdisk not attached read-write here")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// AttachedError reports a read-write attach refused because another node
// holds the vdisk's lease. It matches nbd.ErrAttached, so NBD clients see
// NBD_REP_ERR_POLICY with this message.
type AttachedError struct {
	VDisk, Node string
}

func (e *AttachedError) Error() string {
	return fmt.Sprintf("vdisk %s is attached read-write on node %s; attach it read-only as %s:ro (or a snapshot as %s@SNAP), or detach it there first", e.VDisk, e.Node, e.VDisk, e.VDisk)
}

// Is makes errors.Is(err, nbd.ErrAttached) true.
func (e *AttachedError) Is(target error) bool { return target == nbd.ErrAttached }
