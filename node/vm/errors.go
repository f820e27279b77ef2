package vm

import (
	"context"
	"errors"

	"github.com/zosproject/zos/node/vm/tap"
)

// Errors; match with errors.Is. Every error of this package says which VM.
var (
	ErrInvalid    = errors.New("vm: invalid spec")
	ErrExists     = errors.New("vm: already exists")
	ErrNotFound   = errors.New("vm: no such vm")
	ErrNotRunning = errors.New("vm: not running")
	ErrStart      = errors.New("vm: qemu failed to start")
	ErrLease      = errors.New("vm: vdisk lease refused")
	ErrNoDisk     = errors.New("vm: no such disk on the vm")
)

// DiskLeaser takes and gives back a vdisk's read-write lease on behalf of a
// VM. The Manager calls Acquire before a read-write disk is given to qemu
// (create, attach) and Release after qemu has let go of it (detach,
// shutdown, destroy, a VM that exited, and again for a VM found dead by
// Open). Release of a lease that is not held must return nil, since
// cleanup after a crash may release twice. Acquire's error is returned to
// the caller wrapped in ErrLease, so it should say who holds the lease.
// Implementations must be safe for concurrent use.
type DiskLeaser interface {
	Acquire(ctx context.Context, vm, url string) error
	Release(ctx context.Context, vm, url string) error
}

type noLeases struct{}

func (noLeases) Acquire(context.Context, string, string) error { return nil }
func (noLeases) Release(context.Context, string, string) error { return nil }

// Bridges makes sure a bridge exists before a VM's tap is put on it. The
// agent wires it to the provider containers use (node/container/network's
// Bridges, which gives zos0 its address and NAT), so VMs and containers
// share one bridge set-up; the default creates a bare bridge with netlink
// when it is missing.
type Bridges interface {
	EnsureBridge(ctx context.Context, name string) error
}

type netlinkBridges struct{}

func (netlinkBridges) EnsureBridge(_ context.Context, name string) error {
	_, err := tap.EnsureBridge(name)
	return err
}
