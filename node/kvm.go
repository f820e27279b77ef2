package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/zosproject/zos/blockd"
	"github.com/zosproject/zos/node/agent"
	"github.com/zosproject/zos/node/agent/bridge"
	"github.com/zosproject/zos/node/agent/kvm"
	"github.com/zosproject/zos/node/vm"
	"github.com/zosproject/zos/raft/fsm"
)

// vmBridgeCIDR is the address zos0 gets when a VM's bridge nic makes it
// (the containers' default, so both share one bridge).
const vmBridgeCIDR = "172.18.0.1/16"

// startVMs opens the node's VM runtime (DIR/vms, adopting the VMs a
// previous run left running) and registers kvm.*. Without qemu the node
// runs without VMs. The VMs keep running when the node stops.
func (n *Node) startVMs(m *agent.Manager, brs *bridge.Bridges) {
	local := n.cfg.hostPort(n.cfg.NBDPort)
	leaser := kvm.NewLeaser(blockdDisks{n.blockd}, local, n.cfg.Logger)
	vms, err := vm.Open(vm.Config{Dir: filepath.Join(n.cfg.Dir, "vms"), QEMU: n.cfg.QEMU, LocalNBD: local,
		Leaser: leaser, Bridges: vmBridges{brs}, Logger: n.cfg.Logger, Registerer: n.reg})
	if err != nil {
		n.log.Warn("vms (kvm.*) unavailable", "err", err)
		return
	}
	leaser.Readopt(n.ctx, vms)
	kvm.Register(m, vms)
	// Closed after the agent (closers run in reverse): Close, not Destroy,
	// so qemu keeps running; the leases go back with blockd's close.
	n.closers = append(n.closers, func() error { err := vms.Close(); leaser.Close(); return err })
}

// blockdDisks is kvm.Disks over the node's blockd.
type blockdDisks struct{ s *blockd.Service }

func (d blockdDisks) Hold(ctx context.Context, name string) (func(), error) {
	_, rel, err := d.s.Open(ctx, name)
	return rel, err
}

func (d blockdDisks) Exists(ctx context.Context, name string) error {
	if _, err := d.s.Get(ctx, name, false); err != nil {
		if errors.Is(err, fsm.ErrNotFound) {
			return fmt.Errorf("vdisk %s does not exist (zos vdisk list shows the vdisks)", name)
		}
		return fmt.Errorf("vdisk %s: %w", name, err)
	}
	return nil
}

func (d blockdDisks) AttachedHere(name string) bool { return d.s.AttachedHere(name) }

// vmBridges makes a missing zos0 the way bridge.create does (static
// address, NAT); other bridges must exist (bridge.create them).
type vmBridges struct{ b *bridge.Bridges }

func (v vmBridges) EnsureBridge(_ context.Context, name string) error {
	var nf netlink.LinkNotFoundError
	if _, err := netlink.LinkByName(name); !errors.As(err, &nf) {
		return err
	}
	if name != "zos0" {
		return fmt.Errorf("bridge %s does not exist (bridge.create it first)", name)
	}
	return v.b.Create(bridge.Args{Name: name, Network: bridge.Network{Mode: "static", NAT: true,
		Settings: bridge.Settings{CIDR: vmBridgeCIDR}}})
}
